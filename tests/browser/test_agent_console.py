"""The agent console in headless Chromium: live pops of each kind, the pick, the new-record form,
visibility, and catching up after the stream was cut."""
from __future__ import annotations

import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import pytest
from sqlalchemy import select

from crmconnector.preferences import save_pop_settings
from crmconnector.runtime import Runtime
from crmconnector.store import chats
from webapp import create_app
from tests.browser.conftest import LiveServer, screenshot
from tests.conftest import Platform
from tests.chat_support import HUCK, TOM, assigned, ended, make_worker, message, started, tasks

pytestmark = pytest.mark.browser
NUMBER = "+14155550132"


def _png(width: int = 96, height: int = 96) -> bytes:
    rows = b"".join(b"\x00" + bytes(c for x in range(width) for c in (150 + x % 60, 110 + y % 90, 60))
                    for y in range(height))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


@pytest.fixture
def media_host() -> Iterator[str]:
    """The SMS platform's media host: serves one picture."""
    image = _png()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_response(200)
            self.send_header("Content-Type", "image/png")
            self.send_header("Content-Length", str(len(image)))
            self.end_headers()
            self.wfile.write(image)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def sign_in(page: Any, live: LiveServer, agent: dict[str, str]) -> None:
    page.goto(live.sign_in_link(agent["email"], agent["name"]))
    page.wait_for_url(f"{live.url}/agent")
    page.get_by_text(f"Signed in as {agent['name']}").wait_for()
    page.evaluate("window.__loadedOnce = true")  # gone if the page ever reloads
    wait_until(lambda: page.evaluate("window.crmConsole !== undefined"))


def assign_chat(live: LiveServer, chat_id: str, agent: dict[str, str], number: str = NUMBER) -> dict[str, Any]:
    response = live.post("chat.started", started(chat_id, number))
    assert response.status_code == 200
    assert live.post("chat.assigned", assigned(agent, 10, chat_id)).status_code == 200
    return response.json()


