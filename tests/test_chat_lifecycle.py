"""A chat from start to end through the app, the outbox worker and the embedded CRM: one Task,
exactly as CONTRACT section 4 describes it."""
from __future__ import annotations

from sqlalchemy import select

from crmconnector.store import chat_messages, chats, console_events, reading
from tests.chat_support import (CHAT, FULL_CHAT_DESCRIPTION, HUCK, TOM, assigned, at, ended, full_chat, make_worker,
                                message, outbox_rows, post_all, started, task_files, tasks, transferred)


def _chat(runtime, chat_id=CHAT):
    with reading(runtime.engine) as conn:
        return conn.execute(select(chats).where(chats.c.id == chat_id)).mappings().first()


def _console(runtime):
    with reading(runtime.engine) as conn:
        return [(r.agent_email, r.kind) for r in conn.execute(select(console_events).order_by(console_events.c.id))]


def _becky(crm):
    account = crm.create("Account", {"Name": "Thatcher Fencing"})
    contact = crm.create("Contact", {"FirstName": "Becky", "LastName": "Thatcher", "Phone": "(415) 555-0132",
                                     "AccountId": account})
    return contact, account


def test_a_full_chat_becomes_exactly_one_task(platform, runtime, crm):
    contact, account = _becky(crm)
    responses = post_all(platform, full_chat())
    assert [r.status_code for r in responses] == [200] * 13 + [202]
    assert responses[1].json == {"status": "ok", "chat_id": CHAT}
    assert responses[-1].json == {"status": "accepted", "chat_id": CHAT}
    assert make_worker(runtime).run_once() == 1
    [task] = tasks(crm)
    fields = {k: v for k, v in task.fields.items() if k not in ("Id", "CreatedDate", "LastModifiedDate", "Name")}
    assert fields == {
        "Subject": "SMS chat with +1 415-555-0132", "CallObject": "sms-chat-2415", "CallType": "Inbound",
        "CallDisposition": "Appointment set", "CallDurationInSeconds": 400, "Status": "Completed",
        "Priority": "Normal", "ActivityDate": "2026-11-21", "WhoId": contact, "WhatId": account,
        "Description": FULL_CHAT_DESCRIPTION,
    }
    assert task_files(crm, task.id) == [("fence1.jpg", b"bytes of https://media.example/m/1"),
                                        ("fence2.png", b"bytes of https://media.example/m/2")]
    chat = _chat(runtime)
    assert (chat["crm_status"], chat["task_id"], chat["crm_error"]) == ("posted", task.id, None)
    assert [r["status"] for r in outbox_rows(runtime)] == ["done"]


def test_running_the_worker_again_changes_nothing(platform, runtime, crm):
    _becky(crm)
    post_all(platform, full_chat())
    worker = make_worker(runtime)
    worker.run_once()
    [first] = tasks(crm)
    assert worker.run_once() == 0
    assert tasks(crm) == [first]


def test_a_late_message_updates_the_same_task(platform, runtime, crm):
    post_all(platform, full_chat())
    worker = make_worker(runtime)
    worker.run_once()
    [task] = tasks(crm)
    late = platform.post("chat.message", message("m8", "consumer", "One more thing", 300))
    assert late.status_code == 200
    assert _chat(runtime)["crm_status"] == "pending"
    assert worker.run_once() == 1
    [updated] = tasks(crm)
    assert updated.id == task.id
    assert updated.fields["Description"].endswith(
        "[2026-11-21 17:08:00Z] Consumer: Tuesday is great, thanks\n"
        "[2026-11-21 17:08:10Z] Consumer: One more thing")
    assert _chat(runtime)["crm_status"] == "posted"


def test_a_lead_is_the_who_and_never_has_a_what(platform, runtime, crm):
    lead = crm.create("Lead", {"LastName": "Finn", "Company": "Raft Co", "Phone": "+14155550132"})
    post_all(platform, [e for e in full_chat() if e[1] != "chat.transferred"])
    make_worker(runtime).run_once()
    [task] = tasks(crm)
    assert (task.fields["WhoId"], task.fields["WhatId"]) == (lead, None)


def test_an_account_is_the_what_and_no_match_links_nothing(platform, runtime, crm):
    account = crm.create("Account", {"Name": "Thatcher Fencing", "Phone": "+14155550132"})
    post_all(platform, full_chat())
    platform.post("chat.started", started("77", number="+12125550100"))
    platform.post("chat.ended", ended(60, "77"))
    make_worker(runtime).run_once()
    [task] = tasks(crm)
    assert (task.fields["WhoId"], task.fields["WhatId"]) == (None, account)
    [other] = tasks(crm, "77")
    assert (other.fields["WhoId"], other.fields["WhatId"]) == (None, None)


