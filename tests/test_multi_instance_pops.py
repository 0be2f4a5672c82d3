"""Live pops across instances: two Runtimes on one PostgreSQL database share wake-ups via LISTEN/NOTIFY."""
from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any, Iterator

import pytest
from sqlalchemy import select

from crmconnector.notify_pg import PgWakeup
from crmconnector.runtime import Runtime
from crmconnector.settings import Settings
from crmconnector.store import console_events, reading
from tests.conftest import Platform

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg_settings(settings: Settings, pg_database: str) -> Settings:
    return replace(settings, database_url=pg_database)


@pytest.fixture
def two_instances(pg_settings: Settings) -> Iterator[tuple[Runtime, Runtime]]:
    a, b = Runtime(pg_settings), Runtime(pg_settings)
    try:
        assert a.wakeup.listening(10) and b.wakeup.listening(10)
        yield a, b
    finally:
        a.close()
        b.close()


def _waiter(runtime: Runtime, timeout: float) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}
    ready = threading.Event()

    def wait() -> None:
        ready.set()
        result["woken"] = runtime.wakeup.wait(timeout)

    thread = threading.Thread(target=wait)
    thread.start()
    ready.wait(5)
    return thread, result


def test_postgres_runtime_uses_listen_notify(pg_settings: Settings) -> None:
    pg = Runtime(pg_settings)
    try:
        assert isinstance(pg.wakeup, PgWakeup)
    finally:
        pg.close()


def test_a_notify_on_instance_b_wakes_a_listener_on_instance_a(two_instances: tuple[Runtime, Runtime]) -> None:
    a, b = two_instances
    thread, result = _waiter(a, timeout=20)
    b.wakeup.notify()
    thread.join(25)
    assert result == {"woken": True}


def test_without_a_notify_the_listener_times_out(two_instances: tuple[Runtime, Runtime]) -> None:
    a, _ = two_instances
    assert a.wakeup.wait(0.3) is False


def test_chat_assigned_on_instance_b_pops_for_the_agent_listening_on_instance_a(
        two_instances: tuple[Runtime, Runtime]) -> None:
    from webapp import create_app

    a, b = two_instances
    platform_b = Platform(create_app(runtime=b, background=False, test_config={"TESTING": True}).test_client())
    assert platform_b.start_chat("7001").status_code == 200
    with reading(a.engine) as conn:
        before = conn.execute(select(console_events.c.id)).all()

    thread, result = _waiter(a, timeout=20)
    response = platform_b.post("chat.assigned", {"chat": {"id": "7001"},
                                                 "agent": {"id": "a1", "email": "Sam@example.com", "name": "Sam"},
                                                 "assigned_at": "2026-11-21T17:03:20Z"})
    assert response.status_code in (200, 202)
    thread.join(25)
    assert result == {"woken": True}
    with reading(a.engine) as conn:  # what instance A's stream reads once woken
        rows = conn.execute(select(console_events.c.agent_email, console_events.c.chat_id, console_events.c.kind)
                            .where(console_events.c.id.notin_([r.id for r in before]))).all()
    assert ("sam@example.com", "7001", "pop") in [tuple(r) for r in rows]


def test_listening_resumes_after_the_database_restarts(two_instances: tuple[Runtime, Runtime],
                                                       pg_server: Any) -> None:
    a, b = two_instances
    assert isinstance(a.wakeup, PgWakeup) and a.wakeup.listens == 1
    pg_server.stop("immediate")
    pg_server.start_again()
    for _ in range(300):  # A notices the lost connection and listens again by itself
        if a.wakeup.listens == 2 and a.wakeup.listening(0):
            break
        threading.Event().wait(0.05)
    assert a.wakeup.listens == 2
    thread, result = _waiter(a, timeout=20)
    b.wakeup.notify()  # B's sender finds its connection dead, reconnects and delivers this one
    thread.join(25)
    assert result == {"woken": True}
