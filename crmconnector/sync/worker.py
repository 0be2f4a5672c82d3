"""The outbox worker: claims due items, renders from current state, writes to the CRM.

An item is claimed with a lease (`claimed_by` = a token unique to the claim, `claimed_until`) in one
short write transaction, processed outside any transaction, and finished only by the holder of that
token. A worker that dies leaves its lease to expire; the next claim takes the item again. No item is
claimed while another item of the same kind and key is held, so one chat is never written by two
threads or processes at once. A CRM error on one item only reschedules that item.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping, Sequence

from sqlalchemy import Connection, Engine, and_, bindparam, exists, func, literal, or_, select
from sqlalchemy.exc import SQLAlchemyError

from crmconnector.crm.base import CRMBackend
from crmconnector.group_commit import WriterClosed
from crmconnector.metrics import OUTBOX_DONE
from crmconnector.outage import Backoff, is_unreachable, outage_of, reason
from crmconnector.settings import Settings
from crmconnector.driver_sql import DriverStatement, in_numbered, numbered
from crmconnector.store import outbox, reading, run_or_hold, utcnow
from crmconnector.sync.chatlog import MediaFetcher
from crmconnector.sync.claimline import ClaimLine
from crmconnector.sync.outbox import blocks_chat_log, set_crm_status
from crmconnector.sync.retry import DEFAULT_POLICY, RetryPolicy

if TYPE_CHECKING:
    from crmconnector.runtime import Runtime

log = logging.getLogger(__name__)
LEASE_SECONDS = 300.0
POLL_SECONDS = 1.0
PASS_LIMIT = 20  # items one thread processes before it looks again like an idle thread
DEFAULT_THREADS = 16  # CRM calls mostly wait on the network: 16 threads drain ~70 chats/s at 100 ms
# A CRM in the connector's own database answers at once: a few threads, each taking several items per
# claim and processing them together (one read and one record for all), cost less than one per item.
LOCAL_THREADS = 4
LOCAL_BATCH = 8


@dataclass(frozen=True)
class Item:
    id: int
    kind: str
    key: str
    attempts: int
    token: str


class Done(Exception):
    """Raised by a handler that finished its item itself (inside its own final transaction)."""


# A handler does the item's work; it may finish the item in its own transaction via `finish_done`.
Handler = Callable[["Worker", Item], None]
# A batch handler does the work of several items (of one kind, different keys) and settles each: it
# finishes it, or hands its failure to `Worker.failed`.
BatchHandler = Callable[["Worker", Sequence[Item]], None]


# The claim's statements, built once with `now` as a parameter (building them per claim cost more
# than running them). Due: pending and due, or held under a lease that has expired.
_NOW = bindparam("now", type_=outbox.c.due_at.type)
_DUE = or_(and_(outbox.c.status == "pending", outbox.c.due_at <= _NOW),
           and_(outbox.c.status == "running", outbox.c.claimed_until < _NOW))
_OTHER = outbox.alias("other")
_HELD_ELSEWHERE = exists().where(_OTHER.c.kind == outbox.c.kind, _OTHER.c.key == outbox.c.key,
                                 _OTHER.c.id != outbox.c.id, _OTHER.c.status == "running",
                                 _OTHER.c.claimed_until >= _NOW)
_ANY_DUE = select(outbox.c.id).where(_DUE).limit(1)
_CANDIDATES = (select(outbox.c.id, outbox.c.kind, outbox.c.key, outbox.c.attempts)
               .where(_DUE, ~_HELD_ELSEWHERE).order_by(outbox.c.due_at, outbox.c.id))
# The claim's statements run on the driver's cursor (`DriverStatement`): through SQLAlchemy's execution
# (its cache key for statements this size, the expanding IN) a claim cost more CPU than its round trips.
@functools.cache
def _take(count: int) -> DriverStatement:
    """Take `count` chosen items (bound with `numbered("item", …)`), checked again in the UPDATE: on
    PostgreSQL it sees what committed since the SELECT. One statement for every item of the claim."""
    chosen = in_numbered(outbox.c.id, "item", count)
    return DriverStatement(outbox.update().where(chosen, _DUE, ~_HELD_ELSEWHERE).values(
        status="running", claimed_by=bindparam("token"), claimed_until=bindparam("until"),
        attempts=outbox.c.attempts + 1, updated_at=_NOW).returning(outbox.c.id, outbox.c.attempts))


@functools.cache
def _candidates_for(postgres: bool, limit: int) -> DriverStatement:
    if postgres:
        # Lock only as many rows as we may take, so other instances can claim the rest meanwhile, and
        # try each one's (kind, key) advisory lock in the same round trip (`_key_locked`).
        rows = _CANDIDATES.add_columns(outbox.c.due_at).limit(limit).with_for_update(
            skip_locked=True, of=outbox).subquery()
        return DriverStatement(select(rows.c.id, rows.c.kind, rows.c.key, rows.c.attempts,
                                      _key_locked(rows.c.kind, rows.c.key)).order_by(rows.c.due_at, rows.c.id))
    return DriverStatement(_CANDIDATES.limit(limit * 4))


def _key_locked(kind: Any, key: Any) -> Any:
    """A transaction-scoped advisory lock on (kind, key), tried for each candidate the sub-select
    returned: two instances claiming different rows of one chat at the same moment cannot both pass
    the held-elsewhere check. Taken before the UPDATE, whose own snapshot then sees what the lock's
    previous holder committed."""
    name = literal("outbox:") + kind + literal(":") + key
    return func.pg_try_advisory_xact_lock(func.hashtextextended(name, 0)).label("locked")


def claim_due(conn: Connection, token: str, now: datetime, lease_until: datetime, limit: int = 1) -> list[Item]:
    """Claim up to `limit` due items for `token`: pending and due, or held under an expired lease.

    On PostgreSQL the candidate rows are locked with FOR UPDATE SKIP LOCKED so that instances never
    wait on each other; on SQLite the caller's BEGIN IMMEDIATE already serializes claims.
    """
    postgres = conn.dialect.name == "postgresql"
    chosen: dict[int, tuple[str, str]] = {}  # candidate id -> (kind, key), in the order they are due
    for row in _candidates_for(postgres, limit).all(conn, {"now": now}):
        if len(chosen) >= limit or (row["kind"], row["key"]) in chosen.values():
            continue
        if postgres and not row["locked"]:
            continue  # another instance is claiming this chat's item right now
        chosen[row["id"]] = (row["kind"], row["key"])
    if not chosen:
        return []
    taken: dict[int, int] = {row["id"]: row["attempts"] for row in _take(len(chosen)).all(
        conn, {**numbered("item", chosen), "now": now, "token": token, "until": lease_until})}
    return [Item(item_id, kind, key, taken[item_id], token) for item_id, (kind, key) in chosen.items()
            if item_id in taken]


# Only the claim's holder changes its item; SETs what the parameters name. On the driver's cursor: a
# finish may travel in a group-commit batch's final query string.
_HELD_BY = DriverStatement(outbox.update().where(
    outbox.c.id == bindparam("item"), outbox.c.claimed_by == bindparam("token"), outbox.c.status == "running"))


def _letting_go(item: Item, **values: Any) -> dict[str, Any]:
    """`_HELD_BY`'s parameters that release the item with these column values."""
    return {"item": item.id, "token": item.token, "claimed_by": None, "claimed_until": None, "updated_at": utcnow(),
            **values}