def wait_until(condition: Callable[[], Any], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met")
        time.sleep(0.1)


def linked(live: LiveServer, chat_id: str) -> tuple[str | None, str | None]:
    with live.runtime.engine.connect() as conn:
        row = conn.execute(select(chats.c.linked_object, chats.c.linked_id).where(chats.c.id == chat_id)).one()
    return row.linked_object, row.linked_id


def test_a_single_match_pops_live_without_reload(page: Any, live: LiveServer, media_host: str) -> None:
    contact = live.crm.create("Contact", {"FirstName": "Becky", "LastName": "Thatcher", "Phone": "(415) 555-0132"})
    sign_in(page, live, TOM)
    page.get_by_text("No chats yet").wait_for()
    assign_chat(live, "2415", TOM)
    pop = page.locator(".pop-single")
    pop.wait_for()
    assert pop.locator(".record-name").inner_text() == "Becky Thatcher"
    link = pop.get_by_role("link", name="Open in CRM")
    assert link.get_attribute("href") == f"{live.url}/crm/Contact/{contact}"
    assert page.locator("h2.consumer").inner_text() == "+1 415-555-0132"
    live.post("chat.message", message("m1", "consumer", "Hi! Can you quote a new fence? Photo attached.", 20,
                                      "2415", media=[{"url": f"{media_host}/fence.png", "content_type": "image/png",
                                                      "filename": "fence.png"}]))
    live.post("chat.message", message("m2", "agent", "Hello Becky, happy to help.", 30, "2415", agent=TOM))
    page.locator(".msg-agent").wait_for()
    thumb = page.locator(".thumb img")
    assert thumb.get_attribute("alt") == "fence.png"
    assert page.locator(".thumb").get_attribute("href") == f"{media_host}/fence.png"
    wait_until(lambda: page.evaluate("document.querySelector('.thumb img').naturalWidth") == 96)
    assert "posted to the CRM when the chat ends" in page.locator(".crm-status").inner_text()
    assert page.evaluate("window.__loadedOnce") is True
    screenshot(page, "agent-single.png")


def test_several_matches_the_pick_moves_the_chat_log(page: Any, live: LiveServer) -> None:
    first = live.crm.create("Contact", {"FirstName": "Becky", "LastName": "Thatcher", "Phone": NUMBER})
    time.sleep(0.01)
    second = live.crm.create("Lead", {"FirstName": "Huck", "LastName": "Finn", "Company": "Raft Tours",
                                      "MobilePhone": "415.555.0132"})
    sign_in(page, live, TOM)
    assign_chat(live, "2416", TOM)
    radios = page.locator(".pop-multiple input[type=radio]")
    radios.first.wait_for()
    assert radios.count() == 2
    assert radios.nth(0).is_checked() and not radios.nth(1).is_checked()
    radios.nth(0).focus()
    page.keyboard.press("ArrowDown")  # keyboard only: move the choice, then press the button
    assert radios.nth(1).is_checked()
    page.get_by_role("button", name="Link chat to the selected record").click()
    page.get_by_text("Linked to Huck Finn.").wait_for()
    assert page.locator(".linked-name").inner_text() == "Huck Finn"
    assert linked(live, "2416") == ("Lead", second)
    live.post("chat.message", message("m1", "consumer", "Is Tuesday possible?", 20, "2416"))
    live.post("chat.ended", ended(120, "2416"))
    wait_until(lambda: live.crm.find("Task", "CallObject", ["sms-chat-2416"]))
    task = live.crm.find("Task", "CallObject", ["sms-chat-2416"])[0]
    assert task.fields["WhoId"] == second and first != second
    page.get_by_role("link", name="View chat log").wait_for()
    assert page.get_by_role("link", name="View chat log").get_attribute("href") == f"{live.url}/crm/Task/{task.id}"
    screenshot(page, "agent-multiple.png")


def test_no_match_the_form_creates_and_links_the_record(page: Any, live: LiveServer) -> None:
    sign_in(page, live, TOM)
    assign_chat(live, "2417", TOM)
    form = page.get_by_role("form", name="New Contact")
    form.wait_for()
    assert form.get_by_label("Phone").input_value() == NUMBER
    form.get_by_label("FirstName").fill("Becky")
    form.get_by_label("LastName *").fill("Thatcher")
    form.get_by_label("Email").fill("becky@example.com")
    live.post("chat.message", message("m1", "consumer", "Hi, this is Becky.", 20, "2417"))
    page.get_by_text("Hi, this is Becky.").wait_for()  # the chat was redrawn while the agent typed
    assert form.get_by_label("LastName *").input_value() == "Thatcher"
    assert form.get_by_label("Email").input_value() == "becky@example.com"
    assert page.evaluate("document.activeElement.id") == "new-2417-Email"
    screenshot(page, "agent-none.png")
    form.get_by_role("button", name="Create Contact and link").click()
    page.get_by_text("Contact created and linked.").wait_for()
    records = live.crm.find("Contact", "Email", ["becky@example.com"])
    assert [r.name for r in records] == ["Becky Thatcher"]
    assert records[0].fields["Phone"] == NUMBER
    assert linked(live, "2417") == ("Contact", records[0].id)
    assert page.locator(".linked-name").inner_text() == "Becky Thatcher"


def test_a_double_submit_of_the_new_record_form_creates_one_record(page: Any, live: LiveServer) -> None:
    """A double click (or Enter pressed twice) before the first answer came back sends one create."""
    sign_in(page, live, TOM)
    assign_chat(live, "2422", TOM)
    form = page.get_by_role("form", name="New Contact")
    form.wait_for()
    form.get_by_label("LastName *").fill("Harper")
    form.get_by_label("Email").fill("joe.harper@example.com")
    page.evaluate("""() => { const form = document.querySelector("form.record-form");
                             form.requestSubmit(); form.requestSubmit(); }""")
    page.get_by_text("Contact created and linked.").wait_for()
    records = live.crm.find("Contact", "Email", ["joe.harper@example.com"])
    assert len(records) == 1
    assert linked(live, "2422") == ("Contact", records[0].id)


def test_a_chat_assigned_to_another_agent_never_appears(page: Any, live: LiveServer) -> None:
    sign_in(page, live, TOM)
    assign_chat(live, "900", HUCK, "+14155550199")
    assign_chat(live, "901", TOM)
    page.locator('[data-chat-id="901"]').wait_for()
    assert page.locator('[data-chat-id="900"]').count() == 0
    assert sorted(page.evaluate("Object.keys(window.crmConsole.chats())")) == ["901"]
    # A second chat, accepted earlier on the platform's clock, is listed first; its messages count as unread.
    assert live.post("chat.started", started("902", "+14155550177")).status_code == 200
    assert live.post("chat.assigned", assigned(TOM, 5, "902")).status_code == 200
    live.post("chat.message", message("m1", "consumer", "Are you there?", 30, "902"))
    badge = page.locator('[data-chat-id="902"] .unread')
    badge.wait_for()
    assert badge.inner_text() == "1" and badge.get_attribute("aria-label") == "1 unread"
    assert page.locator(".chat-item").evaluate_all("items => items.map(i => i.dataset.chatId)") == ["902", "901"]
    page.locator('[data-chat-id="902"]').click()
    assert page.locator('[data-chat-id="902"] .unread').count() == 0
    page.goto(f"{live.url}/agent/chats/900")
    page.get_by_text("There is no chat 900 assigned to you.").wait_for()


def test_a_pop_missed_while_the_stream_was_down_appears_after_reconnecting(page: Any, live: LiveServer) -> None:
    live.crm.create("Contact", {"FirstName": "Becky", "LastName": "Thatcher", "Phone": NUMBER})
    sign_in(page, live, TOM)
    assign_chat(live, "500", TOM, "+14155550100")
    page.locator('[data-chat-id="500"]').wait_for()
    banner = page.locator("#stream-banner")
    assert banner.is_hidden()
    live.stop()  # the server goes away: its event streams end and nothing answers
    banner.wait_for(state="visible")
    runtime = Runtime(live.settings)  # meanwhile another instance on the same database takes the events
    try:
        platform = Platform(create_app(runtime=runtime, background=False).test_client())
        assert platform.post("chat.started", started("501", NUMBER)).status_code == 200
        assert platform.post("chat.assigned", assigned(TOM, 10, "501")).status_code == 200
    finally:
        runtime.close()
    live.start()
    page.locator('[data-chat-id="501"]').wait_for()
    banner.wait_for(state="hidden")
    page.locator('[data-chat-id="501"]').click()
    assert page.locator(".pop-single .record-name").inner_text() == "Becky Thatcher"
    assert page.evaluate("window.__loadedOnce") is True


def test_a_relink_response_never_undoes_a_newer_live_status(page: Any, live_factory: Callable[..., Any]) -> None:
    """The link response is held back until the re-posted chat log's live update was shown: the
    console keeps the newer state instead of going back to "pending"."""
    live = live_factory(background=False)  # the outbox runs only when the test says so
    live.crm.create("Contact", {"FirstName": "Becky", "LastName": "Thatcher", "Phone": NUMBER})
    lead = live.crm.create("Lead", {"FirstName": "Huck", "LastName": "Finn", "Company": "Raft Tours",
                                    "MobilePhone": NUMBER})
    sign_in(page, live, TOM)
    assign_chat(live, "2418", TOM)
    assert live.post("chat.ended", ended(120, "2418")).status_code == 202
    make_worker(live.runtime).run_once()
    page.locator(".crm-status.status-posted").wait_for()
    held: list[Any] = []
    page.route("**/api/agent/chats/2418/link", lambda route: held.append((route, route.fetch())))
    page.locator(".pop-multiple input[type=radio]").nth(1).check()
    page.get_by_role("button", name="Link chat to the selected record").click()
    page.locator(".crm-status.status-pending").wait_for()  # the link was made: its live update came
    assert len(held) == 1
    make_worker(live.runtime).run_once()  # the Task moves to the Lead
    page.locator(".crm-status.status-posted").wait_for()
    route, response = held[0]
    route.fulfill(response=response)  # the answer to the link request, older than what is shown
    page.get_by_text("Linked to Huck Finn.").wait_for()
    assert page.locator(".crm-status").get_attribute("class") == "crm-status status-posted"
    assert page.locator(".linked-name").inner_text() == "Huck Finn"
    assert tasks(live.crm, "2418")[0].fields["WhoId"] == lead


def test_no_match_with_case_as_the_new_record_object_creates_and_links_the_case(page: Any,
                                                                                 live: LiveServer) -> None:
    save_pop_settings(live.runtime.engine, {"new_record_object": "Case"})
    sign_in(page, live, TOM)
    assign_chat(live, "2419", TOM)
    form = page.get_by_role("form", name="New Case")
    form.wait_for()
    assert form.get_by_label("SuppliedPhone").input_value() == NUMBER
    form.get_by_label("Subject").fill("Fence quote by SMS")
    form.get_by_role("button", name="Create Case and link").click()
    page.get_by_text("Case created and linked.").wait_for()
    cases = live.crm.find("Case", "Subject", ["Fence quote by SMS"])
    assert len(cases) == 1 and linked(live, "2419") == ("Case", cases[0].id)
    assert page.locator(".linked .tag").inner_text() == "Case"
    assert live.post("chat.ended", ended(120, "2419")).status_code == 202
    task = wait_until(lambda: tasks(live.crm, "2419"))[0]
    assert task.fields["WhatId"] == cases[0].id and task.fields["WhoId"] is None


def test_media_that_is_not_http_is_shown_as_text_never_as_a_link(page: Any, live: LiveServer) -> None:
    sign_in(page, live, TOM)
    assign_chat(live, "2420", TOM)
    media = [{"url": "javascript:alert(document.cookie)", "content_type": "text/plain"},
             {"url": "data:image/png;base64,iVBORw0KGgo=", "content_type": "image/png", "filename": "pic.png"},
             {"url": " JavaScript:alert(1)", "content_type": "text/plain", "filename": "spaced.txt"},
             {"url": "https://media.example/fence.pdf", "content_type": "application/pdf", "filename": "fence.pdf"}]
    assert live.post("chat.message", message("m1", "consumer", "See these", 20, "2420",
                                              media=media)).status_code == 200
    box = page.locator(".msg-consumer .media")
    box.wait_for()
    assert box.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))") == [
        "https://media.example/fence.pdf"]
    assert box.locator("img").count() == 0
    assert box.locator(".file-unlinked").all_inner_texts() == [
        "javascript:alert(document.cookie)", "pic.png", "spaced.txt"]


