"""The database unreachable at start or lost mid-run: 503 (the platform retries), never a 2xx for an event
that was not stored, and service resumes by itself when the database returns."""
from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import pytest
from sqlalchemy import func, select

from crmconnector.runtime import Runtime
from crmconnector.settings import Settings
from crmconnector.store import chats, events, reading
from tests.conftest import Platform

WAIT = 60.0  # upper bound for the background retry to notice the database (it retries every second)


def _app(runtime: Runtime) -> Any:
    from webapp import create_app

    return create_app(runtime=runtime, background=False, test_config={"TESTING": True})


def _stored(runtime: Runtime, event_id: str) -> int:
    with reading(runtime.engine) as conn:
        return int(conn.execute(select(func.count()).select_from(events).where(events.c.id == event_id)).scalar())


def _started(chat_id: str) -> dict[str, Any]:
    return {"chat": {"id": chat_id, "direction": "inbound", "consumer_number": "+14155550132",
                     "business_number": "+18882468888", "queue": {"id": "12", "name": "Fence painting"},
                     "lang": "en", "created_at": "2026-11-21T17:03:10Z"}}


def _assert_unavailable(client: Any, platform: Platform, event_id: str) -> None:
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json["checks"]["database"].startswith("unavailable")
    response = platform.post("chat.started", _started("5001"), event_id=event_id)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.json["error"]["code"] == "unavailable"


@pytest.fixture
def sqlite_runtime_without_database(settings: Settings, tmp_path: Path) -> Iterator[tuple[Runtime, Path]]:
    """A Runtime whose SQLite file cannot be opened (a folder stands where the file should be)."""
    path = tmp_path / "away" / "state.db"
    path.mkdir(parents=True)
    runtime = Runtime(replace(settings, database_url=f"sqlite:///{path}"))
    try:
        yield runtime, path
    finally:
        runtime.close()


def test_sqlite_unreachable_at_start_answers_503_then_resumes_by_itself(
        sqlite_runtime_without_database: tuple[Runtime, Path]) -> None:
    runtime, path = sqlite_runtime_without_database
    client = _app(runtime).test_client()
    platform = Platform(client)
    assert client.get("/healthz").status_code == 200  # the process is alive, just not ready
    _assert_unavailable(client, platform, "evt-away")

    path.rmdir()  # the database file can be created now
    assert runtime.schema_ready.wait(WAIT)
    assert client.get("/readyz").status_code == 200
    assert platform.post("chat.started", _started("5001"), event_id="evt-away").status_code == 200
    assert _stored(runtime, "evt-away") == 1


@pytest.mark.postgres
def test_postgres_unreachable_at_start_answers_503_then_resumes_by_itself(
        settings: Settings, pg_server: Any) -> None:
    name = pg_server.create_database()  # empty: the schema is created once the server answers
    pg_server.stop()
    runtime = Runtime(replace(settings, database_url=pg_server.url(name)))
    try:
        client = _app(runtime).test_client()
        platform = Platform(client)
        _assert_unavailable(client, platform, "evt-pg-away")
        assert not runtime.schema_ready.is_set()

        pg_server.start_again()
        assert runtime.schema_ready.wait(WAIT)
        assert client.get("/readyz").status_code == 200
        assert platform.post("chat.started", _started("5001"), event_id="evt-pg-away").status_code == 200
        assert _stored(runtime, "evt-pg-away") == 1
    finally:
        runtime.close()
        _ensure_running(pg_server)
        pg_server.drop_database(name)


@pytest.mark.postgres
@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_postgres_lost_mid_run_answers_503_and_resumes_when_it_returns(
        settings: Settings, pg_server: Any, pg_database: str, mode: str) -> None:
    runtime = Runtime(replace(settings, database_url=pg_database))
    try:
        client = _app(runtime).test_client()
        platform = Platform(client)
        assert platform.post("chat.started", _started("5000"), event_id="evt-before").status_code == 200
        assert client.get("/readyz").status_code == 200

        pg_server.stop(mode)  # every pooled connection is now dead
        pg_server.wait_until_down()
        _assert_unavailable(client, platform, "evt-during")
        _assert_unavailable(client, platform, "evt-during")  # the platform's retry, still down

        pg_server.start_again()
        assert client.get("/readyz").status_code == 200  # stale pooled connections are replaced
        retried = platform.post("chat.started", _started("5001"), event_id="evt-during")
        assert retried.status_code == 200
        assert retried.json["chat_id"] == "5001"
        assert _stored(runtime, "evt-before") == 1 and _stored(runtime, "evt-during") == 1
        with reading(runtime.engine) as conn:
            assert sorted(conn.execute(select(chats.c.id)).scalars()) == ["5000", "5001"]
    finally:
        runtime.close()
        _ensure_running(pg_server)


def _ensure_running(pg_server: Any) -> None:
    try:
        pg_server.start_again()
    except Exception:  # noqa: BLE001 - already running
        pass


def test_a_sqlite_outage_never_leaves_a_2xx_for_an_unstored_event(
        sqlite_runtime_without_database: tuple[Runtime, Path]) -> None:
    runtime, path = sqlite_runtime_without_database
    platform = Platform(_app(runtime).test_client())
    statuses = [platform.post("chat.started", _started(str(6000 + n)), event_id=f"evt-{n}").status_code
                for n in range(5)]
    assert statuses == [503] * 5
    shutil.rmtree(path)
    assert runtime.schema_ready.wait(WAIT)
    with reading(runtime.engine) as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar() == 0
