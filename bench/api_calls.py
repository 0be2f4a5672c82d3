"""Salesforce requests per chat, through the real app, chat-log renderer, outbox worker and SalesforceCRM.

Salesforce is the stateful fake org of the test suite, served through `responses` (no network).
Each scenario posts one signed chat (started, assigned, N messages carrying M images of 600 KB, ended)
to the Flask app, drains the outbox, and counts the HTTP requests that reached the org: the match
(answering chat.started) and the chat log (the Task and its files). The one-time login is excluded.
The drain part posts many chats first, then lets worker threads post their logs against an org that
takes 100 ms per request.

    .venv/bin/python bench/api_calls.py [--drain-chats 200] [--threads 16]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import responses  # noqa: E402

from crmconnector.crm.base import FileUpload  # noqa: E402
from crmconnector.runtime import Runtime  # noqa: E402
from crmconnector.settings import Settings  # noqa: E402
from crmconnector.signatures import HEADER, sign  # noqa: E402
from crmconnector.store import outbox, reading  # noqa: E402
from crmconnector.sync.worker import Worker  # noqa: E402
from tests.fake_salesforce import LOGIN_URL, VERSION, FakeSalesforce  # noqa: E402
from webapp import create_app  # noqa: E402

SECRET = "bench-secret"
IMAGE_BYTES = 600 * 1024
NUMBER = "+14155550132"


def settings_for(folder: str) -> Settings:
    return Settings(database_url=f"sqlite:///{folder}/state.db", crm="salesforce", callback_secrets=(SECRET,),
                    admin_token="bench", instance_path=f"{folder}/instance", run_background=False,
                    salesforce_login_url=LOGIN_URL, salesforce_client_id="client", salesforce_client_secret="secret",
                    salesforce_api_version=VERSION)


def fetch(chat_id: str, message_id: str, position: int, item: Any) -> FileUpload:
    """Every media item is a 600 KB image (no download: the requests counted are Salesforce's)."""
    return FileUpload(f"{chat_id}/{message_id}/{position}", item.get("filename") or "image.jpg", "image/jpeg",
                      bytes([position % 251]) * IMAGE_BYTES)


class Platform:
    def __init__(self, client: Any):
        self.client = client
        self.n = 0

    def post(self, kind: str, data: dict[str, Any]) -> None:
        self.n += 1
        body = json.dumps({"id": f"evt-{self.n}", "type": kind, "occurred_at": "2026-11-21T17:03:11Z",
                           "data": data}).encode()
        answer = self.client.post("/callbacks/events", data=body,
                                  headers={HEADER: sign(body, SECRET), "Content-Type": "application/json"})
        if answer.status_code >= 300:
            raise RuntimeError(f"{kind}: {answer.status_code} {answer.get_data(as_text=True)[:200]}")

    def chat(self, chat_id: str, messages: int, media: int) -> None:
        self.post("chat.started", {"chat": {"id": chat_id, "direction": "inbound", "consumer_number": NUMBER,
                                            "business_number": "+18882468888", "lang": "en",
                                            "queue": {"id": "12", "name": "Fence painting"},
                                            "created_at": "2026-11-21T17:03:10Z"}})
        self.post("chat.assigned", {"chat": {"id": chat_id}, "assigned_at": "2026-11-21T17:03:20Z",
                                    "agent": {"id": "7", "email": "tom@example.com", "name": "Tom Sawyer"}})
        for i in range(messages):
            items = [{"url": f"https://media.example/{chat_id}/{i}/{k}", "content_type": "image/jpeg",
                      "filename": f"photo-{i}-{k}.jpg"} for k in range(media if i == 0 else 0)]
            sender = "consumer" if i % 2 == 0 else "agent"
            seconds = 30 + i
            self.post("chat.message", {"chat": {"id": chat_id}, "message": {
                "id": f"m{i}", "sender": sender, "text": f"message number {i} about the fence",
                "sent_at": f"2026-11-21T{17 + seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}Z",
                "media": items}})
        self.post("chat.ended", {"chat": {"id": chat_id, "ended_at": "2026-11-21T19:00:00Z",
                                          "disconnected_by": "consumer", "disposition": "Appointment set"}})


def pending(runtime: Runtime) -> int:
    with reading(runtime.engine) as conn:
        return len(conn.execute(outbox.select().where(outbox.c.status != "done")).all())


def scenario(messages: int, media: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder, responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeSalesforce().install(rsps)
        runtime = Runtime(settings_for(folder))
        try:
            crm = runtime.crm
            account = crm.create("Account", {"Name": "Thatcher Fencing"})
            crm.create("Contact", {"FirstName": "Becky", "LastName": "Thatcher", "Phone": "(415) 555-0132",
                                   "AccountId": account})
            platform = Platform(create_app(runtime=runtime, background=False).test_client())
            before = fake.requests
            platform.chat("c2", messages, media)
            match_requests = fake.requests - before  # only chat.started asks the CRM (the match)
            worker = Worker(runtime.engine, crm, runtime.settings, fetch_media=fetch)
            before = fake.requests
            while worker.run_once():
                pass
            log_requests = fake.requests - before
            tasks = [t for t in fake.records["Task"].values() if t["CallObject"] == "sms-chat-c2"]
            files = [f for f in fake.records["ContentVersion"].values() if f["FirstPublishLocationId"] in
                     {t["Id"] for t in tasks}]
            # a transcript past 32,000 characters is attached in full as one more file
            assert len(tasks) == 1 and len(files) in (media, media + 1), (len(tasks), len(files))
            assert pending(runtime) == 0
            return {"messages": messages, "media": media, "match": match_requests,
                    "chat_log": log_requests, "files": len(files)}
        finally:
            runtime.close()


def drain(chats: int, threads: int, latency: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder, responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeSalesforce().install(rsps)
        runtime = Runtime(settings_for(folder))
        try:
            runtime.crm.create("Contact", {"LastName": "Thatcher", "Phone": "(415) 555-0132"})
            platform = Platform(create_app(runtime=runtime, background=False).test_client())
            for n in range(chats):
                platform.chat(f"d{n}", 10, 0)
            fake.latency = latency
            worker = Worker(runtime.engine, runtime.crm, runtime.settings, fetch_media=fetch)
            started = time.perf_counter()
            worker.start(threads)
            while pending(runtime):
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
            worker.stop()
            tasks = len(fake.records["Task"])
            assert tasks == chats, (tasks, chats)
            return {"chats": chats, "threads": threads, "latency_ms": latency * 1000, "seconds": elapsed,
                    "chats_per_second": chats / elapsed}
        finally:
            runtime.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drain-chats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--latency", type=float, default=0.1)
    args = parser.parse_args()
    print("| messages | media (600 KB images) | files attached | match requests | chat-log requests "
          "| total per chat |")
    print("|---:|---:|---:|---:|---:|---:|")
    for messages, media in ((10, 0), (10, 3), (10, 10), (500, 0), (500, 10)):
        row = scenario(messages, media)
        total = row["match"] + row["chat_log"]
        print(f"| {messages} | {media} | {row['files']} | {row['match']} | {row['chat_log']} | {total} |")
    if args.drain_chats:
        result = drain(args.drain_chats, args.threads, args.latency)
        print(f"\nDrain: {result['chats']} chats, {result['threads']} worker threads, {result['latency_ms']:.0f} ms "
              f"per Salesforce request: {result['seconds']:.1f} s, {result['chats_per_second']:.1f} chats/s")


if __name__ == "__main__":
    main()
