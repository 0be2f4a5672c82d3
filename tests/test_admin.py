"""The admin pages through the Flask app: sign-in, settings (and bad values), outbox retry, status, charts."""
from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

import pytest
from sqlalchemy import select

from crmconnector import admin_view, preferences
from crmconnector.store import chats, outbox, utcnow
from tests.conftest import ADMIN_TOKEN, admin_headers
from tests.chat_support import started

VALID = {"none": "new_record", "single": "record", "multiple": "search", "new_record_object": "Contact",
         "object_order_1": "Contact", "object_order_2": "Lead", "object_order_3": "Account",
         "opt_out_field": "DoNotCall", "abandoned_tickets": "with_sms"}


def csrf_of(client: Any, path: str = "/admin") -> str:
    page = client.get(path).get_data(as_text=True)
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


@pytest.fixture
def admin(app: Any) -> Any:
    client = app.test_client()
    token = csrf_of(client, "/admin/sign-in")
    response = client.post("/admin/sign-in", data={"token": ADMIN_TOKEN, "csrf": token})
    assert response.status_code == 302 and response.headers["Location"] == "/admin"
    return client


def saved(runtime: Any) -> tuple[dict[str, Any], str]:
    return (preferences.pop_settings(runtime.engine).as_dict(),
            preferences.abandoned_mode(runtime.engine, runtime.settings.abandoned_tickets))


def failed_item(runtime: Any, error: str = "REQUIRED_FIELD_MISSING: Required fields are missing: [LastName]") -> int:
    now = utcnow()
    with runtime.engine.begin() as conn:
        return conn.execute(outbox.insert().values(kind="chat_log", key="2415", status="failed", attempts=3,
                                                   due_at=now, last_error=error, created_at=now, updated_at=now)
                            ).inserted_primary_key[0]


def test_the_admin_page_needs_the_admin_token(client: Any) -> None:
    response = client.get("/admin")
    assert response.status_code == 302 and response.headers["Location"] == "/admin/sign-in"
    assert client.get("/admin/status.json").status_code == 401
    assert client.get("/admin", headers=admin_headers()).status_code == 200


def test_a_wrong_token_or_a_missing_form_token_does_not_sign_in(client: Any) -> None:
    token = csrf_of(client, "/admin/sign-in")
    wrong = client.post("/admin/sign-in", data={"token": "guess", "csrf": token})
    assert wrong.status_code == 401
    assert "not the admin token" in wrong.get_data(as_text=True)
    assert client.post("/admin/sign-in", data={"token": ADMIN_TOKEN}).status_code == 400
    assert client.get("/admin").status_code == 302


def test_non_ascii_tokens_are_wrong_tokens_not_server_errors(client: Any) -> None:
    token = csrf_of(client, "/admin/sign-in")
    assert client.post("/admin/sign-in", data={"token": "tökén", "csrf": token}).status_code == 401
    assert client.post("/admin/sign-in", data={"token": ADMIN_TOKEN, "csrf": "tökén"}).status_code == 400
    with client.application.test_request_context(headers={"Authorization": "Bearer tökén"}):
        from webapp.auth import admin_token_ok

        assert admin_token_ok() is False  # browsers and curl may send such bytes; WSGI reads them as Latin-1


def test_sign_out_ends_the_admin_session(admin: Any) -> None:
    assert admin.post("/admin/sign-out", data={"csrf": csrf_of(admin)}).status_code == 302
    assert admin.get("/admin").status_code == 302


def test_the_page_shows_settings_outbox_chats_and_charts(admin: Any, platform: Any, runtime: Any) -> None:
    platform.post("chat.started", started("2415"))
    failed_item(runtime)
    page = admin.get("/admin").get_data(as_text=True)
    for text in ("Screen pops and tickets", "Outbox", "Recent chats", "Abandoned calls", "Chats per hour",
                 "REQUIRED_FIELD_MISSING", "Retry outbox item", "vendor/chart.umd.js", 'data-chat-id="2415"'):
        assert text in page
    assert 'href="http' not in page.replace("http://connector.test", "")  # no asset from elsewhere


