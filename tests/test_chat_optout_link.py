"""Opt-out/opt-in keywords reach the linked record; an agent re-links a chat and its Task follows."""
from __future__ import annotations

import pytest

from crmconnector import optout, preferences
from crmconnector.linking import LinkError, link_chat
from tests.chat_support import (CHAT, HUCK, TOM, assigned, ended, make_worker, message, outbox_rows, started, tasks,
                                use_crm)
from tests.test_agent import sign_in_path


@pytest.mark.parametrize("text,choice", [
    ("STOP", True), ("  stop ", True), ("Stop All", True), ("unsubscribe", True), ("Cancel", True),
    ("end", True), ("QUIT", True), ("START", False), ("yes", False), ("UnStop", False),
    ("stop please", None), ("STOP!", None), ("", None), ("yes, Tuesday", None),
])
def test_keywords_are_the_whole_text_in_any_case(text, choice):
    assert optout.keyword(text) is choice


def _contact(crm, **fields):
    return crm.create("Contact", {"LastName": "Thatcher", "Phone": "+14155550132", **fields})


def test_stop_sets_do_not_call_and_shows_in_the_transcript(platform, runtime, crm):
    contact = _contact(crm)
    platform.start_chat()
    platform.post("chat.message", message("m1", "consumer", "STOP", 5))
    platform.post("chat.ended", ended(60))
    make_worker(runtime).run_once()
    assert crm.get("Contact", contact).fields["DoNotCall"] is True
    assert tasks(crm)[0].fields["Description"].endswith("[2026-11-21 17:03:15Z] Consumer: STOP")


def test_the_latest_keyword_by_sent_at_wins_whatever_the_arrival_order(platform, runtime, crm):
    contact = _contact(crm, DoNotCall=True)
    platform.start_chat()
    platform.post("chat.message", message("m2", "consumer", "start", 20))
    platform.post("chat.message", message("m1", "consumer", "STOP", 10))  # older, arrives last
    make_worker(runtime).run_once()
    assert crm.get("Contact", contact).fields["DoNotCall"] is False


def test_an_agent_saying_stop_changes_nothing(platform, runtime, crm):
    contact = _contact(crm)
    platform.start_chat()
    platform.post("chat.message", message("m1", "agent", "stop", 10))
    make_worker(runtime).run_once()
    assert crm.get("Contact", contact).fields["DoNotCall"] is False
    assert outbox_rows(runtime) == []


def test_the_admins_opt_out_field_is_used_and_a_crm_refusal_is_kept(platform, runtime, crm):
    preferences.save_pop_settings(runtime.engine, {"opt_out_field": "SMS_Opt_Out__c"})
    _contact(crm)
    platform.start_chat()
    platform.post("chat.message", message("m1", "consumer", "quit", 10))
    make_worker(runtime).run_once()
    [item] = outbox_rows(runtime)
    assert item["kind"] == "opt_out" and item["status"] == "failed"
    assert "SMS_Opt_Out__c" in item["last_error"]


def _assigned_chat(platform, crm):
    first = _contact(crm, FirstName="Becky")
    platform.start_chat()
    platform.post("chat.assigned", assigned(TOM, 10))
    return first


def test_linking_another_agents_chat_or_an_unknown_record_is_not_found(platform, runtime, crm):
    _assigned_chat(platform, crm)
    lead = crm.create("Lead", {"LastName": "Finn", "Company": "Raft"})
    with pytest.raises(LinkError) as other_agent:
        link_chat(runtime.engine, crm, "2415", HUCK["email"], "Lead", lead)
    with pytest.raises(LinkError) as no_chat:
        link_chat(runtime.engine, crm, "nope", TOM["email"], "Lead", lead)
    with pytest.raises(LinkError) as no_record:
        link_chat(runtime.engine, crm, "2415", TOM["email"], "Lead", "00Q000000000000AAA")
    with pytest.raises(LinkError) as malformed:
        link_chat(runtime.engine, crm, "2415", TOM["email"], "Contact", "not-an-id")
    with pytest.raises(LinkError) as bad_object:
        link_chat(runtime.engine, crm, "2415", TOM["email"], "Opportunity", lead)
    assert [e.value.status for e in (other_agent, no_chat, no_record, malformed, bad_object)] == [
        404, 404, 404, 404, 400]
    assert other_agent.value.message == no_chat.value.message.replace("nope", "2415")


