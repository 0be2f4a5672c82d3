"""The agent console: sign-in by one-time link, the live page, its JSON API and its event stream.

The stream is server-sent events: each event's `id` is a console_events id, so a browser that
reconnects (EventSource sends Last-Event-ID by itself) is caught up from the durable log.
"""
from __future__ import annotations

import json
import threading
import time
from functools import wraps
from typing import Any, Callable, Iterator

from flask import Blueprint, Response, current_app, jsonify, render_template, request, session
from flask.blueprints import BlueprintSetupState

from crmconnector import agents, console_view
from crmconnector.chats import new_record_fields
from crmconnector.crm.errors import CRMError, CRMRejected
from crmconnector.events import EventError
from crmconnector.intake import check_text, decode_json
from crmconnector.linking import LINKABLE_OBJECTS, LinkError, link_chat
from crmconnector.runtime import Runtime
from crmconnector.screenpop.decide import NEW_RECORD_OBJECTS
from webapp.auth import current_agent, sign_in_agent
from webapp.csrf import csrf_token, form_token_ok, same_origin
from webapp.errors import error_response
from webapp.paths import redirect_to

bp = Blueprint("agent", __name__)
CLOSING = "crmconnector.console_closing"
# How long one stream lives before the browser reconnects (frees the server thread now and then),
# how often it re-reads the log when no wake-up came, and how often it sends a heartbeat.
STREAM_SECONDS = 300.0
POLL_SECONDS = 2.0
HEARTBEAT_SECONDS = 15.0


@bp.record_once
def _on_register(state: BlueprintSetupState) -> None:
    app = state.app
    runtime: Runtime = app.extensions["crmconnector"]
    closing = threading.Event()
    app.extensions[CLOSING] = closing
    runtime.on_close(closing.set)  # open streams end when the server shuts down
    app.jinja_env.globals.setdefault("csrf_token", csrf_token)


def _runtime() -> Runtime:
    return current_app.extensions["crmconnector"]


def signed_in(view: Callable[..., Any]) -> Callable[..., Any]:
    """The agent's JSON endpoints: 401 unless an agent is signed in, who is passed to the view first."""
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        agent = current_agent()
        if agent is None:
            return _unauthorized()
        return view(agent, *args, **kwargs)
    return wrapper


def _unauthorized() -> Any:
    return error_response(401, "unauthorized", "sign in with the link from `crmconnector agents add`")


# -- sign-in and out ---------------------------------------------------------------------------------

@bp.get("/agent/sign-in")
def sign_in() -> Any:
    token = request.args.get("token", "")
    if not token:
        return render_template("agent_signin_failed.html",
                               reason="This sign-in link has no token. Ask for a new link."), 400
    agent = agents.redeem(_runtime().engine, token)
    if agent is None:
        return render_template("agent_signin_failed.html",
                               reason="This sign-in link is not valid: it has expired, was already used, "
                                      "or was never issued. Ask your administrator for a new link."), 401
    sign_in_agent(agent)
    return redirect_to("/agent")


@bp.post("/agent/sign-out")
def sign_out() -> Any:
    if not form_token_ok():
        return render_template("agent_signin_failed.html", reason="The sign-out form expired; reload the page."), 400
    agent = current_agent()
    if agent is not None:  # the cookie alone cannot be taken back: revoke its key on the server
        agents.end_sessions(_runtime().engine, agent)
        _runtime().notify()  # open streams see it now, not at their next poll
    session.pop("agent_id", None)
    session.pop("agent_key", None)
    return render_template("agent_signed_out.html")


# -- pages --------------------------------------------------------------------------------------------

def _console_page(selected: str | None) -> Any:
    agent = current_agent()
    if agent is None:
        return render_template("agent_signed_out.html", needs_sign_in=True), 401
    runtime = _runtime()
    last_id = console_view.latest_event_id(runtime.engine)  # read before the chats: nothing falls between
    chats = console_view.agent_chats(runtime.engine, runtime.crm, agent.email)
    if selected is not None and not any(c["id"] == selected for c in chats):
        chat = console_view.agent_chat(runtime.engine, runtime.crm, agent.email, selected)
        if chat is None:
            return render_template("agent_signed_out.html", not_found=selected), 404
        chats.append(chat)
    initial = {"chats": chats, "last_event_id": last_id, "selected": selected,
               "agent": {"email": agent.email, "name": agent.name}}
    return render_template("agent.html", agent=agent, initial=_script_json(initial))


