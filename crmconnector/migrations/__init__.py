"""Schema migrations (Alembic), run at start so an upgrade keeps an installation's data."""
from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, text

HERE = Path(__file__).parent
_PG_LOCK_KEY = 7_202_611  # advisory lock: one instance migrates at a time


def config(engine: Engine | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine) -> None:
    """Bring the database to the newest revision, one process at a time (several workers or instances
    start together): an advisory lock on PostgreSQL, a lock file beside the database on SQLite."""
    with _sqlite_lock(engine), engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _PG_LOCK_KEY})
            connection.commit()
        try:
            cfg = config(engine)
            cfg.attributes["connection"] = connection
            command.upgrade(cfg, "head")
            connection.commit()
        finally:
            if engine.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _PG_LOCK_KEY})
                connection.commit()


@contextmanager
def _sqlite_lock(engine: Engine) -> Iterator[None]:
    """Hold `<database>.migrate-lock` (SQLite files only): a second process waits, then finds the schema
    current, instead of meeting the first one's DDL as a locked database."""
    from crmconnector.store import sqlite_file, sqlite_folder

    database = sqlite_file(engine.url)
    if database is None:
        yield
        return

    sqlite_folder(database)  # the lock file goes there before any connection has made it
    with open(f"{database}.migrate-lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
