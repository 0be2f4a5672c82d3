"""POST /callbacks/events: the SMS platform's entry point.

It is the connector's hot path, so `CallbackFastPath` answers it at the WSGI level, before Flask builds a
request context, a session and a URL match (which cost about a third of an event's CPU). The blueprint
route gives the same answer for anyone who mounts the app without the fast path; `answer` is shared.
"""
from __future__ import annotations

import logging
import math
from http import HTTPStatus
from typing import IO, Any, Callable, Iterable

from flask import Blueprint, Flask, current_app, jsonify, request
from werkzeug.wsgi import get_input_stream

from crmconnector.events import error_body
from crmconnector.intake import MAX_BODY_BYTES, RetryLater, StoreUnavailable
from crmconnector.runtime import Runtime
from crmconnector.signatures import HEADER

log = logging.getLogger(__name__)
bp = Blueprint("callbacks", __name__)
PATH = "/callbacks/events"
_SIGNATURE_KEY = "HTTP_" + HEADER.upper().replace("-", "_")

Answer = tuple[int, dict[str, Any], dict[str, str]]


def answer(runtime: Runtime, stream: IO[bytes], content_length: int | None, content_type: str | None,
           signature: str | None) -> Answer:
    """Status, JSON body and extra headers for one callback request."""
    if (content_length or 0) > MAX_BODY_BYTES:
        return _error(413, "payload_too_large", f"the body is larger than {MAX_BODY_BYTES} bytes")
    body = stream.read(MAX_BODY_BYTES + 1)
    try:
        outcome = runtime.intake.handle(body, content_type, signature)
    except StoreUnavailable:
        status, payload, _ = _error(503, "unavailable", "the connector's database is unavailable; retry later")
        return status, payload, {"Retry-After": "5"}
    except RetryLater as exc:
        status, payload, _ = _error(503, exc.code, exc.message)
        return status, payload, {"Retry-After": str(math.ceil(exc.retry_after or 5))}
    return outcome.status, outcome.body, {}


@bp.post(PATH)
def receive_event() -> Any:
    status, payload, headers = answer(current_app.extensions["crmconnector"], request.stream,
                                      request.content_length, request.headers.get("Content-Type"),
                                      request.headers.get(HEADER))
    return jsonify(payload), status, headers


def _error(status: int, code: str, message: str) -> Answer:
    return status, error_body(code, message), {}


class CallbackFastPath:
    """WSGI middleware: POST /callbacks/events goes straight to `answer`; everything else to Flask."""

    def __init__(self, app: Flask):
        self.app = app
        self.inner: Callable[..., Iterable[bytes]] = app.wsgi_app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") != PATH or environ.get("REQUEST_METHOD") != "POST":
            return self.inner(environ, start_response)
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0) or None
        except ValueError:
            length = None
        try:
            status, payload, headers = answer(self.app.extensions["crmconnector"], get_input_stream(environ),
                                              length, environ.get("CONTENT_TYPE"), environ.get(_SIGNATURE_KEY))
        except Exception:
            if self.app.testing:
                raise
            log.exception("callback failed")
            status, payload, headers = _error(500, "internal_error", "the event was not stored; retry later")
        data = (self.app.json.dumps(payload, separators=(",", ":")) + "\n").encode()  # as jsonify writes it
        start_response(f"{status} {HTTPStatus(status).phrase}",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(data))),
                        *headers.items()])
        return [data]
