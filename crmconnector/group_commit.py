"""Group commit: the callbacks' events are written by a writer thread, several per transaction.

A callback's write is a short transaction. Run from many request threads at once, those transactions
queue on the database's write lock and hand the interpreter lock back and forth at every statement,
and their BEGIN and COMMIT (round trips on PostgreSQL) cost as much as the work itself. Here request
threads hand their work to a writer thread, which runs whatever has queued up meanwhile in one
transaction and then answers each caller. Rows that no work of the batch reads back are held and
written at its end, all of a table in one multi-row INSERT (`store.batched_inserts`; on PostgreSQL
they go with the COMMIT in one round trip). When anything in a batch fails, the batch is rolled back
and its work is run again one per transaction, so one bad event never changes another's answer.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections import Counter
from typing import Any, Callable

from sqlalchemy import Connection, Engine

from crmconnector.metrics import INTAKE_BATCH
from crmconnector.store import batched_inserts, take_wakeups

log = logging.getLogger(__name__)
MAX_BATCH = 64

Work = Callable[[Connection], Any]


class Reply:
    """What the writer answers one caller: its result or its error. The caller waits on a lock the writer
    releases: a fraction of the interpreter's work for a Future's condition variable, which took 8 % of a
    busy process's interpreter time, on both sides of the hand-over."""

    __slots__ = ("_answered", "_result", "_error")

    def __init__(self) -> None:
        self._answered = threading.Lock()
        self._answered.acquire()
        self._result: Any = None
        self._error: BaseException | None = None

    def set_result(self, result: Any) -> None:
        self._result = result
        self._answered.release()

    def set_exception(self, error: BaseException) -> None:
        self._error = error
        self._answered.release()

    def wait(self) -> Any:
        """The result, once set, or the error raised."""
        self._answered.acquire()
        if self._error is not None:
            raise self._error
        return self._result


_Job = tuple[Work, Reply]


class WriterClosed(Exception):
    """Work handed over after `close()`: nothing was written."""


class GroupCommitter:
    """Runs work in shared write transactions on its writer threads; `on_commit` gets what each commit
    must wake."""

    def __init__(self, engine: Engine, on_commit: Callable[[Counter[str]], None], max_batch: int = MAX_BATCH,
                 writers: int = 1):
        self.engine = engine
        self.on_commit = on_commit
        self.max_batch = max_batch
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._closed = False
        # One writer: SQLite has one at a time anyway, and on PostgreSQL a second one (sending its batch
        # while the first waited for answers) made the batches smaller, which cost more than it saved.
        self.writers = writers
        self._threads = [threading.Thread(target=self._run, name="intake-writer", daemon=True)
                         for _ in range(self.writers)]
        for thread in self._threads:
            thread.start()

    def run(self, work: Work) -> Any:
        """`work(conn)` inside a write transaction; its result once committed, or what it (or the
        commit) raised. WriterClosed once the process is shutting down."""
        if self._closed:
            raise WriterClosed("the connector is shutting down")
        reply = Reply()
        self._queue.put((work, reply))
        return reply.wait()

    def queued(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        self._closed = True
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=10)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                self._refuse_the_rest()
                return
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(job)
            self._commit(batch)

    def _refuse_the_rest(self) -> None:
        """Work that raced with `close()`: its callers get WriterClosed instead of waiting forever."""
        stops = 0
        while True:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is None:
                stops += 1  # another writer's: given back below
            else:
                job[1].set_exception(WriterClosed("the connector is shutting down"))
        for _ in range(stops):
            self._queue.put(None)

    def _commit(self, batch: list[_Job]) -> None:
        if len(batch) > 1:
            try:
                results, wakeups = self._transaction([work for work, _ in batch])
            except Exception:  # noqa: BLE001 - one of them failed: each alone, so only it gets the error
                log.debug("a batch of %d events failed; applying them one by one", len(batch))
            else:
                INTAKE_BATCH.observe(len(batch))
                for (_, reply), result in zip(batch, results):
                    reply.set_result(result)
                self.on_commit(wakeups)
                return
        for work, reply in batch:
            try:
                results, wakeups = self._transaction([work])
            except BaseException as exc:  # noqa: BLE001 - the caller raises it; this thread goes on
                reply.set_exception(exc)
                continue
            INTAKE_BATCH.observe(1)
            reply.set_result(results[0])
            self.on_commit(wakeups)

    def _transaction(self, works: list[Work]) -> tuple[list[Any], Counter[str]]:
        with self.engine.begin() as conn:
            take_wakeups(conn)  # left over from an earlier use of this pooled connection
            if len(works) == 1:  # alone, its rows are written at once: it sees its own conflicts
                results = [works[0](conn)]
            else:
                with batched_inserts(conn, commit=True):
                    results = [work(conn) for work in works]
            return results, take_wakeups(conn)
