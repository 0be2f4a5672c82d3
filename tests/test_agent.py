"""The agent console through the Flask app: sign-in, visibility, the JSON API and the event stream."""
from __future__ import annotations

import json
import re
import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import pytest
from click.testing import CliRunner
from sqlalchemy import select, update

from crmconnector import agents
from crmconnector.cli import main
from crmconnector.store import agent_tokens, chats, utcnow
from tests.conftest import admin_headers
from tests.chat_support import HUCK, TOM, assigned, ended, make_worker, message, started, tasks, transferred

NUMBER = "+14155550132"


def sign_in_path(runtime: Any, email: str, name: str | None = None) -> str:
    agent = agents.add_agent(runtime.engine, email, name)
    url = urlsplit(agents.sign_in_link(runtime.engine, runtime.settings, agent))
    return f"{url.path}?{url.query}"


@pytest.fixture
def tom(app: Any, runtime: Any) -> Any:
    app.config.update(CONSOLE_STREAM_SECONDS=0)  # a stream makes one catch-up pass, then the response ends
    client = app.test_client()
    assert client.get(sign_in_path(runtime, TOM["email"], TOM["name"])).status_code == 302
    return client


def assign(platform: Any, chat_id: str, agent: dict[str, str], number: str = NUMBER) -> None:
    assert platform.post("chat.started", started(chat_id, number)).status_code == 200
    assert platform.post("chat.assigned", assigned(agent, 10, chat_id)).status_code == 200


def linked(runtime: Any, chat_id: str) -> tuple[str | None, str | None]:
    with runtime.engine.connect() as conn:
        row = conn.execute(select(chats.c.linked_object, chats.c.linked_id).where(chats.c.id == chat_id)).one()
    return row.linked_object, row.linked_id


def stream_events(client: Any, last_event_id: int | None = None) -> list[dict[str, Any]]:
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    response = client.get("/agent/stream", headers=headers)
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    events = []
    for block in response.get_data(as_text=True).split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line and not line.startswith(":"))
        if fields.get("event") == "chat":
            events.append({"id": int(fields["id"]), **json.loads(fields["data"])})
    return events


# -- sign-in ----------------------------------------------------------------------------------------

def test_sign_in_link_opens_the_console_with_a_safe_session_cookie(app: Any, runtime: Any) -> None:
    client = app.test_client()
    response = client.get(sign_in_path(runtime, "Tom@Example.com", "Tom Sawyer"))
    assert response.status_code == 302
    assert response.headers["Location"] == "/agent"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    page = client.get("/agent")
    assert page.status_code == 200
    assert "Signed in as Tom Sawyer" in page.get_data(as_text=True)


def test_session_cookie_is_secure_behind_https(make_settings: Any) -> None:
    from crmconnector.runtime import Runtime
    from webapp import create_app

    runtime = Runtime(make_settings(public_url="https://connector.example"))
    try:
        app = create_app(runtime=runtime, background=False)
        response = app.test_client().get(sign_in_path(runtime, "tom@example.com"))
        assert "Secure" in response.headers["Set-Cookie"]
    finally:
        runtime.close()


def test_a_reused_sign_in_link_is_refused_and_signs_nobody_in(app: Any, runtime: Any) -> None:
    path = sign_in_path(runtime, "tom@example.com")
    assert app.test_client().get(path).status_code == 302
    second = app.test_client()
    response = second.get(path)
    assert response.status_code == 401
    assert "not valid" in response.get_data(as_text=True)
    assert "Set-Cookie" not in response.headers
    assert second.get("/api/agent/chats").status_code == 401


def test_an_expired_sign_in_link_is_refused(app: Any, runtime: Any) -> None:
    path = sign_in_path(runtime, "tom@example.com")
    with runtime.engine.begin() as conn:
        conn.execute(update(agent_tokens).values(expires_at=utcnow() - timedelta(minutes=1)))
    client = app.test_client()
    assert client.get(path).status_code == 401
    assert client.get("/agent").status_code == 401


def test_forged_and_missing_tokens_are_refused(client: Any, runtime: Any) -> None:
    agents.add_agent(runtime.engine, "tom@example.com")
    assert client.get("/agent/sign-in?token=not-a-real-token").status_code == 401
    response = client.get("/agent/sign-in")
    assert response.status_code == 400
    assert "no token" in response.get_data(as_text=True)


