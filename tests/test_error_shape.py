"""Every error the HTTP API returns has the contract's three keys: `code`, `message` and `field` (null when
no one field is at fault), so a client never has to ask whether `field` is there."""
from __future__ import annotations

import json

import pytest

from tests.conftest import admin_headers, signed_headers
from tests.test_agent import sign_in_path

EVENT = json.dumps({"id": "evt_1", "type": "chat.started",
                    "data": {"chat": {"id": "2415", "consumer_number": "+14155550132"}}}).encode()
BIG = json.dumps({"id": "evt_1", "type": "x", "data": {}, "padding": "x" * (1024 * 1024)}).encode()


def _callback(body: bytes, headers: dict[str, str] | None = None, content_type: str | None = None):
    headers = dict(signed_headers(body) if headers is None else headers)
    if content_type:
        headers["Content-Type"] = content_type
    return lambda client: client.post("/callbacks/events", data=body, headers=headers)


@pytest.mark.parametrize("request_, status, code, field", [
    (_callback(EVENT, {"Content-Type": "application/json"}), 401, "invalid_signature", None),
    (_callback(BIG), 413, "payload_too_large", None),
    (_callback(EVENT, content_type="text/plain"), 415, "unsupported_media_type", None),
    (_callback(b"{not json"), 400, "invalid_json", None),
    (_callback(b"[1, 2]"), 400, "invalid_payload", None),
    (_callback(json.dumps({"id": "evt_1", "type": "chat.started", "data": {}}).encode()), 400, "invalid_payload",
     "data.chat"),
    (lambda client: client.get("/callbacks/events"), 405, "method_not_allowed", None),
    (lambda client: client.get("/no/such/page"), 404, "not_found", None),
    (lambda client: client.get("/api/admin/outbox"), 401, "unauthorized", None),
    (lambda client: client.get("/api/admin/outbox/items?limit=0", headers=admin_headers()), 400, "invalid_payload",
     "limit"),
    (lambda client: client.post("/api/admin/outbox/99/retry", headers=admin_headers()), 404, "not_found", None),
    (lambda client: client.get("/api/crm/Contact/003000000000000AAA", headers=admin_headers()), 404, "not_found",
     None),
    (lambda client: client.get("/api/agent/chats"), 401, "unauthorized", None),
])
def test_every_error_has_code_message_and_field(client, request_, status, code, field):
    response = request_(client)
    assert response.status_code == status
    assert response.json == {"error": {"code": code, "message": response.json["error"]["message"], "field": field}}


@pytest.mark.parametrize("data, content_type, status, code", [
    ("{}", "text/plain", 415, "unsupported_media_type"),
    ("{not json", "application/json", 400, "invalid_json"),
    ("[]", "application/json", 400, "invalid_json"),
])
def test_the_agent_apis_body_errors_have_field_too(app, runtime, data, content_type, status, code):
    agent = app.test_client()
    assert agent.get(sign_in_path(runtime, "tom@example.com")).status_code == 302
    response = agent.post("/api/agent/chats/2415/link", data=data, content_type=content_type)
    assert response.status_code == status
    assert response.json["error"]["code"] == code
    assert response.json["error"]["field"] is None


def test_an_unexpected_failure_is_a_500_in_the_same_shape(runtime, monkeypatch):
    """Not Flask's HTML page: an API client reads every answer as JSON (the traceback goes to the log)."""
    from webapp import admin_api, create_app

    def broken(engine):
        raise RuntimeError("a bug")
    monkeypatch.setattr(admin_api, "outbox_counts", broken)
    client = create_app(runtime=runtime, background=False).test_client()  # not TESTING: errors are answered
    response = client.get("/api/admin/outbox", headers=admin_headers())
    assert response.status_code == 500
    assert response.json == {"error": {"code": "internal_error", "message": response.json["error"]["message"],
                                       "field": None}}
    assert "a bug" not in response.get_data(as_text=True)