def test_outbound_chat_without_assignment_has_no_duration(platform, runtime, crm):
    platform.post("chat.started", started(direction="outbound"))
    platform.post("chat.ended", ended(60, disconnected_by="agent", disposition="No answer"))
    make_worker(runtime).run_once()
    [task] = tasks(crm)
    assert task.fields["CallType"] == "Outbound"
    assert task.fields["CallDurationInSeconds"] is None
    assert task.fields["CallDisposition"] == "No answer"
    assert task.fields["Description"] == ("Chat ID: 2415\nLanguage: en\nQueue: Fence painting\n"
                                          "Initiated: 2026-11-21 17:03:10Z\nTerminated: 2026-11-21 17:04:10Z\n"
                                          "Disconnected by: agent")


def test_a_message_before_chat_started_is_kept_until_it_starts(platform, runtime, crm):
    response = platform.post("chat.message", message("m1", "consumer", "early bird", 0))
    assert response.status_code == 200
    placeholder = _chat(runtime)
    assert placeholder["started"] is False and placeholder["consumer_number"] is None
    platform.post("chat.ended", ended(30))
    make_worker(runtime).run_once()
    assert tasks(crm) == []  # nothing to post before the chat's start is known
    assert platform.post("chat.started", started()).status_code == 200
    assert _chat(runtime)["started"] is True
    make_worker(runtime).run_once()
    [task] = tasks(crm)
    assert task.fields["Description"].endswith("[2026-11-21 17:03:10Z] Consumer: early bird")


def test_the_same_message_under_another_event_id_is_stored_once(platform, runtime):
    platform.start_chat()
    platform.post("chat.message", message("m1", "consumer", "hello", 0), event_id="a")
    platform.post("chat.message", message("m1", "consumer", "hello", 0), event_id="b")
    with reading(runtime.engine) as conn:
        assert len(conn.execute(select(chat_messages)).all()) == 1


def test_assignment_sets_the_first_acceptance_and_the_latest_agent(platform, runtime):
    platform.start_chat()
    platform.post("chat.assigned", assigned(HUCK, 100))
    platform.post("chat.assigned", assigned(TOM, 10))  # arrives late, happened first
    chat = _chat(runtime)
    assert chat["agent_email"] == "huck@example.com" and chat["agent_name"] == "Huck Finn"
    assert chat["assigned_at"].isoformat() == "2026-11-21T17:03:20+00:00"
    platform.post("chat.transferred", transferred("ended", 200, from_agent=HUCK, to_agent=TOM))
    assert _chat(runtime)["agent_email"] == "tom@example.com"
    platform.post("chat.transferred", transferred("failed", 300, from_agent=TOM, to_agent=HUCK))
    assert _chat(runtime)["agent_email"] == "tom@example.com"


def test_a_message_to_a_known_chat_is_stored_and_its_chat_read_in_one_statement(platform, runtime, monkeypatch):
    """The commonest event: its INSERT returns the chat's row (agent, end), so no separate read."""
    from tests.conftest import sent_statements

    platform.start_chat()
    platform.post("chat.assigned", assigned(TOM, 10))
    platform.post("chat.ended", ended(60))
    sent = sent_statements(runtime.engine, monkeypatch)
    assert platform.post("chat.message", message("m1", "consumer", "hi", 20)).status_code == 200
    assert [sql.split(" (")[0] for sql, _ in sent if "chat_messages" in sql] == ["INSERT INTO chat_messages"]
    assert not any(sql.startswith("SELECT chats.id, chats.agent_email") for sql, _ in sent)  # the chat row's read
    assert _console(runtime)[-1] == ("tom@example.com", "message")
    assert [(r["kind"], r["status"]) for r in outbox_rows(runtime)] == [("chat_log", "pending")]
    with reading(runtime.engine) as conn:
        assert conn.execute(select(chat_messages.c.text)).scalars().all() == ["hi"]


