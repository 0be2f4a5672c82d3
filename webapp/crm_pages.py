"""The embedded CRM, read-only: JSON at /api/crm/... (admin token) and the pages screen pops open."""
from __future__ import annotations

import re
import unicodedata
from typing import Any
from urllib.parse import quote

from flask import Blueprint, Response, abort, current_app, jsonify, render_template, request
from flask.blueprints import BlueprintSetupState

from crmconnector.crm.errors import CRMError, CRMRejected
from crmconnector.crm.local import InvalidQueryField, LocalCRM
from crmconnector.crm.objects import OBJECTS
from crmconnector.chats import new_record_fields
from crmconnector.linking import LINKABLE_OBJECTS, LinkError, check_chat, link_chat
from crmconnector.matching import InvalidPhoneNumber, normalize
from webapp.auth import admin_required, admin_token_ok, admin_unauthorized, current_agent
from webapp.csrf import csrf_token, form_token_ok
from webapp.errors import error_response
from webapp.paths import path, redirect_to

bp = Blueprint("crm", __name__)


@bp.record_once
def _on_register(state: BlueprintSetupState) -> None:
    state.app.jinja_env.globals.setdefault("csrf_token", csrf_token)


def _local() -> LocalCRM:
    crm = current_app.extensions["crmconnector"].crm
    if not isinstance(crm, LocalCRM):
        abort(404)
    return crm


def _object(name: str) -> str:
    if name not in OBJECTS:
        abort(404)
    return name


def _json_record(record: Any) -> dict[str, Any]:
    fields = dict(record.fields)
    fields["Id"] = record.id
    fields["attributes"] = {"type": record.object, "url": path(f"/api/crm/{record.object}/{record.id}")}
    return fields


MAX_LIMIT = 2000


@bp.get("/api/crm/<object_name>")
@admin_required
def list_records(object_name: str) -> Any:
    """Records whose fields equal the query's values; a field given more than once matches any of its
    values. `totalSize` counts every matching record, `records` holds at most `limit` of them."""
    crm, obj = _local(), _object(object_name)
    limits = request.args.getlist("limit")
    if len(limits) > 1:
        return _bad("limit may be given once", "limit")
    try:
        limit = int(limits[0]) if limits else 200
    except ValueError:
        return _bad("limit must be a whole number", "limit")
    if not 1 <= limit <= MAX_LIMIT:
        return _bad(f"limit must be between 1 and {MAX_LIMIT}, not {limit}", "limit")
    equals = {name: request.args.getlist(name) for name in request.args if name != "limit"}
    try:
        records, total = crm.query_page(obj, equals, limit)
    except InvalidQueryField as exc:
        return _bad(exc.message, exc.field)
    return jsonify({"records": [_json_record(r) for r in records], "totalSize": total})


@bp.get("/api/crm/<object_name>/<record_id>")
@admin_required
def get_record(object_name: str, record_id: str) -> Any:
    record = _local().get(_object(object_name), record_id)
    if record is None:
        return error_response(404, "not_found", f"no {object_name} {record_id}")
    return jsonify(_json_record(record))


@bp.get("/api/crm/ContentVersion/<record_id>/VersionData")
def file_data(record_id: str) -> Any:
    """A file's bytes, for the admin token and for signed-in agents (the record pages link here)."""
    if not _viewer_allowed():
        return admin_unauthorized()
    crm = _local()
    record = crm.get("ContentVersion", record_id)
    data = crm.file_data(record_id)
    if record is None or data is None:
        return error_response(404, "not_found", f"no ContentVersion {record_id}")
    return Response(data, mimetype="application/octet-stream",
                    headers={"Content-Disposition": _attachment(str(record.fields.get("PathOnClient") or "file"))})


def _attachment(name: str) -> str:
    """Content-Disposition for a file named `name` (RFC 6266). Header values are Latin-1 bytes, so a name
    beyond plain ASCII (or holding a quote) goes in `filename*` as UTF-8, after an ASCII approximation."""
    plain = re.sub(r'[\x00-\x1f\x7f"\\]', "_", unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode())
    if plain == name:
        return f'attachment; filename="{name}"'
    return f"attachment; filename=\"{plain}\"; filename*=UTF-8''{quote(name, safe='')}"


def _viewer_allowed() -> bool:
    return admin_token_ok() or current_agent() is not None


def _form(object_name: str, values: Any, chat_id: str, error: str | None = None, status: int = 200) -> Any:
    specs = [s for s in OBJECTS[object_name] if s.type not in ("base64", "reference")]
    return render_template("crm_new.html", object_name=object_name, specs=specs, values=values,
                           chat_id=chat_id, error=error), status


@bp.get("/crm/<object_name>/new")
def new_record_page(object_name: str) -> Any:
    _local()
    if not _viewer_allowed():
        return redirect_to("/agent")
    return _form(_object(object_name), request.args, request.args.get("chat_id", ""))


@bp.post("/crm/<object_name>/new")
def create_record(object_name: str) -> Any:
    """Create the record; given a `chat_id` (the no-match pop carries it), link that chat to it as
    the agent console's new-record form does, so the chat log attaches to the new record."""
    crm = _local()
    if not _viewer_allowed():
        abort(403)
    obj = _object(object_name)
    chat_id = request.form.get("chat_id", "").strip()
    # A bearer token is never sent by a cross-site form; a cookie is, so those posts need the form token.
    if "Authorization" not in request.headers and not form_token_ok():
        return _form(obj, request.form, chat_id, "The form expired; reload the page and try again.", 400)
    runtime = current_app.extensions["crmconnector"]
    agent = current_agent()
    linker = None if admin_token_ok() or agent is None else agent.email  # None: the admin, any chat
    if chat_id and obj in LINKABLE_OBJECTS:
        try:
            check_chat(runtime.engine, chat_id, linker)
        except LinkError as exc:
            return _form(obj, request.form, chat_id, exc.message, exc.status)
    form = {k: v for k, v in request.form.items() if k not in ("chat_id", "csrf")}
    try:
        phone_field = "SuppliedPhone" if obj == "Case" else "Phone"
        number = normalize(form.get(phone_field, ""), runtime.settings.default_region)
        record_id = crm.create(obj, new_record_fields(obj, number, form))
    except (CRMRejected, InvalidPhoneNumber) as exc:
        return _form(obj, request.form, chat_id, str(exc), 400)
    if chat_id and obj in LINKABLE_OBJECTS:
        try:
            link_chat(runtime.engine, crm, chat_id, linker, obj, record_id)
        except (LinkError, CRMError) as exc:  # e.g. the chat was transferred meanwhile
            return _form(obj, {}, "", f"{obj} {record_id} was created, but chat {chat_id} could not be "
                                      f"linked to it: {exc}", 409)
        runtime.notify()
    return redirect_to(f"/crm/{obj}/{record_id}")


@bp.get("/crm/<object_name>/<record_id>")
def record_page(object_name: str, record_id: str) -> Any:
    crm = _local()
    if not _viewer_allowed():
        return redirect_to("/agent")
    record = crm.get(_object(object_name), record_id)
    if record is None:
        abort(404)
    files = crm.find("ContentVersion", "FirstPublishLocationId", [record.id])
    related = []
    if object_name in ("Contact", "Lead", "Account"):
        related = crm.find("Task", "WhoId" if object_name != "Account" else "WhatId", [record.id])
    return render_template("crm_record.html", record=record, files=files, related=related,
                           specs=[s for s in OBJECTS[object_name] if s.type != "base64"])


def _bad(message: str, field: str | None) -> Any:
    return error_response(400, "invalid_query", message, field)
