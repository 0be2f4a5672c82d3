"""POST /callbacks/events: the SMS platform's entry point."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, request

from crmconnector.intake import MAX_BODY_BYTES, StoreUnavailable
from crmconnector.signatures import HEADER

bp = Blueprint("callbacks", __name__)


@bp.post("/callbacks/events")
def receive_event() -> Any:
    if (request.content_length or 0) > MAX_BODY_BYTES:
        return _error(413, "payload_too_large", f"the body is larger than {MAX_BODY_BYTES} bytes")
    body = request.stream.read(MAX_BODY_BYTES + 1)
    runtime = current_app.extensions["crmconnector"]
    try:
        outcome = runtime.intake.handle(body, request.headers.get("Content-Type"), request.headers.get(HEADER))
    except StoreUnavailable:
        response = _error(503, "unavailable", "the connector's database is unavailable; retry later")
        response[0].headers["Retry-After"] = "5"
        return response
    return jsonify(outcome.body), outcome.status


def _error(status: int, code: str, message: str) -> Any:
    return jsonify({"error": {"code": code, "message": message}}), status
