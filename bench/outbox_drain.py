"""Outbox drain rate on LocalCRM with an artificial 100 ms of CRM latency per call.

Chats are fed through the real intake (signed chat.started, assigned, messages, chat.ended), so
the outbox holds one chat_log item per chat; then the worker drains it with N threads while every
CRM call (the Contact read for the Task's WhatId, the Task upsert) first sleeps 100 ms, as a
remote CRM would. Reports chats per second per thread count.

    python bench/outbox_drain.py                          # 400 chats, 8/16/32 threads
    python bench/outbox_drain.py --chats 1000 --threads 32 --latency 0.1
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crmconnector.runtime import Runtime  # noqa: E402
from crmconnector.settings import Settings  # noqa: E402
from crmconnector.signatures import sign  # noqa: E402
from crmconnector.store import outbox, reading  # noqa: E402
from crmconnector.sync.worker import Worker  # noqa: E402

SECRET = "bench-secret"
CALLS = ("find_by_phone", "get", "find", "create", "update", "upsert_with_files")


class SlowCRM:
    """A CRM that answers after `latency` seconds, like one across a network."""

    remote = True  # the outbox overlaps its calls in many threads, as for Salesforce

    def __init__(self, inner: Any, latency: float):
        self.inner, self.latency, self.calls = inner, latency, 0

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in CALLS:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            time.sleep(self.latency)
            return attr(*args, **kwargs)
        return call


def post(runtime: Runtime, event_id: str, kind: str, data: dict[str, Any]) -> None:
    body = json.dumps({"id": event_id, "type": kind, "data": data}).encode()
    outcome = runtime.intake.handle(body, "application/json", sign(body, SECRET))
    assert outcome.status in (200, 202), outcome.body


def feed(runtime: Runtime, chats: int, messages: int) -> None:
    account = runtime.crm.create("Account", {"Name": "Thatcher Fencing"})
    for n in range(chats):
        number = f"+1415555{n % 10000:04d}"
        if n < 10000:
            runtime.crm.create("Contact", {"LastName": f"Consumer {n}", "Phone": number, "AccountId": account})
        chat = f"c{n}"
        post(runtime, f"{chat}-s", "chat.started", {"chat": {"id": chat, "consumer_number": number,
                                                              "created_at": "2026-11-21T17:03:10Z"}})
        post(runtime, f"{chat}-a", "chat.assigned", {"chat": {"id": chat}, "assigned_at": "2026-11-21T17:03:20Z",
                                                     "agent": {"email": "tom@example.com", "name": "Tom"}})
        for m in range(messages):
            post(runtime, f"{chat}-m{m}", "chat.message", {"chat": {"id": chat}, "message": {
                "id": str(m), "sender": "consumer" if m % 2 == 0 else "agent", "text": f"message {m}",
                "sent_at": f"2026-11-21T17:04:{m % 60:02d}Z"}})
        post(runtime, f"{chat}-e", "chat.ended", {"chat": {"id": chat, "ended_at": "2026-11-21T17:10:00Z",
                                                           "disposition": "Done"}})


def pending(runtime: Runtime) -> int:
    with reading(runtime.engine) as conn:
        return conn.execute(select(func.count()).select_from(outbox)
                            .where(outbox.c.status.in_(("pending", "running")))).scalar_one()


def run(chats: int, threads: int, latency: float, messages: int, database_url: str | None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(database_url=database_url or f"sqlite:///{tmp}/bench.db", callback_secrets=(SECRET,),
                            admin_token="bench", instance_path=tmp, run_background=False)
        runtime = Runtime(settings)
        try:
            feed(runtime, chats, messages)
            slow = SlowCRM(runtime.crm, latency)
            worker = Worker(runtime.engine, slow, settings, fetch_media=lambda *a: "not fetched in the bench")
            started = time.perf_counter()
            worker.start(threads)
            while pending(runtime):
                time.sleep(0.02)
            seconds = time.perf_counter() - started
            worker.stop()
        finally:
            runtime.close()
    return {"chats": chats, "threads": threads, "latency_ms": round(latency * 1000), "seconds": round(seconds, 2),
            "chats_per_second": round(chats / seconds, 1), "crm_calls": slow.calls}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chats", type=int, default=400)
    parser.add_argument("--threads", default="8,16,32")
    parser.add_argument("--latency", type=float, default=0.1, help="seconds per CRM call")
    parser.add_argument("--messages", type=int, default=10)
    parser.add_argument("--database-url", default=None, help="default: a fresh SQLite file")
    args = parser.parse_args()
    print("| chats | worker threads | CRM latency | seconds | chats/s | CRM calls |")
    print("|---:|---:|---:|---:|---:|---:|")
    for threads in (int(t) for t in args.threads.split(",")):
        r = run(args.chats, threads, args.latency, args.messages, args.database_url)
        print(f"| {r['chats']} | {r['threads']} | {r['latency_ms']} ms | {r['seconds']} | "
              f"{r['chats_per_second']} | {r['crm_calls']} |", flush=True)


if __name__ == "__main__":
    main()
