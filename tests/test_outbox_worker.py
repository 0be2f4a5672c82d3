"""The outbox worker when the CRM misbehaves: down, rate-limited, session expired, rejecting data,
or our process dying mid-write. Nothing is lost and no Task is ever created twice."""
from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from sqlalchemy import select

from crmconnector.crm.errors import CRMAuthError, CRMRejected, RetryableCRMError
from crmconnector.store import chats, reading
from crmconnector.sync.retry import RetryPolicy
from crmconnector.sync.worker import claim_due, finish_done
from tests.chat_support import (Clock, DiesAfterWrite, FlakyCRM, ended, full_chat, make_worker, outbox_rows,
                                post_all, started, tasks, use_crm)
from tests.conftest import sent_statements, sqlalchemy_statements
from tests.waiting import wait_for


def _crm_status(runtime, chat_id="2415"):
    with reading(runtime.engine) as conn:
        row = conn.execute(select(chats.c.crm_status, chats.c.crm_error, chats.c.match_outcome)
                           .where(chats.c.id == chat_id)).first()
    return tuple(row)


def _drain(runtime, worker, clock, rounds=50):
    """Run the worker, moving time past every backoff, until nothing is pending."""
    for _ in range(rounds):
        worker.run_once()
        clock.advance(700)
        if not any(r["status"] in ("pending", "running") for r in outbox_rows(runtime)):
            return
    raise AssertionError("the outbox did not drain")


@pytest.mark.parametrize("error", [
    lambda: RetryableCRMError("connection refused"),
    lambda: RetryableCRMError("Service Unavailable", status=503),
    lambda: RetryableCRMError("TotalRequests Limit exceeded", code="REQUEST_LIMIT_EXCEEDED", status=403,
                              retry_after=30),
    lambda: CRMAuthError("Session expired or invalid", code="INVALID_SESSION_ID", status=401),
], ids=["refused", "503", "rate-limited", "session-expired"])
def test_a_crm_outage_delays_but_loses_nothing(platform, runtime, crm, error):
    crm.create("Contact", {"LastName": "Thatcher", "Phone": "+14155550132"})
    flaky = FlakyCRM(crm, error, failures=6)
    use_crm(runtime, flaky)
    responses = post_all(platform, full_chat())
    assert all(200 <= r.status_code < 300 for r in responses)
    assert responses[0].json["match"] is None  # matched later, by the outbox
    clock = Clock()
    _drain(runtime, make_worker(runtime, clock), clock)
    assert flaky.failures == 0 and flaky.failed == 6
    [task] = tasks(crm)
    assert task.fields["WhoId"] is not None and "Tuesday is great" in task.fields["Description"]
    assert {r["status"] for r in outbox_rows(runtime)} == {"done"}
    assert _crm_status(runtime) == ("posted", None, "single")


def test_retryable_errors_back_off_exponentially_and_honour_retry_after(platform, runtime, crm):
    platform.start_chat()
    platform.post("chat.ended", ended(60))
    use_crm(runtime, FlakyCRM(crm, lambda: RetryableCRMError("busy", code="UNABLE_TO_LOCK_ROW"), failures=3))
    clock = Clock()
    worker = make_worker(runtime, clock, policy=RetryPolicy(base_seconds=2, random=lambda: 0.5))
    waits = []
    for _ in range(3):
        before = clock()
        assert worker.run_once() == 1
        [item] = outbox_rows(runtime)
        assert item["status"] == "pending" and "UNABLE_TO_LOCK_ROW" in item["last_error"]
        waits.append(round((item["due_at"] - before).total_seconds()))
        assert worker.run_once() == 0  # not due yet
        clock.advance(waits[-1] + 1)
    assert waits == [2, 3, 6]  # half fixed plus half random (0.5) of 2, 4, 8 seconds
    assert worker.run_once() == 1
    assert outbox_rows(runtime)[0]["status"] == "done"

    policy = RetryPolicy(random=lambda: 0.0)
    assert policy.delay(1, RetryableCRMError("slow down", retry_after=120)) == 120
    assert policy.delay(20, RetryableCRMError("down")) == 300  # capped at 600 s, half of it fixed


