"""Who is asking: the admin (bearer token or admin session) or a signed-in agent; shared by the
admin API, the local-CRM API and pages, the agent console and the admin pages."""
from __future__ import annotations

from functools import wraps
from typing import Any, Callable

from flask import current_app, g, request, session

from crmconnector import agents
from crmconnector.signatures import same_secret
from webapp.errors import error_response


def admin_token_ok() -> bool:
    expected = current_app.extensions["crmconnector"].settings.admin_token
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token and same_secret(token.strip(), expected):
        return True
    return bool(session.get("admin")) and same_secret(str(session.get("admin")), _session_marker())


def _session_marker() -> str:
    import hashlib

    token = current_app.extensions["crmconnector"].settings.admin_token
    return hashlib.sha256(("admin-session:" + token).encode()).hexdigest()


def sign_in_admin() -> None:
    session["admin"] = _session_marker()


def admin_required(view: Callable[..., Any]) -> Callable[..., Any]:
    """401 with the contract's error shape unless the request carries the admin token."""
    @wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not admin_token_ok():
            return admin_unauthorized()
        return view(*args, **kwargs)
    return wrapper


def admin_unauthorized() -> Any:
    response = error_response(401, "unauthorized", "admin token required (Authorization: Bearer <token>)")
    response.headers["WWW-Authenticate"] = 'Bearer realm="crmconnector"'
    return response


def sign_in_agent(agent: agents.Agent) -> None:
    """A fresh session for the agent, bound to their current session key."""
    key = agents.open_session(current_app.extensions["crmconnector"].engine, agent)
    session.clear()  # nothing of a previous session carries over
    session["agent_id"], session["agent_key"] = agent.id, key


def current_agent() -> agents.Agent | None:
    """The signed-in agent, unless their session was revoked since; looked up once per request."""
    if "agent" not in g:
        agent_id, key = session.get("agent_id"), session.get("agent_key")
        g.agent = (agents.session_agent(current_app.extensions["crmconnector"].engine, agent_id, key)
                   if isinstance(agent_id, int) and isinstance(key, str) else None)
    agent: agents.Agent | None = g.agent
    return agent
