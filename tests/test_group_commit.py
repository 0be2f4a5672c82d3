"""Group commit: work queued while the writer is busy shares one transaction, and a failure in a batch
changes nobody else's answer."""
from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, event, func, select

from crmconnector.group_commit import GroupCommitter
from crmconnector.store import events, make_engine, reading
from tests.conftest import sent_statements, signed_headers
from tests.waiting import wait_for

rows = Table("rows", MetaData(), Column("n", Integer, primary_key=True))


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'gc.db'}")
    rows.metadata.create_all(engine)
    yield engine
    engine.dispose()


def _insert(n: int) -> Callable[[Any], int]:
    def work(conn: Any) -> int:
        conn.execute(rows.insert(), {"n": n})
        return n
    return work


def _hold(writer: GroupCommitter) -> tuple[threading.Event, threading.Thread]:
    """Keep the writer busy inside a transaction until the returned event is set."""
    running, release = threading.Event(), threading.Event()

    def hold(conn: Any) -> None:
        running.set()
        release.wait(10)
    thread = threading.Thread(target=writer.run, args=(hold,))
    thread.start()
    assert running.wait(10)
    return release, thread


def _submit_all(writer: GroupCommitter, works: list[Callable[[Any], Any]]) -> tuple[list[Any], list[threading.Thread]]:
    answers: list[Any] = [None] * len(works)

    def call(i: int) -> None:
        try:
            answers[i] = writer.run(works[i])
        except Exception as exc:  # noqa: BLE001 - the test looks at it
            answers[i] = exc
    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(works))]
    for thread in threads:
        thread.start()
    wait_for(lambda: writer.queued() == len(works))
    return answers, threads


def _stored(engine) -> list[int]:
    with reading(engine) as conn:
        return _stored_in(conn)


def _stored_in(conn) -> list[int]:
    return sorted(conn.execute(select(rows.c.n)).scalars())


def test_work_queued_while_the_writer_is_busy_is_committed_in_one_transaction(engine):
    commits = []
    event.listen(engine, "commit", lambda conn: commits.append(1))
    woken: list[set[str]] = []
    writer = GroupCommitter(engine, woken.append)
    try:
        release, holder = _hold(writer)
        answers, threads = _submit_all(writer, [_insert(n) for n in range(10)])
        release.set()
        for thread in [holder, *threads]:
            thread.join(10)
    finally:
        writer.close()
    assert answers == list(range(10))
    assert _stored(engine) == list(range(10))
    assert len(commits) == 2  # the held one, then the ten together


def test_a_failing_work_gets_its_error_and_the_rest_of_its_batch_is_committed(engine):
    def failing(conn: Any) -> int:
        conn.execute(rows.insert(), {"n": 99})
        raise ValueError("bad event")

    writer = GroupCommitter(engine, lambda wakeups: None)
    try:
        release, holder = _hold(writer)
        answers, threads = _submit_all(writer, [_insert(1), _insert(2), failing, _insert(3)])
        release.set()
        for thread in [holder, *threads]:
            thread.join(10)
    finally:
        writer.close()
    assert answers[:2] == [1, 2] and answers[3] == 3
    assert isinstance(answers[2], ValueError)
    assert _stored(engine) == [1, 2, 3]  # nothing of the failed work