def test_saving_settings_changes_the_next_screen_pop(admin: Any, platform: Any, runtime: Any) -> None:
    form = {**VALID, "none": "search", "object_order_1": "Lead", "object_order_2": "Contact", "object_order_3": "",
            "abandoned_tickets": "all", "csrf": csrf_of(admin)}
    response = admin.post("/admin/settings", data=form)
    assert response.status_code == 302
    prefs, mode = saved(runtime)
    assert prefs["none"] == "search" and prefs["object_order"] == ["Lead", "Contact"]
    assert prefs["opt_out_field"] == "DoNotCall" and mode == "all"
    assert "Settings saved." in admin.get("/admin").get_data(as_text=True)
    assert platform.post("chat.started", started("77")).json["screen_pop"]["action"] == "search"


def shown_mode(page: str) -> tuple[str, str]:
    """The abandoned-ticket choice the page preselects, and what it says about where the mode comes from."""
    select_html = re.search(r'<select id="abandoned-tickets".*?</select>', page, re.S).group(0)
    source = re.search(r'<p id="abandoned-source"[^>]*>(.*?)</p>', page, re.S).group(1)
    return re.search(r'<option value="([^"]+)" selected', select_html).group(1), re.sub(r"<[^>]+>", "", source)


def test_saving_screen_pops_leaves_the_abandoned_mode_to_the_environment(
        admin: Any, app: Any, make_settings: Any) -> None:
    page = admin.get("/admin").get_data(as_text=True)
    choice, source = shown_mode(page)
    assert choice == "environment"
    assert "In effect: with_sms, from CRMCONNECTOR_ABANDONED_TICKETS" in source
    form = {**VALID, "none": "search", "abandoned_tickets": choice, "csrf": csrf_of(admin)}
    assert admin.post("/admin/settings", data=form).status_code == 302
    scripted = {**VALID, "multiple": "record", "abandoned_tickets": "with_sms"}  # the mode in effect, unchanged
    assert admin.post("/admin/settings", data=scripted, headers=admin_headers()).status_code == 302
    assert preferences.saved_abandoned_mode(app.extensions["crmconnector"].engine) is None

    from crmconnector.runtime import Runtime
    from webapp import create_app

    restarted = Runtime(make_settings(abandoned_tickets="all"))  # the variable changed, then a restart
    try:
        client = create_app(runtime=restarted, background=False, test_config={"TESTING": True}).test_client()
        choice, source = shown_mode(client.get("/admin", headers=admin_headers()).get_data(as_text=True))
        assert choice == "environment" and "In effect: all, from CRMCONNECTOR_ABANDONED_TICKETS" in source
        assert preferences.abandoned_mode(restarted.engine, restarted.settings.abandoned_tickets) == "all"
    finally:
        restarted.close()


def test_a_mode_chosen_on_the_page_wins_until_the_environment_is_chosen_again(admin: Any, runtime: Any) -> None:
    form = {**VALID, "abandoned_tickets": "off", "csrf": csrf_of(admin)}
    assert admin.post("/admin/settings", data=form).status_code == 302
    assert saved(runtime)[1] == "off"
    choice, source = shown_mode(admin.get("/admin").get_data(as_text=True))
    assert choice == "off"
    assert "In effect: off, saved on this page; it overrides CRMCONNECTOR_ABANDONED_TICKETS (with_sms)" in source
    form = {**VALID, "abandoned_tickets": "environment", "csrf": csrf_of(admin)}
    assert admin.post("/admin/settings", data=form).status_code == 302
    assert preferences.saved_abandoned_mode(runtime.engine) is None and saved(runtime)[1] == "with_sms"
    assert shown_mode(admin.get("/admin").get_data(as_text=True))[0] == "environment"


