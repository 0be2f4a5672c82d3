"""Several instances on one PostgreSQL database: one event id applied once, outbox items claimed once."""
from __future__ import annotations

import json
import threading
from dataclasses import replace
from datetime import timedelta
from typing import Any, Iterator

import pytest
from sqlalchemy import func, select, text

from crmconnector.runtime import Runtime
from crmconnector.settings import Settings
from crmconnector.store import chat_messages, events, make_engine, outbox, reading, utcnow
from crmconnector.sync.outbox import enqueue
from crmconnector.sync.worker import claim_due
from tests.conftest import signed_headers

pytestmark = pytest.mark.postgres


@pytest.fixture
def instances(settings: Settings, pg_database: str) -> Iterator[list[Any]]:
    """Two app instances (each its own Runtime, engine and pool) on one PostgreSQL database."""
    from webapp import create_app

    runtimes = [Runtime(replace(settings, database_url=pg_database)) for _ in range(2)]
    try:
        yield [create_app(runtime=rt, background=False, test_config={"TESTING": True}) for rt in runtimes]
    finally:
        for rt in runtimes:
            rt.close()


def _post_together(apps: list[Any], bodies: list[bytes]) -> list[Any]:
    """Post bodies[i] to apps[i] from separate threads released at the same moment."""
    barrier = threading.Barrier(len(apps))
    results: list[Any] = [None] * len(apps)

    def send(i: int) -> None:
        client = apps[i].test_client()
        headers = signed_headers(bodies[i])
        barrier.wait()
        results[i] = client.post("/callbacks/events", data=bodies[i], headers=headers)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(apps))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def _body(event_id: str, event_type: str, data: dict[str, Any]) -> bytes:
    return json.dumps({"id": event_id, "type": event_type, "occurred_at": "2026-11-21T17:03:11Z",
                       "data": data}).encode()


def _chat(chat_id: str) -> dict[str, Any]:
    return {"chat": {"id": chat_id, "direction": "inbound", "consumer_number": "+14155550132",
                     "business_number": "+18882468888", "queue": {"id": "12", "name": "Fence painting"},
                     "lang": "en", "created_at": "2026-11-21T17:03:10Z"}}


def test_one_event_id_posted_to_two_instances_at_the_same_moment_is_applied_once(instances: list[Any]) -> None:
    engine = instances[0].extensions["crmconnector"].engine
    for round_ in range(10):
        chat_id = f"80{round_}"
        assert _post_together(instances[:1], [_body(f"start-{round_}", "chat.started", _chat(chat_id))])[0] \
            .status_code == 200
        body = _body(f"msg-{round_}", "chat.message", {"chat": {"id": chat_id}, "message": {
            "id": "m1", "sender": "consumer", "text": "hello", "sent_at": "2026-11-21T17:03:12Z"}})
        first, second = _post_together(instances, [body, body])
        assert (first.status_code, second.status_code) == (200, 200)
        assert first.json == second.json  # the loser replays the winner's stored response
        with reading(engine) as conn:
            assert conn.execute(select(func.count()).select_from(events)
                                .where(events.c.id == f"msg-{round_}")).scalar() == 1
            assert conn.execute(select(func.count()).select_from(chat_messages)
                                .where(chat_messages.c.chat_id == chat_id)).scalar() == 1


def test_one_event_id_with_two_bodies_at_the_same_moment_stores_one_and_refuses_the_other(
        instances: list[Any]) -> None:
    engine = instances[0].extensions["crmconnector"].engine
    bodies = [_body("evt-same", "chat.started", _chat("901")), _body("evt-same", "chat.started", _chat("902"))]
    responses = _post_together(instances, bodies)
    assert sorted(r.status_code for r in responses) == [200, 409]
    assert [r.json["error"]["code"] for r in responses if r.status_code == 409] == ["event_id_reused"]
    with reading(engine) as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar() == 1


def _add_items(engine: Any, keys: list[str]) -> None:
    with engine.begin() as conn:
        for key in keys:
            enqueue(conn, "chat_log", key)


