"""Exactly one Case per call: repeated runs, concurrent runners, CRM outages and rejected rows."""
from __future__ import annotations

import multiprocessing
import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from crmconnector.store import abandoned_calls, job_runs, leases, utcnow
from crmconnector.sync import leases as lease_store
from crmconnector.sync.abandoned import JOB_NAME, retry_failed_calls, run_abandoned_tickets
from tests.abandoned_support import FlakyCRM, MediaHost, post_call, run_job_in_process


@pytest.fixture
def flaky(runtime):
    runtime.crm = FlakyCRM(runtime.engine, base_url="http://connector.test", region="US")
    return runtime.crm


def _statuses(runtime):
    with runtime.engine.connect() as conn:
        return {r.id: (r.status, r.error) for r in conn.execute(select(abandoned_calls))}


def _subjects(crm):
    return sorted(c.fields["Subject"] for c in crm.query("Case", {"Origin": "Phone"}, limit=10_000))


def _post_many(platform, count, prefix="k"):
    for i in range(count):
        post_call(platform, f"{prefix}{i:03d}", f"+1415555{2000 + i}")


# -- leases -------------------------------------------------------------------------------------------

def test_a_lease_has_one_holder_until_it_expires_or_is_released(runtime):
    engine = runtime.engine
    assert lease_store.acquire(engine, "job", "a", 60)
    assert not lease_store.acquire(engine, "job", "b", 60)
    assert lease_store.acquire(engine, "job", "a", 60)  # the holder may extend it
    assert lease_store.renew(engine, "job", "a", 60)
    assert not lease_store.renew(engine, "job", "b", 60)
    assert lease_store.holder_of(engine, "job")[0] == "a"
    lease_store.release(engine, "job", "b")  # not b's to release
    assert lease_store.holder_of(engine, "job")[0] == "a"
    lease_store.release(engine, "job", "a")
    assert lease_store.holder_of(engine, "job") is None
    assert lease_store.acquire(engine, "job", "b", 60)


def test_an_expired_lease_is_taken_over_and_its_old_holder_cannot_renew(runtime):
    engine = runtime.engine
    with engine.begin() as conn:
        conn.execute(leases.insert().values(name="job", holder="crashed", until=utcnow() - timedelta(seconds=1)))
    assert lease_store.acquire(engine, "job", "b", 60)
    assert not lease_store.renew(engine, "job", "crashed", 60)
    lease = lease_store.Lease(engine, "job", 60, holder="crashed")
    with pytest.raises(lease_store.LeaseLost):
        lease.renew()


def test_racing_threads_get_the_lease_exactly_once(runtime):
    barrier = threading.Barrier(8)
    wins: list[str] = []

    def contend(n: int) -> None:
        barrier.wait()
        if lease_store.acquire(runtime.engine, "race", f"holder-{n}", 60):
            wins.append(f"holder-{n}")

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1
    assert lease_store.holder_of(runtime.engine, "race")[0] == wins[0]


def test_the_job_does_nothing_while_another_runner_holds_its_lease(platform, runtime, crm):
    post_call(platform)
    assert lease_store.acquire(runtime.engine, JOB_NAME, "another-instance", 60)
    result = run_abandoned_tickets(runtime)
    assert result.busy and result.created == 0
    assert "another runner" in result.summary()
    assert _statuses(runtime)["c-100"][0] == "new"
    lease_store.release(runtime.engine, JOB_NAME, "another-instance")
    assert run_abandoned_tickets(runtime).created == 1


def test_a_crashed_runners_lease_expires_and_the_job_goes_on(platform, runtime, crm):
    post_call(platform)
    with runtime.engine.begin() as conn:
        conn.execute(leases.insert().values(name=JOB_NAME, holder="crashed", until=utcnow() - timedelta(seconds=1)))
    assert run_abandoned_tickets(runtime).created == 1
    assert lease_store.holder_of(runtime.engine, JOB_NAME) is None  # released after the run