def release(conn: Connection, item: Item, **values: Any) -> bool:
    """Let go of the item with these column values, in the caller's transaction, only if this claim
    still holds it; True when it did."""
    return bool(_HELD_BY.run(conn, _letting_go(item, **values)))


def renew(conn: Connection, item: Item, until: datetime) -> bool:
    """Extend the item's lease to `until`, in the caller's transaction, only if this claim still
    holds it; True when it did."""
    return bool(_HELD_BY.run(conn, {"item": item.id, "token": item.token, "claimed_until": until}))


def finish_done(conn: Connection, item: Item, note: str | None = None) -> None:
    """Mark the item done, in the caller's transaction (only if this claim still holds it). In a
    group-commit batch at its end: nothing reads it back meanwhile, except a claim of another item of the
    same chat in the same batch, which then leaves that item to the next poll."""
    run_or_hold(conn, _HELD_BY, _letting_go(item, status="done", last_error=note))


class LeaseKeeper:
    """Renews the leases of the items a worker is processing, every third of the lease. A handler may
    take longer than the lease (large media to a slow CRM); without this, another worker would take the
    item over meanwhile and post its files a second time. The thread runs only while items are held."""

    def __init__(self, worker: "Worker"):
        self.worker = worker
        self._held: dict[int, Item] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @contextmanager
    def keeping(self, *items: Item) -> Iterator[None]:
        with self._lock:
            self._held.update((item.id, item) for item in items)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"{self.worker.name}-leases", daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                for item in items:
                    self._held.pop(item.id, None)

    def _run(self) -> None:
        worker = self.worker
        while not worker._stop.wait(worker.lease_seconds / 3):
            with self._lock:
                items = list(self._held.values())
                if not items:
                    self._thread = None
                    return
            until = worker.clock() + timedelta(seconds=worker.lease_seconds)
            try:
                worker.write(lambda conn: [renew(conn, item, until) for item in items])
            except Exception as exc:  # noqa: BLE001 - e.g. the database is away: the next round tries again
                worker.outage.failed(exc, "outbox lease renewal")
            else:
                worker.outage.ok()
        with self._lock:
            self._thread = None


