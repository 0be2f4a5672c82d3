"""Live pops across the processes on one SQLite file: Unix datagram sockets in a folder beside it."""
from __future__ import annotations

import socket
import tempfile
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterator

import pytest
from sqlalchemy import select

from crmconnector.notify_local import SocketWakeup, wakeup_folder
from crmconnector.notify_pg import CoalescingWakeup
from crmconnector.runtime import Runtime
from crmconnector.settings import Settings
from crmconnector.store import console_events, reading
from tests.conftest import Platform


def _waiter(wakeup: Any, timeout: float) -> tuple[threading.Thread, dict[str, Any]]:
    result: dict[str, Any] = {}
    ready = threading.Event()

    def wait() -> None:
        ready.set()
        result["woken"] = wakeup.wait(timeout)

    thread = threading.Thread(target=wait)
    thread.start()
    ready.wait(5)
    return thread, result


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[SocketWakeup, SocketWakeup]]:
    a, b = SocketWakeup(tmp_path / "w"), SocketWakeup(tmp_path / "w")
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def test_a_notify_in_one_process_wakes_the_listeners_of_another(pair):
    a, b = pair
    thread, result = _waiter(a, timeout=20)
    b.notify()
    thread.join(25)
    assert result == {"woken": True}


def test_without_a_notify_nobody_is_woken(pair):
    a, _ = pair
    assert a.wait(0.3) is False


def test_a_socket_whose_process_is_gone_is_removed_and_the_others_are_still_reached(pair, tmp_path):
    a, b = pair
    dead = tmp_path / "w" / "4242-gone.sock"
    orphan = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    orphan.bind(str(dead))
    orphan.close()  # as after SIGKILL: the file stays, nobody listens
    assert dead.exists()
    assert a.send_round() == 1  # b
    assert not dead.exists()
    assert b.path.exists()


def test_close_removes_the_socket(tmp_path):
    wakeup = SocketWakeup(tmp_path / "w")
    assert wakeup.path.exists() and wakeup.path.parent == tmp_path / "w"
    wakeup.close()
    assert not wakeup.path.exists()


def test_the_folder_is_beside_the_database_unless_that_path_is_too_long_for_a_socket(tmp_path, monkeypatch):
    short = Path(tempfile.mkdtemp(prefix="w"))  # pytest's own folders are too deep for a socket beside
    monkeypatch.chdir(short)
    assert wakeup_folder("instance/crmconnector.db") == short / "instance" / "crmconnector.db.wakeups"
    short.rmdir()
    deep = tmp_path / ("d" * 90) / "state.db"
    folder = wakeup_folder(str(deep))
    assert folder.name.startswith("crmconnector-") and folder.name.endswith(".wakeups")
    assert folder == wakeup_folder(str(deep)) != wakeup_folder(str(deep.with_name("other.db")))
    wakeup = SocketWakeup(folder)  # a socket path that fits
    wakeup.close()


def test_runtimes_pick_sockets_for_a_sqlite_file_and_stay_in_process_in_memory(settings: Settings, tmp_path):
    on_file = Runtime(replace(settings, database_url=f"sqlite:///{tmp_path / 'a.db'}"))
    in_memory = Runtime(replace(settings, database_url="sqlite://"))
    try:
        assert isinstance(on_file.wakeup, SocketWakeup)
        assert on_file.wakeup.folder == wakeup_folder(str(tmp_path / "a.db"))
        assert isinstance(in_memory.wakeup, CoalescingWakeup)
    finally:
        on_file.close()
        in_memory.close()


def test_chat_assigned_through_one_process_pops_for_the_agent_listening_on_another(settings: Settings, tmp_path):
    from webapp import create_app

    shared = replace(settings, database_url=f"sqlite:///{tmp_path / 'shared.db'}")
    a, b = Runtime(shared), Runtime(shared)
    try:
        platform_b = Platform(create_app(runtime=b, background=False, test_config={"TESTING": True}).test_client())
        assert platform_b.start_chat("7001").status_code == 200
        with reading(a.engine) as conn:
            before = [row.id for row in conn.execute(select(console_events.c.id))]
        thread, result = _waiter(a.wakeup, timeout=20)
        response = platform_b.post("chat.assigned", {"chat": {"id": "7001"},
                                                     "agent": {"id": "a1", "email": "Sam@example.com", "name": "Sam"},
                                                     "assigned_at": "2026-11-21T17:03:20Z"})
        assert response.status_code in (200, 202)
        thread.join(25)
        assert result == {"woken": True}
        with reading(a.engine) as conn:  # what the other process's stream reads once woken
            rows = conn.execute(select(console_events.c.agent_email, console_events.c.chat_id, console_events.c.kind)
                                .where(console_events.c.id.notin_(before))).all()
        assert ("sam@example.com", "7001", "pop") in [tuple(r) for r in rows]
    finally:
        a.close()
        b.close()


def test_a_folder_that_cannot_be_made_leaves_wake_ups_within_the_process(settings: Settings, tmp_path, caplog):
    blocked = wakeup_folder(str(tmp_path / "a.db"))
    blocked.write_text("a file where the folder would be")
    runtime = Runtime(replace(settings, database_url=f"sqlite:///{tmp_path / 'a.db'}"))
    blocked.unlink()
    try:
        assert isinstance(runtime.wakeup, CoalescingWakeup)
        assert "console wake-ups cannot reach other processes on this database" in caplog.text
        thread, result = _waiter(runtime.wakeup, timeout=20)
        runtime.wakeup.notify()
        thread.join(25)
        assert result == {"woken": True}
    finally:
        runtime.close()
