"""Statements run on the driver's cursor store and read exactly what SQLAlchemy's own execution does."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest
from sqlalchemy import bindparam, event, select

from crmconnector.driver_sql import DriverStatement
from crmconnector.store import chats, console_events, make_engine, migrate, reading, utcnow


@pytest.fixture
def engine(database_url):
    engine = make_engine(database_url)
    migrate(engine)
    yield engine
    engine.dispose()


_EVENT = {"agent_email": "agent7@example.com", "chat_id": "c1", "kind": "pop",
          "payload": {"chat_id": "c1", "note": "naïve \"quoted\"", "n": [1, None]},
          "created_at": datetime(2026, 11, 21, 17, 3, 11, 250_000, tzinfo=timezone.utc)}
_COLUMNS = [console_events.c.agent_email, console_events.c.chat_id, console_events.c.kind,
            console_events.c.payload, console_events.c.created_at]


@pytest.mark.both_databases
def test_a_row_written_on_the_driver_reads_back_like_one_written_by_sqlalchemy(engine):
    through_sqlalchemy: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: through_sqlalchemy.append(args[2]))
    with engine.begin() as conn:
        conn.execute(console_events.insert(), {**_EVENT, "chat_id": "by-sqlalchemy"})
        assert DriverStatement(console_events.insert()).run(conn, {**_EVENT, "chat_id": "by-driver"}) == 1
    # Only SQLAlchemy's own insert went through its execution layer.
    assert len([sql for sql in through_sqlalchemy if sql.startswith("INSERT INTO console_events")]) == 1
    with reading(engine) as conn:
        rows = {row.chat_id: row._asdict() for row in conn.execute(select(*_COLUMNS))}
    assert rows["by-driver"] == {**rows["by-sqlalchemy"], "chat_id": "by-driver"}
    assert rows["by-driver"]["payload"] == _EVENT["payload"]
    assert rows["by-driver"]["created_at"] == _EVENT["created_at"]


@pytest.mark.both_databases
def test_first_converts_the_columns_it_reads_and_is_none_without_a_row(engine):
    statement = DriverStatement(select(*_COLUMNS).where(console_events.c.chat_id == bindparam("chat")))
    with engine.begin() as conn:
        conn.execute(console_events.insert(), _EVENT)
        assert statement.first(conn, {"chat": "c1"}) == _EVENT
        assert statement.first(conn, {"chat": "no such chat"}) is None


@pytest.mark.both_databases
def test_an_update_sets_the_columns_passed_and_counts_the_rows(engine):
    statement = DriverStatement(chats.update().where(chats.c.id == bindparam("chat")))
    with engine.begin() as conn:
        conn.execute(chats.insert(), {"id": "c1", "started": False, "updated_at": utcnow()})
        assert statement.run(conn, {"chat": "c1", "agent_email": "a@example.com"}) == 1
        assert statement.run(conn, {"chat": "c1", "disposition": "Resolved", "agent_email": None}) == 1
        assert statement.run(conn, {"chat": "missing", "disposition": "Resolved"}) == 0
        row = conn.execute(select(chats.c.agent_email, chats.c.disposition)).one()
    assert tuple(row) == (None, "Resolved")


def test_a_statement_that_needs_a_python_side_default_runs_through_sqlalchemy(tmp_path):
    """console_events.created_at has a Python default: left out, SQLAlchemy computes it."""
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    migrate(engine)
    values = {key: value for key, value in _EVENT.items() if key != "created_at"}
    with engine.begin() as conn:
        assert DriverStatement(console_events.insert()).run(conn, values) == 1  # would fail: NOT NULL
        created = conn.execute(select(console_events.c.created_at)).scalar()
    assert created is not None and abs((utcnow() - created).total_seconds()) < 60
    engine.dispose()


def test_a_missing_parameter_is_an_error_as_in_sqlalchemy(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'state.db'}")
    migrate(engine)
    statement = DriverStatement(select(chats.c.id).where(chats.c.id == bindparam("chat")))
    with engine.begin() as conn, pytest.raises(Exception, match="chat"):
        statement.first(conn, {})
    engine.dispose()


@pytest.mark.both_databases
def test_a_driver_error_is_raised_as_sqlalchemy_raises_it(engine):
    """The intake tells a lost race (IntegrityError) from a database away (OperationalError)."""
    from sqlalchemy.exc import IntegrityError

    statement = DriverStatement(chats.insert())
    values = {"id": "c1", "started": False, "updated_at": utcnow(), "created_at": utcnow()}
    with engine.begin() as conn:
        statement.run(conn, values)
    with pytest.raises(IntegrityError), engine.begin() as conn:
        statement.run(conn, values)


@pytest.mark.both_databases
def test_insert_rows_writes_every_row_in_one_statement_and_counts_only_the_new_ones(engine, monkeypatch):
    from crmconnector import store
    from tests.conftest import sent_statements

    rows = [{"id": chat_id, "started": False, "updated_at": utcnow()} for chat_id in ("c1", "c2", "c3")]
    sent = sent_statements(engine, monkeypatch)
    with engine.begin() as conn:
        assert store.insert_rows(conn, console_events, [{**_EVENT, "chat_id": f"m{n}"} for n in range(3)]) == 3
        assert store.insert_rows(conn, chats, rows[:2], new_only=True) == 2
        assert store.insert_rows(conn, chats, rows[1:], new_only=True) == 1  # c2 is there already

    def rows_per_insert() -> list[int]:
        return [sql.count("), (") + 1 for sql, _ in sent if sql.startswith("INSERT")]
    assert rows_per_insert() == [3, 2, 2]
    monkeypatch.setattr(store, "ROWS_PER_INSERT", 2)
    more = [{"id": f"d{n}", "started": False, "updated_at": utcnow()} for n in range(5)]
    with engine.begin() as conn:
        assert store.insert_rows(conn, chats, more, new_only=True) == 5
    assert rows_per_insert()[3:] == [2, 2, 1]
    with reading(engine) as conn:
        assert sorted(conn.execute(select(chats.c.id)).scalars()) == ["c1", "c2", "c3", "d0", "d1", "d2", "d3", "d4"]
        stored = conn.execute(select(*_COLUMNS).order_by(console_events.c.id)).all()
    assert [row._asdict() for row in stored] == [{**_EVENT, "chat_id": f"m{n}"} for n in range(3)]


def test_literal_sql_renders_what_the_driver_would_bind_and_parses_the_statement_once(pg_database, monkeypatch):
    """A batch's held rows go to PostgreSQL as literals: rendered exactly as psycopg's client-side binding
    renders them, from a template worked out once per statement (not from the SQL text at every call)."""
    import psycopg

    from crmconnector import driver_sql
    from crmconnector.store import _rows_insert

    engine = make_engine(pg_database)
    built = []
    real = driver_sql._literal_template
    monkeypatch.setattr(driver_sql, "_literal_template", lambda *args: built.append(args) or real(*args))
    odd = ["it's", "back\\slash", "100% %s %(x)s", None, "naïve ☕"]
    rows = [{**_EVENT, "chat_id": text, "payload": {"text": text, "n": n}} for n, text in enumerate(odd)]
    keys = tuple(rows[0])
    statement = _rows_insert("postgresql", console_events, False, len(rows), keys)  # five rows of five values
    params = {f"{key}_{n}": row[key] for n, row in enumerate(rows) for key in keys}
    try:
        with engine.begin() as conn:
            plan = statement._plan(conn, params)
            expected = psycopg.ClientCursor(conn.connection.driver_connection).mogrify(
                plan.compiled.string, statement._arguments(plan, params))
            assert statement.literal_sql(conn, params) == expected
            assert statement.literal_sql(conn, {**params, "kind_0": "other"}) == expected.replace("'pop'", "'other'", 1)
            assert len(built) == 1
    finally:
        engine.dispose()


@pytest.mark.both_databases
def test_a_numbered_in_list_selects_exactly_the_values_bound_to_it(engine):
    from crmconnector.driver_sql import in_numbered, numbered

    with engine.begin() as conn:
        for chat_id in ("c1", "c2", "c3", "c10"):
            conn.execute(chats.insert(), {"id": chat_id, "started": True, "updated_at": utcnow()})
        chosen = DriverStatement(select(chats.c.id).where(in_numbered(chats.c.id, "chat", 3)))
        assert sorted(row["id"] for row in chosen.all(conn, numbered("chat", ["c10", "c2", "c9"]))) == ["c10", "c2"]
        assert numbered("chat", ["a", "b"]) == {"chat_0": "a", "chat_1": "b"}
