"""Abandoned-call tickets at volume: 10,000 calls through the ticket job and SalesforceCRM.

Salesforce is the stateful fake org of the test suite, served through `responses` (no network), taking
100 ms per request. The calls arrive as signed `call.abandoned` events through the intake; 10 % of the
callers are Contacts in the org (half of them with an Account). The job then runs once, and we count the
requests that reached the org by kind (SOSL searches, SOQL look-ups, sObject Collections creates),
the wall time, and check that every call has exactly one Case. A second run shows the steady state
(nothing to do, no request). A last part repeats one batch after a lost answer, to show the cost of
the crash-safety look-up.

    .venv/bin/python bench/abandoned.py [--calls 10000] [--latency 0.1]
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import responses  # noqa: E402

from crmconnector.metrics import REGISTRY  # noqa: E402
from crmconnector.runtime import Runtime  # noqa: E402
from crmconnector.settings import Settings  # noqa: E402
from crmconnector.signatures import sign  # noqa: E402
from crmconnector.sync.abandoned import run_abandoned_tickets  # noqa: E402
from tests.fake_salesforce import LOGIN_URL, VERSION, FakeSalesforce  # noqa: E402

SECRET = "bench-secret"


def settings_for(folder: str) -> Settings:
    return Settings(database_url=f"sqlite:///{folder}/state.db", crm="salesforce", callback_secrets=(SECRET,),
                    admin_token="bench", instance_path=f"{folder}/instance", run_background=False,
                    abandoned_tickets="with_sms", salesforce_login_url=LOGIN_URL, salesforce_client_id="client",
                    salesforce_client_secret="secret", salesforce_api_version=VERSION)


def number(n: int) -> str:
    return f"+1415{2000000 + n:07d}"


def seed_org(fake: FakeSalesforce, calls: int) -> None:
    """Every tenth caller is a Contact; every other such Contact belongs to an Account."""
    for n in range(0, calls, 10):
        fields = {"LastName": f"Caller {n}", "Phone": number(n)}
        if n % 20 == 0:
            fields["AccountId"] = fake.insert("Account", {"Name": f"Company {n}"})
        fake.insert("Contact", fields)


def post_calls(runtime: Runtime, calls: int) -> float:
    started = time.perf_counter()
    for n in range(calls):
        body = json.dumps({"id": f"evt-{n}", "type": "call.abandoned", "occurred_at": "2026-11-21T17:04:41Z",
                           "data": {"call": {
                               "id": f"call-{n}", "caller_number": number(n), "dialed_number": "+18882468888",
                               "queue": {"id": "12", "name": "Fence painting"}, "lang": "en",
                               "started_at": "2026-11-21T17:02:10Z", "abandoned_at": "2026-11-21T17:04:40Z",
                               "wait_seconds": 150, "wait_time_sms": {"status": "allowed", "messages": [
                                   {"id": "m1", "text": f"Please call me back about job {n}",
                                    "sent_at": "2026-11-21T17:03:30Z"}]}}}}).encode()
        outcome = runtime.intake.handle(body, "application/json", sign(body, SECRET))
        if outcome.status != 202:
            raise RuntimeError(f"call.abandoned: {outcome.status} {outcome.body}")
    return time.perf_counter() - started


def counts() -> Counter[str]:
    """Requests sent to Salesforce so far, by kind (the connector's own metric)."""
    found: Counter[str] = Counter()
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == "crmconnector_crm_requests_total" and sample.labels.get("backend") == "salesforce":
                found[sample.labels["kind"]] += int(sample.value)
    return found


def run(calls: int, latency: float) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as folder, responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeSalesforce().install(rsps)
        seed_org(fake, calls)
        runtime = Runtime(settings_for(folder))
        try:
            intake_seconds = post_calls(runtime, calls)
            fake.latency = latency
            before = counts()
            started, cpu = time.perf_counter(), time.process_time()
            first = run_abandoned_tickets(runtime)
            elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
            used = counts() - before
            cases = list(fake.records["Case"].values())
            subjects = Counter(c["Subject"] for c in cases)
            assert first.created == calls and first.failed == 0, first.summary()
            assert len(cases) == calls and max(subjects.values()) == 1
            linked = sum(1 for c in cases if c.get("ContactId"))
            with_account = sum(1 for c in cases if c.get("AccountId"))

            before = counts()
            second = run_abandoned_tickets(runtime)
            again = counts() - before
            assert second.created == 0 and len(fake.records["Case"]) == calls
            return {"calls": calls, "latency_ms": latency * 1000, "intake_seconds": round(intake_seconds, 1),
                    "wall_seconds": round(elapsed, 1), "cpu_seconds": round(cpu, 1), "requests": dict(used), "total": sum(used.values()),
                    "cases": len(cases), "linked_contacts": linked, "linked_accounts": with_account,
                    "second_run_requests": sum(again.values())}
        finally:
            runtime.close()


def lost_answer(latency: float) -> dict[str, Any]:
    """One batch of 200 whose create answer is lost: the next run looks the Cases up, creates none."""
    with tempfile.TemporaryDirectory() as folder, responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeSalesforce().install(rsps)
        runtime = Runtime(settings_for(folder))
        try:
            post_calls(runtime, 200)
            fake.latency = latency
            fake.drop_next_answer = True
            first = run_abandoned_tickets(runtime)
            before = counts()
            second = run_abandoned_tickets(runtime)
            used = counts() - before
            assert first.created == 0 and second.existing == 200 and len(fake.records["Case"]) == 200
            return {"calls": 200, "first_run": first.error, "recovery_requests": dict(used),
                    "cases": len(fake.records["Case"])}
        finally:
            runtime.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds the org takes per request")
    args = parser.parse_args()
    result = run(args.calls, args.latency)
    requests = result["requests"]
    creates, searches = requests.get("collection", 0), requests.get("search", 0)
    print(json.dumps(result, indent=2))
    print(f"Case-creation requests: {creates} (target <= {math.ceil(args.calls / 200)})")
    print(f"match requests (SOSL):  {searches} (target <= {math.ceil(args.calls / 50)})")
    print(f"wall time: {result['wall_seconds']} s for {args.calls} calls at {result['latency_ms']:.0f} ms a request "
          f"(CPU {result['cpu_seconds']} s, this process: the job and the fake org)")
    print(json.dumps(lost_answer(args.latency), indent=2))


if __name__ == "__main__":
    main()
