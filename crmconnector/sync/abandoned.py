"""The abandoned-call ticket job: qualifying calls without a ticket become Cases, exactly once.

One run, under the `abandoned-tickets` lease (one runner across processes and instances), takes
the calls still `new` in batches of up to 200 (one sObject Collections request on Salesforce):
  1. decide each call by the admin's mode (off / all / with_sms); the others are `skipped`;
  2. match the callers with one backend search per batch (SOSL packs up to 50 numbers a request);
  3. mark the calls as attempted, then, for calls an earlier run had already attempted, look the
     Cases up by their subject key first, so a run cut off after the CRM's create (or a timeout
     after the write) only records the Case that exists. A call never attempted cannot have a
     Case, so the common path costs no lookup at all;
  4. create the rest with one batch create; calls with wait-time media go through
     `upsert_with_files` (keyed by subject, files keyed by message and position), which is safe to
     repeat;
  5. record case id / failure per call.
A row the CRM rejects is marked `failed` with the CRM's error and never blocks the batch; a
passing CRM failure (down, rate-limited) ends the run and leaves the calls for the next one.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from sqlalchemy import Engine, Integer, String, Text, bindparam, case, func, select

from crmconnector.crm.base import CRMBackend
from crmconnector.crm.errors import CRMAuthError, CRMRejected, RetryableCRMError
from crmconnector.matching import MatchResult, match_numbers
from crmconnector.preferences import abandoned_mode, pop_settings
from crmconnector.store import abandoned_calls, job_runs, reading, utcnow
from crmconnector.sync.abandoned_case import case_fields, subject
from crmconnector.sync.abandoned_media import MediaFetcher, fetch_call_media, make_fetcher
from crmconnector.sync.leases import Lease, LeaseLost

if TYPE_CHECKING:
    from crmconnector.runtime import Runtime

log = logging.getLogger(__name__)

JOB_NAME = "abandoned-tickets"
BATCH_SIZE = 200  # sObject Collections take at most 200 records a request
# Numbers matched together: one SOSL search takes 50 on Salesforce, and the exact filter after it
# costs (numbers x candidates), so larger groups only cost time.
MATCH_CHUNK = 50
LEASE_SECONDS = 300.0  # renewed after every batch; a crashed runner frees it after this


@dataclass
class JobResult:
    """What one run did (also written to `job_runs`)."""

    mode: str
    created: int = 0  # Cases created by this run
    existing: int = 0  # Cases an interrupted earlier run had created, now recorded
    skipped: int = 0  # calls that do not qualify under the mode
    rejected: list[tuple[str, str]] = field(default_factory=list)  # (call id, CRM error)
    retried: list[tuple[str, str]] = field(default_factory=list)  # (call id, error): rows the CRM asked to
    #   try again (a locked row); they stay new and the next run takes them
    left: int = 0  # qualifying calls still waiting (the CRM failed; the next run takes them)
    error: str | None = None  # why the run stopped early
    busy: bool = False  # another runner holds the lease: this one did nothing

    @property
    def failed(self) -> int:
        """Calls that did not get their Case in this run (rejected, or left for the next run)."""
        return len(self.rejected) + (self.left if self.error else len(self.retried))

    def summary(self) -> str:
        if self.busy:
            return "abandoned-call tickets: another runner is working right now; nothing done"
        parts = [f"abandoned-call tickets (mode {self.mode}): {self.created} created"]
        if self.existing:
            parts.append(f"{self.existing} already in the CRM")
        parts.append(f"{self.skipped} skipped")
        parts.append(f"{len(self.rejected)} rejected by the CRM")
        lines = [", ".join(parts)]
        lines += [f"  call {call_id}: {error}" for call_id, error in self.rejected[:50]]
        if len(self.rejected) > 50:
            lines.append(f"  ... and {len(self.rejected) - 50} more")
        if self.retried:
            lines.append(f"{len(self.retried)} call(s) the CRM asked to try again wait for the next run "
                         f"(first: {self.retried[0][1]})")
        if self.error:
            lines.append(f"stopped early: {self.error}; {self.left} call(s) wait for the next run")
        return "\n".join(lines)


def run_abandoned_tickets(runtime: "Runtime", *, batch_size: int = BATCH_SIZE,
                          should_stop: Callable[[], bool] | None = None,
                          fetcher: MediaFetcher | None = None) -> JobResult:
    """Run the job once, now (the scheduler and `crmconnector jobs run abandoned-tickets`)."""
    engine, settings = runtime.engine, runtime.settings
    mode = abandoned_mode(engine, settings.abandoned_tickets)
    lease = Lease(engine, JOB_NAME, LEASE_SECONDS)
    if not lease.acquire():
        return JobResult(mode, busy=True)
    with lease:
        result = JobResult(mode)
        run_id = _start_run(engine)
        try:
            batch = _Batch(runtime.crm, engine, settings.default_region, tuple(pop_settings(engine).object_order),
                           fetcher or make_fetcher(settings), result, lease.renew)
            after = ""
            while not (should_stop and should_stop()):
                calls = _next_calls(engine, after, batch_size)
                if not calls:
                    break
                after = calls[-1]["id"]
                lease.renew()  # still ours before anything reaches the CRM, or stop (LeaseLost)
                batch.run(_qualifying(engine, mode, calls, result))
        except (RetryableCRMError, CRMAuthError) as exc:
            result.error = f"CRM unavailable: {exc}"
            log.warning("abandoned-call tickets: %s; the calls wait for the next run", result.error)
        except LeaseLost as exc:
            result.error = str(exc)
        except Exception as exc:
            result.error = f"unexpected error: {exc!r}"
            _finish_run(engine, run_id, result)
            raise
        _finish_run(engine, run_id, result)
    return result


def _start_run(engine: Engine) -> int:
    with engine.begin() as conn:
        inserted = conn.execute(job_runs.insert().values(job=JOB_NAME, started_at=utcnow(), status="running",
                                                         created=0, failed=0, skipped=0)).inserted_primary_key
        return int(inserted[0]) if inserted else 0


def _finish_run(engine: Engine, run_id: int, result: JobResult) -> None:
    with engine.begin() as conn:
        result.left = conn.execute(select(func.count()).select_from(abandoned_calls)
                                   .where(abandoned_calls.c.status == "new")).scalar_one()
        conn.execute(job_runs.update().where(job_runs.c.id == run_id).values(
            finished_at=utcnow(), status="error" if result.error else "ok", created=result.created + result.existing,
            failed=result.failed, skipped=result.skipped, error=result.error))


def _next_calls(engine: Engine, after: str, limit: int) -> list[dict[str, Any]]:
    with reading(engine) as conn:
        rows = conn.execute(select(abandoned_calls).where(abandoned_calls.c.status == "new",
                                                          abandoned_calls.c.id > after)
                            .order_by(abandoned_calls.c.id).limit(limit)).mappings().all()
    return [dict(row) for row in rows]


def qualifies(mode: str, call: Mapping[str, Any]) -> bool:
    """off: never; all: always; with_sms: the caller sent at least one wait-time SMS message."""
    return mode == "all" or (mode == "with_sms" and bool(call.get("sms_messages")))


def _qualifying(engine: Engine, mode: str, calls: list[dict[str, Any]], result: JobResult) -> list[dict[str, Any]]:
    """Mark the calls the mode leaves out as skipped (a later event about the call reopens it)."""
    skipped = [c["id"] for c in calls if not qualifies(mode, c)]
    if skipped:
        reason = "abandoned-call tickets are off" if mode == "off" else "no wait-time SMS messages"
        with engine.begin() as conn:
            result.skipped += conn.execute(abandoned_calls.update().where(
                abandoned_calls.c.id.in_(skipped), abandoned_calls.c.status == "new", *_still_unqualified(mode))
                .values(status="skipped", error=reason)).rowcount
    return [c for c in calls if qualifies(mode, c)]


def _still_unqualified(mode: str) -> tuple[Any, ...]:
    """with_sms: the call still has no message as the skip is written. A message that arrived since the
    call was read leaves it new, for the next run to ticket, instead of skipped behind its event's back."""
    if mode != "with_sms":
        return ()
    return (func.json_array_length(abandoned_calls.c.sms_messages) == 0,)