def test_a_forged_session_cookie_is_not_an_agent(client: Any, runtime: Any, platform: Any) -> None:
    agents.add_agent(runtime.engine, "tom@example.com")
    assign(platform, "2415", TOM)
    from flask.sessions import SecureCookieSessionInterface
    from flask import Flask

    forger = Flask("forger")
    forger.secret_key = "guessed-secret"
    forged = SecureCookieSessionInterface().get_signing_serializer(forger).dumps({"agent_id": 1})
    client.set_cookie("session", forged, domain="localhost")
    assert client.get("/api/agent/chats").status_code == 401
    assert client.get("/agent/chats/2415").status_code == 401
    assert client.get("/agent/stream").status_code == 401


def test_sign_out_needs_the_form_token_and_then_ends_the_session(tom: Any) -> None:
    assert tom.post("/agent/sign-out", data={"csrf": "wrong"}).status_code == 400
    assert tom.get("/api/agent/chats").status_code == 200
    page = tom.get("/agent").get_data(as_text=True)
    token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    response = tom.post("/agent/sign-out", data={"csrf": token})
    assert response.status_code == 200
    assert "signed out" in response.get_data(as_text=True)
    assert tom.get("/api/agent/chats").status_code == 401


def csrf_of(client: Any) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', client.get("/agent").get_data(as_text=True)).group(1)


def with_cookie(app: Any, cookie: str) -> Any:
    """Another browser replaying a saved session cookie."""
    client = app.test_client()
    client.set_cookie("session", cookie)
    return client


def test_signing_out_revokes_the_session_cookie_on_the_server(app: Any, tom: Any, runtime: Any,
                                                                crm: Any) -> None:
    other_browser = app.test_client()
    assert other_browser.get(sign_in_path(runtime, TOM["email"])).status_code == 302
    token = csrf_of(tom)
    saved = tom.get_cookie("session").value
    assert tom.post("/agent/sign-out", data={"csrf": token}).status_code == 200
    contact = crm.create("Contact", {"LastName": "Thatcher", "Phone": NUMBER})
    for replayed in (with_cookie(app, saved), other_browser):  # signing out signs out every browser
        assert replayed.get("/api/agent/chats").status_code == 401
        assert replayed.get("/agent").status_code == 401
        assert replayed.get("/agent/stream").status_code == 401
        assert replayed.get(f"/crm/Contact/{contact}").status_code == 302  # to the sign-in notice
    again = app.test_client()
    assert again.get(sign_in_path(runtime, TOM["email"])).status_code == 302
    assert again.get("/api/agent/chats").status_code == 200
    assert with_cookie(app, saved).get("/api/agent/chats").status_code == 401


def test_an_open_stream_ends_when_its_agent_signs_out(app: Any, tom: Any, runtime: Any, platform: Any) -> None:
    app.config.update(CONSOLE_STREAM_SECONDS=20, CONSOLE_POLL_SECONDS=0.05)
    response = tom.get("/agent/stream", buffered=False)
    assert response.status_code == 200
    assert tom.post("/agent/sign-out", data={"csrf": csrf_of(tom)}).status_code == 200
    began = time.monotonic()
    response.get_data()
    assert time.monotonic() - began < 10
    # A later session of the same agent is not ended by that sign-out.
    app.config.update(CONSOLE_STREAM_SECONDS=0)
    again = app.test_client()
    again.get(sign_in_path(runtime, TOM["email"]))
    assign(platform, "300", TOM)
    assert [e["chat_id"] for e in stream_events(again, 0)] == ["300"]


def test_a_new_sign_in_link_replaces_unused_ones_and_keeps_signed_in_browsers(app: Any, runtime: Any) -> None:
    lost = sign_in_path(runtime, TOM["email"])
    signed_in = app.test_client()
    assert signed_in.get(sign_in_path(runtime, TOM["email"])).status_code == 302
    assert app.test_client().get(lost).status_code == 401
    sign_in_path(runtime, TOM["email"])  # handed out once more
    assert signed_in.get("/api/agent/chats").status_code == 200


