"""Fixtures: every test gets its own database, settings and app (flaskr style)."""
from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any, Iterator

import pytest

from crmconnector.runtime import Runtime
from crmconnector.settings import Settings
from crmconnector.signatures import HEADER, sign

SECRET = "test-callback-secret"
ADMIN_TOKEN = "test-admin-token"

# `database_url` (SQLite, or PostgreSQL for the integration tests that run on both) and `pg_server`.
pytest_plugins = ["tests.postgres_fixture"]


@pytest.fixture
def settings(tmp_path: Any, database_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        callback_secrets=(SECRET,),
        admin_token=ADMIN_TOKEN,
        instance_path=str(tmp_path / "instance"),
        public_url="http://connector.test",
        run_background=False,
    )


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = Runtime(settings)
    yield rt
    rt.close()


@pytest.fixture
def crm(runtime: Runtime) -> Any:
    return runtime.crm


@pytest.fixture
def app(runtime: Runtime) -> Any:
    from webapp import create_app

    app = create_app(runtime=runtime, background=False, test_config={"TESTING": True})
    return app


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


def signed_headers(body: bytes, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    return {HEADER: sign(body, secret, timestamp), "Content-Type": "application/json"}


class Platform:
    """The SMS platform as a test sees it: posts signed events to the app."""

    def __init__(self, client: Any):
        self.client = client
        self._n = 0

    def post(self, event_type: str, data: dict[str, Any], event_id: str | None = None, **extra: Any) -> Any:
        self._n += 1
        envelope = {"id": event_id or f"evt_{self._n}_{time.monotonic_ns()}", "type": event_type,
                    "occurred_at": "2026-11-21T17:03:11Z", "data": data, **extra}
        body = json.dumps(envelope).encode()
        return self.client.post("/callbacks/events", data=body, headers=signed_headers(body))

    def start_chat(self, chat_id: str = "2415", number: str = "+14155550132", **chat: Any) -> Any:
        data = {"chat": {"id": chat_id, "direction": "inbound", "consumer_number": number,
                         "business_number": "+18882468888", "queue": {"id": "12", "name": "Fence painting"},
                         "lang": "en", "created_at": "2026-11-21T17:03:10Z", **chat}}
        return self.post("chat.started", data)


@pytest.fixture
def platform(client: Any) -> Platform:
    return Platform(client)


def admin_headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def make_settings(settings: Settings) -> Any:
    def make(**changes: Any) -> Settings:
        return replace(settings, **changes)
    return make


@pytest.fixture
def workdir(tmp_path: Any, monkeypatch: Any) -> Any:
    """A working directory of its own (for `.env` and `instance/`) and none of our variables set:
    for commands that read their settings from the environment, as `crmconnector` does."""
    import os

    for name in list(os.environ):
        if name.startswith(("CRMCONNECTOR_", "SALESFORCE_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def sent_statements(engine: Any, monkeypatch: Any) -> list[tuple[str, int]]:
    """Record every statement sent from now on, with its number of parameter sets (more than one for an
    executemany): those through SQLAlchemy and those run on the driver's cursor (crmconnector.driver_sql),
    each statement of a script (`run_script`, one round trip for several) on its own."""
    from sqlalchemy import event

    from crmconnector import driver_sql, store
    from crmconnector.driver_sql import DriverStatement

    sent: list[tuple[str, int]] = []
    event.listen(engine, "before_cursor_execute",
                 lambda conn, cursor, sql, params, context, many: sent.append((sql, len(params) if many else 1)))
    one = DriverStatement._execute
    monkeypatch.setattr(DriverStatement, "_execute", lambda self, conn, plan, params: (
        sent.append((plan.compiled.string, 1)), one(self, conn, plan, params))[1])
    script = driver_sql.run_script
    monkeypatch.setattr(store, "run_script", lambda conn, statements: (
        sent.extend((sql, 1) for sql in statements), SCRIPTS.append(list(statements)), script(conn, statements))[2])
    SCRIPTS.clear()
    return sent


def sqlalchemy_statements(engine: Any) -> list[str]:
    """Every statement run through SQLAlchemy's execution on `engine` from now on (not those run on the
    driver's cursor by crmconnector.driver_sql)."""
    from sqlalchemy import event

    seen: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda conn, cursor, sql, *args: seen.append(sql))
    return seen


SCRIPTS: list[list[str]] = []  # the scripts `sent_statements` saw, each a list of statements
