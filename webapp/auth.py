"""Admin bearer-token checks shared by the admin API, the local-CRM API and the admin pages."""
from __future__ import annotations

import hmac
from functools import wraps
from typing import Any, Callable

from flask import current_app, request, session

from webapp.errors import error_response


def admin_token_ok() -> bool:
    expected = current_app.extensions["crmconnector"].settings.admin_token
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() == "bearer" and token and hmac.compare_digest(token.strip(), expected):
        return True
    return bool(session.get("admin")) and hmac.compare_digest(str(session.get("admin")), _session_marker())


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
            response = error_response(401, "unauthorized", "admin token required (Authorization: Bearer <token>)")
            response.headers["WWW-Authenticate"] = 'Bearer realm="crmconnector"'
            return response
        return view(*args, **kwargs)
    return wrapper