def test_the_admin_signs_an_agent_out_everywhere_or_removes_them(app: Any, tom: Any, runtime: Any,
                                                                 settings: Any, workdir: Any) -> None:
    env = {"CRMCONNECTOR_DATABASE_URL": settings.database_url}
    unused = sign_in_path(runtime, TOM["email"])
    signed_out = CliRunner().invoke(main, ["agents", "sign-out", TOM["email"]], env=env)
    assert signed_out.exit_code == 0, signed_out.output
    assert tom.get("/api/agent/chats").status_code == 401
    assert app.test_client().get(unused).status_code == 401

    huck = app.test_client()
    assert huck.get(sign_in_path(runtime, HUCK["email"])).status_code == 302
    saved = huck.get_cookie("session").value
    unused = sign_in_path(runtime, HUCK["email"])
    removed = CliRunner().invoke(main, ["agents", "remove", HUCK["email"]], env=env)
    assert removed.exit_code == 0, removed.output
    assert huck.get("/api/agent/chats").status_code == 401
    assert app.test_client().get(unused).status_code == 401
    assert agents.find_agent(runtime.engine, HUCK["email"]) is None
    # Added back (the database may hand out the same id again), the old cookie still does not count.
    assert app.test_client().get(sign_in_path(runtime, HUCK["email"])).status_code == 302
    assert with_cookie(app, saved).get("/api/agent/chats").status_code == 401
    unknown = CliRunner().invoke(main, ["agents", "remove", "nobody@example.com"], env=env)
    assert unknown.exit_code == 1 and "no agent nobody@example.com" in unknown.stderr


# -- what an agent sees -------------------------------------------------------------------------------

def test_an_agent_sees_only_the_chats_assigned_to_them(tom: Any, platform: Any) -> None:
    assign(platform, "100", TOM)
    assign(platform, "200", HUCK, "+14155550199")
    listed = tom.get("/api/agent/chats").json
    assert [c["id"] for c in listed["chats"]] == ["100"]
    assert tom.get("/api/agent/chats/200").status_code == 404
    assert tom.get("/agent/chats/200").status_code == 404
    assert tom.get("/agent/chats/100").status_code == 200
    assert "200" not in {e["chat_id"] for e in stream_events(tom, 0)}


def test_the_snapshot_shows_number_match_messages_and_crm_status(tom: Any, platform: Any, crm: Any) -> None:
    contact = crm.create("Contact", {"FirstName": "Becky", "LastName": "Thatcher", "Phone": "(415) 555-0132"})
    assign(platform, "2415", TOM)
    media = [{"url": "https://media.example/fence.jpg", "content_type": "image/jpeg", "filename": "fence.jpg"}]
    platform.post("chat.message", message("m1", "consumer", "Quote please", 20, "2415", media=media))
    chat = tom.get("/api/agent/chats/2415").json
    assert chat["consumer_display"] == "+1 415-555-0132"
    assert chat["match"]["outcome"] == "single"
    assert chat["match"]["records"][0]["name"] == "Becky Thatcher"
    assert chat["linked"] == {"object": "Contact", "id": contact, "name": "Becky Thatcher",
                              "url": f"http://connector.test/crm/Contact/{contact}"}
    assert [(m["sender"], m["text"]) for m in chat["messages"]] == [("consumer", "Quote please")]
    assert chat["messages"][0]["media"][0]["is_image"] is True
    assert chat["messages"][0]["media"][0]["url"] == "https://media.example/fence.jpg"
    assert chat["crm"]["status"] == "open"
    assert chat["new_record"] is None


def test_chats_are_listed_oldest_accepted_first(tom: Any, platform: Any) -> None:
    platform.post("chat.started", started("late", "+14155550111"))
    platform.post("chat.started", started("early", "+14155550122"))
    platform.post("chat.assigned", assigned(TOM, 50, "late"))
    platform.post("chat.assigned", assigned(TOM, 5, "early"))
    assert [c["id"] for c in tom.get("/api/agent/chats").json["chats"]] == ["early", "late"]


# -- the pick (link) and the new-record form -----------------------------------------------------------

