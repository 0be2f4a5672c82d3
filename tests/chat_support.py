"""Shared pieces of the chat-lifecycle and outbox tests: a full chat's events, CRM wrappers that
fail the way real CRMs do, a controllable clock, and a media fetcher that needs no network."""
from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from sqlalchemy import select

from crmconnector.crm.base import FileUpload
from crmconnector.store import outbox, reading
from crmconnector.sync.retry import RetryPolicy
from crmconnector.sync.worker import Worker

CHAT = "2415"
TOM = {"id": "7", "email": "tom@example.com", "name": "Tom Sawyer"}
HUCK = {"id": "8", "email": "huck@example.com", "name": "Huck Finn"}
AMY = {"id": "9", "email": "amy@example.com", "name": "Amy Lawrence"}
START = datetime(2026, 11, 21, 17, 3, 10, tzinfo=timezone.utc)
TOO_BIG = "larger than 10485760 bytes"


def at(seconds: int) -> str:
    return (START + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")


def started(chat_id: str = CHAT, number: str = "+14155550132", **chat: Any) -> dict[str, Any]:
    return {"chat": {"id": chat_id, "direction": "inbound", "consumer_number": number,
                     "business_number": "+18882468888", "queue": {"id": "12", "name": "Fence painting"},
                     "lang": "en", "created_at": at(0), **chat}}


def message(message_id: str, sender: str, text: str, seconds: int, chat_id: str = CHAT, **extra: Any) -> dict:
    return {"chat": {"id": chat_id}, "message": {"id": message_id, "sender": sender, "text": text,
                                                 "sent_at": at(seconds), **extra}}


def assigned(agent: dict[str, str], seconds: int, chat_id: str = CHAT) -> dict[str, Any]:
    return {"chat": {"id": chat_id}, "agent": agent, "assigned_at": at(seconds)}


def transferred(status: str, seconds: int, chat_id: str = CHAT, **people: Any) -> dict[str, Any]:
    return {"chat": {"id": chat_id}, "transfer": {"status": status, "at": at(seconds), **people}}


def ended(seconds: int, chat_id: str = CHAT, disposition: str = "Appointment set",
          disconnected_by: str = "consumer") -> dict[str, Any]:
    return {"chat": {"id": chat_id, "ended_at": at(seconds), "disconnected_by": disconnected_by,
                     "disposition": disposition}}


def full_chat(chat_id: str = CHAT) -> list[tuple[str, str, dict[str, Any]]]:
    """(event id, type, data) of a whole chat, in order: three media items, a transfer that fails and
    then succeeds, messages from the consumer, both agents, a supervisor and the system."""
    media = [{"url": "https://media.example/m/1", "content_type": "image/jpeg", "filename": "fence1.jpg"},
             {"url": "https://media.example/m/2", "content_type": "image/png", "filename": "fence2.png"},
             {"url": "https://media.example/m/huge.mp4", "content_type": "video/mp4"}]
    c = chat_id
    return [
        (f"{c}-e01", "chat.started", started(c)),
        (f"{c}-e02", "chat.message", message("m1", "consumer", "Hi, I need a quote for my fence", 0, c,
                                              media=media[:1])),
        (f"{c}-e03", "chat.assigned", assigned(TOM, 10, c)),
        (f"{c}-e04", "chat.message", message("m2", "agent", "Hello Becky!\nHappy to help.", 20, c)),
        (f"{c}-e05", "chat.message", message("m3", "consumer", "Here are two more", 50, c, media=media[1:])),
        (f"{c}-e06", "chat.transferred", transferred("began", 110, c, from_agent=TOM, to_agent=HUCK)),
        (f"{c}-e07", "chat.transferred", transferred("failed", 140, c, from_agent=TOM, to_agent=HUCK)),
        (f"{c}-e08", "chat.transferred", transferred("began", 170, c, from_agent=TOM,
                                                     to_queue={"id": "14", "name": "Estimates"})),
        (f"{c}-e09", "chat.transferred", transferred("ended", 200, c, from_agent=TOM, to_agent=HUCK,
                                                     to_queue={"id": "14", "name": "Estimates"})),
        (f"{c}-e10", "chat.message", message("m4", "system", "Chat transferred to Huck Finn", 201, c)),
        (f"{c}-e11", "chat.message", message("m5", "agent", "Huck here, Tuesday works?", 230, c)),
        (f"{c}-e12", "chat.message", message("m6", "agent", "Supervisor: confirmed.", 260, c, agent=AMY)),
        (f"{c}-e13", "chat.message", message("m7", "consumer", "Tuesday is great, thanks", 290, c)),
        (f"{c}-e14", "chat.ended", ended(410, c)),
    ]


FULL_CHAT_DESCRIPTION = "\n".join([
    "Chat ID: 2415",
    "Language: en",
    "Queue: Fence painting",
    "Initiated: 2026-11-21 17:03:10Z",
    "Accepted: 2026-11-21 17:03:20Z by Tom Sawyer",
    "Terminated: 2026-11-21 17:10:00Z",
    "Disconnected by: consumer",
    "Transfer began: 2026-11-21 17:05:00Z, from Tom Sawyer to Huck Finn",
    "Transfer failed: 2026-11-21 17:05:30Z, from Tom Sawyer to Huck Finn",
    "Transfer began: 2026-11-21 17:06:00Z, from Tom Sawyer to queue Estimates",
    "Transfer ended: 2026-11-21 17:06:30Z, from Tom Sawyer to Huck Finn in queue Estimates",
    "",
    "[2026-11-21 17:03:10Z] Consumer: Hi, I need a quote for my fence [attached: fence1.jpg]",
    "[2026-11-21 17:03:30Z] Agent Tom Sawyer: Hello Becky! Happy to help.",
    "[2026-11-21 17:04:00Z] Consumer: Here are two more [attached: fence2.png] "
    f"[media not attached: https://media.example/m/huge.mp4 ({TOO_BIG})]",
    "[2026-11-21 17:06:31Z] System: Chat transferred to Huck Finn",
    "[2026-11-21 17:07:00Z] Agent Huck Finn: Huck here, Tuesday works?",
    "[2026-11-21 17:07:30Z] Agent Amy Lawrence: Supervisor: confirmed.",
    "[2026-11-21 17:08:00Z] Consumer: Tuesday is great, thanks",
])


def fake_fetch(chat_id: str, message_id: str, position: int, item: dict[str, Any]) -> FileUpload | str:
    """Media without a network: files named `huge` are refused as too large, others are served."""
    if "huge" in item["url"]:
        return TOO_BIG
    return FileUpload(f"{chat_id}/{message_id}/{position}", item.get("filename") or "media",
                      item.get("content_type") or "application/octet-stream", f"bytes of {item['url']}".encode())


class Clock:
    """Real time plus whatever the test moved it forward by (backoff and leases without sleeping)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(timezone.utc) + self.offset

    def advance(self, seconds: float) -> None:
        self.offset += timedelta(seconds=seconds)


def make_worker(runtime: Any, clock: Callable[[], datetime] | None = None, **options: Any) -> Worker:
    options.setdefault("fetch_media", fake_fetch)
    options.setdefault("policy", RetryPolicy(random=lambda: 0.5))
    return Worker(runtime.engine, runtime.crm, runtime.settings, clock=clock or Clock(), **options)


def use_crm(runtime: Any, crm: Any) -> None:
    """Put a wrapper around the CRM for the callbacks and the workers alike."""
    runtime.crm = crm
    runtime.context.crm = crm


def post_all(platform: Any, events: list[tuple[str, str, dict[str, Any]]]) -> list[Any]:
    return [platform.post(kind, data, event_id=event_id) for event_id, kind, data in events]


def outbox_rows(runtime: Any) -> list[dict[str, Any]]:
    with reading(runtime.engine) as conn:
        return [dict(r) for r in conn.execute(select(outbox).order_by(outbox.c.id)).mappings()]


def tasks(crm: Any, chat_id: str = CHAT) -> list[Any]:
    return crm.find("Task", "CallObject", [f"sms-chat-{chat_id}"])


def task_files(crm: Any, task_id: str) -> list[tuple[str, bytes]]:
    files = crm.find("ContentVersion", "FirstPublishLocationId", [task_id])
    return sorted((f.fields["Title"], crm.file_data(f.id)) for f in files)


CALLS = ("find_by_phone", "get", "find", "create", "create_many", "update", "upsert_with_files")


class FlakyCRM:
    """Delegates to a real CRM, but the next `failures` calls raise `error()` instead (CRM down,
    rate-limited, session expired...)."""

    upsert_many = None  # each Task through upsert_with_files, where the failures are

    def __init__(self, inner: Any, error: Callable[[], Exception], failures: int):
        self.inner, self.error, self.failures = inner, error, failures
        self.failed = 0
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if name not in CALLS:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                fail = self.failures > 0
                if fail:
                    self.failures -= 1
                    self.failed += 1
            if fail:
                raise self.error()
            return attr(*args, **kwargs)
        return call


class DiesAfterWrite:
    """The CRM writes the Task, then our process dies before it records that (the first time)."""

    upsert_many = None  # each Task through `upsert_with_files` below

    def __init__(self, inner: Any):
        self.inner = inner
        self.writes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def upsert_with_files(self, *args: Any, **kwargs: Any) -> Any:
        result = self.inner.upsert_with_files(*args, **kwargs)
        self.writes += 1
        if self.writes == 1:
            raise SystemError("the process died after the CRM wrote the Task")
        return result
