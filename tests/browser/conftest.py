"""Browser tests: the real app served by a threaded HTTP server on 127.0.0.1, driven in Debian's
headless Chromium through Playwright. Skipped, saying why, where /usr/bin/chromium is absent."""
from __future__ import annotations

import json
import os
import socket
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
import requests
from werkzeug.serving import WSGIRequestHandler, make_server

from crmconnector import agents
from crmconnector.runtime import Runtime
from crmconnector.settings import Settings
from tests.conftest import signed_headers

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def pytest_collection_modifyitems(items: list[Any]) -> None:
    if os.path.exists(CHROMIUM):
        return
    skip = pytest.mark.skip(reason=f"browser tests not run: {CHROMIUM} is absent (apt-get install chromium)")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


class _OneRequestPerConnection(WSGIRequestHandler):
    # Each connection ends with its response, so a restart leaves no connection to the old app.
    protocol_version = "HTTP/1.0"

    def log_request(self, *args: Any, **kwargs: Any) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """The connector on a real socket; `restart()` stops it (streams end) and starts it again."""

    def __init__(self, settings: Settings, background: bool):
        self.settings = settings
        self.background = background
        self.url = settings.public_url
        self.runtime: Runtime
        self.start()

    def start(self) -> None:
        from webapp import create_app

        self.runtime = Runtime(self.settings)
        app = create_app(runtime=self.runtime, background=self.background,
                         test_config={"CONSOLE_POLL_SECONDS": 0.5, "CONSOLE_STREAM_SECONDS": 120})
        port = int(self.url.rsplit(":", 1)[1])
        self.server = make_server("127.0.0.1", port, app, threaded=True, request_handler=_OneRequestPerConnection)
        self.thread = threading.Thread(target=self.server.serve_forever, name="live-server", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.runtime.close()  # open event streams end, the worker stops
        self.server.server_close()
        self.thread.join(5)

    @property
    def crm(self) -> Any:
        return self.runtime.crm

    def post(self, event_type: str, data: dict[str, Any]) -> requests.Response:
        """A signed event from the SMS platform, over HTTP."""
        envelope = {"id": f"evt_{time.monotonic_ns()}", "type": event_type, "occurred_at": "2026-11-21T17:03:11Z",
                    "data": data}
        body = json.dumps(envelope).encode()
        return requests.post(f"{self.url}/callbacks/events", data=body, headers=signed_headers(body), timeout=10)

    def sign_in_link(self, email: str, name: str | None = None) -> str:
        agent = agents.add_agent(self.runtime.engine, email, name)
        return agents.sign_in_link(self.runtime.engine, self.settings, agent)


@pytest.fixture
def live_factory(settings: Settings) -> Iterator[Callable[..., LiveServer]]:
    servers: list[LiveServer] = []

    def make(background: bool = True, **changes: Any) -> LiveServer:
        url = f"http://127.0.0.1:{_free_port()}"
        server = LiveServer(replace(settings, public_url=url, host="127.0.0.1", port=int(url.rsplit(":", 1)[1]),
                                    **changes), background)
        servers.append(server)
        return server

    yield make
    for server in servers:
        try:
            server.stop()
        except Exception:  # noqa: BLE001 - already stopped by the test
            pass


@pytest.fixture
def live(live_factory: Callable[..., LiveServer]) -> LiveServer:
    return live_factory(True)


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"browser tests not run: {CHROMIUM} is absent")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1200, "height": 860})
    page = context.new_page()
    page.set_default_timeout(10_000)
    yield page
    context.close()


def screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / name), full_page=True)
