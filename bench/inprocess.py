"""One connector process without HTTP: where the intake writer's time goes.

Builds the app as `crmconnector serve` does (pool, outbox threads, scheduler, LocalCRM) on a throwaway
PostgreSQL server (or SQLite with `--db sqlite`) and drives its WSGI callable from `--threads` threads,
each sending whole signed chats (started, assigned, messages, ended) one event after the other. After
each round the outbox is drained. Reports events/s, the process's CPU per event (every thread: callers,
writer, outbox), and the intake writer's batches: items per batch (events, and the outbox's claims and
finishes, which go through the writer too), its wall time and CPU per item. No client process and
no sockets of its own, so the numbers move less with the host than `bench/load.py`'s (still by a third:
compare runs interleaved).

    python bench/inprocess.py --threads 16 --chats 640 --rounds 2 [--without-chat-log]
"""
from __future__ import annotations

import argparse
import io
import json
import logging
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from crmconnector.signatures import HEADER, sign  # noqa: E402
from tests.instances import SECRET, chat_stream, envelope  # noqa: E402
from tests.pg import PgServer  # noqa: E402

_SIGNATURE_KEY = "HTTP_" + HEADER.upper().replace("-", "_")


class WriterClock:
    """Wall and CPU time the intake writer spends in its batches (wraps GroupCommitter._commit)."""

    def __init__(self) -> None:
        from crmconnector import group_commit

        self.items = self.batches = 0
        self.wall = self.cpu = 0.0
        inner = group_commit.GroupCommitter._commit

        def timed(committer: Any, batch: list[Any]) -> None:
            wall, cpu = time.perf_counter(), time.thread_time()
            inner(committer, batch)
            self.wall += time.perf_counter() - wall
            self.cpu += time.thread_time() - cpu
            self.items += len(batch)
            self.batches += 1
        group_commit.GroupCommitter._commit = timed  # type: ignore[method-assign]

    def reset(self) -> None:
        self.items = self.batches = 0
        self.wall = self.cpu = 0.0


def post(app: Any, body: bytes) -> None:
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/callbacks/events", "CONTENT_LENGTH": str(len(body)),
               "CONTENT_TYPE": "application/json", _SIGNATURE_KEY: sign(body, SECRET),
               "wsgi.input": io.BytesIO(body)}
    statuses: list[str] = []
    answer = b"".join(app(environ, lambda status, headers: statuses.append(status)))
    if not statuses[0].startswith("2"):
        raise RuntimeError(f"{statuses[0]}: {answer.decode()}")


def send_chats(app: Any, prefix: str, count: int, messages: int) -> None:
    for n in range(count):
        for event_id, kind, data in chat_stream(f"{prefix}{n}", messages):
            post(app, envelope(event_id, kind, data))


def outbox_left(engine: Any) -> int:
    from sqlalchemy import func, select

    from crmconnector.store import outbox, reading

    with reading(engine) as conn:
        return int(conn.execute(select(func.count()).select_from(outbox)
                                .where(outbox.c.status.in_(("pending", "running")))).scalar_one())


def run(args: argparse.Namespace) -> None:
    pg = PgServer.start() if args.db == "postgres" else None
    folder = Path(tempfile.mkdtemp(prefix="crmconnector-inprocess-"))
    try:
        url = pg.socket_url(pg.migrated_database()) if pg else f"sqlite:///{folder / 'state.db'}"
        os.environ.update({"CRMCONNECTOR_DATABASE_URL": url, "CRMCONNECTOR_CALLBACK_SECRETS": SECRET,
                           "CRMCONNECTOR_INSTANCE_PATH": str(folder / "instance"), "CRMCONNECTOR_CRM": "local",
                           "CRMCONNECTOR_ABANDONED_TICKETS": "off"})
        clock = WriterClock()
        if args.without_chat_log:
            from crmconnector.sync import handlers

            from crmconnector.sync.worker import finish_done

            handlers.HANDLERS["chat_log"] = lambda worker, item: None  # the item is only finished
            handlers.BATCH_HANDLERS["chat_log"] = lambda worker, items: worker.write(
                lambda conn: [finish_done(conn, item) for item in items])
        from webapp.wsgi import build_app

        app = build_app()
        runtime = app.extensions["crmconnector"]
        send_chats(app, "warm", 20, args.messages)
        per_thread = max(1, args.chats // args.threads)
        for round_number in range(args.rounds):
            clock.reset()
            before, begin = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
            threads = [threading.Thread(target=send_chats, args=(app, f"r{round_number}t{t}c", per_thread,
                                                                 args.messages))
                       for t in range(args.threads)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            wall = time.perf_counter() - begin
            while outbox_left(runtime.engine):  # the chat logs are part of each event's cost
                time.sleep(0.05)
            after = resource.getrusage(resource.RUSAGE_SELF)
            sent = per_thread * args.threads * (args.messages + 3)
            cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
            print(json.dumps({
                "db": args.db, "threads": args.threads, "events": sent, "events_per_s": round(sent / wall),
                "cpu_ms_per_event": round(cpu * 1000 / sent, 3),
                "writer_batch_items": round(clock.items / max(clock.batches, 1), 1),
                "writer_wall_ms_per_item": round(clock.wall * 1000 / max(clock.items, 1), 3),
                "writer_cpu_ms_per_item": round(clock.cpu * 1000 / max(clock.items, 1), 3)}), flush=True)
    finally:
        logging.disable()  # the Runtime's threads would report the server's going away as an outage
        if pg is not None:
            pg.destroy()
        os._exit(0)  # the Runtime's threads need not be stopped one by one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=["sqlite", "postgres"], default="postgres")
    parser.add_argument("--threads", type=int, default=16, help="calling threads (concurrent requests)")
    parser.add_argument("--chats", type=int, default=640, help="chats per round, spread over the threads")
    parser.add_argument("--messages", type=int, default=6, help="messages per chat")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--without-chat-log", action="store_true",
                        help="chat logs only finish their outbox item (no state read, no Task): what their CPU "
                             "costs the callbacks of the same process")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