@dataclass
class _Batch:
    """One batch of qualifying calls through match → lookup → create → record."""

    crm: CRMBackend
    engine: Engine
    region: str
    object_order: tuple[str, ...]
    fetcher: MediaFetcher
    result: JobResult
    keep_lease: Callable[[], None]  # renews the job's lease (downloads can take a while)

    def __post_init__(self) -> None:
        self._done: list[tuple[Mapping[str, Any], str]] = []
        self._failures: list[tuple[str, str]] = []

    def run(self, calls: Sequence[dict[str, Any]]) -> None:
        """Work the batch; what is decided is recorded even when the CRM fails half-way."""
        try:
            self._run(calls)
        finally:
            self._flush()

    def _run(self, calls: Sequence[dict[str, Any]]) -> None:
        subjects = {c["id"]: subject(c["id"], c["caller_number"]) for c in calls}
        existing = self._existing([subjects[c["id"]] for c in calls if c["attempted_at"] is not None])
        todo = []
        for call in calls:
            if subjects[call["id"]] in existing and not _has_media(call) and not call["case_id"]:
                self._record_case(call, existing[subjects[call["id"]]], created=False)
            else:
                todo.append(call)
        if not todo:
            return
        matches, unmatched = self._match(todo)
        for call_id, error in unmatched.items():
            self._record_failure(call_id, error)
        todo = [c for c in todo if c["id"] not in unmatched]
        self._mark_attempted([c["id"] for c in todo if c["attempted_at"] is None])
        # upsert_with_files finds an existing Case itself, updates it and adds missing files: the path for
        # media, and for a Case whose call got messages after it was sent (its row has the Case's id).
        def by_upsert(call: Mapping[str, Any]) -> bool:
            return _has_media(call) or subjects[call["id"]] in existing
        self._create([c for c in todo if not by_upsert(c)], matches)
        for call in todo:
            if by_upsert(call):
                self._upsert_with_media(call, matches.get(call["caller_number"]),
                                        created=subjects[call["id"]] not in existing)

    def _match(self, calls: Sequence[Mapping[str, Any]]) -> tuple[dict[str, MatchResult], dict[str, str]]:
        """Match the callers MATCH_CHUNK numbers at a time (one SOSL request each on Salesforce)."""
        numbers = list(dict.fromkeys(c["caller_number"] for c in calls))
        matches: dict[str, MatchResult] = {}
        bad: dict[str, str] = {}
        for start in range(0, len(numbers), MATCH_CHUNK):
            chunk = numbers[start:start + MATCH_CHUNK]
            try:
                matches.update(self._match_numbers(chunk))
                continue
            except CRMRejected:
                pass  # one number spoils the search: match one by one so only its calls fail
            for number in chunk:
                try:
                    matches.update(self._match_numbers([number]))
                except CRMRejected as exc:
                    bad[number] = f"the CRM rejected the search for the caller's number: {exc}"
        return matches, {c["id"]: bad[c["caller_number"]] for c in calls if c["caller_number"] in bad}

    def _match_numbers(self, numbers: list[str]) -> dict[str, MatchResult]:
        return match_numbers(self.crm, numbers, region=self.region, object_order=self.object_order)

    def _mark_attempted(self, call_ids: list[str]) -> None:
        """Committed before the CRM sees the calls: whatever happens next, the next run looks them up."""
        if call_ids:
            with self.engine.begin() as conn:
                conn.execute(abandoned_calls.update().where(abandoned_calls.c.id.in_(call_ids))
                             .values(attempted_at=utcnow()))

    def _existing(self, subjects: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        if not subjects:
            return found
        for record in self.crm.find("Case", "Subject", subjects):
            found.setdefault(record.fields.get("Subject") or record.name, record.id)
        return found

    def _create(self, calls: Sequence[Mapping[str, Any]], matches: Mapping[str, MatchResult]) -> None:
        if not calls:
            return
        rows = [case_fields(c, matches.get(c["caller_number"])) for c in calls]
        try:
            results = self.crm.create_many("Case", rows)
        except CRMRejected as exc:  # the whole request was refused: every row carries the error
            for call in calls:
                self._record_failure(call["id"], str(exc))
            return
        for call, outcome in zip(calls, results):
            if outcome.id:
                self._record_case(call, outcome.id, created=True)
            elif outcome.retryable:
                self.result.retried.append((call["id"], outcome.error or "try again later"))
            else:
                self._record_failure(call["id"], outcome.error or "rejected by the CRM")

    def _upsert_with_media(self, call: Mapping[str, Any], match: MatchResult | None, *, created: bool) -> None:
        files, notes = fetch_call_media(self.fetcher, call)
        self.keep_lease()
        try:
            outcome = self.crm.upsert_with_files("Case", "Subject", case_fields(call, match, notes), files)
        except CRMRejected as exc:
            self._record_failure(call["id"], str(exc))
            return
        self._record_case(call, outcome.id, created=outcome.created and created)

    def _record_case(self, call: Mapping[str, Any], case_id: str, *, created: bool) -> None:
        self._done.append((call, case_id))
        if created:
            self.result.created += 1
        else:
            self.result.existing += 1

    def _record_failure(self, call_id: str, error: str) -> None:
        self._failures.append((call_id, error))
        self.result.rejected.append((call_id, error))

    def _flush(self) -> None:
        """Write the batch's outcomes in one transaction. A call whose messages grew while its Case was
        sent keeps the Case's id but stays new: the next run writes the new messages into that Case."""
        if not (self._done or self._failures):
            return
        key, case_id, error = (bindparam("key", type_=String), bindparam("new_case_id", type_=String),
                               bindparam("err", type_=Text))
        unchanged = func.json_array_length(abandoned_calls.c.sms_messages) == bindparam("sent", type_=Integer)
        with self.engine.begin() as conn:
            if self._done:
                conn.execute(abandoned_calls.update().where(abandoned_calls.c.id == key)
                             .values(status=case((unchanged, "ticketed"), else_=abandoned_calls.c.status),
                                     case_id=case_id, error=None),
                             [{"key": c["id"], "new_case_id": k, "sent": len(c.get("sms_messages") or [])}
                              for c, k in self._done])
            if self._failures:
                conn.execute(abandoned_calls.update().where(abandoned_calls.c.id == key)
                             .values(status="failed", error=error),
                             [{"key": c, "err": e[:4000]} for c, e in self._failures])
        self._done.clear()
        self._failures.clear()


def _has_media(call: Mapping[str, Any]) -> bool:
    return any(m.get("media") for m in call.get("sms_messages") or [])


def retry_failed_calls(engine: Engine) -> int:
    """Give calls the CRM rejected another chance in the next run (after the admin fixed the cause)."""
    with engine.begin() as conn:
        return conn.execute(abandoned_calls.update().where(abandoned_calls.c.status == "failed")
                            .values(status="new", error=None)).rowcount
