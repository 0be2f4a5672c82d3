"""chat.assigned, chat.message, chat.transferred and chat.ended (registered with the intake).

Each applier stores its event keyed by message id or event id, then recomputes what depends on
time (the current agent, the first acceptance) from everything stored, so arrival order never
matters. Nothing here calls the CRM: writes go to the outbox in the same transaction.
A message or other event for a chat not yet started creates a placeholder row that chat.started
completes later.
"""
from __future__ import annotations

import functools
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Connection, and_, bindparam, literal_column, or_, select, union_all
from sqlalchemy.dialects import postgresql

from crmconnector import console, optout
from crmconnector.chatstate import assignments_from
from crmconnector.driver_sql import DriverStatement
from crmconnector.events import ChatAssigned, ChatEnded, ChatMessage, ChatTransferred, Envelope
from crmconnector.intake import EventContext, Outcome, handles
from crmconnector.store import (ROWS_PER_INSERT, chat_activity, chat_media, chat_messages, chats, hold_work,
                                insert_if_new, insert_unless_there, update_chat, utcnow)
from crmconnector.sync.outbox import enqueue, queue_chat_log


def _person(person: BaseModel | None) -> dict[str, Any] | None:
    return person.model_dump(exclude_none=True) if person is not None else None


# What the appliers need of a chat (not its match, which is JSON and costs to decode). The hot
# statements are built once: building them per event cost more than running them.
_CHAT = DriverStatement(select(chats.c.id, chats.c.agent_email, chats.c.ended_at, chats.c.crm_status).where(
    chats.c.id == bindparam("chat")))
_NEW_CHAT = chats.insert()


def _chat_row(conn: Connection, chat_id: str) -> dict[str, Any]:
    """The chat's row, created as a placeholder (not started) when this is its first event."""
    row = _CHAT.first(conn, {"chat": chat_id})
    return row if row is not None else _new_chat(conn, chat_id)


def _new_chat(conn: Connection, chat_id: str) -> dict[str, Any]:
    conn.execute(_NEW_CHAT, {"id": chat_id, "started": False, "updated_at": utcnow()})
    return {"id": chat_id, "agent_email": None, "ended_at": None, "crm_status": None}


# The chat's row with its assignments and transfers (one row per activity, or one with NULLs): what an
# assignment or a transfer needs, in one statement.
_ACTIVITY_FIELDS = ("event_id", "kind", "at", "data")
_CHAT_AND_ACTIVITY = DriverStatement(
    select(chats.c.id, chats.c.agent_email, chats.c.ended_at, chats.c.crm_status,
           *(chat_activity.c[name] for name in _ACTIVITY_FIELDS))
    .select_from(chats.outerjoin(chat_activity, chat_activity.c.chat_id == chats.c.id))
    .where(chats.c.id == bindparam("chat")))