def test_a_link_before_posting_decides_where_the_task_lands(platform, runtime, crm):
    _assigned_chat(platform, crm)
    lead = crm.create("Lead", {"LastName": "Finn", "Company": "Raft"})
    assert link_chat(runtime.engine, crm, "2415", "Tom@Example.com", "Lead", lead) == {
        "object": "Lead", "id": lead, "name": "Finn"}
    platform.post("chat.ended", ended(60))
    make_worker(runtime).run_once()
    assert (tasks(crm)[0].fields["WhoId"], tasks(crm)[0].fields["WhatId"]) == (lead, None)


def test_after_posting_the_task_moves_to_the_new_record(platform, runtime, crm):
    contact = _assigned_chat(platform, crm)
    platform.post("chat.message", message("m1", "consumer", "STOP", 20))
    platform.post("chat.ended", ended(60))
    worker = make_worker(runtime)
    worker.run_once()
    [task] = tasks(crm)
    assert task.fields["WhoId"] == contact
    account = crm.create("Account", {"Name": "Thatcher Fencing"})
    other = crm.create("Contact", {"LastName": "Other", "AccountId": account})
    link_chat(runtime.engine, crm, "2415", TOM["email"], "Contact", other)
    worker.run_once()
    [moved] = tasks(crm)
    assert moved.id == task.id
    assert (moved.fields["WhoId"], moved.fields["WhatId"]) == (other, account)
    assert crm.get("Contact", other).fields["DoNotCall"] is True  # the opt-out follows the consumer


def test_a_chat_started_after_an_agent_linked_keeps_the_agents_choice(platform, runtime, crm):
    _contact(crm)
    lead = crm.create("Lead", {"LastName": "Finn", "Company": "Raft"})
    platform.post("chat.assigned", assigned(TOM, 10))  # before chat.started: a placeholder chat
    link_chat(runtime.engine, crm, "2415", TOM["email"], "Lead", lead)
    platform.post("chat.started", started())
    platform.post("chat.ended", ended(60))
    make_worker(runtime).run_once()
    assert tasks(crm)[0].fields["WhoId"] == lead


def test_linking_a_chat_without_keywords_queues_no_opt_out(platform, runtime, crm):
    _assigned_chat(platform, crm)
    platform.post("chat.message", message("m1", "consumer", "hello there", 20))
    lead = crm.create("Lead", {"LastName": "Finn", "Company": "Raft"})
    link_chat(runtime.engine, crm, "2415", TOM["email"], "Lead", lead)
    assert outbox_rows(runtime) == []


def _keyword(chat_id: str, message_id: str, text: str, sent_at: str) -> dict:
    return {"chat": {"id": chat_id}, "message": {"id": message_id, "sender": "consumer", "text": text,
                                                 "sent_at": sent_at}}


def test_a_stop_before_chat_started_reaches_the_record_the_chat_links_to(platform, runtime, crm):
    contact = crm.create("Contact", {"LastName": "Early", "Phone": "(415) 555-0139", "DoNotCall": False})
    worker = make_worker(runtime)
    platform.post("chat.message", _keyword("oo1", "a", "STOP", "2026-11-21T18:30:00Z"))
    worker.run_once()  # no record yet to carry the opt-out
    platform.start_chat("oo1", "+14155550139")
    worker.run_once()
    platform.post("chat.ended", ended(4000, chat_id="oo1"))
    worker.run_once()
    assert crm.get("Contact", contact).fields["DoNotCall"] is True


@pytest.mark.parametrize("arrival", ["in order", "reversed"])
def test_the_latest_keyword_among_a_records_chats_wins(platform, runtime, crm, arrival):
    contact = crm.create("Contact", {"FirstName": "P", "LastName": "One", "Phone": "(415) 555-0141"})
    worker = make_worker(runtime)
    for chat_id in ("x1", "x2"):
        platform.start_chat(chat_id, "+14155550141")
    keywords = [("x1", "STOP", "2026-11-21T18:30:00Z"), ("x2", "START", "2026-11-21T18:25:00Z")]
    for chat_id, text, sent_at in keywords if arrival == "in order" else keywords[::-1]:
        platform.post("chat.message", _keyword(chat_id, "k", text, sent_at))
        worker.run_once()
    assert crm.get("Contact", contact).fields["DoNotCall"] is True  # STOP is the later one
    platform.post("chat.message", _keyword("x2", "k2", "start", "2026-11-21T18:35:00Z"))
    worker.run_once()
    assert crm.get("Contact", contact).fields["DoNotCall"] is False


