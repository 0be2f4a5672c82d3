"""The database unreachable at start or lost mid-run: 503 (the platform retries), never a 2xx for an event
that was not stored, and service resumes by itself when the database returns."""
from __future__ import annotations

import logging
import shutil
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from sqlalchemy import event, func, select

from crmconnector.runtime import Runtime
from crmconnector.settings import Settings
from crmconnector.store import chats, events, reading
from tests.conftest import Platform
from tests.instances import Instance
from tests.pg import free_port

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


def test_pages_and_apis_answer_503_in_the_error_shape_while_the_database_is_away(
        sqlite_runtime_without_database: tuple[Runtime, Path]) -> None:
    runtime, _ = sqlite_runtime_without_database
    client = _app(runtime).test_client()
    admin = {"Authorization": f"Bearer {runtime.settings.admin_token}"}
    for path in ("/admin", "/api/admin/outbox", "/admin/status.json", "/api/crm/Contact",
                 "/crm/Contact/003000000000001AAA", "/agent/sign-in?token=abc"):
        response = client.get(path, headers=admin)
        assert response.status_code == 503, path
        assert response.headers["Retry-After"] == "5"
        assert response.json["error"]["code"] in ("unavailable", "crm_unavailable"), path  # the local CRM is in it


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


def test_a_sqlite_folder_that_cannot_be_created_answers_503_then_resumes_by_itself(
        settings: Settings, tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("")  # a file stands where the database's folder would be created
    runtime = Runtime(replace(settings, database_url=f"sqlite:///{taken / 'instance' / 'state.db'}"))
    try:
        client = _app(runtime).test_client()
        platform = Platform(client)
        assert client.get("/healthz").status_code == 200
        _assert_unavailable(client, platform, "evt-no-folder")

        taken.unlink()  # the folder can be created now
        assert runtime.schema_ready.wait(WAIT)
        assert client.get("/readyz").status_code == 200
        assert platform.post("chat.started", _started("5001"), event_id="evt-no-folder").status_code == 200
        assert _stored(runtime, "evt-no-folder") == 1
    finally:
        runtime.close()


def test_serve_with_a_sqlite_folder_that_cannot_be_created_is_up_but_not_ready_until_it_can(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.write_text("")
    server = Instance(f"sqlite:///{taken / 'instance' / 'state.db'}", tmp_path / "serve", free_port())
    server.start(wait=False)
    try:
        deadline = time.monotonic() + WAIT
        while True:  # until the server answers at all
            assert server.process is not None and server.process.poll() is None, server.log_tail()
            try:
                ready = requests.get(f"{server.url}/readyz", timeout=2)
                break
            except requests.RequestException:
                assert time.monotonic() < deadline, server.log_tail()
                time.sleep(0.1)
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"].startswith("unavailable")

        taken.unlink()
        server.wait_ready(WAIT)  # /readyz answers 200 once the folder could be created
        assert "Traceback" not in server.log_tail(1000)
    finally:
        server.stop()


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


def test_an_outage_is_logged_once_and_the_outbox_worker_backs_off_until_it_ends(
        sqlite_runtime_without_database: tuple[Runtime, Path], caplog: pytest.LogCaptureFixture) -> None:
    """Sixteen outbox threads polling a lost database used to log a traceback each, every second."""
    from crmconnector.sync.worker import Worker

    runtime, path = sqlite_runtime_without_database
    attempts: list[float] = []
    event.listen(runtime.engine, "do_connect", lambda *_: attempts.append(time.monotonic()))
    caplog.set_level(logging.INFO)
    worker = Worker.for_runtime(runtime)
    started = time.monotonic()
    worker.start(threads=16)
    try:
        time.sleep(4)
        # The outage was logged once, when the runtime first failed to migrate; nothing more since.
        assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []
        assert [r for r in caplog.records if r.exc_info] == []
        # After the first failures every loop waits: a few attempts in three seconds, not 16 a second.
        assert len([t for t in attempts if t - started >= 1]) <= 8

        path.rmdir()
        assert runtime.schema_ready.wait(WAIT)
        deadline = time.monotonic() + WAIT
        while not any("reachable again" in r.getMessage() for r in caplog.records):
            assert time.monotonic() < deadline, "the end of the outage was not logged"
            time.sleep(0.1)
        assert len([r for r in caplog.records if "reachable again" in r.getMessage()]) == 1
        assert [r for r in caplog.records if r.exc_info] == []
    finally:
        worker.stop()


def test_outage_log_says_start_reminders_and_end_once_and_keeps_tracebacks_for_bugs(
        caplog: pytest.LogCaptureFixture) -> None:
    from sqlalchemy.exc import OperationalError

    from crmconnector.outage import Outage

    now = [100.0]
    outage = Outage(clock=lambda: now[0], remind_seconds=300)
    lost = OperationalError("SELECT 1", {}, Exception("connection refused\nmore detail"))
    caplog.set_level(logging.INFO, logger="crmconnector.database")
    for _ in range(50):
        outage.failed(lost, "outbox worker")
        now[0] += 1
    now[0] += 300
    outage.failed(lost, "outbox worker")  # a reminder
    outage.ok()
    outage.ok()
    for _ in range(3):
        outage.failed(KeyError("bug"), "outbox worker")  # not an outage: traceback, once per period
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == ("the database is unreachable (Exception: connection refused); retrying in the "
                           "background until it is back (noticed by: outbox worker)")
    assert messages[1].startswith("the database is still unreachable after 350 s")
    assert messages[2] == "the database is reachable again (it was away for 350 s)"
    assert len(messages) == 4 and caplog.records[3].exc_info is not None
    assert [bool(r.exc_info) for r in caplog.records[:3]] == [False, False, False]