def test_an_assignment_reads_its_chat_and_earlier_assignments_in_one_statement(platform, runtime, monkeypatch):
    """chat.assigned and chat.transferred need the chat's row (its current agent) and every assignment
    so far (the latest wins): one read joins them, and the new one is added without reading it back."""
    from tests.conftest import sent_statements

    platform.start_chat()
    sent = sent_statements(runtime.engine, monkeypatch)
    platform.post("chat.assigned", assigned(TOM, 10))
    platform.post("chat.transferred", transferred("ended", 30, from_agent=TOM, to_agent=HUCK))
    platform.post("chat.assigned", assigned(TOM, 20))  # reported late: the transfer at 30 stays the latest
    reads = [sql for sql, _ in sent if sql.startswith("SELECT")]
    assert len(reads) == 3 and all("LEFT OUTER JOIN chat_activity" in sql for sql in reads)
    chat = _chat(runtime)
    assert chat["agent_email"] == "huck@example.com"
    assert chat["assigned_at"].isoformat() == "2026-11-21T17:03:20+00:00"  # the first acceptance
    assert _console(runtime) == [("tom@example.com", "pop"), ("tom@example.com", "transferred"),
                                 ("huck@example.com", "pop"), ("huck@example.com", "transferred"),
                                 ("huck@example.com", "pop")]


def test_an_assignment_stores_its_row_and_the_new_agent_in_one_statement_on_postgresql(platform, runtime,
                                                                                      monkeypatch):
    """The activity row and the agent it makes current: one statement on PostgreSQL (the agent is set
    only if the row is new), an INSERT and an UPDATE on SQLite."""
    from tests.conftest import sent_statements

    platform.start_chat()
    sent = sent_statements(runtime.engine, monkeypatch)
    platform.post("chat.assigned", assigned(TOM, 10))
    writes = [sql for sql, _ in sent if "INSERT INTO chat_activity" in sql or "UPDATE chats" in sql]
    if runtime.engine.dialect.name == "postgresql":
        assert len(writes) == 1 and "INSERT INTO chat_activity" in writes[0] and "UPDATE chats" in writes[0]
    else:
        assert [sql.split(" (")[0].split(" SET")[0] for sql in writes] == ["INSERT INTO chat_activity", "UPDATE chats"]
    assert _chat(runtime)["agent_email"] == "tom@example.com"
    assert _console(runtime) == [("tom@example.com", "pop")]


def test_an_assignment_whose_row_is_stored_already_leaves_the_agent_its_rows_give(platform, runtime):
    """Its event id is new but its activity row exists (stored by an earlier attempt): no second row,
    and the chat's agent is the one the stored rows give."""
    from datetime import datetime

    from crmconnector.store import chat_activity

    platform.start_chat()
    with runtime.engine.begin() as conn:
        conn.execute(chat_activity.insert().values(chat_id=CHAT, event_id="a-stored", kind="assigned",
                                                   at=datetime.fromisoformat(at(10).replace("Z", "+00:00")),
                                                   data={"agent": HUCK}))
    assert platform.post("chat.assigned", assigned(TOM, 20), event_id="a-stored").status_code == 200
    with reading(runtime.engine) as conn:
        assert conn.execute(select(chat_activity.c.data)).scalars().all() == [{"agent": HUCK}]
    assert _chat(runtime)["agent_email"] == "huck@example.com"


def test_the_chat_log_records_its_task_and_tells_the_agent_once_per_change(platform, runtime, crm, monkeypatch):
    """On PostgreSQL the posted status and the agent's console update are one statement of the outbox
    thread's own, outside the transaction that finishes the item; on SQLite they are part of it. Rendered
    again with the status posted already (as a media retry does), the agent is not told again."""
    from crmconnector.sync.outbox import enqueue
    from tests.conftest import sent_statements

    platform.start_chat()
    platform.post("chat.assigned", assigned(TOM, 10))
    platform.post("chat.ended", ended(60))
    sent = sent_statements(runtime.engine, monkeypatch)
    make_worker(runtime).run_once()
    status_writes = [sql for sql, _ in sent if "UPDATE chats" in sql]
    if runtime.engine.dialect.name == "postgresql":
        assert len(status_writes) == 1 and status_writes[0].startswith("WITH changed AS")
        assert "INSERT INTO console_events" in status_writes[0]
    else:
        assert len(status_writes) == 1 and status_writes[0].startswith("UPDATE chats SET")
    [task] = tasks(crm)
    chat = _chat(runtime)
    assert (chat["crm_status"], chat["task_id"]) == ("posted", task.id)
    assert _console(runtime)[-2:] == [("tom@example.com", "ended"), ("tom@example.com", "status")]

    with runtime.engine.begin() as conn:
        enqueue(conn, "chat_log", CHAT)
    make_worker(runtime).run_once()
    assert [t.id for t in tasks(crm)] == [task.id]
    assert _chat(runtime)["crm_status"] == "posted"
    assert _console(runtime)[-2:] == [("tom@example.com", "ended"), ("tom@example.com", "status")]


