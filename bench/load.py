"""Load harness: concurrent signed clients send realistic chat streams to one or more connector instances.

Starts `crmconnector serve` processes (LocalCRM) on SQLite or on a throwaway PostgreSQL server, opens
`--chats` concurrent chats (started + assigned), then sends message events to random open chats over
`--clients` keep-alive connections; a chat that has sent its messages ends and a new one starts, so the
number of open chats stays constant (the first chats are of random length, so the mix of event types is
the same from the first measured event on, however many chats are open). Events of one chat are spread
across the instances. When the event or time budget is spent, every open chat is ended, the outbox is
drained and every chat is checked to have exactly one Task (GET /api/crm/Task?CallObject=sms-chat-<id>).

Reports events/s, p50/p99 latency (client-side, request sent to response read), errors, the CPU time the
servers (connector processes and PostgreSQL) spent per event, and `calibration_ms`: the time a fixed piece
of Python work takes in the client just before the run. The machine's speed varies (a shared host), so
runs are comparable only at similar calibration. Loopback only; bounded in count and time. The connector
reaches PostgreSQL over its Unix socket, as on a one-machine installation (`--pg-tcp`: loopback TCP).

    python bench/load.py --db sqlite --instances 1
    python bench/load.py --matrix            # the table in BENCHMARKS.md
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crmconnector.cli import auto_workers  # noqa: E402
from crmconnector.signatures import HEADER, sign  # noqa: E402
from tests.instances import ADMIN_TOKEN, SECRET, Instance, chat_stream, envelope  # noqa: E402
from tests.pg import PgServer, free_port  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


class Connection:
    """One HTTP/1.1 keep-alive connection with the least client overhead asyncio allows."""

    def __init__(self, port: int):
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
                      ) -> tuple[int, bytes]:
        for attempt in (1, 2):
            try:
                if self.writer is None:
                    self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
                head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nContent-Length: {len(body)}\r\n"
                head += "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
                self.writer.write(head.encode() + b"\r\n" + body)
                assert self.reader is not None
                raw = await self.reader.readuntil(b"\r\n\r\n")
                status = int(raw[9:12])
                match = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", raw)
                payload = await self.reader.readexactly(int(match.group(1))) if match else b""
                if re.search(rb"(?i)\r\nconnection:\s*close", raw):
                    self.close()
                return status, payload
            except (ConnectionError, asyncio.IncompleteReadError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


@dataclass
class Chat:
    id: str
    events: list[tuple[str, str, dict[str, Any]]]
    position: int = 0
    busy: bool = False


@dataclass
class Run:
    ports: list[int]
    chats: int
    clients: int
    messages: int
    max_events: int
    max_seconds: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    sent: int = 0
    started_chats: int = 0
    open: list[Chat] = field(default_factory=list)

    def new_chat(self, messages: int | None = None) -> Chat:
        self.started_chats += 1
        count = self.messages if messages is None else messages
        return Chat(f"L{self.started_chats}", chat_stream(f"L{self.started_chats}", count))

    async def send(self, conn: list[Connection], chat: Chat, measure: bool) -> None:
        event_id, kind, data = chat.events[chat.position]
        body = envelope(event_id, kind, data)
        headers = {HEADER: sign(body, SECRET), "Content-Type": "application/json"}
        target = conn[(int(chat.id[1:]) + chat.position) % len(conn)]
        while True:  # the platform retries an event until it gets a 2xx
            begin = time.perf_counter()
            status, _ = await target.request("POST", "/callbacks/events", body, headers)
            if measure:
                self.latencies.append(time.perf_counter() - begin)
                self.sent += 1
            if status < 300:
                break
            self.errors += 1
            await asyncio.sleep(0.05)
        chat.position += 1

    async def warm_up(self) -> None:
        """Open `chats` chats: started + assigned (not measured). The first chats have anything from 0 to
        `messages` messages, so that from the first measured event on, as many chats end (and new ones
        start) per event as later on: otherwise a short run over many chats would measure almost only
        messages, the cheapest events."""
        rng = random.Random(11)
        self.open = [self.new_chat(rng.randrange(self.messages + 1)) for _ in range(self.chats)]
        queue = list(self.open)

        async def opener() -> None:
            conn = [Connection(p) for p in self.ports]
            while queue:
                chat = queue.pop()
                await self.send(conn, chat, False)
                await self.send(conn, chat, False)
            for c in conn:
                c.close()
        await asyncio.gather(*(opener() for _ in range(self.clients)))

    async def load(self) -> float:
        """Message events to random open chats until the budget is spent; returns the wall time."""
        deadline = time.monotonic() + self.max_seconds
        rng = random.Random(7)

        async def client() -> None:
            conn = [Connection(p) for p in self.ports]
            while self.sent < self.max_events and time.monotonic() < deadline:
                for _ in range(20):
                    index = rng.randrange(len(self.open))
                    chat = self.open[index]
                    if not chat.busy:
                        break
                else:
                    await asyncio.sleep(0)
                    continue
                chat.busy = True
                await self.send(conn, chat, True)  # a message, or the end of the chat
                if chat.position == len(chat.events):
                    fresh = self.new_chat()
                    self.open[index] = fresh
                    fresh.busy = True
                    await self.send(conn, fresh, True)  # started
                    await self.send(conn, fresh, True)  # assigned
                    fresh.busy = False
                else:
                    chat.busy = False
            for c in conn:
                c.close()
        begin = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(self.clients)))
        return time.perf_counter() - begin

    async def finish(self) -> None:
        """End every open chat (a chat may end at any time)."""
        queue = list(self.open)

        async def closer() -> None:
            conn = [Connection(p) for p in self.ports]
            while queue:
                chat = queue.pop()
                chat.position = len(chat.events) - 1
                await self.send(conn, chat, False)
            for c in conn:
                c.close()
        await asyncio.gather(*(closer() for _ in range(self.clients)))


async def outbox_left(port: int) -> int:
    conn = Connection(port)
    _, text = await conn.request("GET", "/metrics")
    conn.close()
    left = 0
    for status in ("pending", "running"):
        found = re.search(rf'crmconnector_outbox_items\{{status="{status}"\}} (\S+)', text.decode())
        left += int(float(found.group(1))) if found else 0
    return left


async def verify(port: int, count: int, clients: int) -> dict[str, int]:
    """How many chats have 0, 1 or more Tasks."""
    tally: dict[str, int] = {}
    ids = list(range(1, count + 1))
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

    async def checker() -> None:
        conn = Connection(port)
        while ids:
            n = ids.pop()
            status, text = await conn.request("GET", f"/api/crm/Task?CallObject=sms-chat-L{n}", headers=auth)
            found = len(json.loads(text)["records"]) if status == 200 else -1
            key = {0: "none", 1: "one"}.get(found, "error" if found < 0 else "several")
            tally[key] = tally.get(key, 0) + 1
        conn.close()
    await asyncio.gather(*(checker() for _ in range(min(clients, 16))))
    return tally


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return total / TICKS


def tree(pid: int) -> list[int]:
    found = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = [int(p) for p in (task / "children").read_text().split()]
        except OSError:
            continue
        for child in children:
            found += tree(child)
    return found


def calibration_ms() -> float:
    """Milliseconds for a fixed piece of JSON, hashing and interpreter work: the machine's speed now."""
    import hashlib

    document = {"id": "evt", "data": {"chat": {"id": "c1"}, "message": {"text": "x" * 200}}}
    best = float("inf")
    for _ in range(5):
        begin = time.process_time()
        for n in range(2000):
            text = json.dumps({**document, "n": n}, sort_keys=True)
            hashlib.sha256(text.encode()).hexdigest()
            json.loads(text)
        best = min(best, time.process_time() - begin)
    return round(best * 1000, 1)


