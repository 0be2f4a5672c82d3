"""call.abandoned through the callback endpoint: stored for the ticket job, bad input refused."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from crmconnector.store import abandoned_calls, events, outbox
from tests.abandoned_support import call_data, post_call


def _row(runtime, call_id="c-100"):
    with runtime.engine.connect() as conn:
        return conn.execute(select(abandoned_calls).where(abandoned_calls.c.id == call_id)).mappings().first()


def _count(runtime, table):
    with runtime.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_call_abandoned_is_recorded_for_the_job(platform, runtime, crm):
    response = post_call(platform, number="(415) 555-0132", messages=[
        {"id": "m2", "text": "second", "sent_at": "2026-11-21T17:04:00Z"},
        {"id": "m1", "text": "first", "sent_at": "2026-11-21T17:03:30Z",
         "media": [{"url": "https://media.example/fence.jpg", "content_type": "image/jpeg", "filename": "fence.jpg"}]}])
    assert response.json == {"call_id": "c-100", "status": "recorded"}
    row = _row(runtime)
    assert row["caller_number"] == "+14155550132"
    assert row["dialed_number"] == "+18882468888"
    assert row["queue"] == {"id": "12", "name": "Fence painting"}
    assert (row["lang"], row["wait_seconds"], row["sms_status"], row["status"]) == ("en", 150, "allowed", "new")
    assert row["abandoned_at"].isoformat() == "2026-11-21T17:04:40+00:00"
    assert [m["id"] for m in row["sms_messages"]] == ["m1", "m2"]
    assert row["sms_messages"][0]["media"] == [
        {"url": "https://media.example/fence.jpg", "content_type": "image/jpeg", "filename": "fence.jpg"}]
    assert row["case_id"] is None
    assert crm.find("Case", "Origin", ["Phone"]) == []  # the Case is the job's work, never the callback's


def test_a_repeated_event_replays_the_answer_and_stores_once(platform, runtime):
    first = platform.post("call.abandoned", call_data(), event_id="evt_call_1")
    again = platform.post("call.abandoned", call_data(), event_id="evt_call_1")
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json == first.json
    assert _count(runtime, abandoned_calls) == 1
    assert _count(runtime, events) == 1


def test_a_later_event_for_the_same_call_merges_its_messages(platform, runtime):
    post_call(platform, messages=[{"id": "m1", "text": "first", "sent_at": "2026-11-21T17:03:30Z"}])
    post_call(platform, messages=[{"id": "m2", "text": "second", "sent_at": "2026-11-21T17:04:00Z"},
                                  {"id": "m1", "text": "first", "sent_at": "2026-11-21T17:03:30Z"}])
    assert [m["text"] for m in _row(runtime)["sms_messages"]] == ["first", "second"]
    assert _count(runtime, abandoned_calls) == 1


def test_integer_ids_are_accepted(platform, runtime):
    post_call(platform, call_id=98765, messages=[{"id": 7, "text": "hi", "sent_at": "2026-11-21T17:03:30Z"}])
    assert _row(runtime, "98765")["sms_messages"][0]["id"] == "7"


def test_the_largest_wait_an_integer_column_holds_is_recorded(platform, runtime):
    data = call_data()
    data["call"]["wait_seconds"] = 2**31 - 1
    assert platform.post("call.abandoned", data).status_code == 202
    assert _row(runtime)["wait_seconds"] == 2**31 - 1


@pytest.mark.parametrize("change, field, code", [
    (lambda c: c.pop("caller_number"), "data.call.caller_number", "invalid_payload"),
    (lambda c: c.update(caller_number=""), "data.call.caller_number", "invalid_phone_number"),
    (lambda c: c.update(caller_number="not a number"), "data.call.caller_number", "invalid_phone_number"),
    (lambda c: c.update(caller_number="+1415555013299999"), "data.call.caller_number", "invalid_phone_number"),
    (lambda c: c.update(caller_number=4155550132), "data.call.caller_number", "invalid_payload"),
    (lambda c: c.update(dialed_number="12"), "data.call.dialed_number", "invalid_phone_number"),
    (lambda c: c["wait_time_sms"].update(status="maybe"), "data.call.wait_time_sms.status", "invalid_payload"),
    (lambda c: c["wait_time_sms"].pop("status"), "data.call.wait_time_sms.status", "invalid_payload"),
    (lambda c: c["wait_time_sms"].update(messages="hello"), "data.call.wait_time_sms.messages", "invalid_payload"),
    (lambda c: c["wait_time_sms"]["messages"][0].update(sent_at="yesterday"),
     "data.call.wait_time_sms.messages.0.sent_at", "invalid_payload"),
    (lambda c: c.update(wait_seconds=-5), "data.call.wait_seconds", "invalid_payload"),
    (lambda c: c.update(wait_seconds=2**31), "data.call.wait_seconds", "invalid_payload"),  # past PostgreSQL's
    (lambda c: c.update(wait_seconds=10**20), "data.call.wait_seconds", "invalid_payload"),  # past SQLite's
    (lambda c: c.pop("id"), "data.call.id", "invalid_payload"),
])
def test_bad_call_abandoned_gets_400_naming_the_field_and_stores_nothing(platform, runtime, change, field, code):
    data = call_data()
    change(data["call"])
    response = platform.post("call.abandoned", data)
    assert response.status_code == 400
    assert response.json["error"]["code"] == code
    assert response.json["error"]["field"] == field
    assert (_count(runtime, abandoned_calls), _count(runtime, events), _count(runtime, outbox)) == (0, 0, 0)
