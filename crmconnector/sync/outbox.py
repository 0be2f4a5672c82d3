"""The transactional outbox: CRM work recorded in the same transaction as the event that caused it."""
from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, select

from crmconnector import console
from crmconnector.driver_sql import DriverStatement
from crmconnector.store import chats, outbox, update_chat, utcnow, wake_after_commit


_PENDING = DriverStatement(select(outbox.c.id).where(
    outbox.c.kind == bindparam("kind"), outbox.c.key == bindparam("key"), outbox.c.status == "pending"))
_INSERT = DriverStatement(outbox.insert())
_CHAT_STATUS = DriverStatement(select(chats.c.crm_status, chats.c.agent_email).where(chats.c.id == bindparam("chat")))


def enqueue(conn: Connection, kind: str, key: str, due_at: datetime | None = None) -> None:
    """Ask for `kind` work on `key`; one pending item per (kind, key) is enough, since the worker
    renders from current state when it runs."""
    if _PENDING.first(conn, {"kind": kind, "key": key}) is None:
        now = utcnow()
        _INSERT.run(conn, {"kind": kind, "key": key, "status": "pending", "attempts": 0,
                           "due_at": due_at or now, "created_at": now, "updated_at": now})
        wake_after_commit(conn, "outbox")


def queue_chat_log(conn: Connection, chat_id: str) -> None:
    """(Re-)render the chat's one Task from its current state; until then its CRM status is pending."""
    enqueue(conn, "chat_log", chat_id)
    set_crm_status(conn, chat_id, "pending")


def set_crm_status(conn: Connection, chat_id: str, status: str, *, task_id: str | None = None,
                   error: str | None = None) -> None:
    """Record the chat's CRM status and tell its agent's console when it changed."""
    row = _CHAT_STATUS.first(conn, {"chat": chat_id})
    if row is None:
        return
    values: dict[str, Any] = {"crm_status": status, "crm_error": error, "updated_at": utcnow()}
    if task_id:
        values["task_id"] = task_id
    update_chat(conn, chat_id, values)
    if row["crm_status"] != status and row["agent_email"]:
        console.publish(conn, row["agent_email"], chat_id, "status", {"chat_id": chat_id})
