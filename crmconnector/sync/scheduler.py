"""The scheduler in the server process: APScheduler runs the abandoned-call ticket job on its interval.

Every instance runs a scheduler; the job's lease lets only one of them work at a time, so adding
instances never runs the job twice at once. The next run time is written to `job_schedule` so that
`crmconnector jobs` (another process) can show it.
"""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from apscheduler.events import (  # type: ignore[import-untyped]
    EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, EVENT_JOB_MISSED, EVENT_JOB_SUBMITTED, JobEvent)
from apscheduler.schedulers.background import BackgroundScheduler  # type: ignore[import-untyped]
from apscheduler.triggers.interval import IntervalTrigger  # type: ignore[import-untyped]
from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from crmconnector.outage import is_unreachable, outage_of
from crmconnector.store import job_schedule, utcnow
from crmconnector.sync.abandoned import JOB_NAME, run_abandoned_tickets

if TYPE_CHECKING:
    from crmconnector.runtime import Runtime

log = logging.getLogger(__name__)


class JobScheduler:
    """A BackgroundScheduler with the connector's jobs; `stop()` lets a running job end between batches."""

    def __init__(self, runtime: "Runtime", *, first_run_in: float | None = None):
        self.runtime = runtime
        self.interval = runtime.settings.abandoned_interval_seconds
        self.stopping = threading.Event()
        self.runs = 0
        self.outage = outage_of(runtime.engine)
        self.scheduler = BackgroundScheduler(timezone="UTC", job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": max(1, self.interval)})
        delay = self.interval if first_run_in is None else first_run_in
        self.scheduler.add_job(self._run, IntervalTrigger(seconds=self.interval, timezone="UTC"), id=JOB_NAME,
                               name="abandoned-call tickets", next_run_time=utcnow() + timedelta(seconds=delay))
        self.scheduler.add_listener(self._after, EVENT_JOB_SUBMITTED | EVENT_JOB_EXECUTED | EVENT_JOB_ERROR
                                    | EVENT_JOB_MISSED)

    def start(self) -> None:
        self.scheduler.start()
        self._publish()
        log.info("scheduler started: abandoned-call tickets every %s s", self.interval)

    def stop(self) -> None:
        self.stopping.set()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
            try:
                record_next_run(self.runtime.engine, JOB_NAME, None, self.interval)
            except SQLAlchemyError:
                pass  # the engine may already be gone; the report then shows an overdue time

    def next_run_time(self) -> datetime | None:
        job = self.scheduler.get_job(JOB_NAME)
        return job.next_run_time if job else None

    def run_soon(self) -> None:
        """Move the next run to now (the admin's "run now" while the server runs)."""
        self.scheduler.modify_job(JOB_NAME, next_run_time=utcnow())

    def _run(self) -> None:
        try:
            result = run_abandoned_tickets(self.runtime, should_stop=self.stopping.is_set)
        except Exception as exc:
            if not is_unreachable(exc):
                raise  # a bug: APScheduler logs it with its traceback
            self.outage.failed(exc, "abandoned-call ticket job")  # the calls wait for a later run
            return
        self.outage.ok()
        self.runs += 1
        if not result.busy and (result.created or result.failed or result.error):
            log.info("%s", result.summary().splitlines()[0])

    def _after(self, event: JobEvent) -> None:
        if event.code == EVENT_JOB_ERROR:
            log.error("abandoned-call ticket job failed: %r", getattr(event, "exception", None))
        self._publish()

    def _publish(self) -> None:
        try:
            record_next_run(self.runtime.engine, JOB_NAME, self.next_run_time(), self.interval)
        except SQLAlchemyError as exc:  # the report is informative; the job itself goes on
            self.outage.failed(exc, "scheduler (next run time)")


def record_next_run(engine: Engine, job: str, when: datetime | None, interval: int) -> None:
    """Upsert the job's next run time (several instances write it; the last one wins)."""
    values = {"next_run_at": when, "interval_seconds": interval, "updated_at": utcnow()}
    try:
        with engine.begin() as conn:
            if conn.execute(job_schedule.update().where(job_schedule.c.job == job).values(**values)).rowcount:
                return
            conn.execute(job_schedule.insert().values(job=job, **values))
    except IntegrityError:  # another instance inserted the row first
        with engine.begin() as conn:
            conn.execute(job_schedule.update().where(job_schedule.c.job == job).values(**values))


def start(runtime: "Runtime") -> JobScheduler:
    """Start the scheduler in this process; it stops when the runtime closes."""
    scheduler = JobScheduler(runtime)
    scheduler.start()
    runtime.on_close(scheduler.stop)
    return scheduler
