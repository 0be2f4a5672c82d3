"""The connector's own state: SQLAlchemy Core tables on SQLite or PostgreSQL.

One schema serves both; `migrate()` brings a database to the current schema with Alembic, so an
upgrade keeps an installation's data.
"""
from __future__ import annotations

import fcntl
import functools
import os
import sqlite3
import threading
from collections import Counter
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from sqlalchemy import (JSON, Boolean, Column, Connection, DateTime, Engine, ForeignKey, Index, Integer, LargeBinary,
                        MetaData, String, Table, Text, bindparam, create_engine, event)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.types import TypeDecorator

from crmconnector.driver_sql import DriverStatement, run_script

metadata = MetaData()


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class UTC(TypeDecorator[datetime]):
    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


# Every callback event we accepted: idempotency (id + body hash) and the response to replay.
events = Table(
    "events", metadata,
    Column("id", String(200), primary_key=True),
    Column("body_hash", String(64), nullable=False),
    Column("type", String(64), nullable=False),
    Column("chat_id", String(200), index=True),
    Column("call_id", String(200), index=True),
    Column("payload", JSON, nullable=False),
    Column("response_status", Integer, nullable=False),
    Column("response_body", JSON, nullable=False),
    Column("received_at", UTC, nullable=False, default=utcnow),
)

# One row per SMS chat: its current state, from which the CRM's chat log is rendered.
chats = Table(
    "chats", metadata,
    Column("id", String(200), primary_key=True),
    Column("started", Boolean, nullable=False, default=False),
    Column("direction", String(16)),
    Column("consumer_number", String(32), index=True),
    Column("business_number", String(32)),
    Column("queue_id", String(200)),
    Column("queue_name", String(255)),
    Column("lang", String(32)),
    Column("created_at", UTC),
    Column("match_outcome", String(16)),
    Column("match_records", JSON),  # [{"object", "id", "name", "phone", "url"}], ordered
    Column("screen_pop", JSON),
    Column("linked_object", String(32)),
    Column("linked_id", String(18), index=True),  # a record's chats, for its latest opt-out keyword
    # The linked Contact's AccountId when it was linked (the Task's WhatId), so posting needs no read.
    Column("linked_account_id", String(18)),
    Column("agent_id", String(200), index=True),  # the agent assigned now (console visibility)
    Column("agent_email", String(320), index=True),
    Column("agent_name", String(255)),
    Column("assigned_at", UTC),  # first acceptance
    Column("ended_at", UTC),
    Column("disconnected_by", String(16)),
    Column("disposition", String(255)),
    Column("end_reported_at", UTC),  # the occurred_at of the chat.ended report kept: a later report of one end wins
    Column("task_id", String(18)),
    Column("crm_status", String(16)),  # None, pending, posted, failed
    Column("crm_error", Text),
    Column("updated_at", UTC, nullable=False, default=utcnow, onupdate=utcnow),
)

chat_messages = Table(
    "chat_messages", metadata,
    Column("chat_id", String(200), primary_key=True),
    Column("message_id", String(200), primary_key=True),
    Column("sender", String(16), nullable=False),
    Column("text", Text, nullable=False, default=""),
    Column("sent_at", UTC, nullable=False),
    Column("agent", JSON),
    Column("media", JSON, nullable=False, default=list),
    Index("ix_chat_messages_chat_sent", "chat_id", "sent_at"),
)

# Assignments and transfers, keyed by the event that reported them (order-independent).
chat_activity = Table(
    "chat_activity", metadata,
    Column("chat_id", String(200), primary_key=True),
    Column("event_id", String(200), primary_key=True),
    Column("kind", String(32), nullable=False),  # assigned, transfer
    Column("at", UTC, nullable=False),
    Column("data", JSON, nullable=False),
    Index("ix_chat_activity_chat_at", "chat_id", "at"),
)