def test_two_writers_commit_everything_and_both_stop_on_close(engine):
    writer = GroupCommitter(engine, lambda wakeups: None, writers=2)
    answers, threads = [], []
    try:
        threads = [threading.Thread(target=lambda n=n: answers.append(writer.run(_insert(n)))) for n in range(20)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
    finally:
        writer.close()
    assert sorted(answers) == list(range(20)) and _stored(engine) == list(range(20))
    assert not any(thread.is_alive() for thread in writer._threads)


def test_the_same_event_twice_in_one_batch_is_stored_once_with_one_answer(client, runtime):
    body = json.dumps({"id": "evt_twice", "type": "chat.message", "occurred_at": "2026-11-21T17:03:11Z",
                       "data": {"chat": {"id": "c-twice"}, "message": {
                           "id": "m1", "sender": "consumer", "text": "hi", "sent_at": "2026-11-21T17:03:11Z"}}}
                      ).encode()
    release, holder = _hold(runtime.intake.writer)
    answers: list[Any] = []

    def post() -> None:
        response = client.application.test_client().post("/callbacks/events", data=body,
                                                          headers=signed_headers(body))
        answers.append((response.status_code, response.json))
    threads = [threading.Thread(target=post) for _ in range(2)]
    for thread in threads:
        thread.start()
    wait_for(lambda: runtime.intake.writer.queued() == 2)
    release.set()
    for thread in [holder, *threads]:
        thread.join(10)
    assert answers == [(200, {"status": "ok", "chat_id": "c-twice"})] * 2
    with reading(runtime.engine) as conn:
        assert conn.execute(select(func.count()).select_from(events).where(events.c.id == "evt_twice")).scalar() == 1


@pytest.mark.both_databases
def test_concurrent_events_of_the_same_chats_are_each_stored_once(app, runtime):
    """Many request threads, a few chats, every kind of chat event, some sent twice at once, on both
    databases (two processes' writers side by side: tests/test_postgres_concurrency.py)."""
    from tests.instances import chat_stream, envelope

    bodies = [envelope(event_id, kind, data) for n in range(6) for event_id, kind, data in chat_stream(f"gc{n}", 6)]
    work = bodies + bodies[::3]  # a third of them twice
    statuses: list[int] = []
    lock = threading.Lock()

    def sender(part: list[bytes]) -> None:
        client = app.test_client()
        for body in part:
            response = client.post("/callbacks/events", data=body, headers=signed_headers(body))
            with lock:
                statuses.append(response.status_code)
    threads = [threading.Thread(target=sender, args=(work[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(statuses) == len(work) and all(200 <= s < 300 for s in statuses), sorted(set(statuses))
    with reading(runtime.engine) as conn:
        stored = conn.execute(select(events.c.id, func.count()).group_by(events.c.id)).all()
    assert len(stored) == len(bodies) and all(count == 1 for _, count in stored)


def test_a_callback_after_shutdown_is_a_503_and_stores_nothing(client, runtime):
    runtime.intake.close()
    body = json.dumps({"id": "evt_late", "type": "chat.message", "occurred_at": "2026-11-21T17:03:11Z",
                       "data": {"chat": {"id": "c-late"}, "message": {
                           "id": "m1", "sender": "consumer", "text": "hi", "sent_at": "2026-11-21T17:03:11Z"}}}
                      ).encode()
    response = client.post("/callbacks/events", data=body, headers=signed_headers(body))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    with reading(runtime.engine) as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar() == 0


def test_the_outbox_worker_claims_and_finishes_in_the_intake_writers_transactions(platform, runtime):
    """In the server the worker writes through the group committer: while the writer is busy its claim
    waits in the same queue as the callbacks, and the chat's Task is posted once the writer is free."""
    from crmconnector.sync.worker import Worker

    platform.start_chat("c-shared")
    assert platform.post("chat.ended", {"chat": {"id": "c-shared", "ended_at": "2026-11-21T17:09:00Z",
                                                 "disconnected_by": "consumer"}}).status_code == 202
    worker = Worker.for_runtime(runtime)
    release, holder = _hold(runtime.intake.writer)
    processed: list[int] = []
    drain = threading.Thread(target=lambda: processed.append(worker.run_once()))
    drain.start()
    wait_for(lambda: runtime.intake.writer.queued() == 1)  # the claim, queued behind the held batch
    assert processed == []
    release.set()
    for thread in (holder, drain):
        thread.join(10)
    assert processed == [1]
    assert [t.fields["CallObject"] for t in runtime.crm.query("Task", {})] == ["sms-chat-c-shared"]


def _post_held(app: Any, writer: GroupCommitter, bodies: list[bytes]) -> list[tuple[int, Any]]:
    """Post the bodies at once while every writer is held, then free one writer: it applies them as
    one batch."""
    holds = [_hold(writer) for _ in range(writer.writers)]
    answers: list[tuple[int, Any]] = [(0, None)] * len(bodies)

    def post(i: int) -> None:
        response = app.test_client().post("/callbacks/events", data=bodies[i], headers=signed_headers(bodies[i]))
        answers[i] = (response.status_code, response.json)
    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    wait_for(lambda: writer.queued() == len(bodies))
    holds[0][0].set()
    for thread in threads:
        thread.join(10)
    for release, holder in holds:
        release.set()
        holder.join(10)
    return answers


def _message(event_id: str, chat_id: str, message_id: str, text: str | None = None,
             media: list[dict[str, str]] | None = None) -> bytes:
    return json.dumps({"id": event_id, "type": "chat.message", "occurred_at": "2026-11-21T17:03:11Z",
                       "data": {"chat": {"id": chat_id}, "message": {
                           "id": message_id, "sender": "consumer", "text": text or f"text of {message_id}",
                           "sent_at": "2026-11-21T17:03:11Z", "media": media or []}}}).encode()


@pytest.mark.both_databases
def test_a_batch_writes_its_messages_events_and_console_rows_with_one_insert_per_table(app, runtime, platform,
                                                                                       monkeypatch):
    """A batch's messages, events rows and console rows are written at its end, each table's in one
    multi-row INSERT: on PostgreSQL one statement and one round trip instead of one per event."""
    from crmconnector.store import console_events

    platform.start_chat("c-batch")
    platform.post("chat.assigned", {"chat": {"id": "c-batch"}, "assigned_at": "2026-11-21T17:01:00Z",
                                    "agent": {"id": "a1", "email": "Agent1@example.com", "name": "Agent One"}})
    sent = sent_statements(runtime.engine, monkeypatch)
    bodies = [_message(f"evt_b{n}", "c-batch", f"m{n}") for n in range(5)]
    answers = _post_held(app, runtime.intake.writer, bodies)
    assert answers == [(200, {"status": "ok", "chat_id": "c-batch"})] * 5

    def rows_of(table: str) -> list[tuple[int, int]]:  # (rows in its VALUES, parameter sets) per INSERT
        return [(sql.count("), (") + 1, sets) for sql, sets in sent if sql.startswith(f"INSERT INTO {table} ")]
    assert rows_of("events") == [(5, 1)]
    assert rows_of("console_events") == [(5, 1)]
    assert [sql.count(" UNION ALL ") + 1 for sql, _ in sent if sql.startswith("INSERT INTO chat_messages ")] == [5]
    if runtime.engine.dialect.name == "postgresql":  # the held rows and the COMMIT: one round trip
        from tests.conftest import SCRIPTS

        assert [[sql.split(" (")[0] for sql in script] for script in SCRIPTS] == [
            ["INSERT INTO events", "INSERT INTO console_events", "COMMIT"]]
    with reading(runtime.engine) as conn:
        stored = conn.execute(select(events.c.id, events.c.response_status).where(events.c.id.like("evt_b%"))).all()
        consoles = conn.execute(select(console_events.c.agent_email, console_events.c.kind)
                                .where(console_events.c.kind == "message")).all()
    assert sorted(stored) == [(f"evt_b{n}", 200) for n in range(5)]
    assert consoles == [("agent1@example.com", "message")] * 5


@pytest.mark.both_databases
def test_a_batch_of_messages_stores_each_new_one_once_with_what_it_causes(app, runtime, platform):
    """Held messages that the batch's INSERT cannot take (the chat's first event, the same message under
    another event id) take the general path at the batch's end; media and opt-out words still count."""
    from crmconnector.store import chat_media, chat_messages, chats, console_events, outbox

    platform.start_chat("c-held")
    platform.post("chat.assigned", {"chat": {"id": "c-held"}, "assigned_at": "2026-11-21T17:01:00Z",
                                    "agent": {"id": "a1", "email": "agent1@example.com", "name": "Agent One"}})
    picture = {"url": "https://media.example.com/p/1.jpg", "content_type": "image/jpeg", "filename": "1.jpg"}
    bodies = [_message("evt_h1", "c-held", "m1", media=[picture]),
              _message("evt_h2", "c-new", "n1"),  # no chat row yet
              _message("evt_h3", "c-held", "m1"),  # m1 again, under another event id
              _message("evt_h4", "c-held", "m2", text="STOP")]
    answers = _post_held(app, runtime.intake.writer, bodies)
    assert [status for status, _ in answers] == [200] * 4
    assert [body["chat_id"] for _, body in answers] == ["c-held", "c-new", "c-held", "c-held"]
    with reading(runtime.engine) as conn:
        messages = conn.execute(select(chat_messages.c.chat_id, chat_messages.c.message_id, func.count())
                                .group_by(chat_messages.c.chat_id, chat_messages.c.message_id)).all()
        placeholder = conn.execute(select(chats.c.started).where(chats.c.id == "c-new")).scalar_one()
        media = conn.execute(select(chat_media.c.message_id, chat_media.c.url)).all()
        consoles = conn.execute(select(console_events.c.chat_id).where(console_events.c.kind == "message")).all()
        queued = conn.execute(select(outbox.c.kind, outbox.c.key).where(outbox.c.kind == "opt_out")).all()
    assert sorted(messages) == [("c-held", "m1", 1), ("c-held", "m2", 1), ("c-new", "n1", 1)]
    assert placeholder is False
    assert media == [("m1", picture["url"])]
    assert consoles == [("c-held",), ("c-held",)]  # one per new message of the chat with an agent
    assert queued == [("opt_out", "c-held")]


@pytest.mark.both_databases
def test_an_event_stored_earlier_in_a_batch_replays_its_answer_and_the_rest_is_stored_once(app, runtime, platform):
    """The batch's one INSERT finds an event id stored already: the batch is rolled back and run again
    event by event, so the repeat gets its first answer and nothing of the batch is written twice."""
    from crmconnector.store import chat_messages

    platform.start_chat("c-again")
    first = _message("evt_a0", "c-again", "m0")
    assert app.test_client().post("/callbacks/events", data=first,
                                  headers=signed_headers(first)).status_code == 200
    bodies = [_message("evt_a1", "c-again", "m1"), first, _message("evt_a2", "c-again", "m2")]
    answers = _post_held(app, runtime.intake.writer, bodies)
    assert answers == [(200, {"status": "ok", "chat_id": "c-again"})] * 3
    with reading(runtime.engine) as conn:
        stored = conn.execute(select(events.c.id, func.count()).where(events.c.id.like("evt_a%"))
                              .group_by(events.c.id)).all()
        messages = conn.execute(select(chat_messages.c.message_id, func.count())
                                .where(chat_messages.c.chat_id == "c-again").group_by(chat_messages.c.message_id)).all()
    assert sorted(stored) == [("evt_a0", 1), ("evt_a1", 1), ("evt_a2", 1)]
    assert sorted(messages) == [("m0", 1), ("m1", 1), ("m2", 1)]


def test_rows_held_for_a_batch_that_fails_are_dropped_with_it(engine):
    """A failed batch leaves nothing held on the pooled connection for its next use: outside a batch
    a row is inserted at once, and a key that exists is reported there."""
    from crmconnector.store import batched_inserts, insert_or_hold

    with pytest.raises(ValueError):
        with engine.begin() as conn, batched_inserts(conn):
            assert insert_or_hold(conn, rows, {"n": 1})
            raise ValueError("the batch failed")
    with engine.begin() as conn:
        assert insert_or_hold(conn, rows, {"n": 2}) is True
        assert _stored_in(conn) == [2]
        assert insert_or_hold(conn, rows, {"n": 2}, new_only=True) is False
    assert _stored(engine) == [2]


@pytest.mark.both_databases
def test_held_rows_keep_quotes_backslashes_and_placeholders_exactly(app, runtime, platform):
    """On PostgreSQL a batch's held rows travel as SQL literals in one query string: whatever the
    platform sent (quotes, backslashes, percent signs, semicolons, non-ASCII) is stored exactly."""
    platform.start_chat("c-odd")
    texts = ["it's \"fine\"", "back\\slash \\n and \\\\", "%s %(x)s 100%", "end; COMMIT; DROP TABLE events;--",
             "naïve café ☕ \u00e9\u0301"]
    bodies = [_message(f"evt_q{n}", "c-odd", f"q{n}", text=text) for n, text in enumerate(texts)]
    answers = _post_held(app, runtime.intake.writer, bodies)
    assert [status for status, _ in answers] == [200] * len(texts)
    with reading(runtime.engine) as conn:
        payloads = dict(conn.execute(select(events.c.id, events.c.payload).where(events.c.id.like("evt_q%"))).all())
    assert [payloads[f"evt_q{n}"]["data"]["message"]["text"] for n in range(len(texts))] == texts
    assert {event_id: json.loads(body) for event_id, body in zip(sorted(payloads), bodies)} == payloads


@pytest.mark.both_databases
def test_outbox_writes_in_a_batch_wait_for_its_end_and_one_item_per_key_lands(runtime, monkeypatch):
    """Finishing an item and enqueuing one change nothing the batch reads back, so they wait for the
    batch's end (on PostgreSQL they travel in its final query string with the COMMIT); a second enqueue
    of the same key there sees the first and adds nothing. Each held enqueue wakes an outbox thread."""
    from crmconnector.store import outbox, update_chat
    from crmconnector.sync.outbox import enqueue
    from crmconnector.sync.worker import claim_due, finish_done
    from tests.conftest import SCRIPTS

    writer = runtime.intake.writer
    writer.run(lambda conn: enqueue(conn, "chat_log", "c-finish"))
    now = datetime.now(timezone.utc)
    [item] = writer.run(lambda conn: claim_due(conn, "w:1", now, now + timedelta(minutes=5)))
    woken: list[int] = []
    monkeypatch.setattr(runtime.intake.context, "notify", lambda consoles, outbox_items: woken.append(outbox_items))
    sent = sent_statements(runtime.engine, monkeypatch)
    release, holder = _hold(writer)
    jobs = [lambda conn: finish_done(conn, item),
            lambda conn: (enqueue(conn, "chat_log", "c-other"), update_chat(conn, "c-other", {"lang": "en"})),
            lambda conn: enqueue(conn, "chat_log", "c-other")]
    threads = []
    for n, job in enumerate(jobs, start=1):  # queued one after the other: the batch runs them in this order
        threads.append(threading.Thread(target=writer.run, args=(job,)))
        threads[-1].start()
        wait_for(lambda: writer.queued() == n)
    release.set()
    for thread in (holder, *threads):
        thread.join(10)
    with reading(runtime.engine) as conn:
        items = sorted(conn.execute(select(outbox.c.key, outbox.c.status)).all())
    assert items == [("c-finish", "done"), ("c-other", "pending")]
    writes = [sql.split(" SET ")[0].split(" (")[0] for sql, _ in sent if sql.startswith(("UPDATE", "INSERT"))]
    # the chat's update at once; the finish and both enqueues at the end, in the order they were made
    assert writes == ["UPDATE chats", "UPDATE outbox", "INSERT INTO outbox", "INSERT INTO outbox"]
    if runtime.engine.dialect.name == "postgresql":
        assert [[sql.split(" SET ")[0].split(" (")[0] for sql in script] for script in SCRIPTS] == [
            ["UPDATE outbox", "INSERT INTO outbox", "INSERT INTO outbox", "COMMIT"]]
    assert sum(woken) == 2