def test_a_rejected_chat_log_fails_with_the_crms_error_and_blocks_no_other_chat(platform, runtime, crm):
    for chat_id in ("1", "2"):
        platform.post("chat.started", started(chat_id))
        platform.post("chat.ended", ended(60, chat_id))

    class RejectsChatOne(FlakyCRM):
        def upsert_with_files(self, object_name, key_field, fields, files=()):
            if fields["CallObject"] == "sms-chat-1":
                raise CRMRejected("Description: data value too large", code="STRING_TOO_LONG")
            return self.inner.upsert_with_files(object_name, key_field, fields, files)

    use_crm(runtime, RejectsChatOne(crm, RuntimeError, failures=0))
    assert make_worker(runtime).run_once() == 2
    assert tasks(crm, "1") == [] and len(tasks(crm, "2")) == 1
    failed = [r for r in outbox_rows(runtime) if r["status"] == "failed"]
    assert [(r["key"], r["last_error"]) for r in failed] == [
        ("1", "STRING_TOO_LONG: Description: data value too large")]
    assert _crm_status(runtime, "1")[:2] == ("failed", "STRING_TOO_LONG: Description: data value too large")
    assert _crm_status(runtime, "2")[0] == "posted"


def test_a_crash_between_the_crms_write_and_our_commit_leaves_one_task(platform, runtime, crm):
    post_all(platform, full_chat())
    dying = DiesAfterWrite(crm)
    use_crm(runtime, dying)
    clock = Clock()
    worker = make_worker(runtime, clock)
    worker.run_once()
    assert len(tasks(crm)) == 1 and outbox_rows(runtime)[0]["status"] == "pending"
    clock.advance(700)
    assert worker.run_once() == 1
    assert dying.writes == 2
    assert len(tasks(crm)) == 1
    assert outbox_rows(runtime)[0]["status"] == "done"


def test_a_dead_workers_lease_expires_and_another_worker_finishes_its_item(platform, runtime, crm):
    post_all(platform, full_chat())
    clock = Clock()
    dead = make_worker(runtime, clock, name="dead", lease_seconds=60)
    [held] = dead.claim()
    crm.upsert_with_files("Task", "CallObject", {"CallObject": "sms-chat-2415", "Status": "Completed",
                                                 "Subject": "half-written"})  # it wrote, then died
    survivor = make_worker(runtime, clock, name="survivor", lease_seconds=60)
    assert survivor.run_once() == 0  # the lease still holds
    clock.advance(61)
    assert survivor.run_once() == 1
    [task] = tasks(crm)
    assert task.fields["Subject"] == "SMS chat with +1 415-555-0132"
    with runtime.engine.begin() as conn:
        finish_done(conn, held)  # the dead worker's late word changes nothing
    [item] = outbox_rows(runtime)
    assert item["status"] == "done" and item["attempts"] == 2 and item["claimed_by"] is None


def test_an_item_is_claimed_by_one_claim_only(runtime, platform):
    platform.start_chat()
    platform.post("chat.ended", ended(60))
    clock = Clock()
    now = clock()
    with runtime.engine.begin() as conn:
        first = claim_due(conn, "a:1", now, now + timedelta(seconds=60))
    with runtime.engine.begin() as conn:
        second = claim_due(conn, "b:1", now, now)
    assert [i.key for i in first] == ["2415"] and second == []


def _end_chats(platform, chat_ids):
    for chat_id in chat_ids:
        platform.start_chat(chat_id)
        platform.post("chat.ended", ended(60, chat_id), event_id=f"end-{chat_id}")


