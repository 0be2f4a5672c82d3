"""Per-session CSRF tokens for the pages' POST forms, and a same-origin check for JSON posts.

Forms carry the token in a hidden `csrf` field. The agent's JSON endpoints accept only
`application/json` bodies (which a cross-site form cannot send without a CORS preflight that we
never allow) and refuse a foreign `Origin`.
"""
from __future__ import annotations

import secrets
from urllib.parse import urlsplit

from flask import current_app, request, session

from crmconnector.signatures import same_secret

SESSION_KEY = "csrf"


def csrf_token() -> str:
    """The session's token, made on first use (templates call this)."""
    token = session.get(SESSION_KEY)
    if not isinstance(token, str) or not token:
        token = secrets.token_urlsafe(24)
        session[SESSION_KEY] = token
    return token


def form_token_ok() -> bool:
    """True when the posted form carries this session's token."""
    expected = session.get(SESSION_KEY)
    given = request.form.get("csrf", "")
    return isinstance(expected, str) and bool(expected) and same_secret(given, expected)


def same_origin() -> bool:
    """False when the browser says the request came from another site."""
    origin = request.headers.get("Origin")
    if not origin:
        return True
    # Behind a reverse proxy the Host header may be the proxy's upstream; the public URL counts too.
    public = urlsplit(current_app.extensions["crmconnector"].settings.base_url).netloc
    return urlsplit(origin).netloc in (request.host, public)
