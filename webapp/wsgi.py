"""Production serving with several worker processes (gunicorn).

`crmconnector serve --workers N` runs `serve_workers`; a gunicorn command line works the same:
`gunicorn -k gthread --workers 4 --threads 128 -b 127.0.0.1:8000 'webapp.wsgi:app'`. Each worker process
builds its own Runtime (pool, outbox worker threads, scheduler), so every worker runs its share of the
outbox; on SIGTERM a worker finishes its requests and releases the outbox items it still holds.
"""
from __future__ import annotations

import atexit
import logging
from typing import Any, Callable

from crmconnector.settings import Settings

log = logging.getLogger(__name__)
_app: Any = None


def build_app(settings: Settings | None = None) -> Any:
    """This process's app and Runtime; the Runtime is closed when the process exits."""
    from crmconnector.runtime import Runtime
    from webapp import create_app

    runtime = Runtime(settings or Settings.from_env())
    atexit.register(runtime.close)  # runs on gunicorn's graceful worker exit (SIGTERM / SIGQUIT)
    return create_app(runtime=runtime, background=runtime.settings.run_background)


def __getattr__(name: str) -> Any:
    # `webapp.wsgi:app` is built on first use, in the worker process, never at import in the master.
    global _app
    if name == "app":
        if _app is None:
            _app = build_app()
        return _app
    raise AttributeError(name)


def serve_workers(settings: Settings, workers: int, threads: int,
                  on_ready: Callable[[], None] = lambda: None) -> None:
    """Run gunicorn with `workers` processes of `threads` threads each, until SIGTERM or Ctrl-C;
    `on_ready` runs once it listens."""
    from gunicorn.app.base import BaseApplication  # type: ignore[import-untyped]

    from sqlalchemy.exc import OperationalError

    from crmconnector.store import make_engine, migrate

    engine = make_engine(settings.database_url)
    try:
        migrate(engine)  # once, before the workers start (each would otherwise take the migration lock)
    except OperationalError:
        log.warning("the database is unreachable; workers will answer 503 until it is back")
    finally:
        engine.dispose()

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            options: dict[str, Any] = {
                "bind": f"{settings.host}:{settings.port}", "workers": workers, "threads": threads,
                "worker_class": "gthread", "graceful_timeout": 30, "timeout": 120, "keepalive": 5,
                "proc_name": "crmconnector", "when_ready": lambda _arbiter: on_ready()}
            if "control_socket_disable" in self.cfg.settings:
                options["control_socket_disable"] = True  # several instances may share one machine
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> Any:
            global _app
            _app = build_app(settings)
            return _app

    Server().run()
