"""Lifecycle events with bad data: the contract's 400 naming the field, and nothing stored."""
from __future__ import annotations

import copy

import pytest
from sqlalchemy import func, select

from crmconnector.store import chat_activity, chat_messages, chats, console_events, events, outbox, reading
from tests.chat_support import TOM, assigned, ended, message, transferred


def _nothing_stored(runtime) -> bool:
    with reading(runtime.engine) as conn:
        return all(conn.execute(select(func.count()).select_from(t)).scalar_one() == 0
                   for t in (events, chats, chat_messages, chat_activity, outbox, console_events))


def _with(data, path, value):
    data = copy.deepcopy(data)
    node = data
    *parents, last = path.split(".")
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return data


_DELETE = object()


@pytest.mark.parametrize("kind,data,path,value", [
    ("chat.message", message("m1", "consumer", "hi", 0), "message.sender", "bot"),
    ("chat.message", message("m1", "consumer", "hi", 0), "message.media", {"url": "https://x/y.jpg"}),
    ("chat.message", message("m1", "consumer", "hi", 0), "message.media", [{"filename": "no-url.jpg"}]),
    ("chat.message", message("m1", "consumer", "hi", 0), "message.sent_at", "yesterday at noon"),
    ("chat.message", message("m1", "consumer", "hi", 0), "message.id", True),
    ("chat.message", message("m1", "consumer", "hi", 0), "chat.id", ""),
    ("chat.message", message("m1", "consumer", "hi", 0), "message.sent_at", _DELETE),
    ("chat.assigned", assigned(TOM, 0), "assigned_at", "2026-13-45T99:00:00Z"),
    ("chat.assigned", assigned(TOM, 0), "agent", "Tom"),
    ("chat.transferred", transferred("began", 0), "transfer.status", "paused"),
    ("chat.transferred", transferred("began", 0), "transfer.at", 1763744591),
    ("chat.ended", ended(0), "chat.ended_at", "soon"),
    ("chat.ended", ended(0), "chat.disconnected_by", "cat"),
    ("chat.ended", ended(0), "chat.id", {"nested": 1}),
])
def test_bad_lifecycle_data_is_a_400_naming_the_field_and_stores_nothing(platform, runtime, kind, data, path,
                                                                         value):
    response = platform.post(kind, _with(data, path, value))
    assert response.status_code == 400
    error = response.json["error"]
    assert error["code"] == "invalid_payload"
    assert error["field"].startswith(f"data.{path}")
    assert _nothing_stored(runtime)


@pytest.mark.parametrize("kind,data,path", [
    ("chat.message", message("m1", "consumer", "hi", 0), "message.sent_at"),
    ("chat.assigned", assigned(TOM, 0), "assigned_at"),
    ("chat.ended", ended(0), "chat.ended_at"),
])
@pytest.mark.parametrize("timestamp", ["9999-12-31T23:00:00-05:00", "0001-01-01T00:30:00+01:00"])
def test_a_timestamp_outside_the_years_datetime_holds_in_utc_is_a_400(platform, runtime, kind, data, path,
                                                                        timestamp):
    """An offset can carry a valid timestamp past year 9999 (or before year 1) in UTC: a 400, not a 500."""
    response = platform.post(kind, _with(data, path, timestamp))
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_payload"
    assert response.json["error"]["field"] == f"data.{path}"
    assert _nothing_stored(runtime)


def test_an_optional_field_sent_as_null_reads_as_absent(platform, runtime):
    """A picture sent without text arrives as `"text": null`: stored with no text, not refused."""
    picture = [{"url": "https://media.example/m/1", "content_type": "image/jpeg", "filename": "fence1.jpg"}]
    response = platform.post("chat.message", message("m1", "consumer", None, 0, media=picture))
    assert response.status_code == 200
    assert platform.post("chat.message", message("m2", "consumer", "hi", 1, media=None, agent=None)).status_code == 200
    assert platform.start_chat(direction=None, lang=None).status_code == 200
    with reading(runtime.engine) as conn:
        rows = conn.execute(select(chat_messages.c.message_id, chat_messages.c.text, chat_messages.c.media)
                            .order_by(chat_messages.c.message_id)).all()
        assert conn.execute(select(chats.c.direction)).scalar_one() == "inbound"
    assert [tuple(r) for r in rows] == [("m1", "", picture), ("m2", "hi", [])]


@pytest.mark.parametrize("kind,data,path", [
    ("chat.message", message("m1", "consumer", "hi", 0), "message.sent_at"),
    ("chat.message", message("m1", "consumer", "hi", 0), "message.sender"),
    ("chat.assigned", assigned(TOM, 0), "agent"),
    ("chat.ended", ended(0), "chat.ended_at"),
])
def test_a_required_field_sent_as_null_is_still_a_400(platform, runtime, kind, data, path):
    response = platform.post(kind, _with(data, path, None))
    assert response.status_code == 400
    assert response.json["error"]["field"] == f"data.{path}"
    assert _nothing_stored(runtime)
