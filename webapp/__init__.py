"""The web layer: HTTP only. `create_app(settings)` builds the Flask app around a Runtime."""
from __future__ import annotations

import logging
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, request
from sqlalchemy.exc import DBAPIError

from crmconnector.crm.errors import RetryableCRMError
from crmconnector.outage import is_unreachable
from crmconnector.runtime import Runtime
from crmconnector.settings import Settings
from webapp.errors import error_response
from webapp.paths import UnderPath

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None, *, runtime: Runtime | None = None,
               background: bool | None = None, test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app; tests pass settings (or a ready Runtime) and usually no background threads."""
    settings = runtime.settings if runtime else (settings or Settings.from_env())
    runtime = runtime or Runtime(settings)
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.admin_token + ":session",
        MAX_CONTENT_LENGTH=None,  # the callback endpoint enforces its own limit with the contract's error
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.base_url.startswith("https://"),
        JSON_SORT_KEYS=False,
    )
    if test_config:
        app.config.update(test_config)
    app.extensions["crmconnector"] = runtime
    from crmconnector.crm.ids import object_for_id

    app.jinja_env.filters["object_for_id"] = lambda value: object_for_id(value) or "Account"

    from webapp import callbacks, crm_pages, health, home, openapi

    for module in (callbacks, health, crm_pages, openapi, home):
        app.register_blueprint(module.bp)
    _register_optional(app)
    app.wsgi_app = callbacks.CallbackFastPath(app)  # type: ignore[method-assign]
    prefix = urlsplit(settings.base_url).path.rstrip("/")  # a proxy serves the connector below this path
    if prefix:
        app.wsgi_app = UnderPath(app.wsgi_app, prefix)  # type: ignore[method-assign]

    @app.before_request
    def nul_in_path() -> Any:
        """No chat or record id holds a NUL character, and PostgreSQL cannot even be asked for one."""
        return error_response(404, "not_found", "no such resource") if "\x00" in request.path else None

    @app.errorhandler(404)
    def not_found(_: Exception) -> Any:
        return error_response(404, "not_found", "no such resource")

    @app.errorhandler(405)
    def not_allowed(_: Exception) -> Any:
        return error_response(405, "method_not_allowed", "method not allowed")

    @app.errorhandler(500)
    def failed(_: Exception) -> Any:
        """A bug: the traceback is logged (by Flask), the client gets the error shape every answer has."""
        return error_response(500, "internal_error", "the connector failed to answer; try again later")

    @app.errorhandler(DBAPIError)
    def database_away(exc: DBAPIError) -> Any:
        """While the database is away, pages and APIs answer as the callbacks do: 503, try again soon
        (the connector reconnects by itself). Any other database error is a bug, Flask's 500."""
        if not is_unreachable(exc):
            raise exc
        return _unavailable("unavailable", "the connector's database is unavailable; retry later")

    @app.errorhandler(RetryableCRMError)
    def crm_away(exc: RetryableCRMError) -> Any:
        return _unavailable("crm_unavailable", f"the CRM did not answer: {exc}")

    if background if background is not None else settings.run_background:
        runtime.start_background()
    return app


def _unavailable(code: str, message: str) -> Any:
    response = error_response(503, code, message)
    response.headers["Retry-After"] = "5"
    return response


def _register_optional(app: Flask) -> None:
    """Blueprints of the people's pages, when present."""
    import importlib

    for name in ("webapp.agent", "webapp.admin", "webapp.admin_api"):
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        app.register_blueprint(module.bp)


def runtime_of(app: Flask) -> Runtime:
    return app.extensions["crmconnector"]
