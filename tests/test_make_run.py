"""What `make run` starts: `crmconnector serve` in a fresh directory, as a real process on a real port."""
from __future__ import annotations

import json
import os
import queue
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from crmconnector.cli import auto_workers
from crmconnector.signatures import HEADER, sign

LIMIT_SECONDS = 180  # an upper bound on waiting (a busy machine starts slowly), not a speed assertion


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def console_script() -> list[str]:
    script = Path(sys.executable).with_name("crmconnector")
    return [str(script)] if script.exists() else [sys.executable, "-m", "crmconnector.cli"]


class Server:
    """A `crmconnector serve` process whose output lines are read as they come."""

    def __init__(self, cwd: Path, port: int):
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CRMCONNECTOR_", "SALESFORCE_"))}
        env.update(CRMCONNECTOR_PORT=str(port), PYTHONUNBUFFERED="1")
        self.port = port
        self.proc = subprocess.Popen(console_script() + ["serve"], cwd=cwd, env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.output: list[str] = []
        self.reader = threading.Thread(target=self._pump, daemon=True)
        self.reader.start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def read_until(self, text: str) -> list[str]:
        deadline = time.monotonic() + LIMIT_SECONDS
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                break
            if line is None:
                break
            self.output.append(line)
            if text in line:
                return self.output
        raise AssertionError(f"never printed {text!r}; output so far:\n" + "\n".join(self.output))

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=LIMIT_SECONDS) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", data=body, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=LIMIT_SECONDS) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=LIMIT_SECONDS)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=LIMIT_SECONDS)
        self.reader.join(timeout=LIMIT_SECONDS)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


@pytest.fixture
def serve(tmp_path) -> Iterator[Server]:
    servers: list[Server] = []

    def start(port: int | None = None) -> Server:
        server = Server(tmp_path, port or free_port())
        servers.append(server)
        return server

    yield start  # type: ignore[misc]
    for server in servers:
        server.stop()


def value_after(lines: list[str], label: str) -> str:
    line = next(line for line in lines if line.strip().startswith(label))
    return line.rsplit(": ", 1)[1].strip()


def test_serve_prints_where_things_are_answers_and_stops(serve, tmp_path):
    server = serve()
    lines = server.read_until("Callback secret")
    base = f"http://127.0.0.1:{server.port}"
    text = "\n".join(lines)
    count = auto_workers("sqlite:///instance/crmconnector.db")  # serve's default: one per core, here
    workers = f"{count} worker{'s' if count > 1 else ''}"
    assert f"listening on {base} (CRM: local, database: sqlite:///instance/crmconnector.db, {workers})" in text
    assert f"Agent console:   {base}/agent" in text and f"Admin pages:     {base}/admin" in text
    assert f"Callback URL:    {base}/callbacks/events" in text
    secrets_path = tmp_path / "instance" / "secrets.json"
    token, secret = value_after(lines, "Admin token"), value_after(lines, "Callback secret")
    assert f"kept owner-only in {secrets_path}" in text
    assert json.loads(secrets_path.read_text()) == {"callback_secret": secret, "admin_token": token}
    assert stat.S_IMODE(secrets_path.stat().st_mode) == 0o600

    assert server.get("/healthz") == (200, b'{"status":"ok"}\n')
    assert server.get("/api/crm/Contact")[0] == 401
    assert server.get("/api/crm/Contact", {"Authorization": f"Bearer {token}"}) == (
        200, b'{"records":[],"totalSize":0}\n')
    body = json.dumps({"id": "evt_make_run", "type": "chat.started", "data": {"chat": {
        "id": "1", "direction": "inbound", "consumer_number": "(415) 555-0132",
        "business_number": "+18882468888"}}}).encode()
    status, answer = server.post("/callbacks/events", body, {HEADER: sign(body, secret),
                                                             "Content-Type": "application/json"})
    assert status == 200
    assert json.loads(answer)["match"]["outcome"] == "none"
    assert server.stop() == 0
    assert (tmp_path / "instance" / "crmconnector.db").is_file()


def test_second_start_reuses_the_secrets_without_showing_them(serve, tmp_path):
    first = serve()
    token = value_after(first.read_until("Callback secret"), "Admin token")
    assert first.stop() == 0
    second = serve()
    lines = second.read_until("Callback secret")
    text = "\n".join(lines)
    assert token not in text
    secrets_path = tmp_path / "instance" / "secrets.json"
    assert f"Admin token: in {secrets_path} (owner-only)" in text
    assert f"Callback secret: in {secrets_path} (owner-only)" in text
    assert second.get("/api/crm/Contact", {"Authorization": f"Bearer {token}"})[0] == 200


def test_a_busy_port_is_a_clear_error(serve):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        server = serve(busy.getsockname()[1])
        lines = server.read_until("cannot listen")
        assert server.proc.wait(timeout=LIMIT_SECONDS) == 1
    assert "Address already in use" in lines[-1] and "CRMCONNECTOR_PORT" in lines[-1]
    assert not any("Traceback" in line for line in lines)


def test_a_port_another_connector_listens_on_is_a_clear_error(serve):
    first = serve()
    first.read_until("Callback secret")
    second = serve(first.port)  # the server shares a port between its own workers, never with a stranger
    lines = second.read_until("cannot listen")
    assert second.proc.wait(timeout=LIMIT_SECONDS) == 1
    assert "Address already in use" in lines[-1]
    assert first.get("/healthz")[0] == 200