def test_an_agent_message_without_its_agent_is_named_as_in_the_chat_log(page: Any, live: LiveServer) -> None:
    sign_in(page, live, TOM)
    assign_chat(live, "2421", TOM)
    assert live.post("chat.message", message("m1", "agent", "Hello, Tom here.", 30, "2421")).status_code == 200
    page.get_by_text("Hello, Tom here.").wait_for()
    assert page.locator(".msg-agent .meta strong").inner_text() == "Agent Tom Sawyer"
    assert live.post("chat.ended", ended(120, "2421")).status_code == 202
    task = wait_until(lambda: tasks(live.crm, "2421"))[0]
    assert "Agent Tom Sawyer: Hello, Tom here." in task.fields["Description"]


def test_the_brand_link_leads_back_to_the_console_and_nothing_is_missing(page: Any, live: LiveServer) -> None:
    missing: list[str] = []
    page.on("response", lambda response: missing.append(response.url) if response.status >= 400 else None)
    sign_in(page, live, TOM)
    page.get_by_role("link", name="crmconnector").click()
    page.wait_for_url(f"{live.url}/agent")
    page.get_by_text("Signed in as Tom Sawyer").wait_for()
    icon = page.evaluate("fetch('/favicon.ico').then(r => r.ok && r.headers.get('Content-Type').split(';')[0])")
    assert icon == "image/svg+xml"
    assert missing == []
