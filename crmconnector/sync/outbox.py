"""The transactional outbox: CRM work recorded in the same transaction as the event that caused it."""
from __future__ import annotations

import functools
import logging
from datetime import datetime
from typing import Any, Mapping, Sequence

from sqlalchemy import Connection, Engine, bindparam, column, exists, func, literal, select, values
from sqlalchemy.exc import DBAPIError

from crmconnector import console
from crmconnector.driver_sql import DriverStatement, in_numbered, numbered
from crmconnector.store import (chats, outbox, run_or_hold, single_statement_write, update_chat, utcnow,
                                wake_after_commit)

log = logging.getLogger(__name__)


# INSERT … SELECT … WHERE NOT EXISTS: the look for a pending item and the insert in one statement.
_ITEM_COLUMNS = ("kind", "key", "status", "attempts", "due_at", "created_at", "updated_at")
_INSERT_UNLESS_PENDING = DriverStatement(outbox.insert().from_select(
    list(_ITEM_COLUMNS),
    select(*(bindparam(name, type_=outbox.c[name].type) for name in _ITEM_COLUMNS)).where(~exists().where(
        outbox.c.kind == bindparam("kind"), outbox.c.key == bindparam("key"), outbox.c.status == "pending")),
    include_defaults=False))
# Sets the status only when it changes, and says to whom: one statement in the common case.
_CHANGE_STATUS = DriverStatement(chats.update().where(
    chats.c.id == bindparam("chat"), chats.c.crm_status.is_distinct_from(bindparam("status"))
).returning(chats.c.agent_email))


def enqueue(conn: Connection, kind: str, key: str, due_at: datetime | None = None) -> None:
    """Ask for `kind` work on `key`; one pending item per (kind, key) is enough, since the worker
    renders from current state when it runs."""
    now = utcnow()
    # Nothing in the transaction reads the item back, so in a batch it waits for the batch's end (a
    # second one for the same key there sees the first and adds nothing). Held, whether it was new is
    # not known yet: a thread is woken either way (at worst it finds nothing to claim).
    added = run_or_hold(conn, _INSERT_UNLESS_PENDING, {"kind": kind, "key": key, "status": "pending", "attempts": 0,
                                                       "due_at": due_at or now, "created_at": now, "updated_at": now})
    if added is None or added:
        wake_after_commit(conn, "outbox")


# A render asked for now does not wait behind one scheduled for later (a media retry minutes ahead):
# that item falls due now. An item backing off after a CRM error (it has a last_error) keeps its wait.
_DUE_NOW = bindparam("now", type_=outbox.c.due_at.type)
_HASTEN = DriverStatement(outbox.update().where(
    outbox.c.kind == "chat_log", outbox.c.key == bindparam("chat"), outbox.c.status == "pending",
    outbox.c.due_at > _DUE_NOW, outbox.c.last_error.is_(None)).values(due_at=_DUE_NOW, updated_at=_DUE_NOW))


def queue_chat_log(conn: Connection, chat_id: str) -> None:
    """(Re-)render the chat's one Task from its current state, now; until then its CRM status is pending."""
    enqueue(conn, "chat_log", chat_id)
    hastened = run_or_hold(conn, _HASTEN, {"chat": chat_id, "now": utcnow()})
    if hastened:
        wake_after_commit(conn, "outbox")
    set_crm_status(conn, chat_id, "pending")


def set_crm_status(conn: Connection, chat_id: str, status: str, *, task_id: str | None = None,
                   error: str | None = None) -> None:
    """Record the chat's CRM status and tell its agent's console when it changed."""
    values: dict[str, Any] = {"crm_status": status, "crm_error": error, "updated_at": utcnow()}
    if task_id:
        values["task_id"] = task_id
    changed = _CHANGE_STATUS.first(conn, {"chat": chat_id, "status": status, **values})
    if changed is None:  # the same status again (or no such chat): the other columns still change
        update_chat(conn, chat_id, values)
    elif changed["agent_email"]:
        console.publish(conn, changed["agent_email"], chat_id, "status", {"chat_id": chat_id})