def test_a_relinked_chats_older_keyword_does_not_override_the_records_newer_one(platform, runtime, crm, app):
    _contact(crm)
    other = crm.create("Contact", {"LastName": "Other", "Phone": "+14155550199"})
    worker = make_worker(runtime)
    platform.start_chat("y1", "+14155550199")
    platform.post("chat.message", _keyword("y1", "k", "STOP", "2026-11-21T18:30:00Z"))
    worker.run_once()
    platform.start_chat()
    platform.post("chat.assigned", assigned(TOM, 10))
    platform.post("chat.message", _keyword(CHAT, "k", "START", "2026-11-21T18:20:00Z"))
    worker.run_once()
    tom = app.test_client()
    tom.get(sign_in_path(runtime, TOM["email"], TOM["name"]))
    assert tom.post(f"/api/agent/chats/{CHAT}/link", json={"object": "Contact", "id": other}).status_code == 200
    worker.run_once()
    assert crm.get("Contact", other).fields["DoNotCall"] is True


@pytest.mark.parametrize("arrival", ["in order", "reversed"])
def test_keywords_sent_at_the_same_instant_in_two_chats_give_one_result_whatever_arrives_last(
        platform, runtime, crm, arrival):
    contact = crm.create("Contact", {"LastName": "Tie", "Phone": "(415) 555-0141"})
    worker = make_worker(runtime)
    for chat_id in ("x1", "x2"):
        platform.start_chat(chat_id, "+14155550141")
    keywords = [("x1", "STOP"), ("x2", "START")]
    for chat_id, text in keywords if arrival == "in order" else keywords[::-1]:
        platform.post("chat.message", _keyword(chat_id, "k", text, "2026-11-21T18:30:00Z"))
        worker.run_once()
    assert crm.get("Contact", contact).fields["DoNotCall"] is False  # x2 sorts after x1


def test_a_records_keywords_are_found_through_the_index_on_linked_chats(runtime):
    query = optout.record_keywords("Contact", "003000000000001AAA")
    with runtime.engine.connect() as conn:
        sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql("SET enable_seqscan = off")  # tiny tables: plan as for a big one
            plan = conn.exec_driver_sql(f"EXPLAIN {sql}").scalars().all()
        else:
            plan = [row[-1] for row in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")]
    assert any("ix_chats_linked_id" in line for line in plan), plan


class _OvertakenOnFirstWrite:
    """The CRM, except that the first opt-out write is held up until `overtake()` has run: the write
    of another chat's item, processed meanwhile by another worker, then lands first."""

    def __init__(self, crm, overtake):
        self._crm, self._overtake = crm, overtake
        self.held_up = False
        self.landed: list[bool] = []  # the values written, in the order they reached the CRM

    def update(self, object_name, record_id, fields):
        if not self.held_up:
            self.held_up = True
            self._overtake()
        self._crm.update(object_name, record_id, fields)
        self.landed.append(fields["DoNotCall"])

    def __getattr__(self, name):
        return getattr(self._crm, name)


def test_an_older_keywords_write_held_up_behind_a_newer_ones_does_not_win(platform, runtime, crm):
    contact = crm.create("Contact", {"LastName": "Race", "Phone": "(415) 555-0141"})
    for chat_id in ("x1", "x2"):
        platform.start_chat(chat_id, "+14155550141")
    platform.post("chat.message", _keyword("x1", "k", "STOP", "2026-11-21T18:30:00Z"))

    def overtake():  # x1's item has read STOP; START arrives in x2 and another worker writes it first
        platform.post("chat.message", _keyword("x2", "k", "START", "2026-11-21T18:35:00Z"))
        assert make_worker(runtime).run_once() == 1

    racing = _OvertakenOnFirstWrite(crm, overtake)
    use_crm(runtime, racing)
    make_worker(runtime).run_once()
    assert racing.landed[:2] == [False, True]  # the racy order: the older keyword's write lands last
    assert crm.get("Contact", contact).fields["DoNotCall"] is False
    assert {row["status"] for row in outbox_rows(runtime)} == {"done"}
