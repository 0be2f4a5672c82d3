"""What agents' consoles are told: rows in `console_events`, read back by the live stream."""
from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from crmconnector.store import console_events, insert_or_hold, utcnow, wake_after_commit


def publish(conn: Connection, agent_email: str, chat_id: str, kind: str, payload: dict[str, Any]) -> None:
    """Record a console update in the caller's transaction (it is seen only if that commits)."""
    row = {"agent_email": agent_email.lower(), "chat_id": chat_id, "kind": kind, "payload": payload,
           "created_at": utcnow()}
    insert_or_hold(conn, console_events, row)
    wake_after_commit(conn, "consoles")