def test_one_claim_takes_several_items_with_one_update_on_the_drivers_cursor(runtime, platform, monkeypatch):
    """Two statements for the whole claim, run on the driver's cursor (SQLAlchemy's execution of these
    statements cost more CPU than the round trips)."""
    _end_chats(platform, ["c1", "c2", "c3"])
    through_sqlalchemy = sqlalchemy_statements(runtime.engine)
    sent = sent_statements(runtime.engine, monkeypatch)  # both paths
    now = Clock()()
    with runtime.engine.begin() as conn:
        items = claim_due(conn, "a:1", now, now + timedelta(seconds=60), limit=5)
    assert sorted(i.key for i in items) == ["c1", "c2", "c3"] and {i.attempts for i in items} == {1}
    claim = [sql.lstrip().split()[0].upper() for sql, _ in sent if "outbox" in sql]
    assert claim == ["SELECT", "UPDATE"]
    assert [sql for sql in through_sqlalchemy if "outbox" in sql] == []
    rows = outbox_rows(runtime)
    assert {(r["key"], r["status"], r["claimed_by"], r["attempts"]) for r in rows} == {
        (key, "running", "a:1", 1) for key in ("c1", "c2", "c3")}


def test_threads_woken_together_share_a_claim_and_every_chat_gets_its_task(runtime, platform, crm):
    _end_chats(platform, ["c1", "c2", "c3"])
    worker = make_worker(runtime, batch=1)  # one item per thread, as for a CRM across the network
    limits: list[int] = []
    release = threading.Event()
    claim = worker.claim

    def held_first_claim(limit=1, look_first=True):
        limits.append(limit)
        if len(limits) == 1:
            assert release.wait(5)
        return claim(limit, look_first)
    worker.claim = held_first_claim
    threads = [threading.Thread(target=worker.run_once, kwargs={"limit": 1, "expect_work": True})
               for _ in range(3)]
    threads[0].start()
    wait_for(lambda: limits)
    for thread in threads[1:]:
        thread.start()
    wait_for(lambda: worker._line._waiting == 2)
    release.set()
    for thread in threads:
        thread.join(10)
    assert limits == [1, 2]  # the two threads that waited meanwhile were served by one claim
    assert all(len(tasks(crm, chat_id)) == 1 for chat_id in ("c1", "c2", "c3"))
    assert {r["status"] for r in outbox_rows(runtime)} == {"done"}


def test_a_new_item_for_a_chat_waits_while_another_item_of_that_chat_is_held(platform, runtime, crm):
    platform.start_chat()
    platform.post("chat.ended", ended(60))
    clock = Clock()
    holder = make_worker(runtime, clock, name="holder")
    [held] = holder.claim()
    platform.post("chat.ended", ended(90), event_id="later-end")  # enqueues a second chat_log item
    other = make_worker(runtime, clock, name="other")
    assert other.claim() == []
    holder.process(held)
    assert other.run_once() == 1
    [task] = tasks(crm)
    assert "Terminated: 2026-11-21 17:04:40Z" in task.fields["Description"]


class CountingCRM(FlakyCRM):
    """Records how many writes of one Task are in flight at once, and each Task's writes."""

    def __init__(self, inner):
        super().__init__(inner, RuntimeError, failures=0)
        self.in_flight: dict[str, int] = {}
        self.most_at_once = 0
        self.writes: dict[str, int] = {}

    def upsert_with_files(self, object_name, key_field, fields, files=()):
        key = fields[key_field]
        with self._lock:
            self.in_flight[key] = self.in_flight.get(key, 0) + 1
            self.most_at_once = max(self.most_at_once, self.in_flight[key])
            self.writes[key] = self.writes.get(key, 0) + 1
        try:
            time.sleep(0.01)
            return self.inner.upsert_with_files(object_name, key_field, fields, files)
        finally:
            with self._lock:
                self.in_flight[key] -= 1