def test_picking_another_match_relinks_the_chat(tom: Any, platform: Any, crm: Any, runtime: Any) -> None:
    first = crm.create("Contact", {"LastName": "Thatcher", "Phone": NUMBER})
    second = crm.create("Lead", {"LastName": "Finn", "Company": "Raft", "Phone": NUMBER})
    assign(platform, "2415", TOM)
    assert linked(runtime, "2415") == ("Contact", first)
    response = tom.post("/api/agent/chats/2415/link", json={"object": "Lead", "id": second})
    assert response.status_code == 200
    assert response.json["linked_record"]["id"] == second
    assert response.json["chat"]["linked"]["id"] == second
    assert linked(runtime, "2415") == ("Lead", second)


def test_a_pick_may_name_the_record_by_its_15_character_id(tom: Any, platform: Any, crm: Any,
                                                          runtime: Any) -> None:
    crm.create("Contact", {"LastName": "Thatcher", "Phone": NUMBER})
    lead = crm.create("Lead", {"LastName": "Finn", "Company": "Raft", "Phone": NUMBER})
    assign(platform, "2415", TOM)
    response = tom.post("/api/agent/chats/2415/link", json={"object": "Lead", "id": lead[:15]})
    assert response.status_code == 200 and response.json["linked_record"]["id"] == lead
    assert linked(runtime, "2415") == ("Lead", lead)


def test_a_pick_of_an_unknown_record_changes_nothing(tom: Any, platform: Any, crm: Any, runtime: Any) -> None:
    first = crm.create("Contact", {"LastName": "Thatcher", "Phone": NUMBER})
    assign(platform, "2415", TOM)
    response = tom.post("/api/agent/chats/2415/link", json={"object": "Contact", "id": "003000000000000AAA"})
    assert response.status_code == 404
    assert response.json["error"]["code"] == "not_found"
    assert linked(runtime, "2415") == ("Contact", first)


@pytest.mark.both_databases
def test_a_nul_character_in_a_path_or_parameter_is_not_found_or_refused_not_a_500(tom: Any, app: Any) -> None:
    """No chat, record or field value holds a NUL character (PostgreSQL cannot even be asked for one)."""
    for path in ("/agent/chats/%00", "/api/agent/chats/%00", "/crm/Contact/%00", "/crm/Contact/003%00"):
        assert tom.get(path).status_code == 404, path
    assert tom.post("/api/agent/chats/%00/link", json={"object": "Contact", "id": "x"}).status_code == 404
    admin = app.test_client()
    assert admin.get("/api/crm/Contact/%00", headers=admin_headers()).status_code == 404
    response = admin.get("/api/crm/Contact?LastName=a%00", headers=admin_headers())
    assert response.status_code == 400 and response.json["error"]["field"] == "LastName"


def test_a_pick_on_another_agents_chat_is_not_found(tom: Any, platform: Any, crm: Any, runtime: Any) -> None:
    first = crm.create("Contact", {"LastName": "Thatcher", "Phone": NUMBER})
    other = crm.create("Contact", {"LastName": "Other", "Phone": "+14155550100"})
    assign(platform, "2415", HUCK)
    response = tom.post("/api/agent/chats/2415/link", json={"object": "Contact", "id": other})
    assert response.status_code == 404
    assert linked(runtime, "2415") == ("Contact", first)


@pytest.mark.parametrize("chat_id", ["A#7", "q?x=1", "2415 b", "50%"])
def test_the_search_pop_opens_the_chats_page_whatever_its_id(tom: Any, platform: Any, crm: Any,
                                                            chat_id: str) -> None:
    crm.create("Contact", {"LastName": "Thatcher", "Phone": NUMBER})
    crm.create("Lead", {"LastName": "Finn", "Company": "Raft", "Phone": NUMBER})
    pop = platform.post("chat.started", started(chat_id)).json["screen_pop"]
    assert platform.post("chat.assigned", assigned(TOM, 10, chat_id)).status_code == 200
    url = urlsplit(pop["url"])
    assert (pop["action"], url.query, url.fragment) == ("search", "", "")
    page = tom.get(url.path)
    assert page.status_code == 200
    assert f'"selected": {json.dumps(chat_id)}' in page.get_data(as_text=True)


