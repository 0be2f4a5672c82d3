"""Pytest plugin: the state database each test runs on, SQLite or a throwaway PostgreSQL server.

`database_url` is SQLite by default. The integration tests of callbacks, chats and the outbox (module
names in BOTH_DATABASES, or tests marked `both_databases`) run twice: on SQLite and on PostgreSQL.
`CRMCONNECTOR_TEST_DATABASES=sqlite,postgres` runs every test on both; `=postgres` only on PostgreSQL.
Where no PostgreSQL server can be started, the PostgreSQL runs are skipped and say why.
"""
from __future__ import annotations

import os
from typing import Any, Iterator

import pytest

from tests.pg import PgServer, PgUnavailable

BOTH_DATABASES = ("test_callbacks", "test_chat", "test_outbox", "test_worker", "test_sync", "test_postgres",
                  "test_abandoned", "test_console")


def pytest_configure(config: Any) -> None:
    config.addinivalue_line("markers", "both_databases: run on SQLite and on PostgreSQL")


def _wanted(metafunc: Any) -> list[str]:
    chosen = os.environ.get("CRMCONNECTOR_TEST_DATABASES", "").strip()
    if chosen:
        return [name.strip() for name in chosen.split(",") if name.strip()]
    module = metafunc.module.__name__.rsplit(".", 1)[-1]
    if module.startswith(BOTH_DATABASES) or metafunc.definition.get_closest_marker("both_databases"):
        return ["sqlite", "postgres"]
    return ["sqlite"]


def pytest_generate_tests(metafunc: Any) -> None:
    if "database_url" not in metafunc.fixturenames:
        return
    if any(m.args and m.args[0] == "database_url" for m in metafunc.definition.iter_markers("parametrize")):
        return
    names = _wanted(metafunc)
    if names == ["sqlite"]:
        return  # the default: test ids stay as they are
    metafunc.parametrize("database_url", [pytest.param(name, id=name, marks=[pytest.mark.postgres] if
                                                       name == "postgres" else []) for name in names],
                         indirect=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """One PostgreSQL server for the whole run (skips with the reason when none can be started)."""
    try:
        server = PgServer.start()
    except PgUnavailable as exc:
        pytest.skip(f"PostgreSQL tests not run: {exc}")
    try:
        yield server
    finally:
        server.destroy()


@pytest.fixture
def pg_database(pg_server: PgServer) -> Iterator[str]:
    """A fresh migrated PostgreSQL database for one test; its URL."""
    name = pg_server.migrated_database()
    yield pg_server.url(name)
    pg_server.drop_database(name)


@pytest.fixture
def database_url(request: Any, tmp_path: Any) -> str:
    backend = getattr(request, "param", "sqlite")
    if backend == "postgres":
        return str(request.getfixturevalue("pg_database"))
    if backend != "sqlite":
        raise pytest.UsageError(f"unknown test database {backend!r} (sqlite or postgres)")
    return f"sqlite:///{tmp_path / 'state.db'}"