def run_one(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="crmconnector-load-"))
    pg = None
    if args.db == "postgres":
        pg = PgServer.start()
        name = pg.create_database()
        database_url = pg.url(name) if args.pg_tcp else pg.socket_url(name)
    else:
        database_url = f"sqlite:///{work / 'state.db'}"
    env = {"CRMCONNECTOR_ABANDONED_TICKETS": "off"}
    workers = auto_workers(database_url) if args.workers == "auto" else int(args.workers)
    instances = []
    try:
        for n in range(args.instances):
            instances.append(Instance(database_url, work / f"i{n}", free_port(), workers=workers,
                                      threads=args.threads, env=env).start())
        clients = max(1, min(args.clients, args.chats // 2))  # each client needs a chat that is not busy
        run = Run([i.port for i in instances], args.chats, clients, args.messages, args.events, args.seconds)
        asyncio.run(run.warm_up())
        speed = calibration_ms()

        def connector_pids() -> list[int]:
            return [p for i in instances for p in tree(i.process.pid)]  # type: ignore[union-attr]

        def database_pids() -> list[int]:
            return tree(int((pg.data / "postmaster.pid").read_text().split()[0])) if pg else []
        before = cpu_seconds(connector_pids()), cpu_seconds(database_pids()), time.process_time()
        wall = asyncio.run(run.load())
        connector_cpu = cpu_seconds(connector_pids()) - before[0]
        database_cpu = cpu_seconds(database_pids()) - before[1]
        client_cpu = time.process_time() - before[2]
        asyncio.run(run.finish())
        drain_start = time.monotonic()
        while asyncio.run(outbox_left(instances[0].port)) and time.monotonic() - drain_start < args.drain_seconds:
            time.sleep(0.5)
        drain = time.monotonic() - drain_start
        tally = asyncio.run(verify(instances[0].port, run.started_chats, args.clients))
        lat = sorted(run.latencies)
        return {"db": args.db, "pg_connection": ("tcp" if args.pg_tcp else "socket") if pg else None,
                "instances": args.instances, "workers": workers, "chats": args.chats,
                "calibration_ms": speed,
                "clients": clients, "events": run.sent, "seconds": round(wall, 2),
                "events_per_s": round(run.sent / wall, 1), "p50_ms": round(lat[len(lat) // 2] * 1000, 1),
                "p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 1), "errors": run.errors,
                "connector_cpu_ms_per_event": round(connector_cpu * 1000 / max(run.sent, 1), 2),
                "postgres_cpu_ms_per_event": round(database_cpu * 1000 / max(run.sent, 1), 2),
                "client_cpu_ms_per_event": round(client_cpu * 1000 / max(run.sent, 1), 2),
                "chats_total": run.started_chats, "drain_s": round(drain, 1), "tasks": tally}
    finally:
        for instance in instances:
            instance.stop()
        if pg is not None:
            pg.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--workers", default="auto",
                        help="worker processes per instance, or auto: what `serve` starts by default")
    parser.add_argument("--threads", type=int, default=16, help="request threads per process")
    parser.add_argument("--chats", type=int, default=100, help="concurrent open chats")
    parser.add_argument("--clients", type=int, default=32, help="concurrent client connections")
    parser.add_argument("--messages", type=int, default=6, help="messages per chat")
    parser.add_argument("--events", type=int, default=10_000, help="measured events at most")
    parser.add_argument("--seconds", type=float, default=60, help="measured seconds at most")
    parser.add_argument("--drain-seconds", type=float, default=300)
    parser.add_argument("--pg-tcp", action="store_true",
                        help="connect to PostgreSQL over loopback TCP instead of its Unix socket")
    parser.add_argument("--matrix", action="store_true", help="run the BENCHMARKS.md table")
    args = parser.parse_args()
    if not args.matrix:
        print(json.dumps(run_one(args)), flush=True)
        return
    # (database, instances, worker processes per instance, clients): one process at 12 clients, more at 16.
    # `auto` is what `serve` starts by default: one worker per core.
    for db, instances, workers, clients in (("sqlite", 1, "1", 12), ("sqlite", 1, "auto", 16),
                                            ("sqlite", 2, "1", 16), ("sqlite", 2, "auto", 16),
                                            ("postgres", 1, "1", 12), ("postgres", 1, "auto", 16),
                                            ("postgres", 2, "1", 16), ("postgres", 2, "auto", 16)):
        print(json.dumps(run_one(argparse.Namespace(**{**vars(args), "db": db, "instances": instances,
                                                       "workers": workers, "clients": clients}))), flush=True)
    for chats in (10, 100, 1000, 10_000):
        print(json.dumps(run_one(argparse.Namespace(**{**vars(args), "db": "postgres", "chats": chats, "workers": "1",
                                                       "clients": 12, "events": 5000}))), flush=True)


if __name__ == "__main__":
    main()
