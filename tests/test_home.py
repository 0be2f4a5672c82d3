"""The site's root and its icon: the brand link on every page leads somewhere, and browsers find an icon."""
from __future__ import annotations

import re
from typing import Any

from tests.conftest import ADMIN_TOKEN
from tests.test_admin import csrf_of
from tests.test_agent import sign_in_path


def test_the_root_shows_where_the_agent_console_and_admin_pages_are(client: Any) -> None:
    response = client.get("/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert set(re.findall(r'<a[^>]* href="(/[^"]*)"', html)) >= {"/", "/agent", "/admin"}
    assert ADMIN_TOKEN not in html and "token=" not in html  # nothing that signs anyone in


def test_the_root_takes_a_signed_in_agent_to_the_console(app: Any, runtime: Any) -> None:
    agent = app.test_client()
    assert agent.get(sign_in_path(runtime, "tom@example.com", "Tom Sawyer")).status_code == 302
    response = agent.get("/")
    assert response.status_code == 302 and response.headers["Location"] == "/agent"


def test_the_root_takes_a_signed_in_admin_to_the_admin_page(app: Any) -> None:
    admin = app.test_client()
    admin.post("/admin/sign-in", data={"token": ADMIN_TOKEN, "csrf": csrf_of(admin, "/admin/sign-in")})
    response = admin.get("/")
    assert response.status_code == 302 and response.headers["Location"] == "/admin"


def test_the_favicon_is_served(client: Any) -> None:
    with client.get("/favicon.ico", follow_redirects=True) as icon:
        assert icon.status_code == 200 and icon.mimetype == "image/svg+xml"
        svg = icon.get_data()
    assert svg.lstrip().startswith(b"<svg")
    html = client.get("/admin/sign-in").get_data(as_text=True)  # every page names it, so no guessing
    href = re.search(r'<link rel="icon" href="([^"]+)"', html).group(1)
    with client.get(href) as named:
        assert named.get_data() == svg


def test_behind_a_proxy_that_serves_the_connector_under_a_path_every_link_keeps_it(make_settings: Any) -> None:
    """CRMCONNECTOR_PUBLIC_URL with a path: the proxy strips it (or not) before the connector; the pages'
    links, forms, scripts and redirects must carry it, or the browser leaves the connector's path."""
    from crmconnector.runtime import Runtime
    from webapp import create_app

    runtime = Runtime(make_settings(public_url="https://proxy.example.com/sms"))
    try:
        app = create_app(runtime=runtime, background=False)
        agent = app.test_client()
        signed_in = agent.get(sign_in_path(runtime, "tom@example.com", "Tom Sawyer"))
        assert signed_in.status_code == 302 and signed_in.headers["Location"] == "/sms/agent"
        console = agent.get("/agent").get_data(as_text=True)
        paths = re.findall(r'(?:href|src|action)="(/[^"]*)"', console)
        assert paths and all(p.startswith("/sms/") for p in paths), paths
        assert 'data-root="/sms"' in console  # the scripts' fetches and live stream start from it
        assert agent.get("/sms/api/agent/chats").status_code == 200  # a proxy that keeps the path
        assert agent.get("/openapi.json").json["servers"] == [{"url": "/sms"}]
        admin = app.test_client()
        assert admin.get("/admin").headers["Location"] == "/sms/admin/sign-in"
        page = admin.get("/admin/sign-in").get_data(as_text=True)
        assert all(p.startswith("/sms/") for p in re.findall(r'(?:href|src|action)="(/[^"]*)"', page))
    finally:
        runtime.close()
