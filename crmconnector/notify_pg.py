"""Wake-ups for agents' streams, coalesced, and across instances through PostgreSQL LISTEN/NOTIFY.

Same interface as `notify.Wakeup`. A listener waiting in one process (an agent's stream on instance A)
is woken when another process (instance B, which took the `chat.assigned`) commits a console event.
`notify()` wakes local listeners (within 10 ms) and asks a sender thread to NOTIFY the channel; bursts of
notifies collapse into one NOTIFY (at most one per 25 ms), and a process ignores its own. Listeners
always re-read the database, so a lost connection only delays updates until their next timeout; after a
reconnect every listener is woken once to catch up.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from sqlalchemy import Engine

from crmconnector.notify import Wakeup
from crmconnector.outage import Backoff, outage_of

log = logging.getLogger(__name__)
CHANNEL = "crmconnector_console"
COALESCE_SECONDS = 0.01
# A NOTIFY is a round trip for this instance and a wake-up for every other one: under load one per 25 ms
# (0.06 per event at 700 events/s instead of 0.15) adds at most 25 ms to a pop on another instance.
NOTIFY_SECONDS = 0.025
POLL_SECONDS = 0.25  # how often the listener looks up from the socket to see whether it is closed


class CoalescingWakeup:
    """In-process wake-ups, at most one round per `window` seconds.

    Many callbacks notify, and every open console stream waits: waking them all from the request thread
    cost more CPU than the event itself. Here a callback only sets a flag; a
    waker thread wakes the listeners once for all callbacks of the last few milliseconds.
    """

    def __init__(self, window: float = COALESCE_SECONDS):
        self.window = window
        self._inner = Wakeup()
        self._flag = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="wakeup", daemon=True)
        self._thread.start()

    def notify(self) -> None:
        self._flag.set()

    def wait(self, timeout: float) -> bool:
        return self._inner.wait(timeout)

    def close(self) -> None:
        self._closed = True
        self._flag.set()
        self._thread.join(timeout=5)
        self._inner.close()

    def _run(self) -> None:
        while True:
            self._flag.wait()
            if self._closed:
                return
            self._flag.clear()
            self._inner.notify()
            time.sleep(self.window)  # what arrives meanwhile is woken in the next round


class RelayedWakeup:
    """The Wakeup interface for wake-ups that also travel to other processes: local listeners are woken
    at once (coalesced), and a sender thread tells the others while a listener thread hears them. A
    subclass provides `_listen_loop` and `_send_loop`, both ending once `_closed` is set."""

    def __init__(self, name: str) -> None:
        self._local = CoalescingWakeup()
        self._closed = threading.Event()
        self._pending = threading.Event()  # set by notify: the sender has something to tell
        self._listener = threading.Thread(target=self._listen_loop, name=f"{name}-listen", daemon=True)
        self._sender = threading.Thread(target=self._send_loop, name=f"{name}-send", daemon=True)
        self._listener.start()
        self._sender.start()

    def notify(self) -> None:
        """Call after the transaction that wrote console events has committed."""
        self._local.notify()
        self._pending.set()

    def wait(self, timeout: float) -> bool:
        return self._local.wait(timeout)

    def close(self) -> None:
        self._closed.set()
        self._pending.set()
        self._listener.join(timeout=5)
        self._sender.join(timeout=5)
        self._local.close()

    def _listen_loop(self) -> None:
        raise NotImplementedError

    def _send_loop(self) -> None:
        raise NotImplementedError


class PgWakeup(RelayedWakeup):
    """Listens on CHANNEL with a connection of its own and sends NOTIFY after commits."""

    def __init__(self, engine: Engine, channel: str = CHANNEL):
        self.engine = engine
        self.channel = channel
        self.origin = uuid.uuid4().hex
        self._listening = threading.Event()
        self.listens = 0  # how many times LISTEN was (re-)established
        super().__init__("pg")

    def listening(self, timeout: float) -> bool:
        """Whether LISTEN is in place (for tests and readiness)."""
        return self._listening.wait(timeout)

    # -- threads ---------------------------------------------------------------------------------

    def _connect(self) -> Any:
        """A psycopg connection of our own, outside the pool, in autocommit mode."""
        pooled = self.engine.raw_connection()
        conn: Any = pooled.dbapi_connection
        pooled.detach()
        conn.autocommit = True
        return conn

    def _listen_loop(self) -> None:
        outage, backoff = outage_of(self.engine), Backoff()
        while not self._closed.is_set():
            conn = None
            try:
                conn = self._connect()
                conn.execute(f'LISTEN "{self.channel}"')
                outage.ok()
                backoff.reset()
                self.listens += 1
                self._listening.set()
                self._local.notify()  # catch up on whatever happened while we were not listening
                while not self._closed.is_set():
                    for note in conn.notifies(timeout=POLL_SECONDS):
                        if note.payload != self.origin:
                            self._local.notify()
            except Exception as exc:  # noqa: BLE001 - keep listening through outages
                self._listening.clear()
                if not self._closed.is_set():
                    outage.failed(exc, "console wake-ups (LISTEN)")
                    self._closed.wait(backoff.next())
            finally:
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001
                        pass

    def _send_loop(self) -> None:
        outage, backoff = outage_of(self.engine), Backoff()
        conn = None
        while True:
            self._pending.wait()
            if self._closed.is_set():
                break
            self._pending.clear()
            try:
                if conn is None or conn.closed:
                    conn = self._connect()
                conn.execute("SELECT pg_notify(%s, %s)", (self.channel, self.origin))
                outage.ok()
                backoff.reset()
                # What commits meanwhile goes out in the next NOTIFY: every instance receives each one,
                # so one per event would cost every instance far more than the event itself.
                self._closed.wait(NOTIFY_SECONDS)
            except Exception as exc:  # noqa: BLE001 - a lost NOTIFY only delays other instances
                outage.failed(exc, "console wake-ups (NOTIFY)")
                if conn is not None:
                    try:
                        conn.close()
                    except Exception:  # noqa: BLE001
                        pass
                conn = None
                self._closed.wait(backoff.next())
                self._pending.set()  # try again on a new connection
        if conn is not None:
            conn.close()


def make_wakeup(engine: Engine) -> Any:
    """The wake-up fitting the database: LISTEN/NOTIFY on PostgreSQL; on a SQLite file, sockets beside it
    for the other processes on that file; in-process for a database in memory."""
    if engine.dialect.name == "postgresql":
        return PgWakeup(engine)
    from crmconnector.store import sqlite_file

    database = sqlite_file(engine.url)
    if database is not None:
        from crmconnector.notify_local import SocketWakeup, wakeup_folder

        folder = wakeup_folder(database)
        try:
            return SocketWakeup(folder)
        except OSError as exc:  # streams of this process still wake; others' at their next poll
            log.warning("console wake-ups cannot reach other processes on this database: %s is unusable (%s)",
                        folder, exc.strerror or exc)
    return CoalescingWakeup()
