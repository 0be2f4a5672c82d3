"""The agent console's live stream on the production server (`crmconnector serve`, and granian run by hand):
events are sent as they happen, many streams stay open at once, a stream whose browser left gives its
thread back, and a stop (SIGTERM, Ctrl-C) ends open streams instead of waiting for them."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
import requests

from crmconnector import agents
from crmconnector.settings import Settings
from crmconnector.store import make_engine
from tests.instances import Instance, envelope, signed
from tests.pg import free_port

AGENT = "tom@example.com"
LIMIT_SECONDS = 30  # an upper bound on waiting, not a speed assertion


class Stream:
    """One browser's /agent/stream on its own connection, read as raw bytes."""

    def __init__(self, port: int, cookie: str):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=LIMIT_SECONDS)
        self.sock.sendall(f"GET /agent/stream HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nCookie: {cookie}\r\n"
                          "Accept: text/event-stream\r\n\r\n".encode())
        self.received = b""

    def wait_for(self, text: bytes, timeout: float = LIMIT_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.received:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"never received {text!r}; got {self.received!r}")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                continue
            if not chunk:
                raise AssertionError(f"the stream ended before {text!r}; got {self.received!r}")
            self.received += chunk

    def wait_closed(self, timeout: float = LIMIT_SECONDS) -> None:
        self.sock.settimeout(timeout)
        while chunk := self.sock.recv(65536):
            self.received += chunk

    def close(self) -> None:
        self.sock.close()


def console_cookie(instance: Instance) -> str:
    """Sign an agent in as a browser does (one-use link) and return its session cookie."""
    settings = Settings.from_env(instance.environment(), dotenv_path=None)
    engine = make_engine(instance.database_url)
    try:
        agent = agents.add_agent(engine, AGENT, "Tom Sawyer")
        link = agents.sign_in_link(engine, settings, agent)
    finally:
        engine.dispose()
    session = requests.Session()
    assert session.get(link, timeout=LIMIT_SECONDS).status_code == 200
    return "; ".join(f"{c.name}={c.value}" for c in session.cookies)


def post(instance: Instance, event_id: str, event_type: str, data: dict) -> None:
    body = envelope(event_id, event_type, data)
    response = requests.post(f"{instance.url}/callbacks/events", data=body, headers=signed(body),
                             timeout=LIMIT_SECONDS)
    assert response.status_code in (200, 202), response.text


def assign_chat(instance: Instance, chat_id: str) -> None:
    post(instance, f"{chat_id}-s", "chat.started", {"chat": {
        "id": chat_id, "direction": "inbound", "consumer_number": "+14155550132",
        "business_number": "+18882468888"}})
    post(instance, f"{chat_id}-a", "chat.assigned", {"chat": {"id": chat_id},
                                                     "agent": {"id": "t1", "email": AGENT, "name": "Tom Sawyer"},
                                                     "assigned_at": "2026-11-21T17:03:11Z"})


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Instance]]:
    started: list[Instance] = []

    def start_instance(**options: int) -> Instance:
        instance = Instance(f"sqlite:///{tmp_path / 'state.db'}", tmp_path / f"i{len(started)}", free_port(),
                            **options)
        started.append(instance)
        return instance.start()

    yield start_instance
    for instance in started:
        instance.stop()


def test_many_streams_get_each_event_as_it_happens(start: Callable[..., Instance]) -> None:
    server = start(threads=24)
    cookie = console_cookie(server)
    streams = [Stream(server.port, cookie) for _ in range(20)]
    try:
        for stream in streams:
            stream.wait_for(b"event: hello")
        assert requests.get(f"{server.url}/healthz", timeout=LIMIT_SECONDS).status_code == 200
        assign_chat(server, "sse-1")
        for stream in streams:
            stream.wait_for(b'"chat_id":"sse-1"')  # while the response is still open: sent, not buffered
    finally:
        for stream in streams:
            stream.close()


def test_a_stream_whose_browser_left_gives_its_thread_back(start: Callable[..., Instance]) -> None:
    server = start(threads=3)
    cookie = console_cookie(server)
    kept, left = Stream(server.port, cookie), Stream(server.port, cookie)
    kept.wait_for(b"event: hello")
    left.wait_for(b"event: hello")
    left.close()  # the browser goes away; its stream notices on its next write
    assign_chat(server, "sse-2")  # served by the third thread; wakes both streams
    kept.wait_for(b'"chat_id":"sse-2"')
    # Two new streams need two threads: the one the closed stream held must be free again.
    again = [Stream(server.port, cookie) for _ in range(2)]
    try:
        for stream in again:
            stream.wait_for(b"event: hello", timeout=15)
    finally:
        for stream in [kept, *again]:
            stream.close()


@pytest.mark.parametrize("workers,ctrl_c", [(1, False), (2, False), (1, True), (2, True)])
def test_a_stop_ends_open_streams(start: Callable[..., Instance], workers: int, ctrl_c: bool) -> None:
    server = start(workers=workers)
    cookie = console_cookie(server)
    streams = [Stream(server.port, cookie) for _ in range(4)]
    try:
        for stream in streams:
            stream.wait_for(b"event: hello")
        began = time.monotonic()
        assert server.stop(timeout=LIMIT_SECONDS, ctrl_c=ctrl_c) == 0, server.log_tail()
        for stream in streams:
            stream.wait_closed(timeout=5)
    finally:
        for stream in streams:
            stream.close()
    # Well before the server would kill a worker that does not stop (and the streams' own 5-minute end).
    assert time.monotonic() - began < 20


def test_a_plain_granian_command_line_serves_the_app_and_stops_cleanly(tmp_path: Path) -> None:
    instance = Instance(f"sqlite:///{tmp_path / 'state.db'}", tmp_path / "plain", free_port(), workers=2)
    instance.folder.mkdir(parents=True)
    # The command line of the README's production install.
    command = [str(Path(sys.executable).with_name("granian")), "--interface", "wsgi", "--host", "127.0.0.1",
               "--port", str(instance.port), "--workers", "2", "--blocking-threads", "128",
               "--workers-kill-timeout", "45", "--respawn-failed-workers", "webapp.wsgi:app"]
    with open(instance.log_path, "ab") as log:
        instance.process = subprocess.Popen(command, cwd=instance.folder, env=instance.environment(), stdout=log,
                                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        instance.wait_ready(90)  # both workers started (either may start last): see Instance._workers_started
        cookie = console_cookie(instance)
        stream = Stream(instance.port, cookie)
        try:
            stream.wait_for(b"event: hello")
            assign_chat(instance, "plain-1")
            stream.wait_for(b'"chat_id":"plain-1"')
            began = time.monotonic()
            assert instance.stop(timeout=LIMIT_SECONDS) == 0, instance.log_tail()
            stream.wait_closed(timeout=5)
        finally:
            stream.close()
        assert time.monotonic() - began < 20
    finally:
        if instance.process.poll() is None:
            os.killpg(instance.process.pid, signal.SIGKILL)
            instance.process.wait(30)