# -- concurrent runners --------------------------------------------------------------------------------

def test_two_processes_started_together_leave_exactly_one_case_per_call(platform, runtime, crm, settings, tmp_path):
    _post_many(platform, 30)
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(2), context.Queue()
    workers = [context.Process(target=run_job_in_process,
                               args=(settings.database_url, str(tmp_path / f"i{n}"), barrier, results))
               for n in range(2)]
    for worker in workers:
        worker.start()
    outcomes = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    assert [w.exitcode for w in workers] == [0, 0]
    assert all(error is None for *_, error in outcomes)
    assert sum(created for created, *_ in outcomes) == 30
    subjects = _subjects(crm)
    assert len(subjects) == len(set(subjects)) == 30
    assert {status for status, _ in _statuses(runtime).values()} == {"ticketed"}


def test_two_runtimes_in_threads_leave_exactly_one_case_per_call(platform, runtime, crm, settings):
    from crmconnector.runtime import Runtime

    _post_many(platform, 25)
    others = [Runtime(settings, migrate_schema=False) for _ in range(2)]
    barrier = threading.Barrier(2)
    results = []

    def run(rt) -> None:
        barrier.wait()
        results.append(run_abandoned_tickets(rt, batch_size=5, fetcher=MediaHost({})))

    threads = [threading.Thread(target=run, args=(rt,)) for rt in others]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for rt in others:
        rt.close()
    assert sum(r.created for r in results) == 25
    assert len(set(_subjects(crm))) == len(_subjects(crm)) == 25


# -- CRM failures --------------------------------------------------------------------------------------

def test_with_the_crm_down_the_calls_wait_for_the_next_run(platform, runtime, flaky):
    _post_many(platform, 3)
    flaky.down = True
    result = run_abandoned_tickets(runtime, fetcher=MediaHost({}))
    assert result.error == "CRM unavailable: SERVER_UNAVAILABLE: Service Unavailable"
    assert (result.created, result.left, result.failed) == (0, 3, 3)
    assert "3 call(s) wait for the next run" in result.summary()
    assert {s for s, _ in _statuses(runtime).values()} == {"new"}
    with runtime.engine.connect() as conn:
        run = conn.execute(select(job_runs)).mappings().one()
    assert (run["status"], run["created"], run["failed"]) == ("error", 0, 3)
    assert "SERVER_UNAVAILABLE" in run["error"]

    flaky.down = False
    again = run_abandoned_tickets(runtime, fetcher=MediaHost({}))
    assert (again.created, again.left, again.error) == (3, 0, None)
    assert len(_subjects(flaky)) == 3


def test_an_outage_in_the_middle_keeps_what_was_done_and_leaves_the_rest(platform, runtime, flaky):
    _post_many(platform, 6)
    flaky.creates_until_down = 1  # the first batch goes through, the second meets the outage
    result = run_abandoned_tickets(runtime, batch_size=3, fetcher=MediaHost({}))
    assert (result.created, result.left) == (3, 3)
    statuses = _statuses(runtime)
    assert sorted(s for s, _ in statuses.values()) == ["new"] * 3 + ["ticketed"] * 3
    flaky.down, flaky.creates_until_down = False, None
    assert run_abandoned_tickets(runtime, batch_size=3, fetcher=MediaHost({})).created == 3
    assert len(set(_subjects(flaky))) == 6