class Worker:
    """Processes outbox items; `run_once()` drains what is due now, `start()` runs threads."""

    def __init__(self, engine: Engine, crm: CRMBackend, settings: Settings, *,
                 name: str | None = None, policy: RetryPolicy = DEFAULT_POLICY,
                 lease_seconds: float = LEASE_SECONDS, clock: Callable[[], datetime] = utcnow,
                 fetch_media: MediaFetcher | None = None, notify: Callable[[], None] | None = None,
                 wait: Callable[[float], bool] | None = None, wake: Callable[[], None] | None = None,
                 write: Callable[[Callable[[Connection], Any]], Any] | None = None, batch: int | None = None,
                 absorb: Callable[[int], None] | None = None):
        from crmconnector.sync import handlers

        self.engine, self.crm, self.settings = engine, crm, settings
        self.name = name or f"worker-{uuid.uuid4().hex[:8]}"
        self.policy, self.lease_seconds, self.clock = policy, lease_seconds, clock
        self.fetch_media = fetch_media if fetch_media is not None else handlers.default_fetcher(settings)
        self.notify = notify or (lambda: None)
        self.handlers: Mapping[str, Handler] = handlers.HANDLERS
        self.batch_handlers: Mapping[str, BatchHandler] = handlers.BATCH_HANDLERS
        # Items one thread claims and processes together: one, unless the CRM answers without the network.
        self.remote = getattr(crm, "remote", True)
        self.batch = batch if batch is not None else (1 if self.remote else LOCAL_BATCH)
        self._stop = threading.Event()
        self._wait = wait  # blocks an idle thread until work may be due (or the timeout)
        self._wake = wake or self.notify  # ends one thread's wait
        self._absorb = absorb or (lambda count: None)  # drops wakes that a batch's claim served
        self._threads: list[threading.Thread] = []
        self._probe = threading.Lock()
        # Runs a write transaction: in the server, the intake's group committer, so that claims and
        # finishes share the callbacks' transactions instead of queuing for the write lock on their own.
        self._write = write
        self._leases = LeaseKeeper(self)
        self.outage = outage_of(engine)  # one log line per database outage, shared with the other loops
        # After a failed pass every thread pauses until `_retry_at` (monotonic), so while the database is
        # away the worker tries about once per backoff period, not once per thread and second.
        self._backoff = Backoff()
        self._retry_at = 0.0
        self._line: ClaimLine[Item] = ClaimLine()
        self._batches: ClaimLine[list[Item]] = ClaimLine()

    def write(self, work: Callable[[Connection], Any]) -> Any:
        """`work(conn)` in a write transaction (possibly shared with other work); its result once
        committed. `work` may run again after a rollback, so it only touches the database."""
        if self._write is not None:
            return self._write(work)
        with self.engine.begin() as conn:
            return work(conn)

    @classmethod
    def for_runtime(cls, runtime: "Runtime", **options: Any) -> "Worker":
        return cls(runtime.engine, runtime.crm, runtime.settings, notify=runtime.wakeup.notify,
                   wait=runtime.outbox_signal.wait, wake=runtime.outbox_signal.notify,
                   absorb=runtime.outbox_signal.absorb,
                   write=runtime.intake.writer.run, **options)

    # -- one pass --------------------------------------------------------------------------------

    def claim(self, limit: int = 1, look_first: bool = True) -> list[Item]:
        now = self.clock()
        token = f"{self.name}:{uuid.uuid4().hex[:12]}"
        if look_first:  # a read first, which takes no write lock: most looks after a drain find nothing
            with reading(self.engine) as conn:
                if not conn.execute(_ANY_DUE, {"now": now}).first():
                    self._reached()
                    return []
        lease_until = now + timedelta(seconds=self.lease_seconds)
        items: list[Item] = self.write(lambda conn: claim_due(conn, token, now, lease_until, limit))
        self._reached()
        return items

    def _reached(self) -> None:
        """The database answered: end the backoff (only here: a pass may end without asking it)."""
        self.outage.ok()
        if self._backoff.failures:
            self._backoff.reset()

    def run_once(self, limit: int | None = None, expect_work: bool = False) -> int:
        """Process due items until none is due (or `limit`); return how many were processed.
        `expect_work`: woken for a new item, so the first claim skips the look that it would repeat."""
        processed = 0
        while limit is None or processed < limit:
            if self._stop.is_set():
                break
            look_first = not expect_work or processed > 0
            if self.batch > 1:
                wanted = self.batch if limit is None else min(self.batch, limit - processed)
                # In line too: threads woken while this one claims are sent away by its claim (which saw
                # what they were woken for) instead of each claiming nothing after it.
                items = self._batches.next(lambda _: [found] if (found := self.claim(wanted, look_first)) else []) or []
                self._absorb(len(items) - 1)  # the new items among them each woke a thread too
                self.process_many(items)
                if len(items) < wanted:  # it saw every item due: nothing is left for a next claim
                    processed += len(items)
                    break
            else:
                item = self._line.next(lambda wanted: self.claim(wanted, look_first))
                items = [item] if item is not None else []
                if item is not None:
                    self.process(item)
            if not items:
                break
            processed += len(items)
        return processed

    def process_many(self, items: Sequence[Item]) -> None:
        """Process one claim's items: those of a kind with a batch handler together, the others one by one."""
        by_kind: dict[str, list[Item]] = {}
        for item in items:
            by_kind.setdefault(item.kind, []).append(item)
        for kind, group in by_kind.items():
            handler = self.batch_handlers.get(kind)
            if handler is None or len(group) == 1:
                for item in group:
                    self.process(item)
                continue
            try:
                with self._leases.keeping(*group):
                    handler(self, group)
            except Exception as exc:  # noqa: BLE001 - the handler settles each item; this is a failure of all
                for item in group:
                    self.failed(item, exc)

    def process(self, item: Item) -> None:
        handler = self.handlers.get(item.kind)
        try:
            if handler is None:
                raise LookupError(f"no handler for outbox kind {item.kind!r}")
            with self._leases.keeping(item):
                handler(self, item)
        except Done:
            OUTBOX_DONE.labels(item.kind, "done").inc()
        except Exception as exc:  # noqa: BLE001 - every failure is recorded on its own item
            self.failed(item, exc)
        else:
            self.write(lambda conn: finish_done(conn, item))
            OUTBOX_DONE.labels(item.kind, "done").inc()

    def failed(self, item: Item, exc: Exception) -> None:
        """Record the item's failure: reschedule it, or mark it failed for good (the policy decides)."""
        if isinstance(exc, WriterClosed):  # not a failure: `stop` gives the item back for the next start
            log.info("outbox item %s (%s) is given back: the connector is shutting down", item.id, item.kind)
            return
        message = str(exc) or type(exc).__name__
        from crmconnector.crm.errors import CRMError

        if not isinstance(exc, CRMError):
            log.error("outbox item %s (%s) failed unexpectedly", item.id, item.kind, exc_info=exc)
            message = f"{type(exc).__name__}: {message}"
        final = self.policy.is_final(exc)
        if final:
            values: dict[str, Any] = {"status": "failed"}
        else:
            due = self.clock() + timedelta(seconds=self.policy.delay(item.attempts, exc))
            values = {"status": "pending", "due_at": due}

        def record(conn: Connection) -> None:
            if release(conn, item, last_error=message[:4000], **values) and final and blocks_chat_log(
                    conn, item.kind, item.key):
                set_crm_status(conn, item.key, "failed", error=message[:4000])
        self.write(record)
        OUTBOX_DONE.labels(item.kind, "failed" if final else "retry").inc()
        if final:
            self.notify()
        log.warning("outbox item %s (%s) %s: %s", item.id, item.kind,
                    "failed" if final else "will be retried", message[:200])

    # -- threads ---------------------------------------------------------------------------------

    def start(self, threads: int | None = None) -> None:
        if threads is None:
            threads = DEFAULT_THREADS if self.remote else LOCAL_THREADS
        for n in range(threads):
            thread = threading.Thread(target=self._loop, name=f"{self.name}-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _loop(self) -> None:
        # A thread woken for a new item claims at once. One item per thread: it processes that one, since
        # each new item wakes a thread of its own (`WorkSignal` keeps the wakes of a busy moment), so
        # looking for more after it would only cost a read per item. Several per thread (`batch`): it
        # claims until a claim comes back short. A thread that timed out polls, and drains what it finds.
        woken = False
        while not self._stop.is_set():
            pause = self._retry_at - time.monotonic()
            if pause > 0:  # a pass failed (the database is away): wake-ups cannot help meanwhile
                self._stop.wait(pause)
                continue
            try:
                if woken:
                    busy = self.run_once(limit=1 if self.batch == 1 else None, expect_work=True)
                else:
                    busy = self.run_once(limit=PASS_LIMIT) if self._worth_claiming() else 0
            except WriterClosed:  # the connector is shutting down: `stop` gives back what this thread held
                return
            except Exception as exc:  # noqa: BLE001 - e.g. the database is away for a moment
                self.outage.failed(exc, "outbox worker")
                self._retry_at = time.monotonic() + self._backoff.next()
                woken = False
                continue
            woken = False
            if busy < PASS_LIMIT and not self._stop.is_set():  # a shorter pass ended with nothing due
                woken = bool((self._wait or self._stop.wait)(POLL_SECONDS))

    def _worth_claiming(self) -> bool:
        """Idle threads poll once a second: one thread at a time looks with a read (no write lock on
        SQLite) before anyone takes the claim's write transaction."""
        if not self._probe.acquire(blocking=False):
            return False
        try:
            now = self.clock()
            with reading(self.engine) as conn:
                due = conn.execute(_ANY_DUE, {"now": now}).first() is not None
            self._reached()
            return due
        finally:
            self._probe.release()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the threads; items they still hold go back to pending for the next worker."""
        self._stop.set()
        for _ in self._threads:
            self._wake()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        try:
            with self.engine.begin() as conn:
                conn.execute(outbox.update().where(outbox.c.status == "running",
                                                   outbox.c.claimed_by.like(f"{self.name}:%")).values(
                    status="pending", claimed_by=None, claimed_until=None, updated_at=utcnow()))
        except SQLAlchemyError as exc:
            if not is_unreachable(exc):
                raise
            log.warning("the outbox items this process held are taken up again when their leases expire "
                        "(the database is unreachable: %s)", reason(exc))


# -- admin views -----------------------------------------------------------------------------------

def outbox_counts(engine: Engine) -> dict[str, int]:
    with reading(engine) as conn:
        counts = dict(conn.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status)).all())
    return {"pending": counts.get("pending", 0) + counts.get("running", 0), "failed": counts.get("failed", 0),
            "done": counts.get("done", 0)}


def list_items(engine: Engine, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    stmt = select(outbox).order_by(outbox.c.updated_at.desc(), outbox.c.id.desc()).limit(limit)
    if status:
        stmt = stmt.where(outbox.c.status == status)
    with reading(engine) as conn:
        rows = conn.execute(stmt).mappings().all()
    return [{"id": r["id"], "kind": r["kind"], "key": r["key"], "status": r["status"], "attempts": r["attempts"],
             "due_at": r["due_at"].isoformat() if r["due_at"] else None, "last_error": r["last_error"],
             "updated_at": r["updated_at"].isoformat() if r["updated_at"] else None} for r in rows]


def _requeue(conn: Connection, condition: Any) -> int:
    keys = conn.execute(select(outbox.c.kind, outbox.c.key).where(condition)).all()
    now = utcnow()
    result = conn.execute(outbox.update().where(condition).values(
        status="pending", due_at=now, attempts=0, claimed_by=None, claimed_until=None, updated_at=now))
    for kind, key in keys:
        if blocks_chat_log(conn, kind, key):
            set_crm_status(conn, key, "pending")
    return result.rowcount


def retry_failed(engine: Engine) -> int:
    """Re-queue every failed item now (the admin fixed what the CRM refused)."""
    with engine.begin() as conn:
        return _requeue(conn, outbox.c.status == "failed")


def retry_item(engine: Engine, item_id: int) -> bool | None:
    """Re-queue one failed item: True if re-queued, False if it is not failed, None if it does not exist."""
    if not 0 < item_id < 2 ** 63:  # no row has such an id, and SQLite cannot even be asked (OverflowError)
        return None
    with engine.begin() as conn:
        status = conn.execute(select(outbox.c.status).where(outbox.c.id == item_id)).scalar()
        if status is None:
            return None
        if status != "failed":
            return False
        return _requeue(conn, and_(outbox.c.id == item_id, outbox.c.status == "failed")) == 1
