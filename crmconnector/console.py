"""What agents' consoles are told: rows in `console_events`, read back by the live stream."""
from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, bindparam, func, literal, select

from crmconnector.store import console_events, insert_or_hold, utcnow, wake_after_commit


def publish(conn: Connection, agent_email: str, chat_id: str, kind: str, payload: dict[str, Any]) -> None:
    """Record a console update in the caller's transaction (it is seen only if that commits)."""
    row = {"agent_email": agent_email.lower(), "chat_id": chat_id, "kind": kind, "payload": payload,
           "created_at": utcnow()}
    insert_or_hold(conn, console_events, row)
    wake_after_commit(conn, "consoles")


def publish_from(source: Any, kind: str, payload: Any = None) -> Any:
    """`publish` as part of a statement: the INSERT of a `kind` update for each row of `source` (a
    selectable with `agent_email` and `id`, the chat's) that has an agent. The payload is `payload` (an
    expression over `source`), else bound as `payload`; bind `now`. The caller wakes the consoles once
    it is committed."""
    if payload is None:
        payload = bindparam("payload", type_=console_events.c.payload.type)
    return console_events.insert().from_select(
        ["agent_email", "chat_id", "kind", "payload", "created_at"],
        select(func.lower(source.c.agent_email), source.c.id, literal(kind), payload,
               bindparam("now", type_=console_events.c.created_at.type))
        .where(source.c.agent_email.is_not(None)))
