"""The admin pages: sign-in with the admin token, settings, CRM status, outbox, history and charts.

Every POST form carries the session's CSRF token (a bearer-token request needs none: browsers never
add that header by themselves).
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, flash, jsonify, render_template, request, session

from crmconnector import admin_view, preferences
from crmconnector.crm.errors import CRMError
from crmconnector.crm.objects import MATCH_OBJECTS
from crmconnector.runtime import Runtime
from crmconnector.screenpop.decide import ACTIONS, NEW_RECORD_OBJECTS
from crmconnector.settings import ABANDONED_MODES
from crmconnector.signatures import same_secret
from crmconnector.store import utcnow
from crmconnector.sync.jobs_report import job_status
from crmconnector.sync.worker import list_items, outbox_counts, retry_failed, retry_item
from webapp.auth import admin_required, admin_token_ok, sign_in_admin
from webapp.csrf import csrf_token, form_token_ok
from webapp.paths import redirect_to

bp = Blueprint("admin", __name__)
ACTION_LABELS = {
    "new_record": "Open a new-record page, phone prefilled", "create_record": "Create the record now, then pop it",
    "search": "Let the agent pick in the console", "none": "No pop", "record": "Pop the record (first match)",
}
FAILED_SHOWN = 100  # failed outbox items listed on the page; the API lists up to 1000
ABANDONED_LABELS = {"off": "Off: no tickets", "all": "Every abandoned call",
                    "with_sms": "Only calls whose caller sent wait-time SMS"}


@bp.record_once
def _on_register(state: Any) -> None:
    state.app.jinja_env.globals.setdefault("csrf_token", csrf_token)


def _runtime() -> Runtime:
    return current_app.extensions["crmconnector"]


def _bearer() -> bool:
    return request.headers.get("Authorization", "").lower().startswith("bearer ")


def _post_allowed() -> bool:
    return admin_token_ok() and (_bearer() or form_token_ok())


# -- sign-in --------------------------------------------------------------------------------------------

@bp.get("/admin/sign-in")
def sign_in_page() -> Any:
    if admin_token_ok():
        return redirect_to("/admin")
    return render_template("admin_sign_in.html", error=None)


@bp.post("/admin/sign-in")
def sign_in() -> Any:
    if not form_token_ok():
        return render_template("admin_sign_in.html", error="The form expired. Please try again."), 400
    expected = _runtime().settings.admin_token
    if not same_secret(request.form.get("token", "").strip(), expected):
        return render_template("admin_sign_in.html", error="That is not the admin token."), 401
    session.pop("agent_id", None)
    sign_in_admin()
    return redirect_to("/admin")


@bp.post("/admin/sign-out")
def sign_out() -> Any:
    if form_token_ok():
        session.pop("admin", None)
    return redirect_to("/admin/sign-in")


# -- the page -------------------------------------------------------------------------------------------

def _page(status: int = 200, error: dict[str, str] | None = None, form: dict[str, Any] | None = None) -> Any:
    runtime = _runtime()
    settings = runtime.settings
    prefs = preferences.pop_settings(runtime.engine).as_dict()
    saved_mode = preferences.saved_abandoned_mode(runtime.engine)
    current = {**prefs, "abandoned_tickets": saved_mode or preferences.USE_ENVIRONMENT}
    shown = {**current, **(form or {})}
    order = list(shown["object_order"]) + ["", ""]
    return render_template(
        "admin.html", prefs=shown, order=order[:3], actions=ACTIONS, action_labels=ACTION_LABELS,
        new_record_objects=NEW_RECORD_OBJECTS, match_objects=MATCH_OBJECTS, abandoned_modes=ABANDONED_MODES,
        abandoned_labels=ABANDONED_LABELS, use_environment=preferences.USE_ENVIRONMENT,
        saved_mode=saved_mode, environment_mode=settings.abandoned_tickets, error=error, crm_name=runtime.crm.name,
        counts=outbox_counts(runtime.engine), failed=list_items(runtime.engine, "failed", FAILED_SHOWN),
        chats=admin_view.recent_chats(runtime.engine, runtime.crm),
        calls=admin_view.recent_abandoned(runtime.engine, runtime.crm),
        job=job_status(runtime.engine, settings.abandoned_tickets, settings.abandoned_interval_seconds),
        charts=admin_view.chart_data(runtime.engine, utcnow()),
    ), status


@bp.get("/admin")
def admin_page() -> Any:
    if not admin_token_ok():
        return redirect_to("/admin/sign-in")
    return _page()


def _refused() -> Any:
    if not admin_token_ok():
        return redirect_to("/admin/sign-in")
    return render_template("admin_sign_in.html", error="The form expired. Reload the admin page and try again."), 400


@bp.post("/admin/settings")
def save_settings() -> Any:
    if not _post_allowed():
        return _refused()
    form = request.form
    changes: dict[str, Any] = {name: form.get(name, "") for name in
                               ("none", "single", "multiple", "new_record_object", "opt_out_field")}
    changes["opt_out_field"] = changes["opt_out_field"].strip()
    changes["object_order"] = [v for v in (form.get(f"object_order_{i}", "") for i in (1, 2, 3)) if v]
    mode = form.get("abandoned_tickets", "")
    runtime = _runtime()
    engine = runtime.engine
    try:
        if mode not in (*ABANDONED_MODES, preferences.USE_ENVIRONMENT):  # first: all valid, or nothing saved
            raise preferences.InvalidSetting("abandoned_tickets", "abandoned-call tickets must be one of "
                                             f"{', '.join(ABANDONED_MODES)} or {preferences.USE_ENVIRONMENT}")
        if changes["opt_out_field"] != preferences.pop_settings(engine).opt_out_field:
            _verify_opt_out_field(runtime, changes["opt_out_field"])
        preferences.save_pop_settings(engine, changes)
        preferences.choose_abandoned_mode(engine, mode, runtime.settings.abandoned_tickets)
    except preferences.InvalidSetting as exc:
        return _page(400, {"field": exc.field, "message": f"Not saved: {exc.message}."},
                     {**changes, "abandoned_tickets": mode})
    flash("Settings saved.")
    return redirect_to("/admin#settings")


def _verify_opt_out_field(runtime: Runtime, field_name: str) -> None:
    """A field Contact or Lead lacks (or that is no checkbox) would fail every STOP later, one outbox item
    at a time: the CRM is asked now. Names that are no API name at all are left to the form's own check."""
    if not field_name.replace("_", "").isalnum():
        return
    try:
        problems = runtime.crm.opt_out_field_problems(field_name)
    except CRMError as exc:
        raise preferences.InvalidSetting(
            "opt_out_field", f"the CRM could not be asked whether Contact and Lead have the field {field_name} "
                             f"({exc}); try again") from None
    if problems:
        raise preferences.InvalidSetting("opt_out_field", "the opt-out field must be a checkbox on Contact and Lead: "
                                         + "; ".join(f"{p.what} {p.detail}" for p in problems))