# Media files: what was fetched for each consumer media item, and where it went in the CRM.
chat_media = Table(
    "chat_media", metadata,
    Column("chat_id", String(200), primary_key=True),
    Column("message_id", String(200), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("url", Text, nullable=False),
    Column("filename", String(255)),
    Column("status", String(16), nullable=False, default="pending"),  # pending, attached, refused
    Column("reason", Text),
    Column("content_version_id", String(18)),
)

# Transactional outbox: CRM work to do after the event's transaction commits.
outbox = Table(
    "outbox", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("kind", String(32), nullable=False),
    Column("key", String(255), nullable=False),
    Column("status", String(16), nullable=False, default="pending"),  # pending, running, done, failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("due_at", UTC, nullable=False, default=utcnow),
    Column("claimed_by", String(128)),
    Column("claimed_until", UTC),
    Column("last_error", Text),
    Column("created_at", UTC, nullable=False, default=utcnow),
    Column("updated_at", UTC, nullable=False, default=utcnow, onupdate=utcnow),
    Index("ix_outbox_status_due", "status", "due_at"),
    Index("ix_outbox_kind_key", "kind", "key"),
)

# Admin-editable settings (screen-pop actions, object order, opt-out field, abandoned tickets).
app_settings = Table(
    "app_settings", metadata,
    Column("key", String(64), primary_key=True),
    Column("value", JSON, nullable=False),
    Column("updated_at", UTC, nullable=False, default=utcnow, onupdate=utcnow),
)

agents = Table(
    "agents", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", String(255)),
    Column("created_at", UTC, nullable=False, default=utcnow),
    # The secret every console session cookie of the agent carries; replacing it signs them all out.
    Column("session_key", String(64)),
)

agent_tokens = Table(
    "agent_tokens", metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("agent_id", Integer, ForeignKey("agents.id"), nullable=False),
    Column("expires_at", UTC, nullable=False),
    Column("used_at", UTC),
)

abandoned_calls = Table(
    "abandoned_calls", metadata,
    Column("id", String(200), primary_key=True),
    Column("caller_number", String(32), nullable=False),
    Column("dialed_number", String(32)),
    Column("queue", JSON),
    Column("lang", String(32)),
    Column("started_at", UTC),
    Column("abandoned_at", UTC),
    Column("wait_seconds", Integer),
    Column("sms_status", String(16)),
    Column("sms_messages", JSON, nullable=False, default=list),
    Column("case_id", String(18)),
    Column("status", String(16), nullable=False, default="new"),  # new, ticketed, skipped, failed
    Column("error", Text),
    Column("received_at", UTC, nullable=False, default=utcnow),
    # Set before the Case is first sent to the CRM: only such calls can have a Case we do not know of.
    Column("attempted_at", UTC),
    Index("ix_abandoned_status", "status"),
)

job_runs = Table(
    "job_runs", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("job", String(64), nullable=False, index=True),
    Column("started_at", UTC, nullable=False),
    Column("finished_at", UTC),
    Column("created", Integer, nullable=False, default=0),
    Column("failed", Integer, nullable=False, default=0),
    Column("error", Text),
    Column("status", String(16), nullable=False, default="running"),  # running, ok, error
    Column("skipped", Integer, nullable=False, default=0),
)

# When each scheduled job runs next, as the scheduler of a running server last said (for `jobs`).
job_schedule = Table(
    "job_schedule", metadata,
    Column("job", String(64), primary_key=True),
    Column("next_run_at", UTC),
    Column("interval_seconds", Integer, nullable=False),
    Column("updated_at", UTC, nullable=False, default=utcnow),
)

# A lease per named lock: one active runner across processes and instances.
leases = Table(
    "leases", metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("until", UTC, nullable=False),
)

# The CRM record the `create_record` pop created for a chat, claimed before the CRM is asked: a retried
# or concurrent chat.started finds the claim (or the record) instead of creating a second one.
created_records = Table(
    "created_records", metadata,
    Column("chat_id", String(200), primary_key=True),
    Column("object", String(32), nullable=False),
    Column("record_id", String(18)),  # None while the claimant is still creating it
    Column("claimed_at", UTC, nullable=False),
    Column("claim", String(32), nullable=False),  # the claimant's token: only it may release the claim
)

# Where a CRM file's bytes live for the local CRM (kept out of the record table for speed).
crm_blobs = Table(
    "crm_blobs", metadata,
    Column("id", String(18), primary_key=True),
    Column("data", LargeBinary, nullable=False),
)


SQLITE_BUSY_SECONDS = 30


class _WriteLock:
    """Queues one engine's writers: a thread lock within this process and, for a database file, an
    flock on `<file>.writer-lock` across processes. Waiters sleep until the kernel hands the lock
    over, instead of polling SQLite's busy handler (which sleeps up to 100 ms between tries)."""

    def __init__(self, path: str | None):
        self._threads = threading.Lock()
        self._path = path
        self._fd: int | None = None

    def acquire(self) -> bool:
        # Bounded within the process: a thread that nests a second write transaction gets SQLite's
        # "database is locked" after the busy timeout, as it would without this lock.
        if not self._threads.acquire(timeout=SQLITE_BUSY_SECONDS):
            return False
        if self._path is not None:
            try:
                if self._fd is None:  # opened here, in the process that writes (never across a fork)
                    self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
            except OSError:  # e.g. a read-only folder: SQLite's own lock still keeps writers apart
                self._path = None
        return True

    def release(self) -> None:
        if self._fd is not None and self._path is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()


class _SerializedWrites(sqlite3.Connection):
    """A SQLite connection whose write transactions hold the engine's `write_lock` from BEGIN
    IMMEDIATE to COMMIT or ROLLBACK."""

    write_lock: _WriteLock
    _holding = False

    def hold_write_lock(self) -> None:
        self._holding = self.write_lock.acquire()

    def release_write_lock(self) -> None:
        if self._holding:
            self._holding = False
            self.write_lock.release()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self.release_write_lock()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self.release_write_lock()

    def close(self) -> None:
        try:
            super().close()
        finally:
            self.release_write_lock()


def engine_url(url: URL) -> URL:
    """`postgresql://` means psycopg 3, the driver installed with the package (not SQLAlchemy's psycopg2)."""
    if url.get_backend_name() == "postgresql" and url.get_driver_name() in ("", "psycopg2"):
        return url.set(drivername="postgresql+psycopg")
    return url


def sqlite_file(url: URL | str) -> str | None:
    """The path of the SQLite database file `url` names; None for another database, one in memory or
    one given as a `file:` URI (which may be either)."""
    url = make_url(url)
    database = url.database if url.get_backend_name() == "sqlite" else None
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return database


def sqlite_folder(database: str) -> None:
    """Create the folder a SQLite database file goes in. One that cannot be created (no permission, a
    read-only or special file system, a file in the way) is an unreachable database, like a file SQLite
    cannot open: a command says so in one line, the server answers 503 and tries again."""
    folder = Path(database).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        problem = sqlite3.OperationalError(
            f"cannot create the folder {folder} for the database file: {exc.strerror or exc}")
        raise OperationalError(None, None, problem) from exc


def make_engine(database_url: str) -> Engine:
    """An engine with the settings each database needs for several threads (and processes)."""
    url = engine_url(make_url(database_url))
    if url.get_backend_name() == "sqlite":
        on_disk = bool(url.database) and url.database != ":memory:"
        # Writers queue on one lock per engine (and per database file across processes), and are
        # handed the database in turn.
        write_lock = _WriteLock(f"{url.database}.writer-lock" if on_disk else None)
        factory = type("SerializedWrites", (_SerializedWrites,), {"write_lock": write_lock})
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_SECONDS,
                                                  "factory": factory})

        if on_disk:
            # On every new connection rather than here: the server keeps trying until it can be created.
            @event.listens_for(engine, "do_connect")
            def _sqlite_folder(*_: Any) -> None:
                sqlite_folder(str(url.database))

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            # isolation_level None: SQLAlchemy emits BEGIN itself (see "begin" below), so
            # write transactions take the lock at their start instead of failing mid-way.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            # Writers take the lock up front; read-only connections (see `reading`) do not.
            if conn.get_execution_options().get("read_only"):
                conn.exec_driver_sql("BEGIN")
                return
            dbapi_connection = conn.connection.dbapi_connection
            dbapi_connection.hold_write_lock()
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                dbapi_connection.release_write_lock()
                raise

        return engine
    # No pre-ping (a round trip on every checkout): a connection found dead fails its one statement,
    # which answers 503 (the platform retries), and the pool then replaces every older connection.
    return create_engine(url, pool_size=10, max_overflow=20)


