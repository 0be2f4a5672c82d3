"""The outbox worker: claims due items, renders from current state, writes to the CRM."""
from __future__ import annotations

from sqlalchemy import Engine, func, select

from crmconnector.store import outbox, reading, utcnow


def outbox_counts(engine: Engine) -> dict[str, int]:
    with reading(engine) as conn:
        counts = dict(conn.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status)).all())
    return {"pending": counts.get("pending", 0) + counts.get("running", 0), "failed": counts.get("failed", 0),
            "done": counts.get("done", 0)}


def retry_failed(engine: Engine) -> int:
    with engine.begin() as conn:
        result = conn.execute(outbox.update().where(outbox.c.status == "failed").values(
            status="pending", due_at=utcnow(), attempts=0, updated_at=utcnow()))
    return result.rowcount
