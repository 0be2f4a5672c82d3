"""The admin API of the outbox: counts, failed items with the CRM's error, and retry."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, jsonify, request

from crmconnector.sync.worker import list_items, outbox_counts, retry_failed, retry_item
from webapp.auth import admin_required
from webapp.errors import error_response

bp = Blueprint("admin_api", __name__)
STATUSES = ("pending", "running", "failed", "done")


def _runtime() -> Any:
    return current_app.extensions["crmconnector"]


@bp.get("/api/admin/outbox")
@admin_required
def outbox_summary() -> Any:
    return jsonify(outbox_counts(_runtime().engine))


@bp.get("/api/admin/outbox/items")
@admin_required
def outbox_items() -> Any:
    status = request.args.get("status") or None
    if status is not None and status not in STATUSES:
        return error_response(400, "invalid_payload", f"status must be one of {', '.join(STATUSES)}", "status")
    try:
        limit = int(request.args.get("limit", "100"))
    except ValueError:
        return error_response(400, "invalid_payload", "limit must be a number", "limit")
    if not 1 <= limit <= 1000:
        return error_response(400, "invalid_payload", "limit must be between 1 and 1000", "limit")
    return jsonify({"items": list_items(_runtime().engine, status, limit)})


@bp.post("/api/admin/outbox/retry")
@admin_required
def outbox_retry_all() -> Any:
    runtime = _runtime()
    count = retry_failed(runtime.engine)
    runtime.notify()
    return jsonify({"retried": count})


@bp.post("/api/admin/outbox/<int:item_id>/retry")
@admin_required
def outbox_retry_one(item_id: int) -> Any:
    runtime = _runtime()
    outcome = retry_item(runtime.engine, item_id)
    if outcome is None:
        return error_response(404, "not_found", f"no outbox item {item_id}")
    if outcome is False:
        return error_response(409, "not_failed", f"outbox item {item_id} has not failed; only failed items are retried")
    runtime.notify()
    return jsonify({"retried": 1, "id": item_id})