def _script_json(value: Any) -> str:
    """JSON safe to place inside a <script> element."""
    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


@bp.get("/agent")
def console_page() -> Any:
    return _console_page(None)


@bp.get("/agent/chats/<path:chat_id>")
def chat_page(chat_id: str) -> Any:
    return _console_page(chat_id)


# -- JSON API -----------------------------------------------------------------------------------------

@bp.get("/api/agent/chats")
@signed_in
def list_chats(agent: agents.Agent) -> Any:
    runtime = _runtime()
    last_id = console_view.latest_event_id(runtime.engine)
    return jsonify({"chats": console_view.agent_chats(runtime.engine, runtime.crm, agent.email),
                    "last_event_id": last_id})


@bp.get("/api/agent/chats/<path:chat_id>")
@signed_in
def get_chat(agent: agents.Agent, chat_id: str) -> Any:
    runtime = _runtime()
    chat = console_view.agent_chat(runtime.engine, runtime.crm, agent.email, chat_id)
    if chat is None:
        return error_response(404, "not_found", f"no chat {chat_id} assigned to you")
    return jsonify(chat)


def _json_body() -> dict[str, Any] | Any:
    """The posted JSON object, or an error response (also the CSRF guard of the JSON endpoints)."""
    if not same_origin():
        return error_response(403, "forbidden", "cross-site request refused")
    if not request.is_json:
        return error_response(415, "unsupported_media_type", "Content-Type must be application/json")
    raw = request.get_data(cache=True)
    try:  # not Flask's get_json: NaN and Infinity are no JSON, and no NUL is stored, here as at the callback URL
        body = decode_json(raw)
        check_text(raw, body)
    except EventError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.field)
    if not isinstance(body, dict):
        return error_response(400, "invalid_json", "the body must be a JSON object")
    return body


