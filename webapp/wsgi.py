"""Production serving: granian (an HTTP server written in Rust) with one or more worker processes.

`crmconnector serve [--workers N] [--threads T]` runs `serve`; a plain granian command line works the same:
`granian --interface wsgi --workers 2 --blocking-threads 128 --host 127.0.0.1 --port 8000 webapp.wsgi:app`.
`webapp.wsgi:app` is an ordinary WSGI app, so other WSGI servers (gunicorn, waitress) work too.

Each worker process builds its own Runtime (pool, outbox worker threads, scheduler), so every worker runs
its share of the outbox. On SIGTERM or Ctrl-C a worker stops accepting, ends the agent consoles' live
streams (the server would otherwise wait for them), finishes its requests, then closes its Runtime, which
puts the outbox items it still holds back to pending.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from functools import partial
from typing import Any, Callable

from crmconnector.settings import Settings

log = logging.getLogger(__name__)
_app: Any = None
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# How long a stopping worker may take to finish its requests and close its Runtime before it is killed
# (the outbox worker waits up to 10 s for its threads; a CRM call may take up to its 30 s timeout).
STOP_TIMEOUT_SECONDS = 45
PARENT_WATCH_SECONDS = 1.0


def stop_with_parent() -> None:
    """Stop this worker process (as SIGTERM does) once the server's main process is gone. A main process
    killed with SIGKILL cannot stop its workers; left running, they would keep the port and their outbox
    threads, and a supervisor that watches only the main process could not start the instance again."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_WATCH_SECONDS)
        log.warning("the server's main process is gone; this worker stops")
        os.kill(os.getpid(), signal.SIGTERM)
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def build_app(settings: Settings | None = None) -> Any:
    """This process's app and Runtime; the Runtime is closed when the process exits."""
    import multiprocessing
    from multiprocessing.util import Finalize

    from crmconnector.runtime import Runtime
    from webapp import create_app
    from webapp.agent import CLOSING

    if multiprocessing.current_process().name == "granian-worker":
        # Ctrl-C sends SIGINT to every process of the terminal's group. A granian (2.8) worker that gets it
        # while its master stops it with SIGTERM may never finish stopping, so the worker leaves SIGINT to
        # the master. Blocked before any thread starts, so that no thread of this process takes it.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        stop_with_parent()
    runtime = Runtime(settings or Settings.from_env())
    app = create_app(runtime=runtime, background=runtime.settings.run_background)
    # Granian's workers are multiprocessing children: they leave without running atexit hooks, but they
    # do run multiprocessing's exit finalizers, which an ordinary interpreter exit (gunicorn) runs too.
    Finalize(None, runtime.close, exitpriority=10)
    closing = app.extensions[CLOSING]

    def end_streams() -> None:
        closing.set()
        runtime.wakeup.notify()  # streams waiting for updates look at `closing` now, not at their next poll
    on_stop_signal(end_streams)
    return app


def on_stop_signal(callback: Callable[[], Any]) -> None:
    """Call `callback` (from a thread) as soon as this process gets SIGTERM or SIGINT, leaving the
    server's own handlers alone: the signal is seen through Python's wakeup file descriptor, and passed on
    to the descriptor that was set before, if any. Only the main thread may set it; elsewhere this does
    nothing (the streams then end when the Runtime closes)."""
    if threading.current_thread() is not threading.main_thread():
        return
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    try:
        previous = signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)
    except ValueError:
        os.close(read_end)
        os.close(write_end)
        return
    stop_numbers = {int(sig) for sig in STOP_SIGNALS}

    def watch() -> None:
        while True:
            data = os.read(read_end, 64)
            if not data:
                return
            if previous >= 0:
                try:
                    os.write(previous, data)
                except OSError:
                    pass
            if stop_numbers.intersection(data):
                callback()

    threading.Thread(target=watch, name="stop-signal", daemon=True).start()


def __getattr__(name: str) -> Any:
    # `webapp.wsgi:app` is built on first use, in the worker process, never at import in the master.
    global _app
    if name == "app":
        if _app is None:
            _app = build_app()
        return _app
    raise AttributeError(name)


def listen_address(host: str, port: int) -> str:
    """The IP address to listen on for `host`; raises OSError when `host:port` is taken or unknown.

    Granian's workers listen with SO_REUSEPORT, so a second server on a port in use would not fail by
    itself: it would silently take a share of the connections. A plain bind tells."""
    family, _, _, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                  flags=socket.AI_PASSIVE)[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)
    return str(address[0])


def serve(settings: Settings, address: str, workers: int, threads: int,
          on_ready: Callable[[], None] = lambda: None, verbose: bool = False) -> None:
    """Run granian on `address` (see `listen_address`) and `settings.port` with `workers` processes of
    `threads` request threads each, until SIGTERM or Ctrl-C; `on_ready` runs once it answers."""
    from granian import Granian
    from granian.constants import Interfaces
    from granian.log import LogLevels
    from sqlalchemy.exc import OperationalError

    from crmconnector.outage import reason
    from crmconnector.store import make_engine, migrate

    engine = make_engine(settings.database_url)
    try:
        migrate(engine)  # once, before the workers start (each would otherwise take the migration lock)
    except OperationalError as exc:
        log.warning("the database is unreachable (%s); workers will answer 503 until it is back", reason(exc))
    finally:
        engine.dispose()

    server = Granian(
        "webapp.wsgi:app", address=address, port=settings.port, interface=Interfaces.WSGI, workers=workers,
        blocking_threads=threads, backpressure=max(threads, 1024 // workers),
        respawn_failed_workers=True, workers_kill_timeout=STOP_TIMEOUT_SECONDS,
        log_level=LogLevels.info if verbose else LogLevels.warning,
        # Granian's messages go through the connector's log handler (redaction, timestamps).
        log_dictconfig={"loggers": {"_granian": {"handlers": [], "propagate": True},
                                    "granian.access": {"handlers": [], "propagate": True}}})
    # Many threads are deliberate (each open agent console holds one), granian's advice against them is not.
    logging.getLogger("_granian").addFilter(lambda record: "Python threads" not in record.getMessage())

    def announce() -> None:
        while len(server.wrks) < server.workers:  # every worker forked before this thread prints
            time.sleep(0.02)
        target = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(address, address)
        while True:
            try:
                socket.create_connection((target, settings.port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        on_ready()

    server.on_startup(lambda: threading.Thread(target=announce, name="announce", daemon=True).start())
    server.serve(target_loader=partial(build_app, settings), wrap_loader=False)
