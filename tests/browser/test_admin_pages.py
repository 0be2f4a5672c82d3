"""The admin page in headless Chromium: sign-in, a settings change the next chat.started follows,
and the retry button of a failed outbox item."""
from __future__ import annotations

from datetime import timedelta
from typing import Any, Callable

import pytest
from sqlalchemy import select

from crmconnector.store import outbox, utcnow
from tests.browser.conftest import LiveServer, screenshot
from tests.chat_support import HUCK, TOM, assigned, ended, started
from tests.conftest import ADMIN_TOKEN

pytestmark = pytest.mark.browser
REJECTED = "FIELD_CUSTOM_VALIDATION_EXCEPTION: Tasks need a Subject of 255 characters or fewer"


def sign_in_admin(page: Any, live: LiveServer) -> None:
    page.goto(f"{live.url}/admin")
    page.wait_for_url(f"{live.url}/admin/sign-in")
    page.get_by_label("Admin token").fill(ADMIN_TOKEN)
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live.url}/admin")


def failed_item(live: LiveServer, key: str) -> int:
    now = utcnow()
    with live.runtime.engine.begin() as conn:
        return conn.execute(outbox.insert().values(kind="chat_log", key=key, status="failed", attempts=4, due_at=now,
                                                   last_error=REJECTED, created_at=now, updated_at=now)
                            ).inserted_primary_key[0]


def test_the_admin_changes_the_no_match_action_and_the_next_chat_follows(page: Any, live: LiveServer) -> None:
    assert live.post("chat.started", started("1", "+14155550101")).json()["screen_pop"]["action"] == "new_record"
    sign_in_admin(page, live)
    page.get_by_label("No match").select_option("search")
    page.get_by_role("button", name="Save settings").click()
    page.get_by_text("Settings saved.").wait_for()
    assert page.get_by_label("No match").input_value() == "search"
    body = live.post("chat.started", started("2", "+14155550102")).json()
    assert body["screen_pop"]["action"] == "search"
    assert body["screen_pop"]["url"] == f"{live.url}/agent/chats/2"


def test_an_invalid_setting_is_refused_with_a_clear_message(page: Any, live: LiveServer) -> None:
    sign_in_admin(page, live)
    page.get_by_label("Match order: second").select_option("Contact")  # Contact twice
    page.get_by_role("button", name="Save settings").click()
    alert = page.locator("#settings-error")
    alert.wait_for()
    assert "Not saved: object order must list" in alert.inner_text()
    assert live.post("chat.started", started("3")).json()["screen_pop"]["action"] == "new_record"


def test_a_failed_outbox_item_shows_its_error_and_retry_requeues_it(
        page: Any, live_factory: Callable[..., LiveServer], tmp_path: Any, monkeypatch: Any) -> None:
    monkeypatch.chdir(tmp_path)  # the default, relative database location (shown in the screenshot)
    # No worker: the re-queued item stays visible as pending.
    live = live_factory(False, database_url="sqlite:///instance/crmconnector.db")
    for n, outcome_number in enumerate(("+14155550132", "+14155550132", "+14155550150", "+14155550161")):
        if n == 0:
            live.crm.create("Contact", {"FirstName": "Becky", "LastName": "Thatcher", "Phone": outcome_number})
        if n == 3:
            live.crm.create("Lead", {"LastName": "Finn", "Company": "Raft", "Phone": outcome_number})
            live.crm.create("Contact", {"LastName": "Finn", "Phone": outcome_number})
        live.post("chat.started", started(f"24{n}", outcome_number,
                                          created_at=(utcnow() - timedelta(hours=n * 2)).isoformat()))
        live.post("chat.assigned", assigned(TOM if n % 2 else HUCK, 10, f"24{n}"))
    live.post("chat.ended", ended(300, "240"))
    item = failed_item(live, "240")
    sign_in_admin(page, live)
    row = page.locator(f'tr.failed-item[data-item-id="{item}"]')
    assert REJECTED in row.inner_text()
    page.locator("#crm-lines li").first.wait_for()
    assert page.locator("#crm-summary").inner_text().startswith("The CRM answers")
    page.wait_for_function("window.adminCharts && window.adminCharts.perHour.data.datasets[0].data"
                           ".reduce((a, b) => a + b, 0) === 4")
    screenshot(page, "admin.png")
    page.get_by_role("button", name=f"Retry outbox item {item}").click()
    page.get_by_text(f"Outbox item {item} queued again.").wait_for()
    assert page.locator(f'tr.failed-item[data-item-id="{item}"]').count() == 0
    with live.runtime.engine.connect() as conn:
        assert conn.execute(select(outbox.c.status).where(outbox.c.id == item)).scalar() == "pending"
