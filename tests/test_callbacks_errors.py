"""Every error row of the callback contract, and that a rejected event leaves no trace."""
from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
from sqlalchemy import func, select

from crmconnector import signatures
from crmconnector.store import chats, events, outbox, reading
from crmconnector.signatures import HEADER, sign
from tests.conftest import SECRET, sent_statements, signed_headers, sqlalchemy_statements


def _count_rows(runtime, table) -> int:
    with reading(runtime.engine) as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def _nothing_stored(runtime) -> bool:
    return all(_count_rows(runtime, t) == 0 for t in (events, chats, outbox))


def _started(chat_id="2415", number="+14155550132", event_id="evt_1"):
    return {"id": event_id, "type": "chat.started", "occurred_at": "2026-11-21T17:03:11Z",
            "data": {"chat": {"id": chat_id, "consumer_number": number}}}


def _post(client, body: bytes, headers=None):
    return client.post("/callbacks/events", data=body, headers=headers or signed_headers(body))


def test_missing_signature_is_401_and_stores_nothing(client, runtime):
    body = json.dumps(_started()).encode()
    response = client.post("/callbacks/events", data=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 401
    assert response.json["error"]["code"] == "invalid_signature"
    assert _nothing_stored(runtime)


def test_wrong_secret_is_401(client, runtime):
    body = json.dumps(_started()).encode()
    response = _post(client, body, signed_headers(body, secret="not-the-secret"))
    assert response.status_code == 401
    assert _nothing_stored(runtime)


# t= and the server's clock are compared in whole seconds; int(now) + 301 is only 300 s ahead if a second
# boundary passes before the check runs, so the future side is 302 (also on a busy machine).
@pytest.mark.parametrize("skew", [-301, 302])
def test_timestamp_outside_300_seconds_is_401(client, runtime, skew):
    body = json.dumps(_started()).encode()
    response = _post(client, body, signed_headers(body, timestamp=int(time.time()) + skew))
    assert response.status_code == 401
    assert _nothing_stored(runtime)


@pytest.mark.parametrize("skew, status", [(-300, 200), (300, 200), (-301, 401), (301, 401)])
def test_the_300_second_window_is_the_same_into_the_past_and_the_future(client, monkeypatch, skew, status):
    """The server's clock is in the middle of a second: `t` exactly 300 s either side is still within."""
    now = 1_800_000_000
    monkeypatch.setattr(signatures, "time", SimpleNamespace(time=lambda: now + 0.6))
    body = json.dumps(_started()).encode()
    assert _post(client, body, signed_headers(body, timestamp=now + skew)).status_code == status


def test_any_of_several_v1_parts_may_match(client):
    body = json.dumps(_started()).encode()
    t = int(time.time())
    good = sign(body, SECRET, t).split("v1=")[1]
    header = f"t={t},v1={'0' * 64},v1={good}"
    response = _post(client, body, {HEADER: header, "Content-Type": "application/json"})
    assert response.status_code == 200


def test_a_rotated_secret_signs_too(make_settings, tmp_path):
    from crmconnector.runtime import Runtime
    from webapp import create_app

    settings = make_settings(callback_secrets=("new-secret", SECRET))
    runtime = Runtime(settings)
    try:
        client = create_app(runtime=runtime, background=False).test_client()
        body = json.dumps(_started()).encode()
        assert _post(client, body, signed_headers(body, secret="new-secret")).status_code == 200
        body2 = json.dumps(_started(event_id="evt_2", chat_id="2")).encode()
        assert _post(client, body2, signed_headers(body2, secret=SECRET)).status_code == 200
    finally:
        runtime.close()


def test_wrong_content_type_is_415(client, runtime):
    body = json.dumps(_started()).encode()
    headers = signed_headers(body)
    headers["Content-Type"] = "text/plain"
    response = _post(client, body, headers)
    assert response.status_code == 415
    assert response.json["error"]["code"] == "unsupported_media_type"
    assert _nothing_stored(runtime)


def test_body_over_one_mebibyte_is_413(client, runtime):
    event = _started()
    event["padding"] = "x" * (1024 * 1024)
    body = json.dumps(event).encode()
    response = _post(client, body)
    assert response.status_code == 413
    assert response.json["error"]["code"] == "payload_too_large"
    assert _nothing_stored(runtime)


@pytest.mark.parametrize("body", [b"{not json", b"\xff\xfe\x00garbage", b""])
def test_malformed_or_non_utf8_body_is_invalid_json(client, runtime, body):
    response = _post(client, body)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_json"
    assert _nothing_stored(runtime)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
@pytest.mark.parametrize("event_type", ["chat.started", "chat.typing"])
def test_nan_and_infinity_are_not_json(client, runtime, constant, event_type):
    """Python's json reads them, but no JSON parser of the platform's would write them: 400, nothing stored."""
    event = _started()
    event["type"] = event_type
    body = json.dumps(event).replace('"data": {', f'"score": {constant}, "data": {{').encode()
    response = _post(client, body)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_json"
    assert constant in response.json["error"]["message"]
    assert _nothing_stored(runtime)


@pytest.mark.parametrize("mutate, field", [
    (lambda e: e.pop("id"), "id"),
    (lambda e: e.update(id=True), "id"),
    (lambda e: e.pop("data"), "data"),
    (lambda e: e["data"]["chat"].pop("consumer_number"), "data.chat.consumer_number"),
    (lambda e: e["data"]["chat"].update(consumer_number=14155550132), "data.chat.consumer_number"),
    (lambda e: e["data"]["chat"].update(direction="sideways"), "data.chat.direction"),
    (lambda e: e["data"]["chat"].update(created_at="yesterday"), "data.chat.created_at"),
    (lambda e: e["data"]["chat"].update(id=None), "data.chat.id"),
    (lambda e: e["data"].update(chat=[]), "data.chat"),
])
def test_invalid_payload_names_the_field(client, runtime, mutate, field):
    event = _started()
    mutate(event)
    response = _post(client, json.dumps(event).encode())
    assert response.status_code == 400, response.json
    error = response.json["error"]
    assert error["field"] == field
    assert error["code"] in ("invalid_payload", "invalid_phone_number")
    assert _nothing_stored(runtime)


def test_body_that_is_not_an_object_is_invalid_payload(client, runtime):
    response = _post(client, b"[1, 2, 3]")
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_payload"


@pytest.mark.parametrize("number", ["hello", "+1 415 555 01329999999", "555-CALL-NOW", "12", ""])
def test_unparseable_consumer_number_is_invalid_phone_number(client, runtime, number):
    response = _post(client, json.dumps(_started(number=number)).encode())
    assert response.status_code == 400
    assert response.json["error"] == {"code": "invalid_phone_number", "field": "data.chat.consumer_number",
                                      "message": response.json["error"]["message"]}
    assert _nothing_stored(runtime)


def test_repeated_id_replays_the_first_response_without_a_second_effect(client, runtime):
    body = json.dumps(_started()).encode()
    first = _post(client, body)
    # A retry is signed again (new timestamp) and may serialize keys differently.
    again = json.dumps(json.loads(body), indent=2, sort_keys=True).encode()
    second = _post(client, again, signed_headers(again, timestamp=int(time.time()) - 5))
    assert first.status_code == second.status_code == 200
    assert first.json == second.json
    assert _count_rows(runtime, events) == 1
    assert _count_rows(runtime, chats) == 1


def test_the_look_for_a_stored_event_runs_on_the_drivers_cursor(client, runtime, monkeypatch):
    """chat.started looks for its event id before its CRM match, once per chat: on the driver's cursor,
    without SQLAlchemy's execution around it."""
    through_sqlalchemy = sqlalchemy_statements(runtime.engine)
    sent = sent_statements(runtime.engine, monkeypatch)
    body = json.dumps(_started()).encode()
    assert _post(client, body).status_code == 200
    assert _post(client, body).json["chat_id"] == "2415"
    looks = [sql for sql, _ in sent if sql.startswith("SELECT events.body_hash")]
    assert len(looks) == 2  # before the first answer and before the replay
    assert [sql for sql in through_sqlalchemy if sql.startswith("SELECT events.body_hash")] == []


def test_repeated_id_with_another_body_is_409(client, runtime):
    assert _post(client, json.dumps(_started()).encode()).status_code == 200
    response = _post(client, json.dumps(_started(number="+14155550199")).encode())
    assert response.status_code == 409
    assert response.json["error"]["code"] == "event_id_reused"
    with reading(runtime.engine) as conn:
        assert conn.execute(select(chats.c.consumer_number)).scalar_one() == "+14155550132"


def test_unknown_type_is_ignored_with_202(client, runtime):
    body = json.dumps({"id": "evt_x", "type": "chat.typing", "data": {}}).encode()
    response = _post(client, body)
    assert response.status_code == 202
    assert response.json == {"status": "ignored"}
    assert _count_rows(runtime, chats) == 0
    assert _count_rows(runtime, outbox) == 0


def test_get_on_callbacks_is_405_json(client):
    response = client.get("/callbacks/events")
    assert response.status_code == 405
    assert response.json["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize("number", ["1e999", "-1e999", "9" * 5000])
@pytest.mark.parametrize("event_type", ["chat.started", "chat.typing"])
def test_a_number_too_large_to_hold_is_invalid_json(client, runtime, number, event_type):
    """JSON has no limit on numbers, but Python reads 1e999 as infinity (which no database stores as JSON)
    and refuses integers of thousands of digits: 400, not a 500, and nothing stored."""
    event = _started()
    event["type"] = event_type
    body = json.dumps(event).replace('"data": {', f'"score": {number}, "data": {{').encode()
    response = _post(client, body)
    assert response.status_code == 400
    assert response.json["error"] == {"code": "invalid_json", "message": "the body has a number too large to read",
                                      "field": None}
    assert _nothing_stored(runtime)


@pytest.mark.parametrize("depth", [65, 940, 944, 100_000])
@pytest.mark.parametrize("event_type", ["chat.started", "chat.typing"])
def test_a_body_nested_too_deeply_is_invalid_json(client, runtime, depth, event_type):
    """Nesting that would exhaust Python's stack while the body is read, or while it is written again for
    its hash and its stored payload, is a 400 at any depth past the limit, and nothing is stored."""
    event = _started()
    event["type"] = event_type
    nested = "[" * depth + "]" * depth
    body = json.dumps(event).replace('"data": {', f'"extra": {nested}, "data": {{').encode()
    response = _post(client, body)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_json"
    assert "nested too deeply" in response.json["error"]["message"]
    assert _nothing_stored(runtime)


def test_a_body_nested_up_to_the_limit_is_read(client, runtime):
    event = _started()
    event["extra"] = json.loads("[" * 63 + "]" * 63)  # 64 levels with the envelope
    assert _post(client, json.dumps(event).encode()).status_code == 200


@pytest.mark.parametrize("event_type, data, field", [
    ("chat.message", {"chat": {"id": "2415"}, "message": {"id": "m1", "sender": "consumer", "text": "hi \ud83d",
                                                          "sent_at": "2026-11-21T17:03:11Z"}},
     "data.message.text"),
    ("chat.started", {"chat": {"id": "2415", "consumer_number": "+14155550132", "lang": "\udc4b"}}, "data.chat.lang"),
    ("chat.typing", {"who": ["x", "\ud800"]}, "data.who.1"),
    ("chat.typing", {"\ud800": 1}, "data"),
])
def test_half_a_surrogate_pair_is_invalid_payload_naming_the_field(client, runtime, event_type, data, field):
    """`"\\ud83d"` is JSON (a platform that cuts a text between the two halves of an emoji sends it), but the
    string is not Unicode text: 400 naming the field, not a 500, and nothing stored."""
    body = json.dumps({"id": "evt_1", "type": event_type, "data": data}).encode()  # ASCII, with \\u escapes
    response = _post(client, body)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_payload"
    assert response.json["error"]["field"] == field
    assert "surrogate" in response.json["error"]["message"]
    assert _nothing_stored(runtime)


def test_a_whole_surrogate_pair_is_text(client, runtime):
    event = _started()
    event["data"]["chat"]["lang"] = "en \U0001F44B"
    body = json.dumps(event).encode()  # the emoji as "\ud83d\udc4b"
    assert b"\\ud83d\\udc4b" in body
    assert _post(client, body).status_code == 200
    with reading(runtime.engine) as conn:
        assert conn.execute(select(chats.c.lang)).scalar_one() == "en \U0001F44B"


@pytest.mark.parametrize("event_type, data, field", [
    ("chat.message", {"chat": {"id": "2415"}, "message": {"id": "m1", "sender": "consumer", "text": "hi\u0000there",
                                                          "sent_at": "2026-11-21T17:03:11Z"}},
     "data.message.text"),
    ("chat.message", {"chat": {"id": "2415"}, "message": {"id": "m\u00001", "sender": "consumer", "text": "hi",
                                                          "sent_at": "2026-11-21T17:03:11Z"}},
     "data.message.id"),
    ("chat.typing", {"who": "\u0000"}, "data.who"),
])
def test_a_nul_character_is_invalid_payload_naming_the_field(client, runtime, event_type, data, field):
    """PostgreSQL's text cannot hold NUL (a 500 there): 400 naming the field, on every database alike."""
    body = json.dumps({"id": "evt_1", "type": event_type, "data": data}).encode()
    response = _post(client, body)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_payload"
    assert response.json["error"]["field"] == field
    assert "NUL" in response.json["error"]["message"]
    assert _nothing_stored(runtime)


def test_a_signature_with_non_ascii_characters_is_401(client, runtime):
    """Any bytes may arrive in a header; a v1 that is not hex simply does not match (it was a 500)."""
    body = json.dumps(_started()).encode()
    header = f"t={int(time.time())},v1=\u00e9{'0' * 63}"
    response = _post(client, body, {HEADER: header, "Content-Type": "application/json"})
    assert response.status_code == 401
    assert response.json["error"]["code"] == "invalid_signature"
    assert _nothing_stored(runtime)
