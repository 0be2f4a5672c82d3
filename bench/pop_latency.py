"""Screen-pop latency in a real browser: from posting a signed chat.assigned to the pop shown in the
agent console (server-sent events), on the production server (`crmconnector serve`: granian, outbox worker
and scheduler running) and the embedded CRM.

Needs Debian's /usr/bin/chromium and Playwright. Prints p50/p90/p99/max over N chats. With several
workers (serve's default: one per core) a pop is taken by any of them, while the console streams from one.
Usage: python bench/pop_latency.py [N] [--workers N|auto]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import requests
from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crmconnector import agents  # noqa: E402
from crmconnector.cli import auto_workers  # noqa: E402
from crmconnector.runtime import Runtime  # noqa: E402
from crmconnector.settings import Settings  # noqa: E402
from crmconnector.signatures import HEADER, sign  # noqa: E402
from tests.instances import ADMIN_TOKEN, SECRET, Instance  # noqa: E402
from tests.pg import free_port  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def post(base: str, event_type: str, data: dict) -> None:
    body = json.dumps({"id": f"evt_{time.monotonic_ns()}", "type": event_type, "data": data}).encode()
    response = requests.post(f"{base}/callbacks/events", data=body, timeout=10,
                             headers={HEADER: sign(body, SECRET), "Content-Type": "application/json"})
    response.raise_for_status()


def main(count: int, workers: str) -> None:
    folder = Path(tempfile.mkdtemp(prefix="pop-latency-"))
    database_url = f"sqlite:///{folder / 'state.db'}"
    processes = auto_workers(database_url) if workers == "auto" else int(workers)
    server = Instance(database_url, folder, free_port(), threads=16, workers=processes).start()
    base = server.url
    # The bench's own Runtime only writes the fixtures (a contact, the agent) in the server's database.
    settings = Settings(database_url=server.database_url, callback_secrets=(SECRET,), admin_token=ADMIN_TOKEN,
                        instance_path=str(folder / "bench"), public_url=base, run_background=False)
    runtime = Runtime(settings)
    runtime.crm.create("Contact", {"FirstName": "Becky", "LastName": "Thatcher", "Phone": "+14155550132"})
    agent = agents.add_agent(runtime.engine, "tom@example.com", "Tom Sawyer")
    link = agents.sign_in_link(runtime.engine, settings, agent)
    latencies = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        page = browser.new_page()
        page.goto(link)
        page.wait_for_function("window.crmConsole !== undefined")
        time.sleep(0.5)
        for n in range(count):
            chat_id = f"bench-{n}"
            post(base, "chat.started", {"chat": {"id": chat_id, "consumer_number": "+14155550132"}})
            start = time.perf_counter()
            post(base, "chat.assigned", {"chat": {"id": chat_id}, "agent": {"email": "tom@example.com"},
                                         "assigned_at": "2026-11-21T17:03:11Z"})
            page.wait_for_selector(f'[data-chat-id="{chat_id}"]', timeout=10_000)
            latencies.append((time.perf_counter() - start) * 1000)
        browser.close()
    runtime.close()
    assert server.stop() == 0, server.log_tail()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(round(p / 100 * (len(latencies) - 1))))]

    print(f"pop latency over {count} chats with {processes} worker(s) (chat.assigned POST -> pop in the console), ms: "
          f"p50 {statistics.median(latencies):.0f}, p90 {pct(90):.0f}, p99 {pct(99):.0f}, max {latencies[-1]:.0f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("count", nargs="?", type=int, default=100, help="chats, one after the other")
    parser.add_argument("--workers", default="auto", help="worker processes, or auto: what `serve` starts")
    arguments = parser.parse_args()
    main(arguments.count, arguments.workers)
