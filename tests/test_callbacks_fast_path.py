"""The WSGI fast path for POST /callbacks/events answers exactly as the Flask route does."""
from __future__ import annotations

import json

from werkzeug.test import Client, EnvironBuilder

from crmconnector.intake import MAX_BODY_BYTES
from tests.conftest import signed_headers


def _event(event_id: str, chat_id: str) -> bytes:
    return json.dumps({"id": event_id, "type": "chat.message", "occurred_at": "2026-11-21T17:03:11Z",
                       "data": {"chat": {"id": chat_id}, "message": {
                           "id": "m1", "sender": "consumer", "text": "hello", "sent_at": "2026-11-21T17:03:11Z"}}}
                      ).encode()


def _requests(event_id: str, chat_id: str) -> list[tuple[bytes, dict[str, str]]]:
    body = _event(event_id, chat_id)
    return [
        (body, signed_headers(body)),  # stored
        (body, signed_headers(body)),  # repeated: the first answer
        (body, {"Content-Type": "application/json"}),  # unsigned
        (b"x" * (MAX_BODY_BYTES + 1), {"Content-Type": "application/json"}),  # too large
        (body, {**signed_headers(body), "Content-Type": "text/plain"}),  # wrong type
        (b"{not json", signed_headers(b"{not json")),
        (_event(event_id, chat_id).replace(b"hello", b"changed"),
         signed_headers(_event(event_id, chat_id).replace(b"hello", b"changed"))),  # id reused
    ]


def _answers(client: Client, requests: list[tuple[bytes, dict[str, str]]], event_id: str, chat_id: str
             ) -> list[tuple]:
    answers = []
    for body, headers in requests:
        response = client.post("/callbacks/events", data=body, headers=headers)
        text = response.get_data(as_text=True).replace(chat_id, "<chat>").replace(event_id, "<event>")
        answers.append((response.status_code, response.headers["Content-Type"], text))
    return answers


def test_fast_path_and_flask_route_give_the_same_answers(app):
    fast = _answers(Client(app), _requests("evt_fast", "fast-1"), "evt_fast", "fast-1")
    flask_only = _answers(Client(app.wsgi_app.inner), _requests("evt_flask", "flask-1"), "evt_flask", "flask-1")
    assert [a[0] for a in fast] == [200, 200, 401, 413, 415, 400, 409]
    assert fast == flask_only


def test_other_paths_and_methods_still_reach_flask(client):
    assert client.get("/callbacks/events").status_code == 405
    assert client.get("/healthz").json == {"status": "ok"}


def test_an_unexpected_failure_is_a_json_500_and_stores_nothing(app, runtime, monkeypatch):
    def broken(*_args, **_kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(runtime.intake, "handle", broken)
    app.testing = False
    body = _event("evt_500", "c500")
    response = Client(app).post("/callbacks/events", data=body, headers=signed_headers(body))
    assert response.status_code == 500
    assert response.json == {"error": {"code": "internal_error", "message": "the event was not stored; retry later",
                                       "field": None}}


def test_a_body_without_content_length_is_read_to_its_end(app, runtime):
    """Chunked uploads: the server says the input is terminated, and the fast path reads it whole."""
    body = _event("evt_chunked", "chunked-1")
    environ = EnvironBuilder(path="/callbacks/events", method="POST", data=body,
                             headers=signed_headers(body)).get_environ()
    del environ["CONTENT_LENGTH"]
    environ["wsgi.input_terminated"] = True
    statuses = []
    output = b"".join(app.wsgi_app(environ, lambda status, headers: statuses.append(status)))
    assert statuses == ["200 OK"]
    assert json.loads(output) == {"chat_id": "chunked-1", "status": "ok"}
