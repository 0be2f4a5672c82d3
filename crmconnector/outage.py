"""Database outages as background loops see them: told once, waited out, and told when they end.

Every loop of a process (outbox threads, lease renewals, the scheduler, console wake-ups, the schema
retry) reports to the one `Outage` of its engine. While the database is away the loops fail many times a
second; the log gets one line when the outage starts, a reminder every few minutes and one line when it
ends, and each loop waits a little longer after each failure (`Backoff`), so the connector neither floods
its log nor hammers a database that is coming back.
"""
from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Callable

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

log = logging.getLogger("crmconnector.database")
REMIND_SECONDS = 300.0
FIRST_DELAY = 0.5
MAX_DELAY = 5.0


def is_unreachable(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot be reached (as opposed to a bug or bad data). Connections
    taken outside the pool's statement path raise the driver's own PEP 249 classes, unwrapped."""
    if isinstance(exc, (OperationalError, InterfaceError)):
        return True
    if isinstance(exc, DBAPIError):
        return exc.connection_invalidated
    return any(cls.__name__ in _DRIVER_CLASSES for cls in type(exc).__mro__)


_DRIVER_CLASSES = ("OperationalError", "InterfaceError")


def reason(exc: BaseException) -> str:
    """The driver's own message, first line only (SQLAlchemy's wrapping repeats the SQL and a link)."""
    cause = getattr(exc, "orig", None) or exc
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0][:300]}" if lines else type(cause).__name__


class Outage:
    """The database's state as this process's loops saw it last; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, remind_seconds: float = REMIND_SECONDS):
        self.clock, self.remind_seconds = clock, remind_seconds
        self._lock = threading.Lock()
        self.down_since: float | None = None
        self._reminded = 0.0
        self._unexpected: dict[tuple[str, str], float] = {}  # (what, error type) -> when last logged

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def failed(self, exc: BaseException, what: str) -> None:
        """`what` (e.g. "outbox worker") failed with `exc`. A lost database is logged in one line when the
        outage starts and as a reminder now and then; any other error with its traceback, once per
        reminder period for the same kind, since a loop repeats it."""
        now = self.clock()
        with self._lock:
            if not is_unreachable(exc):
                key = (what, type(exc).__name__)
                last = self._unexpected.get(key)
                if last is not None and now - last < self.remind_seconds:
                    return
                self._unexpected[key] = now
                unexpected = True
            elif self.down_since is None:
                self.down_since = self._reminded = now
                unexpected = False
                log.warning("the database is unreachable (%s); retrying in the background until it is back "
                            "(noticed by: %s)", reason(exc), what)
                return
            elif now - self._reminded >= self.remind_seconds:
                self._reminded = now
                log.warning("the database is still unreachable after %.0f s (%s)", now - self.down_since, reason(exc))
                return
            else:
                return
        if unexpected:
            log.error("%s failed (repeats of this error are logged at most every %.0f s)", what,
                      self.remind_seconds, exc_info=exc)

    def ok(self) -> None:
        """A loop reached the database: if it was away, say once that it is back."""
        if self.down_since is None:
            return
        with self._lock:
            if self.down_since is None:
                return
            away, self.down_since = self.clock() - self.down_since, None
        log.info("the database is reachable again (it was away for %.0f s)", away)


_OUTAGES: "weakref.WeakKeyDictionary[Engine, Outage]" = weakref.WeakKeyDictionary()
_OUTAGES_LOCK = threading.Lock()


def outage_of(engine: Engine) -> Outage:
    """The one `Outage` of this engine, shared by every loop that uses it."""
    with _OUTAGES_LOCK:
        outage = _OUTAGES.get(engine)
        if outage is None:
            outage = _OUTAGES[engine] = Outage()
        return outage


class Backoff:
    """How long one loop waits after its consecutive failures: doubling from FIRST_DELAY to MAX_DELAY,
    short enough that service resumes within a few seconds of the database's return."""

    def __init__(self, first: float = FIRST_DELAY, most: float = MAX_DELAY):
        self.first, self.most = first, most
        self.failures = 0

    def next(self) -> float:
        self.failures += 1
        return min(self.most, self.first * 2 ** (self.failures - 1))

    def reset(self) -> None:
        self.failures = 0
