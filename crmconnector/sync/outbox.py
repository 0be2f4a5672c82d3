"""The transactional outbox: CRM work recorded in the same transaction as the event that caused it."""
from __future__ import annotations

from datetime import datetime

from sqlalchemy import Connection, select

from crmconnector.store import outbox, utcnow


def enqueue(conn: Connection, kind: str, key: str, due_at: datetime | None = None) -> None:
    """Ask for `kind` work on `key`; one pending item per (kind, key) is enough, since the worker
    renders from current state when it runs."""
    pending = conn.execute(select(outbox.c.id).where(outbox.c.kind == kind, outbox.c.key == key,
                                                     outbox.c.status == "pending")).first()
    if pending is None:
        now = utcnow()
        conn.execute(outbox.insert().values(kind=kind, key=key, status="pending", attempts=0,
                                            due_at=due_at or now, created_at=now, updated_at=now))