def test_a_chat_whose_id_holds_a_slash_has_its_page_and_can_be_linked(tom: Any, platform: Any, crm: Any,
                                                                     runtime: Any) -> None:
    """Chat ids are the platform's strings: one like "sms/2415" is one path segment, quoted."""
    crm.create("Contact", {"LastName": "Thatcher", "Phone": NUMBER})
    lead = crm.create("Lead", {"LastName": "Finn", "Company": "Raft", "Phone": NUMBER})
    pop = platform.post("chat.started", started("sms/2415")).json["screen_pop"]
    assert platform.post("chat.assigned", assigned(TOM, 10, "sms/2415")).status_code == 200
    assert pop["url"] == "http://connector.test/agent/chats/sms%2F2415"
    assert tom.get("/agent/chats/sms%2F2415").status_code == 200
    assert tom.get("/api/agent/chats/sms%2F2415").json["id"] == "sms/2415"
    response = tom.post("/api/agent/chats/sms%2F2415/link", json={"object": "Lead", "id": lead})
    assert response.status_code == 200
    assert linked(runtime, "sms/2415") == ("Lead", lead)


def new_record_page_form(client: Any, url: str) -> tuple[str, str]:
    """The local CRM's new-record page a pop opens: its html and its form token."""
    parts = urlsplit(url)
    page = client.get(f"{parts.path}?{parts.query}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    return html, re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def test_a_record_saved_from_the_new_record_pop_is_linked_to_the_chat(tom: Any, platform: Any, crm: Any,
                                                                      runtime: Any) -> None:
    assign(platform, "2415", TOM, "+14155550199")
    pop_url = tom.get("/api/agent/chats/2415").json["screen_pop"]["url"]
    assert pop_url == "http://connector.test/crm/Contact/new?Phone=%2B14155550199&chat_id=2415"
    html, token = new_record_page_form(tom, pop_url)
    assert 'name="chat_id" value="2415"' in html
    saved = tom.post("/crm/Contact/new", data={"csrf": token, "chat_id": "2415", "FirstName": "Huck",
                                               "LastName": "Finn", "Phone": "+14155550199"})
    assert saved.status_code == 302
    record_id = saved.headers["Location"].rsplit("/", 1)[1]
    assert linked(runtime, "2415") == ("Contact", record_id)
    assert [e["kind"] for e in stream_events(tom, 0) if e["chat_id"] == "2415"] == ["linked"]
    platform.post("chat.ended", ended(60, "2415"))
    make_worker(runtime).run_once()
    assert [t.fields["WhoId"] for t in tasks(crm, "2415")] == [record_id]


def test_a_case_as_the_new_record_object_is_linked_and_becomes_the_chat_logs_what(tom: Any, platform: Any,
                                                                                   crm: Any, runtime: Any) -> None:
    """The console's form and the new-record pop link a Case like the other objects."""
    from crmconnector.preferences import save_pop_settings

    save_pop_settings(runtime.engine, {"new_record_object": "Case"})
    assign(platform, "2415", TOM)
    made = tom.post("/api/agent/chats/2415/records", json={"object": "Case", "fields": {"Subject": "Quote"}})
    assert made.status_code == 201 and made.json["linked"] is True
    case_id = made.json["record"]["id"]
    assert linked(runtime, "2415") == ("Case", case_id) and made.json["chat"]["linked"]["object"] == "Case"
    platform.post("chat.ended", ended(60, "2415"))
    make_worker(runtime).run_once()
    assert [(t.fields["WhoId"], t.fields["WhatId"]) for t in tasks(crm, "2415")] == [(None, case_id)]
    assign(platform, "2416", TOM, "+14155550199")
    html, token = new_record_page_form(tom, tom.get("/api/agent/chats/2416").json["screen_pop"]["url"])
    saved = tom.post("/crm/Case/new", data={"csrf": token, "chat_id": "2416", "Subject": "Fence",
                                            "SuppliedPhone": "+14155550199"})
    assert saved.status_code == 302
    assert linked(runtime, "2416") == ("Case", saved.headers["Location"].rsplit("/", 1)[1])


