"""What the admin page shows: recent chats and abandoned calls, and chart series.

Chart series are counted in Python over a bounded time window, which keeps one query that works
the same on SQLite and PostgreSQL (no dialect-specific date truncation).
"""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, select

from crmconnector.crm.base import CRMBackend
from crmconnector.matching import international
from crmconnector.store import abandoned_calls, chats, reading

OUTCOMES = ("single", "multiple", "none", "pending")
CHART_HOURS = 24
CHART_DAYS = 14


def _when(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value else None


def _display(number: str | None) -> str:
    try:
        return international(number) if number else ""
    except Exception:  # noqa: BLE001 - shown as stored when it no longer parses
        return number or ""


def recent_chats(engine: Engine, crm: CRMBackend, limit: int = 50) -> list[dict[str, Any]]:
    """The newest chats with their match, agent, linked record and chat-log status."""
    with reading(engine) as conn:
        rows = conn.execute(select(chats).order_by(chats.c.created_at.desc().nulls_last(), chats.c.id.desc())
                            .limit(limit)).mappings().all()
    return [{
        "id": r["id"], "created_at": _when(r["created_at"]), "number": _display(r["consumer_number"]),
        "outcome": r["match_outcome"], "agent": r["agent_name"] or r["agent_email"],
        "linked": ({"object": r["linked_object"], "id": r["linked_id"],
                    "url": crm.record_url(r["linked_object"], r["linked_id"])} if r["linked_id"] else None),
        "ended_at": _when(r["ended_at"]), "crm_status": r["crm_status"], "crm_error": r["crm_error"],
        "task_url": crm.record_url("Task", r["task_id"]) if r["task_id"] else None,
    } for r in rows]


def recent_abandoned(engine: Engine, crm: CRMBackend, limit: int = 50) -> list[dict[str, Any]]:
    """The newest abandoned calls with their ticket (Case) or the CRM's error."""
    with reading(engine) as conn:
        rows = conn.execute(select(abandoned_calls).order_by(abandoned_calls.c.received_at.desc(),
                                                             abandoned_calls.c.id.desc()).limit(limit)
                            ).mappings().all()
    return [{
        "id": r["id"], "caller": _display(r["caller_number"]), "abandoned_at": _when(r["abandoned_at"]),
        "wait_seconds": r["wait_seconds"], "sms_status": r["sms_status"],
        "sms_count": len(r["sms_messages"] or []), "status": r["status"], "error": r["error"],
        "case_url": crm.record_url("Case", r["case_id"]) if r["case_id"] else None,
    } for r in rows]


def chart_data(engine: Engine, now: datetime) -> dict[str, Any]:
    """Chats per hour over the last day, and match outcomes per day over the last two weeks."""
    hour_start = now.replace(minute=0, second=0, microsecond=0) - timedelta(hours=CHART_HOURS - 1)
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=CHART_DAYS - 1)
    since = min(hour_start, day_start)
    with reading(engine) as conn:
        rows = conn.execute(select(chats.c.created_at, chats.c.match_outcome)
                            .where(chats.c.created_at >= since, chats.c.created_at <= now)).all()
    hours = [hour_start + timedelta(hours=i) for i in range(CHART_HOURS)]
    days = [day_start + timedelta(days=i) for i in range(CHART_DAYS)]
    per_hour = [0] * CHART_HOURS
    per_day = {outcome: [0] * CHART_DAYS for outcome in OUTCOMES}
    for created_at, outcome in rows:
        hour = int((created_at - hour_start).total_seconds() // 3600)
        if 0 <= hour < CHART_HOURS:
            per_hour[hour] += 1
        day = (created_at - day_start).days
        if 0 <= day < CHART_DAYS:
            per_day[outcome if outcome in per_day else "pending"][day] += 1
    return {"hours": [h.strftime("%H:00") for h in hours], "chats_per_hour": per_hour,
            "days": [d.strftime("%Y-%m-%d") for d in days], "outcomes_per_day": per_day}