def test_a_row_the_crm_rejects_is_failed_with_its_error_and_the_batch_goes_on(platform, runtime, flaky):
    _post_many(platform, 3)
    post_call(platform, "with-media", "+14155550199", messages=[
        {"id": "m1", "text": "pic", "sent_at": "2026-11-21T17:03:30Z", "media": [{"url": "https://m.example/a.jpg"}]}])
    flaky.rejected_phones = {"+14155552001", "+14155550199"}
    result = run_abandoned_tickets(runtime, fetcher=MediaHost({"https://m.example/a.jpg": b"a"}))
    assert result.created == 2
    assert sorted(call for call, _ in result.rejected) == ["k001", "with-media"]
    expected = "FIELD_CUSTOM_VALIDATION_EXCEPTION: SuppliedPhone: the number is blocked by a validation rule"
    statuses = _statuses(runtime)
    assert statuses["k001"] == ("failed", expected)
    assert statuses["with-media"] == ("failed", expected)
    assert statuses["k000"][0] == statuses["k002"][0] == "ticketed"
    assert f"call k001: {expected}" in result.summary()
    assert run_abandoned_tickets(runtime).created == 0  # failed calls are not retried by themselves

    flaky.rejected_phones = set()
    assert retry_failed_calls(runtime.engine) == 2
    assert run_abandoned_tickets(runtime, fetcher=MediaHost({"https://m.example/a.jpg": b"a"})).created == 2
    assert len(_subjects(flaky)) == 4


def test_each_batch_costs_one_search_and_one_create(platform, runtime, flaky):
    _post_many(platform, 7)
    run_abandoned_tickets(runtime, batch_size=3, fetcher=MediaHost({}))
    assert flaky.calls == ["find_by_phone", "create_many"] * 3


def test_a_timeout_after_the_crm_wrote_the_batch_creates_no_second_case(platform, runtime, flaky):
    _post_many(platform, 4)
    flaky.lose_next_answer = True
    first = run_abandoned_tickets(runtime, fetcher=MediaHost({}))
    assert (first.created, first.left) == (0, 4)
    assert first.error == "CRM unavailable: TIMEOUT: Salesforce did not answer in time (collection)"
    assert len(_subjects(flaky)) == 4  # written, though we never heard back
    flaky.calls.clear()
    second = run_abandoned_tickets(runtime, fetcher=MediaHost({}))
    assert (second.created, second.existing, second.left) == (0, 4, 0)
    assert flaky.calls == ["find"]  # attempted calls are looked up by subject first; found: no search, no create
    assert len(_subjects(flaky)) == 4
    assert {s for s, _ in _statuses(runtime).values()} == {"ticketed"}


def test_a_caller_the_crm_cannot_search_for_fails_alone(platform, runtime, flaky):
    _post_many(platform, 3)
    flaky.unsearchable = {"+14155552001"}
    result = run_abandoned_tickets(runtime, fetcher=MediaHost({}))
    assert result.created == 2
    assert result.rejected == [("k001", "the CRM rejected the search for the caller's number: "
                                        "INVALID_SEARCH: search term is not valid")]
    # one search for the batch, then one per number to find the culprit, then one create
    assert flaky.calls == ["find_by_phone"] * 4 + ["create_many"]
    assert _statuses(runtime)["k001"][0] == "failed"


def test_a_runner_that_lost_its_lease_stops_before_writing(platform, runtime, crm):
    for call_id in ("m-1", "m-2"):
        post_call(platform, call_id, messages=[{"id": "m1", "text": "pic", "sent_at": "2026-11-21T17:03:30Z",
                                                "media": [{"url": "https://m.example/a.jpg"}]}])
    host = MediaHost({"https://m.example/a.jpg": b"a"})

    def slow_download(item, fallback_name):
        # meanwhile our lease expired and another instance took it
        with runtime.engine.begin() as conn:
            conn.execute(leases.update().where(leases.c.name == JOB_NAME).values(holder="other-instance"))
        return host(item, fallback_name)

    result = run_abandoned_tickets(runtime, fetcher=slow_download)
    assert result.error == "lease 'abandoned-tickets' was taken over by another runner"
    assert result.created == 0
    assert crm.query("Case", {"Origin": "Phone"}) == []
    assert {s for s, _ in _statuses(runtime).values()} == {"new"}
    assert lease_store.holder_of(runtime.engine, JOB_NAME)[0] == "other-instance"  # not released by the loser
