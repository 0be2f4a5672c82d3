"""A whole chat through the app on SalesforceCRM (fake org) ends as the same Task as on LocalCRM."""
from __future__ import annotations

import json
from typing import Any, Iterator

import pytest
import responses

from crmconnector.crm.base import FileUpload
from crmconnector.runtime import Runtime
from crmconnector.settings import Settings
from crmconnector.sync.worker import Worker
from tests.conftest import signed_headers
from tests.fake_salesforce import INSTANCE_URL, LOGIN_URL, VERSION, FakeSalesforce

COMPARED = ("Subject", "CallObject", "CallType", "CallDisposition", "CallDurationInSeconds", "Status",
            "ActivityDate", "Description")
TOM = {"id": "7", "email": "tom@example.com", "name": "Tom Sawyer"}


def events(chat_id: str) -> list[tuple[str, dict[str, Any]]]:
    media = [{"url": f"https://media.example/{chat_id}/{n}", "content_type": "image/jpeg", "filename": f"fence{n}.jpg"}
             for n in (1, 2)]
    return [
        ("chat.started", {"chat": {"id": chat_id, "direction": "inbound", "consumer_number": "+14155550132",
                                   "business_number": "+18882468888", "lang": "en",
                                   "queue": {"id": "12", "name": "Fence painting"},
                                   "created_at": "2026-11-21T17:03:10Z"}}),
        ("chat.assigned", {"chat": {"id": chat_id}, "agent": TOM, "assigned_at": "2026-11-21T17:03:20Z"}),
        ("chat.message", {"chat": {"id": chat_id}, "message": {
            "id": "m1", "sender": "consumer", "media": media, "text": "Quote please",
            "sent_at": "2026-11-21T17:03:30Z"}}),
        ("chat.message", {"chat": {"id": chat_id}, "message": {"id": "m2", "sender": "agent", "text": "Sure!",
                                                               "sent_at": "2026-11-21T17:04:00Z"}}),
        ("chat.message", {"chat": {"id": chat_id}, "message": {"id": "m3", "sender": "consumer", "text": " stop ",
                                                               "sent_at": "2026-11-21T17:05:00Z"}}),
        ("chat.ended", {"chat": {"id": chat_id, "ended_at": "2026-11-21T17:10:00Z", "disconnected_by": "consumer",
                                 "disposition": "Appointment set"}}),
    ]


def late_message(chat_id: str) -> tuple[str, dict[str, Any]]:
    return ("chat.message", {"chat": {"id": chat_id}, "message": {"id": "m0", "sender": "system",
                                                                  "text": "Chat queued",
                                                                  "sent_at": "2026-11-21T17:03:15Z"}})


def fetch(chat_id: str, message_id: str, position: int, item: Any) -> FileUpload:
    return FileUpload(f"{chat_id}/{message_id}/{position}", item["filename"], "image/jpeg",
                      f"jpeg bytes of {item['url']}".encode())


class Side:
    """One connector (app, worker) on one backend, with a Contact and its Account holding the number."""

    def __init__(self, runtime: Runtime):
        from webapp import create_app

        self.runtime = runtime
        self.client = create_app(runtime=runtime, background=False, test_config={"TESTING": True}).test_client()
        self.worker = Worker(runtime.engine, runtime.crm, runtime.settings, fetch_media=fetch)
        self.account = runtime.crm.create("Account", {"Name": "Thatcher Fencing"})
        self.contact = runtime.crm.create("Contact", {"FirstName": "Becky", "LastName": "Thatcher",
                                                      "Phone": "(415) 555-0132", "AccountId": self.account})
        self.n = 0

    def post(self, kind: str, data: dict[str, Any]) -> Any:
        self.n += 1
        body = json.dumps({"id": f"evt-{self.n}", "type": kind, "occurred_at": "2026-11-21T17:03:11Z",
                           "data": data}).encode()
        answer = self.client.post("/callbacks/events", data=body, headers=signed_headers(body))
        assert answer.status_code < 300, answer.get_data(as_text=True)
        return answer

    def run(self, chat: list[tuple[str, dict[str, Any]]]) -> None:
        for kind, data in chat:
            self.post(kind, data)
        while self.worker.run_once():
            pass

    def tasks(self, chat_id: str) -> list[Any]:
        return self.runtime.crm.find("Task", "CallObject", [f"sms-chat-{chat_id}"])


