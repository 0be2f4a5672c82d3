"""Several `crmconnector serve` processes on one PostgreSQL database, as behind a load balancer.

Events of the same chats are spread across two instances; one instance is killed with SIGKILL mid-load
and restarted; the platform retries what was not answered with a 2xx. Every chat ends with exactly one
Task holding every message, and every event is stored once.
"""
from __future__ import annotations

import itertools
import socket
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from sqlalchemy import func, select

from crmconnector.store import chat_messages, events, make_engine, outbox, reading, utcnow
from tests.instances import ADMIN_HEADERS, Instance, chat_stream, envelope, signed
from tests.pg import free_port

pytestmark = pytest.mark.postgres
CHATS = 40
MESSAGES = 4


@pytest.fixture
def engine(pg_database: str) -> Iterator[Any]:
    engine = make_engine(pg_database)
    yield engine
    engine.dispose()


def _deliver(instances: list[Instance], first: int, body: bytes, give_up_at: float) -> requests.Response:
    """The platform: retry the same event until some instance answers 2xx (the balancer moves on)."""
    for attempt in itertools.count():
        target = instances[(first + attempt) % len(instances)]
        try:
            response = requests.post(f"{target.url}/callbacks/events", data=body, headers=signed(body), timeout=30)
            if response.status_code < 300:
                return response
            assert response.status_code in (502, 503), response.text  # never a 4xx for a valid event
        except requests.RequestException:
            pass  # refused, or cut mid-answer by the kill (ChunkedEncodingError): the platform retries
        if time.monotonic() > give_up_at:
            raise AssertionError(f"no instance stored the event after {attempt + 1} attempts")
        time.sleep(0.05)
    raise AssertionError("unreachable")


def _wait_drained(engine: Any, give_up_at: float) -> None:
    """Until no outbox item is pending; leases of the killed process are then expired as time would."""
    stable_since = None
    while time.monotonic() < give_up_at:
        with reading(engine) as conn:
            counts = dict(conn.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status)).all())
        if not counts.get("pending") and not counts.get("running"):
            return
        if not counts.get("pending"):
            stable_since = stable_since or time.monotonic()
            if time.monotonic() - stable_since > 3:
                # Only the killed process's claims are left: their 5-minute lease is moved to the past.
                with engine.begin() as conn:
                    conn.execute(outbox.update().where(outbox.c.status == "running")
                                 .values(claimed_until=utcnow() - timedelta(seconds=1)))
                stable_since = None
        else:
            stable_since = None
        time.sleep(0.2)
    raise AssertionError(f"the outbox did not drain: {counts}")


def test_two_instances_one_killed_mid_load_and_restarted_lose_and_duplicate_nothing(
        pg_database: str, engine: Any, tmp_path: Path) -> None:
    a = Instance(pg_database, tmp_path / "a", free_port()).start()
    b = Instance(pg_database, tmp_path / "b", free_port(), workers=2).start()
    instances = [a, b]
    try:
        streams = [chat_stream(f"k{n}", MESSAGES) for n in range(CHATS)]
        total = sum(len(s) for s in streams)
        delivered = itertools.count(1)
        killed = threading.Event()
        give_up_at = time.monotonic() + 240
        queue = list(enumerate(streams))
        lock = threading.Lock()
        errors: list[BaseException] = []

        def client() -> None:
            try:
                while True:
                    with lock:
                        if not queue:
                            return
                        n, stream = queue.pop()
                    for i, (event_id, kind, data) in enumerate(stream):
                        _deliver(instances, n + i, envelope(event_id, kind, data), give_up_at)
                        if next(delivered) == total // 3 and not killed.is_set():
                            killed.set()
                            b.kill()  # mid-load, with requests and outbox items in flight
                            b.start()
            except BaseException as exc:  # noqa: BLE001 - reported by the test thread
                errors.append(exc)

        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        assert errors == []
        assert killed.is_set()
        _wait_drained(engine, time.monotonic() + 120)

        with reading(engine) as conn:
            assert conn.execute(select(func.count()).select_from(events)).scalar() == total
            assert conn.execute(select(func.count()).select_from(chat_messages)).scalar() == CHATS * MESSAGES
        for n in range(CHATS):
            found = requests.get(f"{a.url}/api/crm/Task", params={"CallObject": f"sms-chat-k{n}"},
                                 headers=ADMIN_HEADERS, timeout=30).json()["records"]
            assert len(found) == 1, f"chat k{n} has {len(found)} Tasks"
            for m in range(MESSAGES):
                assert f"message {m} of chat k{n}" in found[0]["Description"]
    finally:
        for instance in instances:
            instance.stop()


def test_serve_with_workers_stops_cleanly_on_sigterm_and_leaves_no_claimed_item(
        pg_database: str, engine: Any, tmp_path: Path) -> None:
    server = Instance(pg_database, tmp_path / "w", free_port(), workers=2).start()
    try:
        for event_id, kind, data in chat_stream("w1", 2):
            body = envelope(event_id, kind, data)
            response = requests.post(f"{server.url}/callbacks/events", data=body, headers=signed(body), timeout=30)
            assert response.status_code in (200, 202)
    finally:
        code = server.stop()
    assert code == 0, server.log_tail()
    with reading(engine) as conn:
        statuses = set(conn.execute(select(outbox.c.status)).scalars())
    assert "running" not in statuses and statuses <= {"pending", "done"}


class SilentMediaHost:
    """A media host that accepts downloads and never answers, so the outbox item fetching one stays held."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.requested = threading.Event()
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections.append(conn)
            if conn.recv(65536):
                self.requested.set()

    def close(self) -> None:
        self.listener.close()
        for conn in self.connections:
            conn.close()


@pytest.mark.parametrize("ctrl_c", [False, True], ids=["sigterm", "ctrl-c"])
def test_a_stop_puts_the_outbox_item_a_worker_holds_back_to_pending(
        pg_database: str, engine: Any, tmp_path: Path, ctrl_c: bool) -> None:
    media = SilentMediaHost()
    server = Instance(pg_database, tmp_path / "held", free_port(), workers=2,
                      env={"CRMCONNECTOR_MEDIA_HOSTS": "127.0.0.1"}).start()
    try:
        picture = {"url": f"http://127.0.0.1:{media.port}/photo.jpg", "content_type": "image/jpeg",
                   "size_bytes": 1000, "filename": "photo.jpg"}
        chat = chat_stream("held1", 1)
        chat[2][2]["message"]["media"] = [picture]  # the consumer's message
        for event_id, kind, data in chat:
            body = envelope(event_id, kind, data)
            response = requests.post(f"{server.url}/callbacks/events", data=body, headers=signed(body), timeout=30)
            assert response.status_code in (200, 202), response.text
        assert media.requested.wait(60), server.log_tail()
        with reading(engine) as conn:
            held = conn.execute(select(outbox.c.id, outbox.c.claimed_by).where(outbox.c.status == "running")).all()
        assert len(held) == 1, held  # the chat log, waiting for the picture
    finally:
        code = server.stop(ctrl_c=ctrl_c)
        media.close()
    assert code == 0, server.log_tail()  # stopped by itself, not killed after the stop timeout
    with reading(engine) as conn:
        row = conn.execute(select(outbox.c.status, outbox.c.claimed_by).where(outbox.c.id == held[0].id)).one()
    assert (row.status, row.claimed_by) == ("pending", None), server.log_tail()
