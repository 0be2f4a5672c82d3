"""Media through the whole connector: signed events in, the outbox worker's real downloader, the Task and
its files in the local CRM. Refused media is noted in the transcript and never connected to."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import select

from crmconnector.settings import Settings
from crmconnector.store import chat_media, reading
from crmconnector.sync.worker import Worker
from tests.test_media.conftest import PUBLIC_IP, MediaServer, Network

JPEG = b"\xff\xd8\xff\xe0" + b"j" * 2000
CAP = 10_000


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return replace(settings, media_max_bytes=CAP)


def _chat(platform: Any, media: list[dict[str, Any]]) -> None:
    assert platform.start_chat("77").status_code in (200, 202)
    message = {"id": "m1", "sender": "consumer", "text": "Photos of the fence", "sent_at": "2026-11-21T17:03:10Z",
               "media": media}
    assert platform.post("chat.message", {"chat": {"id": "77"}, "message": message}).status_code in (200, 202)
    ended = {"id": "77", "ended_at": "2026-11-21T17:09:00Z", "disconnected_by": "consumer"}
    assert platform.post("chat.ended", {"chat": ended}).status_code in (200, 202)


def _task(crm: Any) -> Any:
    [task] = crm.find("Task", "CallObject", ["sms-chat-77"])
    return task


def test_refused_media_is_noted_in_the_transcript_and_never_connected_to(
        platform: Any, runtime: Any, crm: Any, media_server: MediaServer, network: Network) -> None:
    network.names["cdn.test"] = [PUBLIC_IP]
    network.names["intranet.test"] = ["10.20.30.40"]
    network.routes[(PUBLIC_IP, 80)] = ("127.0.0.1", media_server.port)
    port = media_server.port
    media_server.serve("/ok/1", JPEG)
    media_server.serve("/secret.jpg", b"internal")
    media_server.redirect("/bounce", f"http://127.0.0.1:{port}/secret.jpg")
    media_server.serve("/big.mp4", b"v" * (CAP + 1), "video/mp4", chunked=True)
    media_server.serve("/page", b"<html></html>", "text/html")
    _chat(platform, [
        {"url": "http://cdn.test/ok/1", "content_type": "image/jpeg", "filename": "fence.jpg"},
        {"url": f"http://127.0.0.1:{port}/secret.jpg", "content_type": "image/jpeg"},
        {"url": "http://10.0.0.5/a.jpg", "filename": "a.jpg"},
        {"url": "http://169.254.169.254/latest/meta-data/"},
        {"url": "http://cdn.test/bounce", "filename": "bounce.jpg"},
        {"url": "http://cdn.test/big.mp4", "content_type": "video/mp4", "filename": "big.mp4"},
        {"url": "http://cdn.test/huge.mp4", "size_bytes": CAP + 1, "filename": "huge.mp4"},
        {"url": "http://cdn.test/page", "filename": "page.jpg"},
        {"url": "http://intranet.test/x.png", "filename": "x.png"},
    ])

    Worker.for_runtime(runtime).run_once()

    task = _task(crm)
    line = task.fields["Description"].splitlines()[-1]
    assert line == (
        "[2026-11-21 17:03:10Z] Consumer: Photos of the fence [attached: fence.jpg]"
        f" [media not attached: http://127.0.0.1:{port}/secret.jpg (loopback address 127.0.0.1 refused)]"
        " [media not attached: a.jpg (private address 10.0.0.5 refused)]"
        " [media not attached: http://169.254.169.254/latest/meta-data/"
        " (cloud metadata address 169.254.169.254 refused)]"
        " [media not attached: bounce.jpg (loopback address 127.0.0.1 refused)]"
        f" [media not attached: big.mp4 (larger than {CAP} bytes)]"
        f" [media not attached: huge.mp4 (larger than {CAP} bytes)]"
        " [media not attached: page.jpg (content type text/html not allowed)]"
        " [media not attached: x.png (private address 10.20.30.40 refused)]")
    [file] = crm.find("ContentVersion", "FirstPublishLocationId", [task.id])
    assert file.fields["Title"] == "fence.jpg" and crm.file_data(file.id) == JPEG
    assert set(network.connects) == {(PUBLIC_IP, 80)}
    assert "/secret.jpg" not in media_server.paths
    assert sorted(media_server.paths) == ["/big.mp4", "/bounce", "/ok/1", "/page"]


def test_settled_media_is_not_downloaded_again_when_the_task_is_updated(
        platform: Any, runtime: Any, crm: Any, media_server: MediaServer, network: Network) -> None:
    network.names["cdn.test"] = [PUBLIC_IP]
    network.routes[(PUBLIC_IP, 80)] = ("127.0.0.1", media_server.port)
    media_server.serve("/ok/1", JPEG)
    _chat(platform, [{"url": "http://cdn.test/ok/1", "content_type": "image/jpeg"},
                     {"url": "http://cdn.test/missing.jpg", "content_type": "image/jpeg"}])
    worker = Worker.for_runtime(runtime)
    worker.run_once()
    first = _task(crm).fields["Description"]
    late = {"id": "m2", "sender": "agent", "text": "Thanks!", "sent_at": "2026-11-21T17:08:00Z"}
    assert platform.post("chat.message", {"chat": {"id": "77"}, "message": late}).status_code in (200, 202)

    worker.run_once()

    task = _task(crm)
    assert "[attached: 1.jpg]" in first
    assert "[media not attached: http://cdn.test/missing.jpg (HTTP 404)]" in task.fields["Description"]
    assert "Thanks!" in task.fields["Description"]
    assert media_server.paths == ["/ok/1", "/missing.jpg"]
    assert len(crm.find("ContentVersion", "FirstPublishLocationId", [task.id])) == 1
    with reading(runtime.engine) as conn:
        rows = conn.execute(select(chat_media.c.position, chat_media.c.status, chat_media.c.reason)
                            .where(chat_media.c.chat_id == "77").order_by(chat_media.c.position)).all()
    assert [tuple(r) for r in rows] == [(0, "attached", None), (1, "refused", "HTTP 404")]


def test_a_picture_whose_host_failed_for_a_while_reaches_the_same_task_later(
        platform: Any, runtime: Any, crm: Any, media_server: MediaServer, network: Network) -> None:
    from datetime import datetime, timedelta, timezone

    network.names["cdn.test"] = [PUBLIC_IP]
    network.routes[(PUBLIC_IP, 80)] = ("127.0.0.1", media_server.port)
    media_server.serve("/fence.jpg", b"busy", status=503)
    ended_at = datetime.now(timezone.utc).replace(microsecond=0)
    assert platform.start_chat("77").status_code == 200
    message = {"id": "m1", "sender": "consumer", "text": "Fence", "sent_at": "2026-11-21T17:03:10Z",
               "media": [{"url": "http://cdn.test/fence.jpg", "content_type": "image/jpeg", "filename": "fence.jpg"}]}
    assert platform.post("chat.message", {"chat": {"id": "77"}, "message": message}).status_code == 200
    ended = {"id": "77", "ended_at": ended_at.isoformat(), "disconnected_by": "consumer"}
    assert platform.post("chat.ended", {"chat": ended}).status_code == 202

    Worker.for_runtime(runtime).run_once()
    task = _task(crm)
    assert task.fields["Description"].endswith("Consumer: Fence [media not attached: fence.jpg (HTTP 503)]")
    assert crm.find("ContentVersion", "FirstPublishLocationId", [task.id]) == []
    assert Worker.for_runtime(runtime).run_once() == 0  # the retry waits its turn

    media_server.serve("/fence.jpg", JPEG)
    later = Worker.for_runtime(runtime, clock=lambda: datetime.now(timezone.utc) + timedelta(minutes=6))
    assert later.run_once() == 1

    [again] = crm.find("Task", "CallObject", ["sms-chat-77"])
    assert again.id == task.id
    assert again.fields["Description"].endswith("Consumer: Fence [attached: fence.jpg]")
    [file] = crm.find("ContentVersion", "FirstPublishLocationId", [task.id])
    assert crm.file_data(file.id) == JPEG
    assert later.run_once() == 0  # attached: nothing more to retry


def test_media_retries_stop_when_the_window_has_closed() -> None:
    from datetime import datetime, timedelta, timezone

    from crmconnector.sync.chatlog import MediaOutcome
    from crmconnector.sync.handlers import MEDIA_RETRY_DELAY, MEDIA_RETRY_WINDOW, media_retry_at

    ended = datetime(2026, 11, 21, 17, 9, tzinfo=timezone.utc)
    passing = {("m1", 0): MediaOutcome("a.jpg", False, "timed out", final=False, retry=True)}
    refused = {("m1", 0): MediaOutcome("a.jpg", False, "HTTP 404")}
    assert media_retry_at(passing, ended, ended + timedelta(minutes=1)) == ended + timedelta(minutes=1) + \
        MEDIA_RETRY_DELAY
    assert media_retry_at(passing, ended, ended + MEDIA_RETRY_WINDOW + timedelta(seconds=1)) is None
    assert media_retry_at(refused, ended, ended + timedelta(minutes=1)) is None


def test_a_late_message_is_posted_at_once_while_a_picture_waits_for_its_retry(
        platform: Any, runtime: Any, crm: Any) -> None:
    """A media retry is scheduled minutes ahead; a late message (or a re-link) asks for the chat log
    now, and does not wait behind it."""
    from datetime import datetime, timezone

    def host_times_out(chat_id: str, message_id: str, position: int, item: Any) -> Any:
        raise TimeoutError("the media host did not answer")

    ended_at = datetime.now(timezone.utc).replace(microsecond=0)
    _chat(platform, [{"url": "https://cdn.test/fence.jpg", "content_type": "image/jpeg", "filename": "fence.jpg"}])
    late_end = {"id": "77", "ended_at": ended_at.isoformat(), "disconnected_by": "consumer"}
    assert platform.post("chat.ended", {"chat": late_end}).status_code == 202
    worker = Worker(runtime.engine, runtime.crm, runtime.settings, fetch_media=host_times_out)
    assert worker.run_once() == 1
    assert "fence.jpg (download failed)" in _task(crm).fields["Description"]
    late = {"id": "m2", "sender": "consumer", "text": "One more thing", "sent_at": "2026-11-21T17:08:00Z"}
    assert platform.post("chat.message", {"chat": {"id": "77"}, "message": late}).status_code == 200
    assert worker.run_once() == 1
    assert "Consumer: One more thing" in _task(crm).fields["Description"]
