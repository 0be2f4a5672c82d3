"""The writer's transactions on PostgreSQL: the BEGIN travels with the first statement."""
from __future__ import annotations

import threading
from typing import Any, Callable, Iterator

import pytest
from psycopg import Cursor
from psycopg._connection_base import BaseConnection
from psycopg.pq import TransactionStatus
from sqlalchemy import Column, Engine, Integer, MetaData, Table, select

from crmconnector.driver_sql import DriverStatement
from crmconnector.group_commit import GroupCommitter
from crmconnector.store import make_engine, reading
from tests.waiting import wait_for

pytestmark = pytest.mark.postgres

rows = Table("tx_rows", MetaData(), Column("n", Integer, primary_key=True))
_INSERT = DriverStatement(rows.insert())


@pytest.fixture
def engine(pg_database: str) -> Iterator[Engine]:
    engine = make_engine(pg_database)
    rows.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def round_trips(monkeypatch: Any) -> list[tuple[str, str]]:
    """(thread name, text) of every query string and every command (BEGIN, COMMIT, ROLLBACK that the
    driver sends alone) from now on: one round trip each."""
    sent: list[tuple[str, str]] = []
    execute, command = Cursor.execute, BaseConnection._exec_command

    def recorded_execute(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append((threading.current_thread().name, str(query)))
        return execute(self, query, *args, **kwargs)

    def recorded_command(self: Any, text: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append((threading.current_thread().name, bytes(text).decode() if isinstance(text, bytes) else str(text)))
        return command(self, text, *args, **kwargs)
    monkeypatch.setattr(Cursor, "execute", recorded_execute)
    monkeypatch.setattr(BaseConnection, "_exec_command", recorded_command)
    return sent


def _in_one_batch(writer: GroupCommitter, works: list[Callable[[Any], Any]]) -> list[Any]:
    """Run the works in one batch: queued while the writer is held inside a transaction of its own."""
    running, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=writer.run, args=(lambda conn: (running.set(), release.wait(10)),))
    holder.start()
    assert running.wait(10)
    answers: list[Any] = [None] * len(works)

    def call(i: int) -> None:
        try:
            answers[i] = writer.run(works[i])
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            answers[i] = exc
    callers = [threading.Thread(target=call, args=(i,)) for i in range(len(works))]
    for thread in callers:
        thread.start()
    wait_for(lambda: writer.queued() == len(works))
    release.set()
    for thread in [holder, *callers]:
        thread.join(10)
    return answers


def _insert(n: int) -> Callable[[Any], int]:
    return lambda conn: (_INSERT.run(conn, {"n": n}), n)[1]


def _stored(engine: Engine) -> list[int]:
    with reading(engine) as conn:
        return sorted(conn.execute(select(rows.c.n)).scalars())


def test_a_batch_sends_its_begin_with_its_first_statement_and_nothing_alone(engine, round_trips):
    writer = GroupCommitter(engine, lambda wakeups: None)
    try:
        assert _in_one_batch(writer, [_insert(1), _insert(2), _insert(3)]) == [1, 2, 3]
    finally:
        writer.close()
    sent = [text for thread, text in round_trips if thread == "intake-writer"]
    assert [text.split(" (")[0] for text in sent] == [
        "BEGIN;\nINSERT INTO tx_rows", "INSERT INTO tx_rows", "INSERT INTO tx_rows", "COMMIT"]
    assert sent[0].endswith("VALUES (1::INTEGER)")  # the first statement's value, as a literal
    assert _stored(engine) == [1, 2, 3]


def test_a_first_statement_through_sqlalchemy_sends_the_begin_alone_first(engine, round_trips):
    writer = GroupCommitter(engine, lambda wakeups: None)
    try:
        writer.run(lambda conn: conn.execute(rows.insert(), {"n": 7}))
    finally:
        writer.close()
    sent = [text for thread, text in round_trips if thread == "intake-writer"]
    assert [text.split(" (")[0] for text in sent] == ["BEGIN", "INSERT INTO tx_rows", "COMMIT"]
    assert _stored(engine) == [7]


def test_a_failed_batch_is_rolled_back_and_leaves_its_connection_out_of_any_transaction(engine, round_trips):
    """The failing batch runs again one by one; a work that failed before sending anything leaves no
    pending BEGIN behind for the pooled connection's next use (a read would otherwise open a transaction
    and keep its snapshot)."""
    def fails_after_a_statement(conn: Any) -> None:
        _INSERT.run(conn, {"n": 5})
        raise ValueError("after a statement")

    def fails_at_once(conn: Any) -> None:
        raise ValueError("before any statement")
    writer = GroupCommitter(engine, lambda wakeups: None)
    try:
        answers = _in_one_batch(writer, [_insert(4), fails_after_a_statement, _insert(6)])
        with pytest.raises(ValueError):
            writer.run(fails_at_once)
    finally:
        writer.close()
    assert answers[0] == 4 and answers[2] == 6 and isinstance(answers[1], ValueError)
    round_trips.clear()
    with reading(engine) as conn:  # the writer's pooled connection: the pool's only one not in use
        assert sorted(conn.execute(select(rows.c.n)).scalars()) == [4, 6]
        assert conn.connection.driver_connection.info.transaction_status == TransactionStatus.IDLE
    assert [text for _, text in round_trips if text.startswith("BEGIN")] == []