def test_a_claim_skips_rows_another_instance_has_locked(pg_database: str) -> None:
    a, b = make_engine(pg_database), make_engine(pg_database)
    try:
        _add_items(a, ["c1", "c2"])
        now = utcnow()
        with a.begin() as conn_a:
            mine = claim_due(conn_a, "a:1", now, now + timedelta(minutes=5), limit=1)
            assert [i.key for i in mine] == ["c1"]
            with b.begin() as conn_b:  # A has not committed: B neither waits (that would fail) nor takes c1
                conn_b.execute(text("SET LOCAL lock_timeout = '10s'"))
                theirs = claim_due(conn_b, "b:1", now, now + timedelta(minutes=5), limit=2)
            assert [i.key for i in theirs] == ["c2"]
    finally:
        a.dispose()
        b.dispose()


def test_two_items_of_one_chat_are_never_claimed_by_two_instances_at_once(pg_database: str) -> None:
    a, b = make_engine(pg_database), make_engine(pg_database)
    try:
        now = utcnow()
        with a.begin() as conn:  # two pending items for one chat, as concurrent enqueues can leave
            for _ in range(2):
                conn.execute(outbox.insert().values(kind="chat_log", key="c1", status="pending", attempts=0,
                                                    due_at=now, created_at=now, updated_at=now))
        lease = now + timedelta(minutes=5)
        with a.begin() as conn_a:
            assert [i.key for i in claim_due(conn_a, "a:1", now, lease)] == ["c1"]
            with b.begin() as conn_b:  # while A's claim is not yet committed
                conn_b.execute(text("SET LOCAL lock_timeout = '10s'"))
                assert claim_due(conn_b, "b:1", now, lease) == []
        with b.begin() as conn_b:  # and after it committed, the chat is held by A
            assert claim_due(conn_b, "b:2", now, lease) == []
        with reading(a) as conn:
            statuses = sorted(conn.execute(select(outbox.c.status, outbox.c.claimed_by)).all())
        assert statuses == [("pending", None), ("running", "a:1")]
    finally:
        a.dispose()
        b.dispose()


def test_many_claimers_on_two_engines_never_hold_one_chat_twice(pg_database: str) -> None:
    engines = [make_engine(pg_database), make_engine(pg_database)]
    try:
        keys = [f"k{n % 40}" for n in range(120)]  # several items per chat
        now = utcnow()
        with engines[0].begin() as conn:
            for key in keys:
                conn.execute(outbox.insert().values(kind="chat_log", key=key, status="pending", attempts=0,
                                                    due_at=now, created_at=now, updated_at=now))
        claimed: list[tuple[str, int]] = []
        lock = threading.Lock()

        def claimer(n: int) -> None:
            engine = engines[n % 2]
            while True:
                with engine.begin() as conn:
                    items = claim_due(conn, f"w{n}", utcnow(), utcnow() + timedelta(minutes=5), limit=3)
                if not items:
                    return
                with lock:
                    claimed.extend((i.key, i.id) for i in items)

        threads = [threading.Thread(target=claimer, args=(n,)) for n in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        # Nothing was finished, so each chat may be held by exactly one claim: 40 items, one per key.
        assert len(claimed) == 40
        assert sorted(k for k, _ in claimed) == sorted(set(keys))
    finally:
        for engine in engines:
            engine.dispose()


def test_a_read_runs_without_a_transaction_and_sees_what_others_commit(pg_database: str) -> None:
    """Reads are one round trip each (no BEGIN and ROLLBACK around them), and a connection kept open
    across reads still sees each commit, as under READ COMMITTED."""
    from psycopg.pq import TransactionStatus

    engine = make_engine(pg_database)
    try:
        count = select(func.count()).select_from(outbox)
        with reading(engine) as conn:
            assert conn.execute(count).scalar() == 0
            assert conn.connection.driver_connection.info.transaction_status == TransactionStatus.IDLE
            with engine.begin() as writer:
                enqueue(writer, "chat_log", "c-read")
            assert conn.execute(count).scalar() == 1
        with engine.begin() as conn:  # a write transaction on a pooled connection is a transaction again
            conn.execute(count)
            assert conn.connection.driver_connection.info.transaction_status == TransactionStatus.INTRANS
    finally:
        engine.dispose()