@pytest.mark.parametrize("change, message", [
    ({"none": "record"}, "action for 'none' must be one of"),
    ({"multiple": "explode"}, "action for 'multiple' must be one of"),
    ({"new_record_object": "Task"}, "new-record object must be one of"),
    ({"object_order_2": "Contact"}, "object order must list"),
    ({"object_order_1": "Opportunity"}, "object order must list"),
    ({"opt_out_field": "Do Not Call!"}, "opt-out field must be a field API name"),
    ({"abandoned_tickets": "sometimes"}, "abandoned-call tickets must be one of"),
])
def test_settings_outside_the_allowed_values_are_refused_and_nothing_changes(
        admin: Any, runtime: Any, change: dict[str, str], message: str) -> None:
    before = saved(runtime)
    form = {**VALID, "none": "create_record", "abandoned_tickets": "off", **change, "csrf": csrf_of(admin)}
    response = admin.post("/admin/settings", data=form)
    assert response.status_code == 400
    page = response.get_data(as_text=True)
    assert "Not saved:" in page and message in page.replace("&#39;", "'")
    assert saved(runtime) == before


def test_settings_posted_without_the_form_token_are_refused(admin: Any, runtime: Any) -> None:
    before = saved(runtime)
    assert admin.post("/admin/settings", data={**VALID, "none": "search"}).status_code == 400
    assert saved(runtime) == before


def test_bearer_requests_need_no_form_token(client: Any, runtime: Any) -> None:
    response = client.post("/admin/settings", data={**VALID, "single": "none"}, headers=admin_headers())
    assert response.status_code == 302
    assert saved(runtime)[0]["single"] == "none"


def test_the_retry_button_requeues_a_failed_item(admin: Any, runtime: Any) -> None:
    item = failed_item(runtime)
    response = admin.post(f"/admin/outbox/{item}/retry", data={"csrf": csrf_of(admin)})
    assert response.status_code == 302
    with runtime.engine.connect() as conn:
        assert conn.execute(select(outbox.c.status).where(outbox.c.id == item)).scalar() == "pending"
    page = admin.get("/admin").get_data(as_text=True)
    assert f"Outbox item {item} queued again." in page
    again = admin.post(f"/admin/outbox/{item}/retry", data={"csrf": csrf_of(admin)})
    assert again.status_code == 302
    assert "has not failed" in admin.get("/admin").get_data(as_text=True)


def test_more_failed_items_than_the_page_lists_are_said_and_linked(admin: Any, runtime: Any, monkeypatch: Any) -> None:
    from webapp import admin as admin_pages

    monkeypatch.setattr(admin_pages, "FAILED_SHOWN", 2)
    for _ in range(3):
        failed_item(runtime)
    page = admin.get("/admin").get_data(as_text=True)
    assert page.count('class="failed-item"') == 2
    assert "The newest 2 of 3 failed items" in page and "/api/admin/outbox/items?status=failed" in page


def test_retry_all_and_retry_without_form_token(admin: Any, runtime: Any) -> None:
    first, second = failed_item(runtime), failed_item(runtime)
    assert admin.post(f"/admin/outbox/{first}/retry", data={}).status_code == 400
    assert admin.post("/admin/outbox/retry", data={"csrf": csrf_of(admin)}).status_code == 302
    with runtime.engine.connect() as conn:
        statuses = conn.execute(select(outbox.c.status).where(outbox.c.id.in_([first, second]))).scalars().all()
    assert statuses == ["pending", "pending"]


def test_status_reports_the_crm_check_and_outbox_counts(admin: Any, runtime: Any) -> None:
    failed_item(runtime)
    status = admin.get("/admin/status.json").json
    assert status["crm"]["name"] == "local" and status["crm"]["ok"] is True
    assert any(line["what"] == "Contact: create and read" for line in status["crm"]["lines"])
    assert status["outbox"] == {"pending": 0, "failed": 1, "done": 0}


