"""Latency of a signed `chat.started` through the app on LocalCRM holding 10k, 100k and 1M contacts.

Each request goes through the whole callback path (signature, validation, idempotency record, the
match on the phone index, the screen-pop decision, the chat row) with Flask's test client, so the
figures are the server's own time without network. Contacts are bulk-loaded with phones written in
varied formats; consumers are a mix of numbers that match one contact and numbers that match none.

    python bench/match_latency.py                       # 10k, 100k, 1M (takes a few minutes)
    python bench/match_latency.py --sizes 10000,100000 --requests 1000
"""
from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crmconnector.crm import ids  # noqa: E402
from crmconnector.runtime import Runtime  # noqa: E402
from crmconnector.settings import Settings  # noqa: E402
from crmconnector.signatures import HEADER, sign  # noqa: E402
from webapp import create_app  # noqa: E402

SECRET = "bench-secret"
FORMATS = ("({a}) {e}-{l}", "{a}.{e}.{l}", "+1 {a} {e} {l}", "1-{a}-{e}-{l}", "{a}{e}{l}",
           "+1{a}{e}{l} x12", "tel:+1-{a}-{e}-{l}")


def parts(i: int) -> tuple[int, int, int]:
    """Area code, exchange and line of contact i: distinct, valid-looking US numbers for i < 6.4e9."""
    return 200 + i % 800, 200 + (i // 800) % 800, (i // 640_000) % 10_000


def e164(i: int) -> str:
    a, e, line = parts(i)
    return f"+1{a}{e}{line:04d}"


def written(i: int, style: int) -> str:
    a, e, line = parts(i)
    return FORMATS[style % len(FORMATS)].format(a=a, e=e, l=f"{line:04d}")


def contacts(start: int, stop: int) -> Iterator[dict[str, Any]]:
    for i in range(start, stop):
        row = {"Id": ids.new_id("Contact", i), "FirstName": f"First{i}", "LastName": f"Last{i}",
               "Phone": written(i, i)}
        if i % 3 == 0:
            row["MobilePhone"] = written(i + 7_000_000_000, i + 1)  # a second number nobody asks for
        yield row


def load(runtime: Runtime, start: int, stop: int, batch: int = 20_000) -> float:
    began = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for row in contacts(start, stop):
        rows.append(row)
        if len(rows) >= batch:
            runtime.crm.bulk_load("Contact", rows)
            rows = []
    if rows:
        runtime.crm.bulk_load("Contact", rows)
    return time.perf_counter() - began


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def post_chats(client: Any, size: int, requests: int, rng: random.Random, tag: str,
               timings: list[float], cpu: list[float], outcomes: dict[str, int]) -> None:
    for n in range(requests):
        hit = rng.random() < 0.8
        number = e164(rng.randrange(size)) if hit else e164(size + 5_000_000 + rng.randrange(1_000_000))
        body = json.dumps({"id": f"evt-{tag}-{n}", "type": "chat.started", "occurred_at": "2026-11-21T17:03:11Z",
                           "data": {"chat": {"id": f"{tag}-{n}", "direction": "inbound", "consumer_number": number,
                                             "business_number": "+18882468888", "lang": "en"}}}).encode()
        headers = {HEADER: sign(body, SECRET), "Content-Type": "application/json"}
        began, began_cpu = time.perf_counter(), time.process_time()
        response = client.post("/callbacks/events", data=body, headers=headers)
        timings.append((time.perf_counter() - began) * 1000)
        cpu.append((time.process_time() - began_cpu) * 1000)
        assert response.status_code == 200, response.get_data(as_text=True)
        outcome = response.json["match"]["outcome"]
        outcomes[outcome] += 1
        assert outcome == ("single" if hit else "none"), (number, outcome)


def summary(size: int, timings: list[float], cpu: list[float], outcomes: dict[str, int]) -> dict[str, Any]:
    return {"contacts": size, "requests": len(timings), "p50_ms": round(percentile(timings, 0.50), 2),
            "p90_ms": round(percentile(timings, 0.90), 2), "p99_ms": round(percentile(timings, 0.99), 2),
            "max_ms": round(max(timings), 2), "mean_ms": round(statistics.fmean(timings), 2),
            "cpu_p50_ms": round(percentile(cpu, 0.50), 2), "cpu_p99_ms": round(percentile(cpu, 0.99), 2),
            "outcomes": outcomes}


def open_instance(workdir: Path, size: int) -> tuple[Runtime, Any]:
    """A connector whose LocalCRM holds `size` contacts (kept in `workdir` for the next run)."""
    settings = Settings(database_url=f"sqlite:///{workdir / f'contacts-{size}.db'}", callback_secrets=(SECRET,),
                        admin_token="bench-admin", instance_path=str(workdir / "instance"),
                        public_url="http://connector.bench", run_background=False)
    runtime = Runtime(settings)
    have = count_contacts(runtime)
    if have != size:
        seconds = load(runtime, have, size)
        print(f"loaded {size - have:,} contacts in {seconds:.1f} s ({(size - have) / seconds:,.0f}/s)",
              file=sys.stderr)
    return runtime, create_app(runtime=runtime, background=False).test_client()


def count_contacts(runtime: Runtime) -> int:
    with runtime.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM crm_contact")).scalar() or 0)


def query_plan(runtime: Runtime) -> str:
    with runtime.engine.connect() as conn:
        rows = conn.execute(text("EXPLAIN QUERY PLAN SELECT object, record_id FROM crm_phone_index "
                                 "WHERE e164 IN ('+14155550132') AND object IN ('Contact')")).all()
    return "; ".join(str(row[-1]) for row in rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--dir", default=None,
                        help="where the benchmark databases go; kept and reused by the next run (default: a temp dir)")
    parser.add_argument("--json", default=None, help="also write the results to this file")
    args = parser.parse_args()
    sizes = sorted(int(s) for s in args.sizes.split(","))
    workdir = Path(args.dir or tempfile.mkdtemp(prefix="match-latency-"))
    workdir.mkdir(parents=True, exist_ok=True)
    instances = {size: open_instance(workdir, size) for size in sizes}
    rng = random.Random(20261122)
    run = uuid.uuid4().hex[:8]  # event and chat ids stay unique when the databases are reused
    timings: dict[int, list[float]] = {size: [] for size in sizes}
    cpu: dict[int, list[float]] = {size: [] for size in sizes}
    outcomes = {size: {"single": 0, "none": 0, "multiple": 0} for size in sizes}
    try:
        for size, (_, client) in instances.items():
            post_chats(client, size, args.warmup, rng, f"{run}-warm{size}", [], [], dict(outcomes[size]))
        # Sizes take turns, so a busy moment on the machine falls on all of them alike.
        rounds = 10
        for turn in range(rounds):
            for size, (_, client) in instances.items():
                post_chats(client, size, args.requests // rounds, rng, f"{run}-{size}-{turn}",
                           timings[size], cpu[size], outcomes[size])
        results = [summary(size, timings[size], cpu[size], outcomes[size]) for size in sizes]
        for result in results:
            print(json.dumps(result), file=sys.stderr)
        plan = query_plan(instances[sizes[-1]][0])
    finally:
        for runtime, _ in instances.values():
            runtime.close()
    print(f"phone lookup plan: {plan}\n")
    print("| contacts | requests | p50 ms | p90 ms | p99 ms | max ms | mean ms | CPU p50 ms | CPU p99 ms |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['contacts']:,} | {r['requests']:,} | {r['p50_ms']} | {r['p90_ms']} | {r['p99_ms']} | "
              f"{r['max_ms']} | {r['mean_ms']} | {r['cpu_p50_ms']} | {r['cpu_p99_ms']} |")
    if len(results) > 1:
        first, last = results[0], results[-1]
        print(f"\ngrowth {first['contacts']:,} -> {last['contacts']:,} contacts "
              f"(x{last['contacts'] / first['contacts']:,.0f}): p50 x{last['p50_ms'] / first['p50_ms']:.2f}, "
              f"p99 x{last['p99_ms'] / first['p99_ms']:.2f}; log2 of the size grows "
              f"x{math.log2(last['contacts']) / math.log2(first['contacts']):.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "plan": plan}, indent=2))


if __name__ == "__main__":
    main()