def _chat_with_activity(conn: Connection, chat_id: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The chat's row (a placeholder when this is its first event) and its activity rows."""
    rows = _CHAT_AND_ACTIVITY.all(conn, {"chat": chat_id})
    if not rows:
        return _new_chat(conn, chat_id), []
    chat = {name: rows[0][name] for name in ("id", "agent_email", "ended_at", "crm_status")}
    return chat, [{name: row[name] for name in _ACTIVITY_FIELDS} for row in rows if row["event_id"] is not None]


_MESSAGE_FIELDS = ("message_id", "sender", "text", "sent_at", "agent", "media")
Message = tuple[str, dict[str, Any]]  # chat id, message row


@functools.cache
def _messages_into_chats(dialect_name: str, count: int) -> DriverStatement:
    """One INSERT of `count` messages (bound as chat_0, message_id_0, …) that also returns each inserted
    message's chat row: one statement (one round trip on PostgreSQL) for all of a batch's messages. A
    message whose chat has no row yet, or that is stored already, is neither inserted nor returned."""
    def one(n: int) -> Any:
        return select(chats.c.id, *(bindparam(f"{name}_{n}", type_=chat_messages.c[name].type)
                                    for name in _MESSAGE_FIELDS)).where(chats.c.id == bindparam(f"chat_{n}"))
    selects: list[Any] = [one(n) for n in range(count)]
    source: Any = union_all(*selects) if count > 1 else selects[0]

    def of_chat(column: Any) -> Any:  # the inserted row's chat, looked up in RETURNING
        inserted_chat: Any = literal_column(f"{chat_messages.name}.chat_id")
        return select(column).where(chats.c.id == inserted_chat).scalar_subquery().label(column.name)
    return DriverStatement(
        insert_unless_there(dialect_name, chat_messages).from_select(["chat_id", *_MESSAGE_FIELDS], source)
        .returning(chat_messages.c.chat_id.label("id"), chat_messages.c.message_id,
                   *(of_chat(column) for column in (chats.c.agent_email, chats.c.ended_at, chats.c.crm_status))))


def _insert_messages(conn: Connection, messages: list[Message]) -> dict[tuple[str, str], dict[str, Any]]:
    """Insert the messages whose chat has a row, ROWS_PER_INSERT at a time; their chat rows by (chat id,
    message id)."""
    added = {}
    for start in range(0, len(messages), ROWS_PER_INSERT):
        chunk = messages[start:start + ROWS_PER_INSERT]
        params = {f"{key}_{n}": value for n, (chat_id, row) in enumerate(chunk)
                  for key, value in (("chat", chat_id), *row.items())}
        for chat in _messages_into_chats(conn.dialect.name, len(chunk)).all(conn, params):
            added[(chat.pop("id"), chat.pop("message_id"))] = chat
    return added


def _store_messages(conn: Connection, messages: list[Message]) -> None:
    """Store the messages and what each new one causes. Held in a group-commit batch, a batch's messages
    come here together at its end (`hold_work`)."""
    added = _insert_messages(conn, messages)
    for chat_id, row in messages:
        chat = added.pop((chat_id, row["message_id"]), None)
        if chat is not None:
            chat["id"] = chat_id
        else:  # the chat's first event, or a message stored already
            chat = _chat_row(conn, chat_id)
            if not insert_if_new(conn, chat_messages, {"chat_id": chat_id, **row}):
                continue  # the same message under another event id changes nothing
        _message_added(conn, chat, row)


def _message_added(conn: Connection, chat: dict[str, Any], row: dict[str, Any]) -> None:
    if row["sender"] == "consumer":
        for position, item in enumerate(row["media"]):
            conn.execute(chat_media.insert().values(chat_id=chat["id"], message_id=row["message_id"],
                                                    position=position, url=item["url"],
                                                    filename=item.get("filename"), status="pending"))
        if optout.keyword(row["text"]) is not None:
            enqueue(conn, "opt_out", chat["id"])
    _publish(conn, chat, "message")
    _after_ended(conn, chat)


def _record_activity(conn: Connection, chat: dict[str, Any], activity: list[dict[str, Any]], event_id: str,
                     kind: str, at: Any, data: dict[str, Any]) -> str | None:
    """Store the assignment or transfer (once per event id), add it to the chat's `activity` rows and
    recompute the current agent from them; the previous agent's e-mail when the current agent changed."""
    row = {"event_id": event_id, "kind": kind, "at": at, "data": data}
    values = _agent_values([*activity, row])
    if values is not None and conn.dialect.name == "postgresql":
        # The row and the agent it makes current in one statement: the agent is set only if the row is new
        # (a row stored already leaves the agent to the stored rows, below).
        if _ACTIVITY_AND_AGENT.first(conn, {"chat_id": chat["id"], **row, **_as_set(values)}) is not None:
            activity.append(row)
            return _agent_changed(chat, values)
    elif insert_if_new(conn, chat_activity, {"chat_id": chat["id"], **row}):
        activity.append(row)
    return _refresh_agent(conn, chat, activity)


def _agent_values(activity: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The current agent (latest by time) and first acceptance that these activity rows give; None
    when none of them assigns an agent."""
    assignments = assignments_from(activity)
    if not assignments:
        return None
    current = assignments[-1].agent
    first = [a for a in assignments if a.source == "assigned"] or assignments
    return {"agent_id": current.get("id"), "agent_email": (current.get("email") or "").lower() or None,
            "agent_name": current.get("name"), "assigned_at": first[0].at, "updated_at": utcnow()}


def _refresh_agent(conn: Connection, chat: dict[str, Any], activity: list[dict[str, Any]]) -> str | None:
    """Set the chat's agent from its activity rows; the previous agent's e-mail when it changed."""
    values = _agent_values(activity)
    if values is None:
        return None
    update_chat(conn, chat["id"], values)
    return _agent_changed(chat, values)


def _agent_changed(chat: dict[str, Any], values: dict[str, Any]) -> str | None:
    """Take the new agent into `chat`; the previous agent's e-mail when the agent changed."""
    previous = chat.get("agent_email")
    chat.update(values)
    return previous if previous != values["agent_email"] else None


_AGENT_COLUMNS = ("agent_id", "agent_email", "agent_name", "assigned_at", "updated_at")


def _as_set(values: dict[str, Any]) -> dict[str, Any]:
    return {f"set_{name}": value for name, value in values.items()}


def _activity_and_agent() -> DriverStatement:
    """PostgreSQL: `WITH added AS (INSERT … ON CONFLICT DO NOTHING RETURNING …) UPDATE chats … FROM added`:
    an activity row and the chat's agent in one statement, the agent only when the row was new."""
    added = (postgresql.insert(chat_activity)
             .values({name: bindparam(name, type_=chat_activity.c[name].type)
                      for name in ("chat_id", *_ACTIVITY_FIELDS)})
             .on_conflict_do_nothing().returning(chat_activity.c.chat_id).cte("added"))
    return DriverStatement(
        chats.update().where(chats.c.id == added.c.chat_id)
        .values({name: bindparam(f"set_{name}", type_=chats.c[name].type) for name in _AGENT_COLUMNS})
        .returning(chats.c.id))


_ACTIVITY_AND_AGENT = _activity_and_agent()


def _publish(conn: Connection, chat: dict[str, Any], kind: str) -> None:
    if chat.get("agent_email"):
        console.publish(conn, chat["agent_email"], chat["id"], kind, {"chat_id": chat["id"]})


def _after_ended(conn: Connection, chat: dict[str, Any]) -> None:
    """A late event for a chat whose log was already due: render the same Task again."""
    if chat.get("ended_at") is not None:
        queue_chat_log(conn, chat["id"])


def _ok(chat_id: str) -> Outcome:
    return Outcome(200, {"status": "ok", "chat_id": chat_id})


@handles("chat.assigned")
def apply_assigned(context: EventContext, conn: Connection, envelope: Envelope, data: ChatAssigned,
                   prepared: Any) -> Outcome:
    chat, activity = _chat_with_activity(conn, data.chat.id)
    _record_activity(conn, chat, activity, envelope.id, "assigned", data.assigned_at, {"agent": _person(data.agent)})
    _publish(conn, chat, "pop")
    _after_ended(conn, chat)
    return _ok(chat["id"])


@handles("chat.message")
def apply_message(context: EventContext, conn: Connection, envelope: Envelope, data: ChatMessage,
                  prepared: Any) -> Outcome:
    message = data.message
    row = {"message_id": message.id, "sender": message.sender, "text": message.text, "sent_at": message.sent_at,
           "agent": _person(message.agent), "media": [m.model_dump(exclude_none=True) for m in message.media]}
    if not hold_work(conn, _store_messages, (data.chat.id, row)):
        _store_messages(conn, [(data.chat.id, row)])
    return _ok(data.chat.id)


@handles("chat.transferred")
def apply_transferred(context: EventContext, conn: Connection, envelope: Envelope, data: ChatTransferred,
                      prepared: Any) -> Outcome:
    chat, activity = _chat_with_activity(conn, data.chat.id)
    transfer = data.transfer
    record = {"status": transfer.status, "from_agent": _person(transfer.from_agent),
              "to_agent": _person(transfer.to_agent), "to_queue": _person(transfer.to_queue)}
    previous = _record_activity(conn, chat, activity, envelope.id, "transfer", transfer.at, record)
    if previous:
        console.publish(conn, previous, chat["id"], "transferred", {"chat_id": chat["id"]})
        _publish(conn, chat, "pop")
    _publish(conn, chat, "transferred")
    _after_ended(conn, chat)
    return _ok(chat["id"])


# Two different chat.ended reports: the later end wins, whatever the arrival order; of two reports of the
# same end (a disposition corrected), the one the platform made later (occurred_at; when either has none,
# the one that came last). Returns the chat's row when this end was stored (one statement for a known
# chat), nothing when the chat has no row yet or the stored end wins. The chat log is then due: its CRM
# status turns pending in the same statement.
_REPORTED = bindparam("reported", type_=chats.c.end_reported_at.type)
_END_CHAT = DriverStatement(
    chats.update().where(chats.c.id == bindparam("chat"), or_(
        chats.c.ended_at.is_(None), chats.c.ended_at < bindparam("end"),
        and_(chats.c.ended_at == bindparam("end"),
             or_(chats.c.end_reported_at.is_(None), _REPORTED.is_(None), chats.c.end_reported_at <= _REPORTED))))
    .values(ended_at=bindparam("end"), disconnected_by=bindparam("by"), disposition=bindparam("why"),
            end_reported_at=_REPORTED, crm_status="pending", crm_error=None, updated_at=bindparam("now"))
    .returning(chats.c.id, chats.c.agent_email, chats.c.ended_at, chats.c.crm_status))


@handles("chat.ended")
def apply_ended(context: EventContext, conn: Connection, envelope: Envelope, data: ChatEnded,
                prepared: Any) -> Outcome:
    ended = data.chat
    end = {"chat": ended.id, "end": ended.ended_at, "by": ended.disconnected_by, "why": ended.disposition,
           "reported": envelope.occurred_at, "now": utcnow()}
    chat = _END_CHAT.first(conn, end)
    if chat is not None:  # a known chat: its end and pending CRM status are stored; the chat log is due
        enqueue(conn, "chat_log", chat["id"])
        _publish(conn, chat, "status")
    else:  # the chat's first event, or a later end is stored already
        chat = _chat_row(conn, ended.id)  # a placeholder row when it is the first
        if chat["ended_at"] is None:
            chat = _END_CHAT.first(conn, end) or chat
        _after_ended(conn, chat)
    _publish(conn, chat, "ended")
    return Outcome(202, {"status": "accepted", "chat_id": chat["id"]})

