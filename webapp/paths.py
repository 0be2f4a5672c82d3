"""The connector's own pages as a browser must ask for them: below the path of CRMCONNECTOR_PUBLIC_URL
when a reverse proxy serves the connector under one (Flask's script root), else at the host's root."""
from __future__ import annotations

from typing import Any, Callable, Iterable

from flask import redirect, request
from werkzeug.wrappers import Response


def path(to: str) -> str:
    """`to` (like "/agent") as the browser reaches it."""
    return request.script_root + to


def redirect_to(to: str) -> Response:
    return redirect(path(to))


class UnderPath:
    """WSGI middleware for a connector served below `prefix`: the script root is that path, so links,
    forms, scripts and redirects carry it. Requests arrive without it (a proxy that strips it) or with it
    (one that passes it on); both are served."""

    def __init__(self, app: Callable[..., Iterable[bytes]], prefix: str):
        self.app, self.prefix = app, prefix

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        info = environ.get("PATH_INFO", "")
        if info == self.prefix or info.startswith(self.prefix + "/"):
            environ["PATH_INFO"] = info[len(self.prefix):] or "/"
        environ["SCRIPT_NAME"] = self.prefix
        return self.app(environ, start_response)
