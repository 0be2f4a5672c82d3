"""The `create_record` pop creates one CRM record per chat, however often and wherever chat.started arrives:
a retry that comes while the first delivery is still inside the CRM's create is told to retry (503), and
then gets the first delivery's answer."""
from __future__ import annotations

import threading
from datetime import timedelta

from sqlalchemy import select

from crmconnector import preferences
from crmconnector.crm.errors import CRMRejected, RetryableCRMError
from crmconnector.record_claims import stale_after
from crmconnector.store import chats, created_records, reading, utcnow
from tests.chat_support import Clock, FlakyCRM, make_worker, outbox_rows, started, use_crm

NUMBER = "+14155550132"


class CountingCreates:
    """Delegates to the CRM and counts its creates; `hold` makes the first create wait for `release`."""

    def __init__(self, inner, hold=False):
        self.inner = inner
        self.created = []
        self.entered, self.release = threading.Event(), threading.Event()
        if not hold:
            self.release.set()
        self._calls = 0
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def create(self, object_name, fields):
        with self._lock:
            self._calls += 1
            first = self._calls == 1
        if first:
            self.entered.set()
            assert self.release.wait(30), "the test never let the first create finish"
        record_id = self.inner.create(object_name, fields)
        self.created.append(record_id)
        return record_id


def _create_leads(runtime):
    preferences.save_pop_settings(runtime.engine, {"none": "create_record", "new_record_object": "Lead"})


def _claims(runtime):
    with reading(runtime.engine) as conn:
        return [dict(r) for r in conn.execute(select(created_records)).mappings()]


def _insert_claim(runtime, claimed_at, record_id=None, obj="Lead", chat_id="2415"):
    with runtime.engine.begin() as conn:
        conn.execute(created_records.insert().values(chat_id=chat_id, object=obj, record_id=record_id,
                                                     claimed_at=claimed_at, claim="another-request"))


def test_a_retry_during_the_crms_create_gets_503_then_the_first_answer_and_one_record(app, runtime, crm):
    counting = CountingCreates(crm, hold=True)
    use_crm(runtime, counting)
    _create_leads(runtime)
    from tests.conftest import Platform

    first, retry = Platform(app.test_client()), Platform(app.test_client())
    answers = {}
    thread = threading.Thread(target=lambda: answers.update(first=first.post("chat.started", started(),
                                                                            event_id="evt-start")))
    thread.start()
    try:
        assert counting.entered.wait(30)  # the first delivery is inside the CRM's create
        early = retry.post("chat.started", started(), event_id="evt-start")
    finally:
        counting.release.set()
        thread.join(30)
    assert early.status_code == 503
    assert early.headers["Retry-After"] == "5"
    assert early.json["error"]["code"] == "in_progress"

    response = answers["first"]
    assert response.status_code == 200
    assert response.json["screen_pop"]["action"] == "record"
    lead_id = response.json["screen_pop"]["record_id"]
    assert counting.created == [lead_id]
    assert [r.id for r in crm.find("Lead", "Phone", [NUMBER])] == [lead_id]

    later = retry.post("chat.started", started(), event_id="evt-start")
    assert later.status_code == 200 and later.json == response.json
    assert [(c["chat_id"], c["object"], c["record_id"]) for c in _claims(runtime)] == [("2415", "Lead", lead_id)]


def test_a_claim_with_its_record_pops_that_record_without_creating_another(platform, runtime, crm):
    """The first delivery created the record but could not store the event (the database was away): the
    retry pops the same record."""
    lead_id = crm.create("Lead", {"LastName": "SMS", "Company": "Unknown"})  # no phone: no match
    _insert_claim(runtime, utcnow() - timedelta(minutes=5), record_id=lead_id)
    counting = CountingCreates(crm)
    use_crm(runtime, counting)
    _create_leads(runtime)
    response = platform.start_chat()
    assert response.status_code == 200
    assert response.json["screen_pop"]["record_id"] == lead_id
    assert response.json["linked_record"] == {"object": "Lead", "id": lead_id}
    assert counting.created == []


def test_a_fresh_claim_of_another_instance_answers_503_and_creates_nothing(platform, runtime, crm):
    _insert_claim(runtime, utcnow())
    counting = CountingCreates(crm)
    use_crm(runtime, counting)
    _create_leads(runtime)
    response = platform.start_chat()
    assert response.status_code == 503 and response.headers["Retry-After"] == "5"
    assert counting.created == []
    with reading(runtime.engine) as conn:
        assert conn.execute(select(chats.c.id)).first() is None  # nothing stored: the platform retries