def insert_unless_there(dialect_name: str, table: Table) -> Any:
    """INSERT … ON CONFLICT DO NOTHING in the dialect's own syntax (both databases have it)."""
    dialect = postgresql if dialect_name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


_UPDATE_CHAT = DriverStatement(chats.update().where(chats.c.id == bindparam("chat")))  # SETs what is passed


def update_chat(conn: Connection, chat_id: str, values: dict[str, Any]) -> None:
    """Set these columns of one chat row, in the caller's transaction."""
    _UPDATE_CHAT.run(conn, {"chat": chat_id, **values})


# -- rows written together at the end of a group-commit batch ---------------------------------------

_LATER = "crmconnector.later"
_WORK = "crmconnector.later-work"
_LATER_STATEMENTS = "crmconnector.later-statements"


class BatchConflict(Exception):
    """A row held for the end of a batch turned out to exist already: the batch is rolled back and its
    work run again one by one, where the row is inserted (and its conflict seen) at once."""


@contextmanager
def batched_inserts(conn: Connection, commit: bool = False) -> Iterator[None]:
    """Within this block, `hold_work` keeps work and `insert_or_hold` holds rows for its end: each kind
    of work then runs once for all its items, and the rows are written all of a table in one multi-row
    INSERT. One statement (one round trip on PostgreSQL) for the whole batch instead of one per event.

    `commit`: the block ends the transaction. On PostgreSQL its held rows and statements (`run_or_hold`)
    and the COMMIT are then sent as one query string (`_write_held_and_commit`); the caller's own commit
    finds nothing left to do."""
    work: dict[Callable[[Connection, list[Any]], None], list[Any]] = {}
    held: dict[tuple[Table, bool, tuple[str, ...]], list[dict[str, Any]]] = {}
    statements: list[tuple[DriverStatement, dict[str, Any]]] = []
    conn.info[_WORK], conn.info[_LATER], conn.info[_LATER_STATEMENTS] = work, held, statements
    try:
        yield
        while work:  # first, as the work may hold rows
            finish = next(iter(work))
            finish(conn, work.pop(finish))
        if commit and (held or statements) and conn.dialect.name == "postgresql":
            _write_held_and_commit(conn, held, statements)
            return
        for (table, new_only, _), rows in held.items():
            if insert_rows(conn, table, rows, new_only) != len(rows):
                raise BatchConflict(f"a {table.name} row of this batch exists already")
        for statement, params in statements:
            statement.run(conn, params)
    finally:
        conn.info.pop(_WORK, None)  # the info dict outlives the checkout
        conn.info.pop(_LATER, None)
        conn.info.pop(_LATER_STATEMENTS, None)