def blocks_chat_log(conn: Connection, kind: str, chat_id: str) -> bool:
    """True when a failed item of `kind` keeps the chat's log from the CRM: its own, or its match's
    once the chat has ended (the chat log waits for the match, and a refused match for the admin)."""
    if kind == "chat_log":
        return True
    return kind == "match" and conn.execute(
        select(chats.c.ended_at).where(chats.c.id == chat_id)).scalar() is not None


def failed_match(conn: Connection, chat_id: str) -> str | None:
    """The CRM's error when the chat's latest match item failed for good, else None."""
    latest = conn.execute(select(outbox.c.status, outbox.c.last_error).where(
        outbox.c.kind == "match", outbox.c.key == chat_id).order_by(outbox.c.id.desc()).limit(1)).first()
    return latest.last_error if latest is not None and latest.status == "failed" else None


def settle_failed(conn: Connection, chat_ids: Sequence[str]) -> None:
    """The chats' failed chat-log items are done once a later render posted their Tasks: the CRM
    no longer holds the failure the admin would see (the error stays in the item's note). Held for the
    end of the writer's batch: it runs with every chat-log finish and nothing reads it back."""
    if chat_ids:
        run_or_hold(conn, _settle_failed(len(chat_ids)), {**numbered("chat", chat_ids), "now": utcnow()})


@functools.cache
def _settle_failed(count: int) -> DriverStatement:
    return DriverStatement(outbox.update().where(
        outbox.c.kind == "chat_log", in_numbered(outbox.c.key, "chat", count), outbox.c.status == "failed")
        .values(status="done", last_error=literal("posted later; it had failed: ") + outbox.c.last_error,
                updated_at=bindparam("now", type_=outbox.c.updated_at.type)))


@functools.cache
def _posted_and_told(count: int) -> DriverStatement:
    """PostgreSQL: each of `count` chats' status turns posted (when it was another) with its Task's id,
    and its agent's console is told, in one statement; it returns the chats that changed. Bind
    `chat_<n>`, `task_<n>` and `now`."""
    posted = values(column("chat", chats.c.id.type), column("task", chats.c.task_id.type), name="posted").data(
        [(bindparam(f"chat_{n}", type_=chats.c.id.type), bindparam(f"task_{n}", type_=chats.c.task_id.type))
         for n in range(count)])
    changed = (chats.update().where(chats.c.id == posted.c.chat, chats.c.crm_status.is_distinct_from("posted"))
               .values(crm_status="posted", crm_error=None, task_id=posted.c.task, updated_at=bindparam("now"))
               .returning(chats.c.id, chats.c.agent_email).cte("changed"))
    told = console.publish_from(changed, "status", func.json_build_object("chat_id", changed.c.id)).cte("told")
    return DriverStatement(select(changed.c.id).add_cte(told))


def record_posted_at_once(engine: Engine, tasks: Mapping[str, str]) -> set[str] | None:
    """On PostgreSQL, record the chats' Tasks (chat id -> Task id) as posted and tell their agents'
    consoles in one statement of its own (autocommit), so that chat logs leave one round trip fewer to
    the transactions every callback waits for; the caller wakes the consoles. The chats whose status
    that changed (a chat posted already is not among them); None on SQLite (a write there takes the one
    write lock either way), or when the statement failed (say PostgreSQL broke a deadlock with a
    callback's transaction that holds some of these chats): then `set_crm_status` records each in the
    caller's transaction."""
    if engine.dialect.name != "postgresql":
        return None
    if not tasks:
        return set()
    params: dict[str, Any] = {"now": utcnow()}
    for n, (chat_id, task_id) in enumerate(sorted(tasks.items())):
        params[f"chat_{n}"], params[f"task_{n}"] = chat_id, task_id
    try:
        with single_statement_write(engine) as conn:
            return {row["id"] for row in _posted_and_told(len(tasks)).all(conn, params)}
    except DBAPIError as exc:
        log.warning("recording %d chat logs as posted failed (%s); recording them one by one", len(tasks),
                    type(exc.orig).__name__)
        return None
