"""Callback intake: verify, validate, de-duplicate and apply one event in one transaction.

The web layer hands over the raw request; this module decides the response. Nothing is stored
for a rejected event, and a repeated event id replays the first response.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections import Counter, deque
from dataclasses import dataclass, replace
from typing import Any, Callable

from sqlalchemy import Connection, Engine, bindparam, select
from sqlalchemy.exc import IntegrityError, OperationalError

from crmconnector import signatures
from crmconnector.crm.base import CRMBackend
from crmconnector.driver_sql import DriverStatement
from crmconnector.events import Envelope, EventError, parse_data, parse_envelope
from crmconnector.metrics import EVENT_SECONDS, EVENTS
from crmconnector.settings import Settings
from crmconnector.group_commit import GroupCommitter, WriterClosed
from crmconnector.store import events, insert_or_hold, reading, utcnow

log = logging.getLogger(__name__)
MAX_BODY_BYTES = 1024 * 1024


@dataclass
class Outcome:
    status: int
    body: dict[str, Any]
    event_type: str = "rejected"  # the metrics label: a known type, "unknown", or "rejected"


class StoreUnavailable(Exception):
    """The state database cannot be reached: the platform must retry (503), nothing was stored."""


class RetryLater(Exception):
    """The event cannot be taken yet (e.g. an earlier delivery of it is still at work): nothing was
    stored, and the platform must retry (503 with Retry-After). `code` and `message` go in the body."""

    def __init__(self, code: str, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.retry_after = retry_after


# An applier writes one validated event into the state inside the intake's transaction and returns
# the response. `prepared` is what `prepare` computed outside the transaction (e.g. the CRM match).
# Typed loosely: each applier takes its own event model.
Applier = Callable[..., Outcome]
Preparer = Callable[..., Any]


@dataclass
class Handler:
    apply: Applier
    prepare: Preparer | None = None


@dataclass
class EventContext:
    engine: Engine
    crm: CRMBackend
    settings: Settings
    notify: Callable[[bool, int], None]  # after a commit: wake (agents' consoles, outbox threads for new items)
    ready: Callable[[], bool] = lambda: True  # False while the schema is not yet migrated


HANDLERS: dict[str, Handler] = {}


def handles(event_type: str, prepare: Preparer | None = None) -> Callable[[Applier], Applier]:
    """Register the applier of an event type."""
    def register(apply: Applier) -> Applier:
        HANDLERS[event_type] = Handler(apply, prepare)
        return apply
    return register


def body_hash(document: Any) -> str:
    """Hash of the JSON document, independent of key order and white space."""
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class _NotStandardJSON(ValueError):
    """`NaN`, `Infinity` or `-Infinity` in a body: Python's json reads them, but they are not JSON."""


def _reject_constant(name: str) -> Any:
    raise _NotStandardJSON(name)


class _NumberTooLarge(ValueError):
    """A number no column or JSON store can hold: Python reads `1e999` as infinity, which is not JSON."""


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NumberTooLarge(text)
    return value


# Built once, as json.loads builds its default decoder: the hot path pays nothing for the checks (events
# carry few floats, if any).
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)


# Events nest a few levels deep. Far deeper bodies exhaust Python's stack in json, either while reading
# them or while writing them again (the event's hash, its stored payload).
MAX_DEPTH = 64
_TOO_DEEP = f"the body is nested too deeply (more than {MAX_DEPTH} levels of arrays and objects)"


def decode_json(body: bytes) -> Any:
    """The JSON document in a request body, or EventError 400 `invalid_json` saying what is wrong: the
    callback URL and the agent API read bodies alike, and answer alike."""
    document = _decode(body)
    # Counting brackets is cheap; only a body with many of them is measured.
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _nested_deeper_than(document, MAX_DEPTH):
        raise EventError(400, "invalid_json", _TOO_DEEP)
    return document


def _nested_deeper_than(document: Any, limit: int) -> bool:
    """Level by level, not recursively: measuring a deep document must not exhaust the stack either."""
    level = [document] if isinstance(document, (dict, list)) else []
    for _ in range(limit):
        level = [child for node in level for child in (node.values() if isinstance(node, dict) else node)
                 if isinstance(child, (dict, list))]
        if not level:
            return False
    return True