def hold_work(conn: Connection, finish: Callable[[Connection, list[Any]], None], item: Any) -> bool:
    """In a batch, keep `item` for `finish(conn, items)`, called once with all of them at the batch's
    end (before its held rows are written, in the same transaction); True. Outside a batch False: the
    caller does the work now."""
    work = conn.info.get(_WORK)
    if work is None:
        return False
    work.setdefault(finish, []).append(item)
    return True


def run_or_hold(conn: Connection, statement: DriverStatement, params: dict[str, Any]) -> int | None:
    """Run a write whose outcome nothing in the transaction reads back: in a batch at its end (on
    PostgreSQL in the batch's final query string, no round trip of its own), otherwise now. The number
    of rows it changed when run now; None when held (held statements run in the order they were held)."""
    statements = conn.info.get(_LATER_STATEMENTS)
    if statements is None:
        return statement.run(conn, params)
    statements.append((statement, params))
    return None


ROWS_PER_INSERT = 100  # well within both databases' limits on parameters per statement


def insert_rows(conn: Connection, table: Table, rows: list[dict[str, Any]], new_only: bool = False) -> int:
    """Insert rows that have the same keys with one `INSERT … VALUES (…), (…)` per ROWS_PER_INSERT rows
    (`new_only`: each unless its key exists). The number of rows inserted.

    One statement for many rows costs the client and PostgreSQL a third to a half less than the
    driver's executemany, which still runs the statement once per row."""
    return sum(statement.run(conn, params) for statement, params in _inserts(conn, table, rows, new_only))


def _inserts(conn: Connection, table: Table, rows: list[dict[str, Any]], new_only: bool
             ) -> Iterator[tuple[DriverStatement, dict[str, Any]]]:
    """The multi-row INSERTs of these rows, ROWS_PER_INSERT at a time, with their parameters."""
    keys = tuple(rows[0])
    for start in range(0, len(rows), ROWS_PER_INSERT):
        chunk = rows[start:start + ROWS_PER_INSERT]
        params = {f"{key}_{n}": row[key] for n, row in enumerate(chunk) for key in keys}
        yield _rows_insert(conn.dialect.name, table, new_only, len(chunk), keys), params