def test_the_new_record_pop_links_only_the_agents_own_chat(tom: Any, platform: Any, crm: Any,
                                                          runtime: Any) -> None:
    assign(platform, "2415", HUCK)
    _, token = new_record_page_form(tom, "/crm/Contact/new?Phone=%2B14155550132&chat_id=2415")
    refused = tom.post("/crm/Contact/new", data={"csrf": token, "chat_id": "2415", "LastName": "X", "Phone": NUMBER})
    assert refused.status_code == 404 and "no chat 2415 assigned to you" in refused.get_data(as_text=True)
    forged = tom.post("/crm/Contact/new", data={"csrf": "forged", "LastName": "X", "Phone": NUMBER})
    assert forged.status_code == 400
    assert crm.find("Contact", "Phone", [NUMBER]) == [] and linked(runtime, "2415") == (None, None)
    from tests.conftest import admin_headers

    by_admin = tom.post("/crm/Contact/new", headers=admin_headers(),
                        data={"chat_id": "2415", "LastName": "Finn", "Phone": NUMBER})
    assert by_admin.status_code == 302
    assert linked(runtime, "2415") == ("Contact", by_admin.headers["Location"].rsplit("/", 1)[1])


@pytest.mark.parametrize("body, field", [({"id": "003000000000000AAA"}, "object"), ({"object": "Contact"}, "id"),
                                         ({"object": "Task", "id": "00T000000000000AAA"}, "object"),
                                         ({"object": ["Contact"], "id": 5}, "object"),
                                         ({"object": "Contact", "id": "003\x00"}, "id")])
def test_a_bad_link_body_is_a_400_naming_the_field(tom: Any, platform: Any, body: dict, field: str) -> None:
    assign(platform, "2415", TOM)
    response = tom.post("/api/agent/chats/2415/link", json=body)
    assert response.status_code == 400
    assert response.json["error"]["field"] == field


def test_link_refuses_form_posts_and_foreign_origins(tom: Any, platform: Any, crm: Any, runtime: Any) -> None:
    crm.create("Contact", {"LastName": "Thatcher", "Phone": NUMBER})
    other = crm.create("Contact", {"LastName": "Other", "Phone": "+14155550100"})
    assign(platform, "2415", TOM)
    before = linked(runtime, "2415")
    assert tom.post("/api/agent/chats/2415/link", data={"object": "Contact", "id": other}).status_code == 415
    foreign = tom.post("/api/agent/chats/2415/link", json={"object": "Contact", "id": other},
                       headers={"Origin": "https://evil.example"})
    assert foreign.status_code == 403
    assert tom.post("/api/agent/chats/2415/link", data="[1]", content_type="application/json").status_code == 400
    assert linked(runtime, "2415") == before
    behind_proxy = tom.post("/api/agent/chats/2415/link", json={"object": "Contact", "id": other},
                            headers={"Origin": "http://connector.test"})  # the public URL, Host is localhost
    assert behind_proxy.status_code == 200
    assert linked(runtime, "2415") == ("Contact", other)


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_in_a_body_are_not_json(tom: Any, platform: Any, crm: Any, runtime: Any,
                                                 constant: str) -> None:
    """As at the callback URL: Python's json reads them, but they are not JSON, so nothing is done."""
    other = crm.create("Contact", {"LastName": "Other", "Phone": "+14155550100"})
    assign(platform, "2415", TOM)
    bodies = {"/api/agent/chats/2415/link": {"object": "Contact", "id": other},
              "/api/agent/chats/2415/records": {"object": "Contact", "fields": {"LastName": "Thatcher"}}}
    for path, body in bodies.items():
        data = json.dumps({**body, "weight": 0}).replace('"weight": 0', f'"weight": {constant}')
        response = tom.post(path, data=data, content_type="application/json")
        assert response.status_code == 400, path
        assert response.json == {"error": {"code": "invalid_json", "field": None, "message":
                                           f"the body is not standard JSON: {constant} is not a JSON value"}}
    assert linked(runtime, "2415") == (None, None)
    assert crm.find("Contact", "Phone", [NUMBER]) == []


def test_the_new_record_form_creates_and_links_a_contact(tom: Any, platform: Any, crm: Any, runtime: Any) -> None:
    assign(platform, "2415", TOM)
    chat = tom.get("/api/agent/chats/2415").json
    form = chat["new_record"]
    assert form["object"] == "Contact" and form["mode"] == "form"
    assert {f["name"]: f["value"] for f in form["fields"]}["Phone"] == NUMBER
    response = tom.post("/api/agent/chats/2415/records",
                        json={"object": "Contact", "fields": {"FirstName": "Becky", "LastName": "Thatcher",
                                                              "Phone": NUMBER}})
    assert response.status_code == 201
    record_id = response.json["record"]["id"]
    record = crm.get("Contact", record_id)
    assert record.name == "Becky Thatcher" and record.fields["Phone"] == NUMBER
    assert linked(runtime, "2415") == ("Contact", record_id)
    assert response.json["chat"]["linked"]["name"] is None or response.json["chat"]["linked"]["id"] == record_id


