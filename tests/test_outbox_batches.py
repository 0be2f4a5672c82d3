"""Chat logs processed several at a time, as the outbox does when the CRM answers without the network
(the local CRM): one read of the chats' states, one CRM call per chat, one statement for their posted
statuses on PostgreSQL and one transaction that records them. Failures stay each item's own."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from crmconnector import chatstate
from crmconnector.crm.errors import CRMRejected, RetryableCRMError
from crmconnector.store import chats, console_events, reading
from crmconnector.sync import worker as worker_module
from crmconnector.sync.outbox import record_posted_at_once
from tests.chat_support import (TOM, Clock, assigned, ended, make_worker, message, outbox_rows, tasks,
                                use_crm)
from tests.conftest import sent_statements


def _ended_chats(platform, chat_ids, agent=TOM):
    for chat_id in chat_ids:
        platform.start_chat(chat_id)
        platform.post("chat.assigned", assigned(agent, 5, chat_id), event_id=f"assign-{chat_id}")
        platform.post("chat.message", message(f"m-{chat_id}", "consumer", f"hello from {chat_id}", 10,
                                              chat_id=chat_id), event_id=f"msg-{chat_id}")
        platform.post("chat.ended", ended(60, chat_id), event_id=f"end-{chat_id}")


def _statuses(runtime, chat_ids):
    with reading(runtime.engine) as conn:
        return dict(conn.execute(select(chats.c.id, chats.c.crm_status).where(chats.c.id.in_(chat_ids))).all())


def _status_events(runtime, after=0):
    """(agent, chat, payload's chat) of the consoles' status updates after the update `after`; and the last id."""
    with reading(runtime.engine) as conn:
        rows = conn.execute(select(console_events).where(console_events.c.kind == "status",
                                                         console_events.c.id > after)).all()
    return sorted((r.agent_email, r.chat_id, r.payload["chat_id"]) for r in rows), max((r.id for r in rows),
                                                                                        default=after)


@pytest.mark.both_databases
def test_several_chats_states_are_one_read_and_the_same_as_read_one_by_one(platform, runtime, monkeypatch):
    _ended_chats(platform, ["a", "b"])
    platform.start_chat("pictures")
    platform.post("chat.message", message("p1", "consumer", "a picture", 10, chat_id="pictures",
                                          media=[{"url": "https://media.example.com/p/1.jpg"}]), event_id="pic")
    with reading(runtime.engine) as conn:
        alone = {chat_id: chatstate.load(conn, chat_id) for chat_id in ("a", "b", "pictures")}
    sent = sent_statements(runtime.engine, monkeypatch)
    with reading(runtime.engine) as conn:
        together = chatstate.load_many(conn, ["a", "b", "no-such-chat", "a"])
        assert len(sent) == 1  # no chat with media among them: no media read
        with_media = chatstate.load_many(conn, ["pictures", "b"])
    assert together == {"a": alone["a"], "b": alone["b"]}
    assert with_media == {"pictures": alone["pictures"], "b": alone["b"]}
    assert [m.text for m in together["a"].messages] == ["hello from a"]
    assert [a.agent["email"] for a in together["b"].assignments] == [TOM["email"]]
    assert list(with_media["pictures"].media) == [("p1", 0)]
    assert len([sql for sql, _ in sent if "FROM chat_media" in sql]) == 1


class _AcrossTheNetwork:
    """The local CRM, saying of itself what SalesforceCRM does: its calls cross the network. It writes
    each record through its own `upsert_with_files`, which the tests' subclasses change."""

    remote = True
    upsert_many = None

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_local_crm_gets_few_threads_taking_several_items_each_and_a_remote_one_many_taking_one(runtime):
    from crmconnector.crm.salesforce import SalesforceCRM
    from crmconnector.sync.worker import Worker

    assert SalesforceCRM.remote and not type(runtime.crm).remote
    local = Worker(runtime.engine, runtime.crm, runtime.settings)
    remote = Worker(runtime.engine, _AcrossTheNetwork(runtime.crm), runtime.settings)
    assert local.batch == worker_module.LOCAL_BATCH > 1 and remote.batch == 1
    for worker, threads in ((local, worker_module.LOCAL_THREADS), (remote, worker_module.DEFAULT_THREADS)):
        worker.start()
        try:
            assert len(worker._threads) == threads
        finally:
            worker.stop()


@pytest.mark.both_databases
def test_one_thread_posts_a_claims_chat_logs_with_one_state_read_and_one_record(platform, runtime, crm, monkeypatch):
    chat_ids = ["a", "b", "c"]
    _ended_chats(platform, chat_ids)
    worker = make_worker(runtime)
    transactions = []
    write = worker.write
    monkeypatch.setattr(worker, "write", lambda work: (transactions.append(work), write(work))[1])
    _, seen = _status_events(runtime)
    sent = sent_statements(runtime.engine, monkeypatch)
    assert worker.run_once() == 3
    assert all(len(tasks(crm, chat_id)) == 1 for chat_id in chat_ids)
    assert "hello from b" in tasks(crm, "b")[0].fields["Description"]
    assert {r["status"] for r in outbox_rows(runtime)} == {"done"}
    assert _statuses(runtime, chat_ids) == {chat_id: "posted" for chat_id in chat_ids}
    assert _status_events(runtime, seen)[0] == [(TOM["email"], chat_id, chat_id) for chat_id in chat_ids]
    state_reads = [sql for sql, _ in sent if "UNION ALL" in sql and "chat_messages" in sql]
    assert len(state_reads) == 1
    assert len(transactions) == 2  # the claim, then one transaction that records all three
    posted = [sql for sql, _ in sent if sql.lstrip().upper().startswith("WITH") and "crm_status" in sql]
    assert len(posted) == (1 if runtime.engine.dialect.name == "postgresql" else 0)


@pytest.mark.both_databases
def test_a_crm_error_in_a_batch_reschedules_only_its_own_item(platform, runtime, crm):
    _ended_chats(platform, ["a", "b", "c"])
    calls = []

    class RefusesB(_AcrossTheNetwork):
        remote = False

        def upsert_with_files(self, object_name, key_field, fields, files=()):
            calls.append(fields["CallObject"])
            if fields["CallObject"] == "sms-chat-b":
                raise RetryableCRMError("Service Unavailable", status=503)
            return self.inner.upsert_with_files(object_name, key_field, fields, files)

    use_crm(runtime, RefusesB(crm))
    clock = Clock()
    worker = make_worker(runtime, clock)
    assert worker.run_once() == 3
    assert sorted(calls) == ["sms-chat-a", "sms-chat-b", "sms-chat-c"]
    rows = {r["key"]: r for r in outbox_rows(runtime)}
    assert (rows["a"]["status"], rows["c"]["status"]) == ("done", "done")
    assert rows["b"]["status"] == "pending" and "Service Unavailable" in rows["b"]["last_error"]
    assert _statuses(runtime, ["a", "b", "c"]) == {"a": "posted", "b": "pending", "c": "posted"}
    use_crm(runtime, crm)
    clock.advance(3600)
    assert make_worker(runtime, clock).run_once() == 1
    assert all(len(tasks(crm, chat_id)) == 1 for chat_id in ("a", "b", "c"))


def test_a_chat_rejected_by_the_crm_fails_alone_and_one_not_yet_ended_waits(platform, runtime, crm):
    _ended_chats(platform, ["a", "b"])
    platform.start_chat("open")
    platform.post("chat.ended", ended(60, "open"), event_id="end-open")
    platform.post("chat.message", message("late", "consumer", "still here", 30, chat_id="open"), event_id="late")

    class RejectsA(_AcrossTheNetwork):
        remote = False

        def upsert_with_files(self, object_name, key_field, fields, files=()):
            if fields["CallObject"] == "sms-chat-a":
                raise CRMRejected("no", code="FIELD_CUSTOM_VALIDATION_EXCEPTION", status=400)
            return self.inner.upsert_with_files(object_name, key_field, fields, files)

    use_crm(runtime, RejectsA(crm))
    make_worker(runtime).run_once()
    rows = {r["key"]: r for r in outbox_rows(runtime)}
    assert rows["a"]["status"] == "failed" and rows["b"]["status"] == "done"
    assert _statuses(runtime, ["a", "b"]) == {"a": "failed", "b": "posted"}
    assert tasks(crm, "a") == [] and len(tasks(crm, "b")) == 1


@pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_the_posted_statement_reports_only_the_chats_it_changed(platform, runtime):
    _ended_chats(platform, ["a", "b"])
    _, seen = _status_events(runtime)
    first = record_posted_at_once(runtime.engine, {"a": "00TA"})
    again = record_posted_at_once(runtime.engine, {"a": "00TA", "b": "00TB"})
    assert (first, again) == ({"a"}, {"b"})
    assert _statuses(runtime, ["a", "b"]) == {"a": "posted", "b": "posted"}
    assert _status_events(runtime, seen)[0] == [(TOM["email"], "a", "a"), (TOM["email"], "b", "b")]


def test_a_thread_that_takes_several_new_items_drops_the_wakes_they_left_for_other_threads(platform, runtime):
    from crmconnector.notify import WorkSignal

    signal = WorkSignal()
    _ended_chats(platform, ["a", "b", "c"])
    for _ in range(4):  # the three chat logs' wakes, and one for an item that is not due yet
        signal.notify()
    worker = make_worker(runtime, wait=signal.wait, wake=signal.notify, absorb=signal.absorb)
    assert signal.wait(0)  # the thread woken for the first item
    assert worker.run_once(expect_work=True) == 3
    assert signal.wait(0)  # one wake is left for the fourth item
    assert not signal.wait(0)


def test_a_woken_thread_claims_until_a_claim_comes_back_short(platform, runtime, monkeypatch):
    monkeypatch.setattr(worker_module, "LOCAL_BATCH", 2)
    _ended_chats(platform, ["a", "b", "c"])
    worker = make_worker(runtime)
    claims = []
    claim = worker.claim
    monkeypatch.setattr(worker, "claim", lambda limit, look_first=True: claims.append(
        (limit, look_first)) or claim(limit, look_first))
    assert worker.run_once(expect_work=True) == 3
    assert claims == [(2, False), (2, True)]  # the second found one item of two: nothing more is due
    assert {r["status"] for r in outbox_rows(runtime)} == {"done"}


@pytest.mark.parametrize("database_url", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_when_the_posted_statement_fails_the_chats_are_recorded_one_by_one(platform, runtime, crm, monkeypatch):
    from sqlalchemy.exc import OperationalError

    from crmconnector.sync import outbox

    class Deadlocked:
        def all(self, conn, params):
            raise OperationalError("UPDATE chats …", params, Exception("deadlock detected"))

    monkeypatch.setattr(outbox, "_posted_and_told", lambda count: Deadlocked())
    _ended_chats(platform, ["a", "b"])
    _, seen = _status_events(runtime)
    assert make_worker(runtime).run_once() == 2
    assert _statuses(runtime, ["a", "b"]) == {"a": "posted", "b": "posted"}
    assert _status_events(runtime, seen)[0] == [(TOM["email"], "a", "a"), (TOM["email"], "b", "b")]
    assert {r["status"] for r in outbox_rows(runtime)} == {"done"}
    assert all(len(tasks(crm, chat_id)) == 1 for chat_id in ("a", "b"))


@pytest.mark.both_databases
def test_a_batch_creates_its_new_tasks_in_one_statement(platform, runtime, crm, monkeypatch):
    chat_ids = ["a", "b", "c"]
    _ended_chats(platform, chat_ids)
    sent = sent_statements(runtime.engine, monkeypatch)
    assert make_worker(runtime).run_once() == 3
    task_inserts = [sql for sql, _ in sent if sql.lstrip().upper().startswith("INSERT INTO CRM_TASK")]
    assert len(task_inserts) == 1
    assert [len(tasks(crm, chat_id)) for chat_id in chat_ids] == [1, 1, 1]
    assert "hello from c" in tasks(crm, "c")[0].fields["Description"]


@pytest.mark.both_databases
def test_several_upserts_create_the_new_records_together_and_settle_the_others_one_by_one(crm):
    from crmconnector.crm.base import FileUpload

    existing = crm.upsert_with_files("Task", "CallObject", {"Subject": "old", "CallObject": "k-old"})
    picture = FileUpload("pic-1", "pic.jpg", "image/jpeg", b"jpeg bytes")
    results = crm.upsert_many("Task", "CallObject", [
        ({"Subject": "new one", "CallObject": "k-1"}, []),
        ({"Subject": "updated", "CallObject": "k-old"}, []),
        ({"Subject": "with a file", "CallObject": "k-2"}, [picture]),
        ({"Subject": "new two", "CallObject": "k-3"}, []),
        ({"Subject": "bad", "CallObject": "k-4", "WhoId": "003000000000000AAA"}, []),
        ({"Subject": "new one, again", "CallObject": "k-1"}, []),
    ])
    assert [type(r).__name__ for r in results] == ["UpsertResult"] * 4 + ["CRMRejected", "UpsertResult"]
    assert [r.created for r in results[:4]] == [True, False, True, True]
    assert not results[5].created and results[5].id == results[0].id
    assert crm.get("Task", results[0].id).fields["Subject"] == "new one, again"
    assert results[1].id == existing.id and crm.get("Task", existing.id).fields["Subject"] == "updated"
    assert list(results[2].file_ids) == ["pic-1"]
    for key, result in (("k-1", results[0]), ("k-2", results[2]), ("k-3", results[3])):
        [task] = crm.find("Task", "CallObject", [key])
        assert task.id == result.id
    assert crm.find("Task", "CallObject", ["k-4"]) == []