def test_agents_consoles_hear_pops_messages_transfers_and_the_end(platform, runtime):
    platform.start_chat()
    platform.post("chat.assigned", assigned(TOM, 10))
    platform.post("chat.message", message("m1", "consumer", "hi", 20))
    platform.post("chat.transferred", transferred("ended", 30, from_agent=TOM, to_agent=HUCK))
    platform.post("chat.ended", ended(60))
    make_worker(runtime).run_once()
    assert _console(runtime) == [
        ("tom@example.com", "pop"), ("tom@example.com", "message"), ("tom@example.com", "transferred"),
        ("huck@example.com", "pop"), ("huck@example.com", "transferred"),
        ("huck@example.com", "status"),  # the chat log is pending
        ("huck@example.com", "ended"),
        ("huck@example.com", "status")]  # posted


def test_a_repeated_event_replays_its_response_without_a_second_effect(platform, runtime):
    platform.start_chat()
    first = platform.post("chat.ended", ended(60), event_id="end-1")
    again = platform.post("chat.ended", ended(60), event_id="end-1")
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json == first.json
    assert [r["kind"] for r in outbox_rows(runtime)] == ["chat_log"]


def test_a_known_chats_end_stores_its_pending_crm_status_in_the_same_update(platform, runtime, monkeypatch):
    """chat.ended of a known chat: one UPDATE stores the end and the chat log's pending status, one INSERT
    enqueues the chat log; the agent hears of both."""
    from tests.conftest import sent_statements

    platform.start_chat()
    platform.post("chat.assigned", assigned(TOM, 10))
    sent = sent_statements(runtime.engine, monkeypatch)
    assert platform.post("chat.ended", ended(60)).status_code == 202
    chat_writes = [sql.split(" SET ")[0].split(" (")[0] for sql, _ in sent
                   if sql.startswith(("UPDATE", "INSERT INTO chats", "INSERT INTO outbox"))]
    assert chat_writes == ["UPDATE chats", "INSERT INTO outbox"]
    assert _chat(runtime)["crm_status"] == "pending"
    assert _console(runtime)[-2:] == [("tom@example.com", "status"), ("tom@example.com", "ended")]
    assert [(r["kind"], r["status"]) for r in outbox_rows(runtime)] == [("chat_log", "pending")]


def test_the_later_of_two_ends_wins_in_either_order_and_a_known_chat_ends_in_one_statement(platform, runtime,
                                                                                           monkeypatch):
    from tests.conftest import sent_statements

    sent = sent_statements(runtime.engine, monkeypatch)
    for chat_id, seconds in (("e1", (60, 90)), ("e2", (90, 60)), ("e3", (90,))):
        if chat_id != "e3":
            platform.start_chat(chat_id)
        for n, second in enumerate(seconds):
            assert platform.post("chat.ended", ended(second, chat_id, disposition=f"report {n}")).status_code == 202
    ends = [(_chat(runtime, c)["ended_at"].isoformat(), _chat(runtime, c)["disposition"]) for c in ("e1", "e2", "e3")]
    late = at(90).replace("Z", "+00:00")
    assert ends == [(late, "report 1"), (late, "report 0"), (late, "report 0")]
    assert _chat(runtime, "e3")["started"] is False  # ended before it started: a placeholder row
    reads = [sql for sql, _ in sent if sql.startswith("SELECT chats.id, chats.agent_email")]
    assert len(reads) == 2  # e2's earlier second report, and e3's first event; none for a known chat's end


def test_two_reports_of_one_end_leave_the_later_reports_disposition_in_either_order(platform, runtime):
    """The platform reports the same end again, disposition corrected, under a new event id: whichever
    arrives last, the chat keeps the report the platform made last (its occurred_at)."""
    first, second = "2026-11-21T17:10:01Z", "2026-11-21T17:12:00Z"
    for chat_id, reports in (("in-order", ((first, "No answer"), (second, "Appointment set"))),
                             ("reversed", ((second, "Appointment set"), (first, "No answer")))):
        platform.start_chat(chat_id)
        for occurred_at, disposition in reports:
            response = platform.post("chat.ended", ended(410, chat_id, disposition=disposition),
                                     occurred_at=occurred_at)
            assert response.status_code == 202
    assert [_chat(runtime, c)["disposition"] for c in ("in-order", "reversed")] == ["Appointment set"] * 2