@pytest.mark.parametrize("body, field", [
    ({"object": "Task", "fields": {}}, "object"),
    ({"object": "Contact", "fields": {"AccountId": "001000000000000AAA"}}, "fields.AccountId"),
    ({"object": "Contact", "fields": ["LastName"]}, "fields"),
    ({"object": "Contact", "fields": {"LastName": "x" * 81}}, "fields"),
])
def test_bad_new_record_input_creates_nothing(tom: Any, platform: Any, crm: Any, runtime: Any,
                                              body: dict, field: str) -> None:
    assign(platform, "2415", TOM)
    response = tom.post("/api/agent/chats/2415/records", json=body)
    assert response.status_code == 400
    assert response.json["error"]["field"] == field
    assert crm.find("Contact", "Phone", [NUMBER]) == []
    assert linked(runtime, "2415") == (None, None)


def test_new_records_for_another_agents_chat_are_refused(tom: Any, platform: Any, crm: Any) -> None:
    assign(platform, "2415", HUCK)
    response = tom.post("/api/agent/chats/2415/records", json={"object": "Contact", "fields": {"LastName": "X"}})
    assert response.status_code == 404
    assert crm.find("Contact", "Phone", [NUMBER]) == []


def test_the_snapshot_gives_only_web_addresses_as_media_urls(tom: Any, platform: Any) -> None:
    assign(platform, "100", TOM)
    urls = ["javascript:alert(1)", "data:text/html,<b>x</b>", "//media.example/a.png", "https://media.example/a.png",
            "HTTP://media.example/b.png"]
    platform.post("chat.message", message("m1", "consumer", "see", 20, "100", media=[{"url": u} for u in urls]))
    media = tom.get("/api/agent/chats/100").json["messages"][0]["media"]
    assert [m["url"] for m in media] == [None, None, None, urls[3], urls[4]]
    assert [m["filename"] for m in media] == urls  # still named, as text


def test_agent_messages_are_named_as_in_the_chat_log(app: Any, tom: Any, platform: Any, crm: Any,
                                                    runtime: Any) -> None:
    """Without an `agent` in the event, the agent who held the chat when it was sent, as the Task says."""
    assign(platform, "100", TOM)
    platform.post("chat.message", message("m1", "agent", "Tom here", 20, "100"))
    platform.post("chat.message", message("m2", "agent", "Amy here", 30, "100",
                                          agent={"id": "9", "email": "amy@x.test"}))
    platform.post("chat.transferred", transferred("ended", 40, "100", from_agent=TOM, to_agent=HUCK))
    platform.post("chat.message", message("m3", "agent", "Huck here", 50, "100"))
    platform.post("chat.ended", ended(60, "100"))
    make_worker(runtime).run_once()
    description = tasks(crm, "100")[0].fields["Description"]
    huck = app.test_client()  # the chat is Huck's now
    assert huck.get(sign_in_path(runtime, HUCK["email"], HUCK["name"])).status_code == 302
    names = [m["agent_name"] for m in huck.get("/api/agent/chats/100").json["messages"]]
    assert names == ["Tom Sawyer", "amy@x.test", "Huck Finn"]
    assert all(f"Agent {name}: {text}" in description
               for name, text in zip(names, ["Tom here", "Amy here", "Huck here"]))


# -- the stream -----------------------------------------------------------------------------------------

def test_the_stream_catches_up_after_last_event_id(tom: Any, platform: Any) -> None:
    assign(platform, "100", TOM)
    first = stream_events(tom, 0)
    assert [(e["chat_id"], e["kind"]) for e in first] == [("100", "pop")]
    assert first[0]["chat"]["consumer_display"] == "+1 415-555-0132"
    platform.post("chat.message", message("m1", "consumer", "hello", 20, "100"))
    assign(platform, "300", TOM, "+14155550177")
    missed = stream_events(tom, first[-1]["id"])
    assert [(e["chat_id"], e["kind"]) for e in missed] == [("100", "message"), ("300", "pop")]
    assert missed[0]["chat"]["messages"][0]["text"] == "hello"
    assert missed[0]["id"] < missed[1]["id"]
    assert stream_events(tom, missed[-1]["id"]) == []


