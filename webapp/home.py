"""The site's root and its icon: where the brand link on every page leads, and what browsers ask for."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, url_for

from webapp.auth import admin_token_ok, current_agent
from webapp.paths import redirect_to

bp = Blueprint("home", __name__)


@bp.get("/")
def home() -> Any:
    """Signed-in people go back to their page; anyone else is told where the pages are (each asks
    for its own sign-in, so the landing shows nothing that needs one)."""
    if current_agent() is not None:
        return redirect_to("/agent")
    if admin_token_ok():
        return redirect_to("/admin")
    return render_template("home.html")


@bp.get("/favicon.ico")
def favicon() -> Any:
    """Browsers ask for /favicon.ico on their own: point them to the icon the pages name."""
    return redirect(url_for("static", filename="favicon.svg"), code=301)
