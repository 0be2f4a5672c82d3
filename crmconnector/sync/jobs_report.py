"""What `crmconnector jobs` prints: last run, next run, tickets created and failures with the CRM's error."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy import Engine, func, select

from crmconnector.preferences import abandoned_mode
from crmconnector.store import abandoned_calls, job_runs, job_schedule, reading, utcnow
from crmconnector.sync.abandoned import JOB_NAME

if TYPE_CHECKING:
    from crmconnector.runtime import Runtime

FAILURES_SHOWN = 20


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


@dataclass
class JobStatus:
    """The abandoned-call ticket job as the admin sees it (CLI and admin page)."""

    mode: str
    interval_seconds: int
    last_run: dict[str, Any] | None
    next_run_at: datetime | None
    scheduled: bool  # a running server has the job scheduled
    counts: dict[str, int] = field(default_factory=dict)  # calls by status
    failures: list[dict[str, Any]] = field(default_factory=list)  # newest first: id, caller, error


def job_status(engine: Engine, default_mode: str, interval_seconds: int) -> JobStatus:
    with reading(engine) as conn:
        last = conn.execute(select(job_runs).where(job_runs.c.job == JOB_NAME)
                            .order_by(job_runs.c.started_at.desc(), job_runs.c.id.desc()).limit(1)).mappings().first()
        schedule = conn.execute(select(job_schedule).where(job_schedule.c.job == JOB_NAME)).mappings().first()
        counts = dict(conn.execute(select(abandoned_calls.c.status, func.count())
                                   .group_by(abandoned_calls.c.status)).all())
        failures = conn.execute(select(abandoned_calls.c.id, abandoned_calls.c.error, abandoned_calls.c.received_at)
                                .where(abandoned_calls.c.status == "failed")
                                .order_by(abandoned_calls.c.received_at.desc(), abandoned_calls.c.id)
                                .limit(FAILURES_SHOWN)).mappings().all()
    next_run = schedule["next_run_at"] if schedule else None
    return JobStatus(
        mode=abandoned_mode(engine, default_mode),
        interval_seconds=schedule["interval_seconds"] if schedule else interval_seconds,
        last_run=dict(last) if last else None,
        next_run_at=next_run,
        scheduled=next_run is not None and next_run > utcnow() - timedelta(seconds=interval_seconds * 2 + 60),
        counts={k: int(v) for k, v in counts.items()},
        failures=[dict(f) for f in failures],
    )


def print_jobs(runtime: "Runtime", echo: Callable[[str], Any]) -> None:
    """Print the job's state for `crmconnector jobs`."""
    settings = runtime.settings
    status = job_status(runtime.engine, settings.abandoned_tickets, settings.abandoned_interval_seconds)
    echo(f"abandoned-tickets  (mode: {status.mode}; every {status.interval_seconds} s while the server runs)")
    last = status.last_run
    if last is None:
        echo("  last run:  never")
    else:
        state = {"ok": "ok", "error": "stopped early", "running": "running now"}.get(last["status"], last["status"])
        echo(f"  last run:  {_when(last['started_at'])} ({state}): {last['created']} created, "
             f"{last['failed']} failed, {last['skipped']} skipped")
        if last["error"]:
            echo(f"             {last['error']}")
    if status.scheduled:
        echo(f"  next run:  {_when(status.next_run_at)}")
    else:
        echo("  next run:  not scheduled (no server is running; `crmconnector serve` runs the job, "
             "`crmconnector jobs run abandoned-tickets` runs it now)")
    counts = status.counts
    echo(f"  tickets created: {counts.get('ticketed', 0)}; waiting: {counts.get('new', 0)}; "
         f"skipped: {counts.get('skipped', 0)}; failed: {counts.get('failed', 0)}")
    if status.failures:
        echo("  failures (the CRM's error):")
        for failure in status.failures:
            echo(f"    call {failure['id']}: {failure['error']}")
        more = counts.get("failed", 0) - len(status.failures)
        if more > 0:
            echo(f"    ... and {more} more")