def test_the_stream_starts_at_the_after_parameter_and_ignores_others_chats(tom: Any,
                                                                           platform: Any) -> None:
    assign(platform, "100", TOM)
    assign(platform, "200", HUCK, "+14155550199")
    response = tom.get("/agent/stream?after=0")
    assert '"chat_id":"100"' in response.get_data(as_text=True)
    assert '"chat_id":"200"' not in response.get_data(as_text=True)


def test_a_chat_transferred_away_leaves_the_console(tom: Any, platform: Any) -> None:
    assign(platform, "100", TOM)
    start = stream_events(tom, 0)[-1]["id"]
    platform.post("chat.transferred", transferred("ended", 60, "100", from_agent=TOM, to_agent=HUCK))
    events = stream_events(tom, start)
    assert events and events[-1]["chat_id"] == "100" and events[-1]["chat"] is None
    assert tom.get("/api/agent/chats").json["chats"] == []


def test_every_snapshot_and_removal_carries_a_version_no_older_than_its_event(tom: Any, platform: Any,
                                                                            crm: Any) -> None:
    """What lets the console keep the newer of two snapshots of one chat, whichever came last."""
    other = crm.create("Contact", {"LastName": "Other", "Phone": "+14155550100"})
    assign(platform, "100", TOM)
    popped = stream_events(tom, 0)[-1]
    assert popped["chat"]["version"] >= popped["id"] and popped["version"] == popped["chat"]["version"]
    answer = tom.post("/api/agent/chats/100/link", json={"object": "Contact", "id": other}).json
    told = stream_events(tom, popped["id"])[-1]
    assert told["kind"] == "linked" and answer["chat"]["version"] >= told["id"]
    platform.post("chat.transferred", transferred("ended", 60, "100", from_agent=TOM, to_agent=HUCK))
    gone = stream_events(tom, told["id"])[-1]
    assert gone["chat"] is None and gone["version"] == gone["id"] > answer["chat"]["version"]


def test_a_last_event_id_beyond_the_log_starts_from_its_end(tom: Any, platform: Any) -> None:
    assign(platform, "100", TOM)
    newest = stream_events(tom, 0)[-1]["id"]
    start = tom.get("/agent/stream", headers={"Last-Event-ID": str(newest + 1000)}).get_data(as_text=True)
    assert f'"after":{newest}' in start  # the next update (id newest + 1) will be sent


def test_on_salesforce_the_console_opens_the_lightning_new_record_page(settings: Any) -> None:
    """The console's no-match pop links to the CRM's own new-record page when the CRM is not embedded."""
    from crmconnector.crm.local import LocalCRM
    from crmconnector.runtime import Runtime
    from crmconnector.store import make_engine
    from tests.conftest import Platform
    from webapp import create_app

    class LightningCRM(LocalCRM):  # Salesforce's URLs and name over the embedded tables
        name = "salesforce"

        def new_record_url(self, object_name: str, defaults: Any, chat_id: str | None = None) -> str:
            pairs = ",".join(f"{k}={v.replace('+', '%2B')}" for k, v in defaults.items())
            return f"https://org.my.salesforce.com/lightning/o/{object_name}/new?defaultFieldValues={pairs}"

    crm_engine = make_engine(settings.database_url)
    runtime = Runtime(settings, crm=LightningCRM(crm_engine, base_url=settings.base_url))
    try:
        app = create_app(runtime=runtime, background=False, test_config={"CONSOLE_STREAM_SECONDS": 0})
        assign(Platform(app.test_client()), "2415", TOM)
        agent = app.test_client()
        agent.get(sign_in_path(runtime, TOM["email"]))
        form = agent.get("/api/agent/chats/2415").json["new_record"]
        assert form["mode"] == "link"
        assert form["url"] == ("https://org.my.salesforce.com/lightning/o/Contact/new"
                               "?defaultFieldValues=Phone=%2B14155550132")
    finally:
        runtime.close()
        crm_engine.dispose()