def test_status_says_when_the_crm_does_not_answer(admin: Any, runtime: Any, monkeypatch: Any) -> None:
    from crmconnector.crm.errors import RetryableCRMError

    def down(opt_out_field: str = "DoNotCall") -> None:
        raise RetryableCRMError("connection refused")

    monkeypatch.setattr(runtime.crm, "check", down)
    status = admin.get("/admin/status.json").json
    assert status["crm"]["ok"] is False
    assert "connection refused" in status["crm"]["lines"][0]["detail"]


def test_chart_series_count_chats_per_hour_and_outcomes_per_day(runtime: Any) -> None:
    now = datetime(2026, 11, 21, 18, 30, tzinfo=timezone.utc)
    rows = [("a", datetime(2026, 11, 21, 18, 5, tzinfo=timezone.utc), "single"),
            ("b", datetime(2026, 11, 21, 18, 25, tzinfo=timezone.utc), "none"),
            ("c", datetime(2026, 11, 21, 9, 0, tzinfo=timezone.utc), "multiple"),
            ("d", datetime(2026, 11, 19, 12, 0, tzinfo=timezone.utc), "single"),
            ("e", datetime(2026, 10, 1, 12, 0, tzinfo=timezone.utc), "single")]  # outside both windows
    with runtime.engine.begin() as conn:
        for chat_id, created, outcome in rows:
            conn.execute(chats.insert().values(id=chat_id, started=True, created_at=created, match_outcome=outcome,
                                               updated_at=utcnow()))
    data = admin_view.chart_data(runtime.engine, now)
    assert data["hours"][-1] == "18:00" and data["chats_per_hour"][-1] == 2
    assert data["chats_per_hour"][data["hours"].index("09:00")] == 1
    assert sum(data["chats_per_hour"]) == 3
    assert data["days"][-1] == "2026-11-21"
    assert data["outcomes_per_day"]["single"][-1] == 1 and data["outcomes_per_day"]["none"][-1] == 1
    assert data["outcomes_per_day"]["single"][data["days"].index("2026-11-19")] == 1
    assert sum(map(sum, data["outcomes_per_day"].values())) == 4


def test_a_forged_admin_session_cookie_is_refused(client: Any, runtime: Any) -> None:
    from flask import Flask
    from flask.sessions import SecureCookieSessionInterface

    forger = Flask("forger")
    forger.secret_key = "guessed-secret"
    serializer = SecureCookieSessionInterface().get_signing_serializer(forger)
    client.set_cookie("session", serializer.dumps({"admin": "anything", "csrf": "x"}), domain="localhost")
    assert client.get("/admin").status_code == 302
    before = saved(runtime)
    assert client.post("/admin/settings", data={**VALID, "none": "search", "csrf": "x"}).status_code == 302
    assert saved(runtime) == before


@pytest.mark.parametrize("field, message", [
    ("Bogus__c", "Contact.Bogus__c no such field in the local CRM; Lead.Bogus__c no such field in the local CRM"),
    ("Email", "Contact.Email its type is email, not checkbox (boolean)"),
])
def test_an_opt_out_field_the_crm_lacks_is_refused_and_nothing_changes(
        admin: Any, runtime: Any, field: str, message: str) -> None:
    before = saved(runtime)
    form = {**VALID, "none": "create_record", "opt_out_field": field, "csrf": csrf_of(admin)}
    response = admin.post("/admin/settings", data=form)
    assert response.status_code == 400
    page = response.get_data(as_text=True).replace("&#39;", "'")
    assert "Not saved: the opt-out field must be a checkbox on Contact and Lead: " in page and message in page
    assert saved(runtime) == before


def test_the_admin_check_report_uses_the_saved_opt_out_field(admin: Any, runtime: Any) -> None:
    preferences.save_pop_settings(runtime.engine, {"opt_out_field": "Bogus__c"})
    status = admin.get("/admin/status.json").json
    assert status["crm"]["ok"] is False
    assert {"ok": False, "what": "Lead.Bogus__c", "detail": "no such field in the local CRM"} in status["crm"]["lines"]
