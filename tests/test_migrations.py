"""Migrations: a fresh database gets exactly the schema the code declares, and upgrading keeps data."""
from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select

from crmconnector import migrations
from crmconnector.crm.local import LocalCRM
from crmconnector.crm.local_schema import TABLES
from crmconnector.store import app_settings, make_engine, metadata, migrate


pytestmark = pytest.mark.both_databases


def head_revision() -> str:
    return ScriptDirectory.from_config(migrations.config()).get_current_head()


def test_a_fresh_database_has_no_difference_from_the_declared_schema(database_url):
    engine = make_engine(database_url)
    migrate(engine)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        diff = compare_metadata(context, metadata)
        assert diff == []
        assert context.get_current_revision() == head_revision()
    tables = set(inspect(engine).get_table_names())
    assert set(metadata.tables) <= tables
    assert {t.name for t in TABLES.values()} | {"crm_phone_index"} <= tables
    engine.dispose()


def test_migrating_twice_is_a_no_op_that_keeps_data(database_url):
    engine = make_engine(database_url)
    migrate(engine)
    with engine.begin() as conn:
        conn.execute(app_settings.insert().values(key="kept", value={"n": 1}))
    contact_table = TABLES["Contact"]
    local = LocalCRM(engine)
    cid = local.create("Contact", {"LastName": "Kept", "Phone": "4155550132"})
    migrate(engine)
    migrate(engine)
    with engine.connect() as conn:
        assert conn.execute(select(app_settings.c.value).where(app_settings.c.key == "kept")).scalar() == {"n": 1}
        assert conn.execute(select(func.count()).select_from(contact_table)).scalar() == 1
        assert MigrationContext.configure(conn).get_current_revision() == head_revision()
    assert [r.id for r in local.find_by_phone(["+14155550132"], ["Contact"])] == [cid]
    engine.dispose()


def test_the_revision_chain_is_linear_with_one_head():
    script = ScriptDirectory.from_config(migrations.config())
    assert len(script.get_heads()) == 1
    revisions = list(script.walk_revisions())
    assert revisions[-1].down_revision is None
    assert all(isinstance(r.down_revision, (str, type(None))) for r in revisions)


def test_on_sqlite_a_second_process_waits_for_the_first_ones_migration(tmp_path):
    import fcntl
    import threading

    from sqlalchemy import create_engine, inspect

    from crmconnector import migrations

    database = tmp_path / "state.db"
    engine = create_engine(f"sqlite:///{database}")
    done = threading.Event()
    with open(f"{database}.migrate-lock", "a") as held:  # another process is migrating
        fcntl.flock(held, fcntl.LOCK_EX)
        thread = threading.Thread(target=lambda: (migrations.upgrade(engine), done.set()))
        thread.start()
        assert not done.wait(0.5)
        fcntl.flock(held, fcntl.LOCK_UN)
    thread.join(30)
    assert done.is_set() and "chats" in inspect(engine).get_table_names()


def _downgraded_to(database_url: str, revision: str) -> Any:
    """The engine of a migrated database taken back down to `revision`."""
    from alembic import command

    engine = make_engine(database_url)
    migrate(engine)
    with engine.connect() as conn:
        cfg = migrations.config(engine)
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)
        conn.commit()
        assert MigrationContext.configure(conn).get_current_revision() == revision
    return engine


def test_created_records_comes_with_0004_and_goes_with_its_downgrade(database_url):
    engine = _downgraded_to(database_url, "0003")
    schema = inspect(engine)
    assert "created_records" not in schema.get_table_names()
    migrate(engine)
    with engine.connect() as conn:
        columns = {c["name"]: c for c in inspect(conn).get_columns("created_records")}
        assert set(columns) == {"chat_id", "object", "record_id", "claimed_at", "claim"}
        assert columns["record_id"]["nullable"] and not columns["claimed_at"]["nullable"]
        assert inspect(conn).get_pk_constraint("created_records")["constrained_columns"] == ["chat_id"]
    engine.dispose()


def test_end_reported_at_comes_with_0005_and_goes_with_its_downgrade(database_url):
    engine = _downgraded_to(database_url, "0004")
    schema = inspect(engine)
    assert "end_reported_at" not in {c["name"] for c in schema.get_columns("chats")}
    assert "created_records" in schema.get_table_names()
    migrate(engine)
    with engine.connect() as conn:
        assert "end_reported_at" in {c["name"] for c in inspect(conn).get_columns("chats")}
        assert MigrationContext.configure(conn).get_current_revision() == "0005"
    engine.dispose()