def _write_held_and_commit(conn: Connection, held: dict[tuple[Table, bool, tuple[str, ...]], list[dict[str, Any]]],
                           statements: list[tuple[DriverStatement, dict[str, Any]]]) -> None:
    """A batch's held rows and statements and its COMMIT in one query string: one round trip instead of
    one per table, one per statement and one for the COMMIT. Rows whose key must be new go without ON
    CONFLICT here, so a key that exists fails the string, and with it the batch, which then runs again
    one by one (as BatchConflict does)."""
    inserts = [(statement, params) for (table, _, _), rows in held.items()
               for statement, params in _inserts(conn, table, rows, new_only=False)]
    run_script(conn, [*(statement.literal_sql(conn, params) for statement, params in [*inserts, *statements]),
                      "COMMIT"])


@functools.cache
def _rows_insert(dialect_name: str, table: Table, new_only: bool, count: int, keys: tuple[str, ...]
                 ) -> DriverStatement:
    """The INSERT of `count` rows with these keys, bound as key_0, key_1, …; built once per shape."""
    insert = insert_unless_there(dialect_name, table) if new_only else table.insert()
    return DriverStatement(insert.values([{key: bindparam(f"{key}_{n}", type_=table.c[key].type) for key in keys}
                                          for n in range(count)]))


def insert_if_new(conn: Connection, table: Table, values: dict[str, Any]) -> bool:
    """Insert the row unless its key exists (INSERT … ON CONFLICT DO NOTHING): one statement instead of
    a look-up and an insert. True when the row is new."""
    return insert_rows(conn, table, [values], new_only=True) == 1


def insert_or_hold(conn: Connection, table: Table, values: dict[str, Any], new_only: bool = False) -> bool:
    """Insert the row: in a batch, held for the batch's INSERT at its end; otherwise now. `new_only`:
    its key must not exist yet. False only when, inserted now, its key did exist (in a batch that
    conflict runs the batch again one by one, and then it is seen here)."""
    held = conn.info.get(_LATER)
    if held is not None:
        held.setdefault((table, new_only, tuple(values)), []).append(values)
        return True
    return insert_rows(conn, table, [values], new_only) == 1


_WAKEUPS = "crmconnector.wakeups"


def wake_after_commit(conn: Connection, what: str) -> None:
    """Note that this transaction wrote something a listener waits for: "consoles" (a console event) or
    "outbox" (once per new item: each wakes one outbox thread)."""
    conn.info.setdefault(_WAKEUPS, Counter())[what] += 1


def take_wakeups(conn: Connection) -> Counter[str]:
    """What the transaction so far asked to wake, and how often, forgetting it (the info dict outlives
    the checkout)."""
    return conn.info.pop(_WAKEUPS, None) or Counter()


def reading(engine: Engine) -> Any:
    """A connection for reads only: on SQLite it does not take the write lock; on PostgreSQL it runs
    without BEGIN and ROLLBACK (two round trips more than the read itself). Under PostgreSQL's READ
    COMMITTED each statement sees its own snapshot either way."""
    if engine.dialect.name == "postgresql":
        return engine.connect().execution_options(read_only=True, isolation_level="AUTOCOMMIT")
    return engine.connect().execution_options(read_only=True)


def single_statement_write(engine: Engine) -> Any:
    """A connection for a write of one statement (and reads before it): on PostgreSQL in autocommit, so
    the statement is its own transaction without BEGIN and COMMIT (two round trips more than itself); on
    SQLite a write transaction, which takes the write lock."""
    if engine.dialect.name == "postgresql":
        return engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    return engine.begin()


def migrate(engine: Engine) -> None:
    """Create or upgrade the schema to the newest migration."""
    from crmconnector import migrations

    migrations.upgrade(engine)


# What agents' consoles are told, in order: the durable log behind live pushes and catch-up.
console_events = Table(
    "console_events", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("agent_email", String(320), nullable=False),
    Column("chat_id", String(200), nullable=False),
    Column("kind", String(32), nullable=False),  # pop, message, status, linked, transferred, ended
    Column("payload", JSON, nullable=False),
    Column("created_at", UTC, nullable=False, default=utcnow),
    Index("ix_console_events_agent_id", "agent_email", "id"),
)
