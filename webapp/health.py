"""Health and metrics: /healthz (alive), /readyz (database and CRM reachable), /metrics."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, current_app, jsonify
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from sqlalchemy import func, select

from crmconnector.crm.errors import CRMError
from crmconnector.metrics import OUTBOX, exposition
from crmconnector.store import outbox, reading

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> Any:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> Any:
    runtime = current_app.extensions["crmconnector"]
    checks: dict[str, str] = {}
    try:
        with reading(runtime.engine) as conn:
            conn.execute(select(1)).all()
        checks["database"] = "ok" if runtime.schema_ready.is_set() else "unavailable: schema not migrated yet"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["database"] = f"unavailable: {type(exc).__name__}"
    try:
        runtime.crm.ping()
        checks["crm"] = "ok"
    except CRMError as exc:
        checks["crm"] = f"unavailable: {exc}"
    except Exception as exc:  # noqa: BLE001
        checks["crm"] = f"unavailable: {type(exc).__name__}"
    ready = all(v == "ok" for v in checks.values())
    return jsonify({"status": "ready" if ready else "unavailable", "checks": checks}), 200 if ready else 503


@bp.get("/metrics")
def metrics() -> Any:
    runtime = current_app.extensions["crmconnector"]
    try:
        with reading(runtime.engine) as conn:
            counts = dict(conn.execute(select(outbox.c.status, func.count()).group_by(outbox.c.status)).all())
        for status in ("pending", "running", "done", "failed"):
            OUTBOX.labels(status).set(counts.get(status, 0))
    except Exception:  # noqa: BLE001 - metrics still answer when the database does not
        pass
    # `content_type`, not `mimetype`: the latter makes Flask append a second `charset` to the one
    # CONTENT_TYPE_LATEST carries, and a duplicated parameter can make a scraper reject the page.
    return Response(exposition(), content_type=CONTENT_TYPE_LATEST)