def _text(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _link(runtime: Runtime, agent: agents.Agent, chat_id: str, object_name: str, record_id: str) -> Any:
    """Link the chat; the linked record, or an error response."""
    try:
        linked = link_chat(runtime.engine, runtime.crm, chat_id, agent.email, object_name, record_id)
    except LinkError as exc:
        return error_response(exc.status, exc.code, exc.message, exc.field)
    except CRMError as exc:
        return error_response(503, "crm_unavailable", f"the CRM did not answer: {exc}")
    runtime.notify()
    return linked


@bp.post("/api/agent/chats/<path:chat_id>/link")
@signed_in
def link(agent: agents.Agent, chat_id: str) -> Any:
    body = _json_body()
    if not isinstance(body, dict):
        return body
    object_name, record_id = _text(body, "object"), _text(body, "id")
    if object_name is None:
        return error_response(400, "invalid_payload", "object is required", "object")
    if record_id is None:
        return error_response(400, "invalid_payload", "id is required", "id")
    runtime = _runtime()
    linked = _link(runtime, agent, chat_id, object_name, record_id)
    if not isinstance(linked, dict):
        return linked
    return jsonify({"chat_id": chat_id, "linked_record": linked,
                    "chat": console_view.agent_chat(runtime.engine, runtime.crm, agent.email, chat_id)})


@bp.post("/api/agent/chats/<path:chat_id>/records")
@signed_in
def create_record(agent: agents.Agent, chat_id: str) -> Any:
    """Create a record for the consumer of a no-match chat, then link the chat to it."""
    body = _json_body()
    if not isinstance(body, dict):
        return body
    runtime = _runtime()
    chat = console_view.agent_chat(runtime.engine, runtime.crm, agent.email, chat_id)
    if chat is None:
        return error_response(404, "not_found", f"no chat {chat_id} assigned to you")
    object_name = _text(body, "object")
    if object_name not in NEW_RECORD_OBJECTS:
        return error_response(400, "invalid_payload", f"object must be one of {', '.join(NEW_RECORD_OBJECTS)}",
                              "object")
    fields = body.get("fields", {})
    if not isinstance(fields, dict) or not all(isinstance(k, str) and isinstance(v, (str, bool, int, type(None)))
                                               and not isinstance(v, float) for k, v in fields.items()):
        return error_response(400, "invalid_payload", "fields must be an object of field names to values", "fields")
    allowed = set(console_view.FORM_FIELDS[object_name])
    unknown = sorted(set(fields) - allowed)
    if unknown:
        return error_response(400, "invalid_payload", f"{object_name} field {unknown[0]!r} cannot be set here",
                              f"fields.{unknown[0]}")
    try:
        record_id = runtime.crm.create(object_name, new_record_fields(object_name, chat["consumer_number"], fields))
    except CRMRejected as exc:
        return error_response(400, "crm_rejected", str(exc), "fields")
    except CRMError as exc:
        return error_response(503, "crm_unavailable", f"the CRM did not answer: {exc}")
    record = {"object": object_name, "id": record_id, "url": runtime.crm.record_url(object_name, record_id)}
    if object_name in LINKABLE_OBJECTS:
        linked = _link(runtime, agent, chat_id, object_name, record_id)
        if not isinstance(linked, dict):
            return linked
    return jsonify({"record": record, "linked": object_name in LINKABLE_OBJECTS,
                    "chat": console_view.agent_chat(runtime.engine, runtime.crm, agent.email, chat_id)}), 201


# -- the live stream ----------------------------------------------------------------------------------

def _start_id(engine: Any) -> int:
    """Where the stream starts: after the browser's last event, never past the newest one (an id
    from before a database was restored would otherwise hide every update until ids caught up)."""
    latest = console_view.latest_event_id(engine)
    for raw in (request.headers.get("Last-Event-ID"), request.args.get("after")):
        if raw is not None and raw.strip().isdigit():
            return min(int(raw.strip()), latest)
    return latest


def _sse(event: str, data: dict[str, Any], event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


@bp.get("/agent/stream")
@signed_in
def stream(agent: agents.Agent) -> Any:
    runtime = _runtime()
    config = current_app.config
    lifetime = float(config.get("CONSOLE_STREAM_SECONDS", STREAM_SECONDS))
    poll = float(config.get("CONSOLE_POLL_SECONDS", POLL_SECONDS))
    heartbeat = float(config.get("CONSOLE_HEARTBEAT_SECONDS", HEARTBEAT_SECONDS))
    closing: threading.Event = current_app.extensions[CLOSING]
    start = _start_id(runtime.engine)
    key = str(session.get("agent_key"))

    def generate() -> Iterator[str]:
        last = start
        yield "retry: 1000\n" + _sse("hello", {"agent": agent.email, "after": last})
        deadline = time.monotonic() + lifetime
        quiet_since = time.monotonic()
        while True:
            for update in console_view.updates_after(runtime.engine, agent.email, last):
                if update.kind == agents.SIGNED_OUT:
                    if agents.session_agent(runtime.engine, agent.id, key) is None:
                        return  # revoked: the browser's reconnect is refused
                    last = update.id
                    continue
                chat = console_view.agent_chat(runtime.engine, runtime.crm, agent.email, update.chat_id)
                # A chat no longer the agent's has no snapshot: its version is the event that said so.
                version = chat["version"] if chat else update.id
                yield _sse("chat", {"kind": update.kind, "chat_id": update.chat_id, "chat": chat,
                                    "version": version}, update.id)
                last = update.id
                quiet_since = time.monotonic()
            if closing.is_set() or time.monotonic() >= deadline:
                return
            if not runtime.wakeup.wait(poll) and time.monotonic() - quiet_since >= heartbeat:
                yield ": heartbeat\n\n"
                quiet_since = time.monotonic()

    return Response(generate(), mimetype="text/event-stream",
                    headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