def test_several_workers_never_process_one_item_twice(platform, runtime, crm):
    chat_ids = [str(n) for n in range(1, 31)]
    for chat_id in chat_ids:
        platform.post("chat.started", started(chat_id))
        platform.post("chat.ended", ended(60, chat_id))
    counting = CountingCRM(crm)
    use_crm(runtime, counting)
    workers = [make_worker(runtime, name=f"w{n}") for n in range(4)]
    threads = [threading.Thread(target=w.run_once) for w in workers for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert counting.writes == {f"sms-chat-{c}": 1 for c in chat_ids}
    assert counting.most_at_once == 1
    assert {r["status"] for r in outbox_rows(runtime)} == {"done"}
    assert all(len(tasks(crm, c)) == 1 for c in chat_ids)


def test_the_background_worker_posts_without_being_asked(platform, runtime, crm):
    from crmconnector.sync.worker import Worker

    worker = Worker.for_runtime(runtime)
    worker.start(threads=2)
    try:
        platform.start_chat()
        platform.post("chat.ended", ended(60))
        for _ in range(200):  # woken by the event's commit; polls as a fallback
            if tasks(crm):
                break
            time.sleep(0.05)
    finally:
        worker.stop()
    assert len(tasks(crm)) == 1


PROCESS_WORKER = """
import os, sys, time
from crmconnector.crm.local import LocalCRM
from crmconnector.settings import Settings
from crmconnector.store import make_engine
from crmconnector.sync.worker import Worker

url, name, log_path = sys.argv[1:4]
engine = make_engine(url)
crm = LocalCRM(engine)


class Logged:
    upsert_many = None  # every Task through the logged upsert_with_files

    def __getattr__(self, attr):
        return getattr(crm, attr)

    def upsert_with_files(self, object_name, key_field, fields, files=()):
        with open(log_path, "a") as log:
            log.write(f"{name} start {fields[key_field]} {time.monotonic_ns()}\\n")
        time.sleep(0.02)
        result = crm.upsert_with_files(object_name, key_field, fields, files)
        with open(log_path, "a") as log:
            log.write(f"{name} end {fields[key_field]} {time.monotonic_ns()}\\n")
        return result


settings = Settings(database_url=url, callback_secrets=("s",), admin_token="t", run_background=False)
worker = Worker(engine, Logged(), settings, name=name, fetch_media=lambda *a: "not fetched")
open(f"{log_path}.{name}.ready", "w").close()
while not os.path.exists(f"{log_path}.go"):  # both processes start together
    time.sleep(0.01)
worker.start(threads=3)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    time.sleep(0.1)
    with engine.connect() as conn:
        left = conn.exec_driver_sql("SELECT count(*) FROM outbox WHERE status IN ('pending', 'running')").scalar()
    if not left:
        break
worker.stop()
engine.dispose()
"""


def test_two_processes_on_one_database_never_write_one_task_at_the_same_time(platform, runtime, crm, tmp_path):
    import subprocess
    import sys

    chat_ids = [str(n) for n in range(1, 41)]
    for chat_id in chat_ids:
        platform.post("chat.started", started(chat_id))
        platform.post("chat.ended", ended(60, chat_id))
    log_path = tmp_path / "writes.log"
    url = runtime.settings.database_url
    processes = [subprocess.Popen([sys.executable, "-c", PROCESS_WORKER, url, name, str(log_path)])
                 for name in ("alpha", "beta")]
    for _ in range(3000):
        if all((tmp_path / f"writes.log.{name}.ready").exists() for name in ("alpha", "beta")):
            break
        time.sleep(0.01)
    (tmp_path / "writes.log.go").touch()
    assert [p.wait(timeout=120) for p in processes] == [0, 0]
    entries = [line.split() for line in log_path.read_text().splitlines()]
    starts = [(who, key) for who, what, key, _ in entries if what == "start"]
    assert sorted(key for _, key in starts) == sorted(f"sms-chat-{c}" for c in chat_ids)  # each written once
    assert {who for who, _ in starts} == {"alpha", "beta"}  # both processes took a share
    assert all(len(tasks(crm, c)) == 1 for c in chat_ids)
    assert {r["status"] for r in outbox_rows(runtime)} == {"done"}


def test_the_retry_policy_spreads_retries_and_never_retries_a_rejection():
    low, high = RetryPolicy(random=lambda: 0.0), RetryPolicy(random=lambda: 1.0)
    assert [low.delay(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert [high.delay(n) for n in (1, 2, 3, 4)] == [2, 4, 8, 16]
    assert low.delay(1, CRMAuthError("expired")) == 2  # at least the base after a failed re-login
    assert low.is_final(CRMRejected("bad")) and not low.is_final(RetryableCRMError("down"))
    assert not low.is_final(CRMAuthError("expired"))


def test_stopping_a_worker_gives_back_the_items_it_holds(platform, runtime):
    platform.start_chat()
    platform.post("chat.ended", ended(60))
    worker = make_worker(runtime, name="leaving")
    assert len(worker.claim()) == 1
    assert outbox_rows(runtime)[0]["status"] == "running"
    worker.stop()
    [item] = outbox_rows(runtime)
    assert (item["status"], item["claimed_by"]) == ("pending", None)
    assert make_worker(runtime, name="next").run_once() == 1


def test_a_handler_slower_than_its_lease_keeps_the_item_from_other_workers(runtime, platform):
    """The lease is renewed while the handler runs (a chat log with large media to a slow CRM), so no
    other worker takes the item over meanwhile and posts it a second time."""
    platform.start_chat()
    platform.post("chat.ended", ended(60))
    slow = make_worker(runtime, name="slow", lease_seconds=1.0)
    other = make_worker(runtime, name="other", lease_seconds=1.0)
    ran = []

    def handler(worker, item):
        ran.append(worker.name)
        time.sleep(3.5)  # more than three lease lengths

    slow.handlers = other.handlers = {"chat_log": handler}
    [item] = slow.claim()
    processing = threading.Thread(target=slow.process, args=(item,))
    processing.start()
    taken_over = []
    while processing.is_alive():
        taken_over += other.claim()
        time.sleep(0.05)
    assert taken_over == [] and ran == ["slow"]
    [row] = [r for r in outbox_rows(runtime) if r["kind"] == "chat_log"]
    assert row["status"] == "done" and row["attempts"] == 1 and row["claimed_by"] is None
    deadline = time.monotonic() + 5  # with nothing held any more, the renewing thread ends
    while any(t.name == "slow-leases" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(t.name == "slow-leases" for t in threading.enumerate())


def test_each_new_item_wakes_a_thread_of_its_own_that_claims_it_without_a_look(runtime, monkeypatch):
    """Items enqueued in one transaction wake one outbox thread each; a woken thread claims and processes
    its item and waits again. Only a thread whose wait timed out looks (a read) before claiming."""
    from crmconnector.sync.outbox import enqueue
    from crmconnector.sync.worker import Worker
    from tests.conftest import sent_statements

    runtime.intake.writer.run(lambda conn: [enqueue(conn, "chat_log", key) for key in ("a", "b", "c")])
    signal = runtime.outbox_signal
    assert [signal.wait(0) for _ in range(4)] == [True, True, True, False]  # one wake per new item

    worker = Worker.for_runtime(runtime)
    assert worker.run_once() == 3
    sent = sent_statements(runtime.engine, monkeypatch)
    rounds = iter([("d",), ("e", "f"), ()])

    def wait(timeout: float) -> bool:
        """The thread's waits: woken by what is pending, else new items arrive, then it is stopped."""
        if signal.wait(0):
            return True
        keys = next(rounds)
        if not keys:
            worker._stop.set()
            return False
        runtime.intake.writer.run(lambda conn: [enqueue(conn, "chat_log", key) for key in keys])
        return signal.wait(0)

    worker._wait = wait
    worker._loop()
    looks = [sql for sql, _ in sent if sql.startswith("SELECT outbox.id \nFROM")]
    assert len(looks) == 1  # the first pass polls and finds nothing; the woken ones do not look
    assert {r["key"]: r["status"] for r in outbox_rows(runtime)} == {k: "done" for k in "abcdef"}


@pytest.mark.parametrize("chat_count", [1, 3], ids=["one-item", "batch"])
def test_chat_logs_cut_short_by_the_shutdown_are_given_back_without_an_error(platform, runtime, crm, caplog,
                                                                            chat_count):
    import logging

    from crmconnector.group_commit import WriterClosed

    chat_ids = [f"s{n}" for n in range(chat_count)]
    for chat_id in chat_ids:
        platform.post("chat.started", started(chat_id))
        platform.post("chat.ended", ended(60, chat_id))
    worker = make_worker(runtime, name="stopping")
    items = worker.claim(limit=chat_count)

    def closed(work):
        raise WriterClosed("the connector is shutting down")
    worker._write = closed  # the intake's writer closed after the claim: the process is stopping
    with caplog.at_level(logging.INFO):
        worker.process_many(items)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    assert {r["status"] for r in outbox_rows(runtime)} == {"running"}
    worker.stop()
    assert {r["status"] for r in outbox_rows(runtime)} == {"pending"}
    assert all(len(tasks(crm, chat_id)) == 1 for chat_id in chat_ids)  # written once; the next start updates it


class _RefusesSearches(FlakyCRM):
    """Searches fail `retryable` times (chat.started's, then the outbox's), then the CRM refuses them
    (an object the org will not search) until `refusing` is cleared."""

    def __init__(self, inner, retryable=0):
        super().__init__(inner, RuntimeError, failures=0)
        self.retryable, self.refusing = retryable, True

    def find_by_phone(self, *args, **kwargs):
        if self.retryable:
            self.retryable -= 1
            raise RetryableCRMError("Service Unavailable", status=503)
        if self.refusing:
            raise CRMRejected("sObject type 'Lead' is not supported", code="INVALID_TYPE", status=400)
        return self.inner.find_by_phone(*args, **kwargs)


@pytest.mark.parametrize("retryable", [0, 2], ids=["refused-at-once", "refused-after-a-retry"])
def test_an_ended_chat_whose_match_the_crm_refuses_shows_failed_until_the_retry_posts_it(platform, runtime, crm,
                                                                                      retryable):
    """The chat log waits for the match; a refused match waits for the admin, so its chat is failed
    with the CRM's error, not pending for ever. Re-queued, it is pending again, then posted."""
    from crmconnector.sync.worker import retry_failed

    refusing = _RefusesSearches(crm, retryable)
    use_crm(runtime, refusing)
    platform.start_chat()
    platform.post("chat.ended", ended(60))
    clock = Clock()
    _drain(runtime, make_worker(runtime, clock), clock)
    error = "INVALID_TYPE: sObject type 'Lead' is not supported"
    assert _crm_status(runtime) == ("failed", error, "pending")
    refusing.refusing = False
    assert retry_failed(runtime.engine) == 1
    assert _crm_status(runtime) == ("pending", None, "pending")
    _drain(runtime, make_worker(runtime, clock), clock)
    assert len(tasks(crm)) == 1
    assert _crm_status(runtime) == ("posted", None, "none")


def test_a_late_message_does_not_cut_short_a_backoff_after_a_crm_error(platform, runtime, crm):
    platform.start_chat()
    platform.post("chat.ended", ended(60))
    use_crm(runtime, FlakyCRM(crm, lambda: RetryableCRMError("Service Unavailable", status=503), failures=1))
    clock = Clock()
    worker = make_worker(runtime, clock)
    assert worker.run_once() == 1
    platform.post("chat.message", {"chat": {"id": "2415"}, "message": {
        "id": "late", "sender": "consumer", "text": "one more thing", "sent_at": "2026-11-21T17:03:40Z"}})
    assert worker.run_once() == 0  # the CRM asked for a pause: the late message waits with the item
    clock.advance(700)
    assert worker.run_once() == 1
    [task] = tasks(crm)
    assert "one more thing" in task.fields["Description"]
