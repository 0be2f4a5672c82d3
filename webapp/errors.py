"""JSON error responses of every endpoint, in the contract's shape `{"error": {"code", "message", "field"}}`."""
from __future__ import annotations

from flask import Response, jsonify

from crmconnector.events import error_body


def error_response(status: int, code: str, message: str, field: str | None = None) -> Response:
    response = jsonify(error_body(code, message, field))
    response.status_code = status
    return response