def _decode(body: bytes) -> Any:
    try:
        return _DECODER.decode(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise EventError(400, "invalid_json", "the body is not UTF-8 text") from None
    except _NotStandardJSON as exc:
        raise EventError(400, "invalid_json", f"the body is not standard JSON: {exc} is not a JSON value") from None
    except json.JSONDecodeError as exc:
        raise EventError(400, "invalid_json", f"the body is not JSON: {exc.msg} at line {exc.lineno} "
                                              f"column {exc.colno}") from None
    except RecursionError:
        raise EventError(400, "invalid_json", _TOO_DEEP) from None
    except ValueError:  # _NumberTooLarge, or an integer of thousands of digits, which Python refuses to read
        raise EventError(400, "invalid_json", "the body has a number too large to read") from None


# In JSON text, the escapes that can give a string a character no database stores as text.
_ESCAPES_TO_CHECK = re.compile(rb"\\u(?:0000|[dD][89a-fA-F])")
# NUL, which PostgreSQL's text refuses, and half of a UTF-16 surrogate pair: `"\\ud83d"` is JSON, but
# the string is not Unicode text.
_NOT_STORABLE = re.compile("[\x00\ud800-\udfff]")


def check_text(body: bytes, document: Any) -> None:
    """EventError 400 `invalid_payload`, naming the field, for a string that is not Unicode text or holds a
    NUL (so it could not be hashed or stored, on every database alike); only bodies with such escapes are
    walked."""
    if not _ESCAPES_TO_CHECK.search(body):
        return
    found = _first_unstorable(document)
    if found is not None:
        field, char = found
        message = ("a NUL character (\\u0000) cannot be stored" if char == "\x00" else
                   f"half of a UTF-16 surrogate pair (\\u{ord(char):04x}) is not Unicode text")
        raise EventError(400, "invalid_payload", f"{field}: {message}" if field else message, field or None)


def _first_unstorable(document: Any) -> tuple[str, str] | None:
    """The path of the first string holding such a character (for a key: its object's path), and the character."""
    queue: deque[tuple[str, Any]] = deque([("", document)])
    while queue:
        path, node = queue.popleft()
        if isinstance(node, str):
            found = _NOT_STORABLE.search(node)
            if found:
                return path, found.group()
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, value in items:
            if isinstance(key, str) and (found := _NOT_STORABLE.search(key)):
                return path, found.group()
            queue.append((f"{path}.{key}" if path else str(key), value))
    return None


class Intake:
    def __init__(self, context: EventContext):
        self.context = context
        # Accepted events are written by the group committer's writer thread(s), several per transaction
        # under load.
        self.writer = GroupCommitter(context.engine, self._wake)
        from crmconnector import abandoned_intake, chat_events, chats  # noqa: F401  (register handlers)

    def _wake(self, wakeups: Counter[str]) -> None:
        if wakeups:
            self.context.notify(wakeups["consoles"] > 0, wakeups["outbox"])

    def close(self) -> None:
        self.writer.close()

    def handle(self, body: bytes, content_type: str | None, signature: str | None,
               now: float | None = None) -> Outcome:
        started = time.perf_counter()
        try:
            outcome = self._handle(body, content_type, signature, now)
        except EventError as exc:
            outcome = Outcome(exc.status, exc.as_json())
        EVENTS.labels(outcome.event_type, str(outcome.status)).inc()
        EVENT_SECONDS.labels(outcome.event_type).observe(time.perf_counter() - started)
        return outcome

    def _handle(self, body: bytes, content_type: str | None, signature: str | None, now: float | None) -> Outcome:
        if len(body) > MAX_BODY_BYTES:
            raise EventError(413, "payload_too_large", f"the body is larger than {MAX_BODY_BYTES} bytes")
        problem = signatures.verify(signature, body, self.context.settings.callback_secrets, now)
        if problem:
            raise EventError(401, "invalid_signature", problem)
        if (content_type or "").split(";")[0].strip().lower() != "application/json":
            raise EventError(415, "unsupported_media_type", "Content-Type must be application/json")
        document = decode_json(body)
        check_text(body, document)
        envelope = parse_envelope(document)
        if not self.context.ready():
            raise StoreUnavailable("the database has not been reachable since start")
        digest = body_hash(document)
        handler = HANDLERS.get(envelope.type)
        label = envelope.type if handler else "unknown"  # platform-chosen types stay out of labels
        if handler is not None and handler.prepare is not None:
            # A repeated event must not repeat the preparation's CRM call: look before preparing.
            replay = self._replay(envelope.id, digest)
            if replay is not None:
                return replace(replay, event_type=label)
        data = parse_data(envelope.type, envelope.data, self.context.settings.default_region)
        try:
            prepared = handler.prepare(self.context, data) if handler and handler.prepare and data else None
        except OperationalError as exc:  # the preparation's own writes (e.g. a created record's claim)
            raise StoreUnavailable(str(exc.orig)) from exc
        for attempt in (1, 2):
            try:
                outcome = self.writer.run(
                    lambda conn: self._apply(conn, envelope, document, digest, handler, data, prepared))
            except _AlreadyStored:
                # The event id was stored first (a retry, or the same event at another instance at the
                # same moment): its first answer stands, and what this attempt applied was rolled back.
                replay = self._replay(envelope.id, digest)
                if replay is not None:
                    return replace(replay, event_type=label)
                continue
            except IntegrityError:
                # The same chat's first row was created by another worker or instance at the same
                # moment: the second attempt sees what it committed.
                if attempt == 2:
                    raise
                continue
            except OperationalError as exc:
                raise StoreUnavailable(str(exc.orig)) from exc
            except WriterClosed as exc:
                raise StoreUnavailable(str(exc)) from exc
            return replace(outcome, event_type=label)
        raise StoreUnavailable("the event could be neither stored nor found; retry")

    def _apply(self, conn: Connection, envelope: Envelope, document: Any, digest: str, handler: Handler | None,
               data: Any, prepared: Any) -> Outcome:
        """Apply and record the event in the writer's transaction; raises _AlreadyStored (and the
        transaction is rolled back) when the event id is stored already."""
        if handler is None or data is None:
            outcome = Outcome(202, {"status": "ignored"})
        else:
            outcome = handler.apply(self.context, conn, envelope, data, prepared)
        # The id's unique key decides, not a look-up first: one statement, and it holds when two
        # instances take the same event at the same moment.
        # In a batch the row joins the batch's INSERT at its end, whose conflict runs the batch again
        # event by event (and then this raises).
        row = {"id": envelope.id, "body_hash": digest, "type": envelope.type, "payload": document,
               "chat_id": _ref(envelope.data, "chat"), "call_id": _ref(envelope.data, "call"),
               "response_status": outcome.status, "response_body": outcome.body, "received_at": utcnow()}
        if not insert_or_hold(conn, events, row, new_only=True):
            raise _AlreadyStored
        return outcome

    def _replay(self, event_id: str, digest: str) -> Outcome | None:
        try:
            with reading(self.context.engine) as conn:  # on SQLite a read must not take the write lock
                stored = _STORED.first(conn, {"event": event_id})
        except OperationalError as exc:
            raise StoreUnavailable(str(exc.orig)) from exc
        if stored is None:
            return None
        if stored["body_hash"] != digest:
            raise EventError(409, "event_id_reused", f"event id {event_id!r} was already used for another body",
                             "id")
        return Outcome(stored["response_status"], stored["response_body"])


class _AlreadyStored(Exception):
    """Rolls back an attempt whose event id turned out to be stored already."""


# On the driver's cursor: every chat.started looks before its CRM match.
_STORED = DriverStatement(select(events.c.body_hash, events.c.response_status, events.c.response_body).where(
    events.c.id == bindparam("event")))


def _ref(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if isinstance(value, dict) and isinstance(value.get("id"), (str, int)) and not isinstance(value["id"], bool):
        return str(value["id"])
    return None