def test_a_stale_claim_of_a_crashed_request_is_taken_over(platform, runtime, crm):
    _insert_claim(runtime, utcnow() - stale_after(runtime.settings) - timedelta(seconds=1))
    counting = CountingCreates(crm)
    use_crm(runtime, counting)
    _create_leads(runtime)
    response = platform.start_chat()
    assert response.status_code == 200
    [lead_id] = counting.created
    assert response.json["screen_pop"]["record_id"] == lead_id
    [claim] = _claims(runtime)
    assert claim["record_id"] == lead_id and claim["claim"] != "another-request"


def test_a_refused_create_releases_the_claim_so_a_later_chat_started_creates(platform, runtime, crm):
    class Refusing(CountingCreates):
        def create(self, object_name, fields):
            raise CRMRejected("Email: required by a validation rule", code="FIELD_CUSTOM_VALIDATION_EXCEPTION")

    use_crm(runtime, Refusing(crm))
    _create_leads(runtime)
    response = platform.start_chat()
    assert response.status_code == 200 and response.json["screen_pop"]["action"] == "new_record"
    assert _claims(runtime) == []

    counting = CountingCreates(crm)
    use_crm(runtime, counting)
    again = platform.start_chat()  # the same chat under another event id, once the org's rule is fixed
    assert again.status_code == 200 and again.json["screen_pop"]["record_id"] == counting.created[0]
    assert len(counting.created) == 1


def test_the_outboxs_late_match_waits_for_the_claim_and_pops_its_record(platform, runtime, crm):
    """The CRM was down during chat.started, so the outbox matches later; meanwhile another request holds
    the chat's claim: the item waits, then pops that request's record, creating none of its own."""
    counting = CountingCreates(crm)
    use_crm(runtime, FlakyCRM(counting, lambda: RetryableCRMError("connection refused"), failures=1))
    _create_leads(runtime)
    assert platform.start_chat().json["match"] is None  # pending: the outbox matches it
    _insert_claim(runtime, utcnow())
    clock = Clock()
    worker = make_worker(runtime, clock)
    worker.run_once()
    [item] = outbox_rows(runtime)
    assert item["status"] == "pending" and "CREATE_IN_PROGRESS" in item["last_error"]
    assert counting.created == []

    lead_id = crm.create("Lead", {"LastName": "SMS", "Company": "Unknown"})
    with runtime.engine.begin() as conn:
        conn.execute(created_records.update().values(record_id=lead_id))
    clock.advance(700)
    worker.run_once()
    assert [r["status"] for r in outbox_rows(runtime)] == ["done"]
    assert counting.created == []
    with reading(runtime.engine) as conn:
        chat = conn.execute(select(chats.c.linked_object, chats.c.linked_id, chats.c.screen_pop)).one()
    assert (chat.linked_object, chat.linked_id, chat.screen_pop["record_id"]) == ("Lead", lead_id, lead_id)


def test_the_outboxs_late_match_creates_through_a_claim(platform, runtime, crm):
    counting = CountingCreates(crm)
    use_crm(runtime, FlakyCRM(counting, lambda: RetryableCRMError("connection refused"), failures=1))
    _create_leads(runtime)
    platform.start_chat()
    make_worker(runtime).run_once()
    [lead_id] = counting.created
    assert [c["record_id"] for c in _claims(runtime)] == [lead_id]


def _race(runtime, times=2):
    """`claim` from several threads released together: what each got (a Claim, or the error's name)."""
    from crmconnector.record_claims import claim

    barrier, results = threading.Barrier(times), []

    def run():
        barrier.wait(30)
        try:
            results.append(claim(runtime.engine, "2415", "Lead", stale_after(runtime.settings)))
        except RetryableCRMError as exc:
            results.append(exc.code)
    threads = [threading.Thread(target=run) for _ in range(times)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_of_requests_claiming_at_once_exactly_one_gets_the_claim(runtime):
    results = _race(runtime, 4)
    assert sorted(r if isinstance(r, str) else "claimed" for r in results) == [
        "CREATE_IN_PROGRESS"] * 3 + ["claimed"]


def test_of_requests_taking_a_stale_claim_over_at_once_exactly_one_gets_it(runtime):
    _insert_claim(runtime, utcnow() - stale_after(runtime.settings) - timedelta(seconds=1))
    results = _race(runtime, 4)
    assert sorted(r if isinstance(r, str) else "claimed" for r in results) == [
        "CREATE_IN_PROGRESS"] * 3 + ["claimed"]
    [claim] = _claims(runtime)
    assert claim["claim"] in {r.token for r in results if not isinstance(r, str)}