@pytest.fixture
def local(runtime: Runtime) -> Side:
    return Side(runtime)


@pytest.fixture
def salesforce(settings: Settings, tmp_path: Any) -> Iterator[tuple[Side, FakeSalesforce]]:
    from dataclasses import replace

    sf_settings = replace(settings, database_url=f"sqlite:///{tmp_path / 'sf-state.db'}", crm="salesforce",
                          instance_path=str(tmp_path / "sf-instance"), salesforce_login_url=LOGIN_URL,
                          salesforce_client_id="client", salesforce_client_secret="secret",
                          salesforce_api_version=VERSION)
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeSalesforce().install(rsps)
        rt = Runtime(sf_settings)
        try:
            yield Side(rt), fake
        finally:
            rt.close()


def test_the_same_chat_gives_the_same_task_on_both_backends(local: Side,
                                                            salesforce: tuple[Side, FakeSalesforce]) -> None:
    remote, fake = salesforce
    local.run(events("2415"))
    remote.run(events("2415"))
    [mine], [theirs] = local.tasks("2415"), remote.tasks("2415")
    assert {f: theirs.fields[f] for f in COMPARED} == {f: mine.fields[f] for f in COMPARED}
    assert "Consumer: Quote please" in theirs.fields["Description"]
    assert (theirs.fields["WhoId"], theirs.fields["WhatId"]) == (remote.contact, remote.account)
    assert (mine.fields["WhoId"], mine.fields["WhatId"]) == (local.contact, local.account)
    files = [f for f in fake.records["ContentVersion"].values() if f["FirstPublishLocationId"] == theirs.id]
    assert sorted(f["Title"] for f in files) == ["fence1.jpg", "fence2.jpg"]
    # The STOP keyword set the opt-out on both backends.
    assert fake.records["Contact"][remote.contact]["DoNotCall"] is True
    assert local.runtime.crm.get("Contact", local.contact).fields["DoNotCall"] is True


def test_a_late_message_after_posting_updates_the_same_task_on_salesforce(
        local: Side, salesforce: tuple[Side, FakeSalesforce]) -> None:
    remote, fake = salesforce
    for side in (local, remote):
        side.run(events("77"))
        first = side.tasks("77")[0].id
        side.run([late_message("77")])
        [task] = side.tasks("77")
        assert task.id == first
        assert "System: Chat queued" in task.fields["Description"]
    assert remote.tasks("77")[0].fields["Description"] == local.tasks("77")[0].fields["Description"]
    assert len(fake.records["ContentVersion"]) == 2  # the files were not sent twice


def test_an_expired_session_mid_chat_costs_one_login(salesforce: tuple[Side, FakeSalesforce]) -> None:
    remote, fake = salesforce
    chat = events("88")
    remote.run(chat[:-1])
    assert (fake.logins, fake.refused_sessions) == (1, 0)
    fake.expire_session()
    remote.run(chat[-1:])
    assert len(remote.tasks("88")) == 1
    assert (fake.logins, fake.refused_sessions) == (2, 1)
    assert remote.runtime.crm.request_count == fake.requests


def test_chat_started_answers_with_lightning_pops(salesforce: tuple[Side, FakeSalesforce]) -> None:
    remote, fake = salesforce
    single = remote.post(*events("s1")[0]).get_json()
    assert single["match"]["outcome"] == "single"
    assert single["screen_pop"]["action"] == "record"
    assert single["screen_pop"]["url"] == f"{INSTANCE_URL}/lightning/r/Contact/{remote.contact}/view"
    assert single["match"]["records"][0]["url"] == single["screen_pop"]["url"]
    assert single["linked_record"] == {"object": "Contact", "id": remote.contact}
    kind, data = events("s2")[0]
    data = {"chat": {**data["chat"], "consumer_number": "+13125550100"}}
    none = remote.post(kind, data).get_json()
    assert none["match"]["outcome"] == "none"
    assert none["screen_pop"]["action"] == "new_record"
    new_contact = f"{INSTANCE_URL}/lightning/o/Contact/new?defaultFieldValues=Phone=%2B13125550100"
    assert none["screen_pop"]["url"] == new_contact
    assert fake.requests == 1 + 2 + 2  # login, the Account and Contact of the fixture, one search per chat