@bp.post("/admin/outbox/retry")
def retry_all() -> Any:
    if not _post_allowed():
        return _refused()
    runtime = _runtime()
    count = retry_failed(runtime.engine)
    runtime.notify()
    flash(f"{count} failed item{'s' if count != 1 else ''} queued again.")
    return redirect_to("/admin#outbox")


@bp.post("/admin/outbox/<int:item_id>/retry")
def retry_one(item_id: int) -> Any:
    if not _post_allowed():
        return _refused()
    runtime = _runtime()
    outcome = retry_item(runtime.engine, item_id)
    if outcome is None:
        flash(f"There is no outbox item {item_id}.", "error")
    elif outcome is False:
        flash(f"Outbox item {item_id} has not failed; nothing to retry.", "error")
    else:
        runtime.notify()
        flash(f"Outbox item {item_id} queued again.")
    return redirect_to("/admin#outbox")


@bp.get("/admin/status.json")
@admin_required
def status() -> Any:
    """The CRM check report and outbox counts (loaded after the page, since a CRM check can be slow)."""
    runtime = _runtime()
    try:
        opt_out_field = preferences.pop_settings(runtime.engine).opt_out_field
        lines = [{"ok": line.ok, "what": line.what, "detail": line.detail}
                 for line in runtime.crm.check(opt_out_field)]
    except CRMError as exc:
        lines = [{"ok": False, "what": "CRM connection", "detail": f"the CRM did not answer: {exc}"}]
    return jsonify({"crm": {"name": runtime.crm.name, "ok": all(line["ok"] for line in lines), "lines": lines},
                    "outbox": outbox_counts(runtime.engine)})
