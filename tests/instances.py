"""Connector instances as separate processes (`crmconnector serve`), for multi-instance tests and bench/."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import zlib
from pathlib import Path
import requests

SECRET = "instance-callback-secret"
ADMIN_TOKEN = "instance-admin-token"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class Instance:
    """One `crmconnector serve` process on a loopback port, sharing `database_url` with its peers."""

    def __init__(self, database_url: str, folder: Path, port: int, *, workers: int = 1, threads: int = 32,
                 env: dict[str, str] | None = None):
        self.database_url, self.folder, self.port = database_url, folder, port
        self.workers, self.threads = workers, threads
        self.extra_env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = folder / f"serve-{port}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CRMCONNECTOR_", "SALESFORCE_"))}
        env.update({"CRMCONNECTOR_DATABASE_URL": self.database_url, "CRMCONNECTOR_CALLBACK_SECRETS": SECRET,
                    "CRMCONNECTOR_ADMIN_TOKEN": ADMIN_TOKEN, "CRMCONNECTOR_HOST": "127.0.0.1",
                    "CRMCONNECTOR_PORT": str(self.port), "CRMCONNECTOR_INSTANCE_PATH": str(self.folder / "instance"),
                    "CRMCONNECTOR_CRM": "local", **self.extra_env})
        return env

    def start(self, timeout: float = 90.0, *, wait: bool = True) -> "Instance":
        """Start the server and (with `wait`) wait until it is ready; without, it may still be starting."""
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "crmconnector.cli", "serve", "--threads", str(self.threads),
                   "--workers", str(self.workers)]
        if self.workers > 1:
            # -v: granian then logs "Started worker-N", which wait_ready waits for.
            command[3:3] = ["-v"]
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(command, cwd=self.folder, env=self.environment(), stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"instance on port {self.port} exited: {self.log_tail()}")
            try:
                if requests.get(f"{self.url}/readyz", timeout=2).status_code == 200 and self._workers_started():
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"instance on port {self.port} not ready: {self.log_tail()}")

    def _workers_started(self) -> bool:
        """Every worker has loaded the app (the first one alone already answers): granian 2.8 can miss a
        stop that arrives while a worker is still starting."""
        if self.workers <= 1:
            return True
        log = self.log_tail(10_000)
        return all(f"Started worker-{n}" in log for n in range(1, self.workers + 1))

    def signal(self, sig: int) -> None:
        """Send `sig` to the server (and, for SIGKILL, to its whole process group: its worker processes too)."""
        if self.process is None:
            return
        if sig == signal.SIGKILL:
            os.killpg(self.process.pid, sig)
        else:
            self.process.send_signal(sig)

    def kill(self) -> None:
        """A crash: SIGKILL, nothing cleaned up."""
        self.signal(signal.SIGKILL)
        if self.process is not None:
            self.process.wait(30)

    def stop(self, timeout: float = 60.0, ctrl_c: bool = False) -> int | None:
        """A graceful stop (SIGTERM, or with `ctrl_c` SIGINT to the whole process group as a terminal's
        Ctrl-C sends it); returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        if ctrl_c:
            os.killpg(self.process.pid, signal.SIGINT)
        else:
            self.signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def pids(self) -> list[int]:
        """The server process and its children (the worker processes)."""
        if self.process is None:
            return []
        found = [self.process.pid]
        for task in Path(f"/proc/{self.process.pid}/task").glob("*"):
            children = task / "children"
            if children.exists():
                found += [int(p) for p in children.read_text().split()]
        return found

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def chat_stream(chat_id: str, messages: int = 6, number: str | None = None) -> list[tuple[str, str, dict]]:
    """(event id, type, data) of one realistic chat, in order: started, assigned, alternating consumer
    and agent messages, ended."""
    from datetime import datetime, timedelta, timezone

    start = datetime(2026, 11, 21, 17, 0, tzinfo=timezone.utc)

    def at(seconds: int) -> str:
        return (start + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")

    digits = f"{zlib.crc32(chat_id.encode()) % 10_000:04d}"
    agent = {"id": "a7", "email": "agent7@example.com", "name": "Agent Seven"}
    events: list[tuple[str, str, dict]] = [
        (f"{chat_id}-s", "chat.started", {"chat": {
            "id": chat_id, "direction": "inbound", "consumer_number": number or f"+1415555{digits}",
            "business_number": "+18882468888", "queue": {"id": "12", "name": "Fence painting"}, "lang": "en",
            "created_at": at(0)}}),
        (f"{chat_id}-a", "chat.assigned", {"chat": {"id": chat_id}, "agent": agent, "assigned_at": at(5)}),
    ]
    for n in range(messages):
        sender = "consumer" if n % 2 == 0 else "agent"
        events.append((f"{chat_id}-m{n}", "chat.message", {"chat": {"id": chat_id}, "message": {
            "id": f"m{n}", "sender": sender, "text": f"message {n} of chat {chat_id}", "sent_at": at(10 + n)}}))
    events.append((f"{chat_id}-e", "chat.ended", {"chat": {
        "id": chat_id, "ended_at": at(20 + messages), "disconnected_by": "consumer", "disposition": "Resolved"}}))
    return events


def envelope(event_id: str, event_type: str, data: dict) -> bytes:
    import json

    return json.dumps({"id": event_id, "type": event_type, "occurred_at": "2026-11-21T17:03:11Z",
                       "data": data}).encode()


def signed(body: bytes) -> dict[str, str]:
    from crmconnector.signatures import HEADER, sign

    return {HEADER: sign(body, SECRET), "Content-Type": "application/json"}
