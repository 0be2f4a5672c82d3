"""A chat's full current state, loaded in one place for the chat log and the appliers.

Everything here is derived from rows keyed by message id, event id and timestamps, never from
the order in which events arrived, so the same set of events always gives the same state.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Mapping, Sequence

from sqlalchemy import Connection, literal, null, select, type_coerce, union_all

from crmconnector.driver_sql import DriverStatement, in_numbered, numbered
from crmconnector.store import chat_activity, chat_media, chat_messages, chats


def natural_key(value: str) -> tuple[int, int, str]:
    """Sort numeric ids as numbers ("9" before "10") and others as text, deterministically."""
    return (0, int(value), value) if value.isdigit() else (1, 0, value)


@dataclass(frozen=True)
class Assignment:
    """An agent taking the chat: a chat.assigned event, or a transfer that ended with a new agent."""

    at: datetime
    event_id: str
    agent: Mapping[str, Any]
    source: str  # assigned, transfer

    @property
    def sort_key(self) -> tuple[datetime, tuple[int, int, str]]:
        return (self.at, natural_key(self.event_id))


@dataclass(frozen=True)
class TransferStep:
    at: datetime
    event_id: str
    status: str  # began, failed, ended
    from_agent: Mapping[str, Any] | None
    to_agent: Mapping[str, Any] | None
    to_queue: Mapping[str, Any] | None


@dataclass(frozen=True)
class MessageState:
    message_id: str
    sender: str
    text: str
    sent_at: datetime
    agent: Mapping[str, Any] | None
    media: Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class MediaStatus:
    status: str  # pending, attached, refused
    reason: str | None
    filename: str | None
    content_version_id: str | None


@dataclass(frozen=True)
class ChatState:
    chat: Mapping[str, Any]
    messages: tuple[MessageState, ...] = ()
    assignments: tuple[Assignment, ...] = ()
    transfers: tuple[TransferStep, ...] = ()
    media: Mapping[tuple[str, int], MediaStatus] = field(default_factory=dict)

    @property
    def id(self) -> str:
        return str(self.chat["id"])

    @property
    def first_assignment(self) -> Assignment | None:
        """The first acceptance: the earliest chat.assigned (a transfer only when there was none)."""
        assigned = [a for a in self.assignments if a.source == "assigned"] or list(self.assignments)
        return min(assigned, key=lambda a: a.sort_key) if assigned else None

    @property
    def current_assignment(self) -> Assignment | None:
        return max(self.assignments, key=lambda a: a.sort_key) if self.assignments else None

    def agent_at(self, when: datetime) -> Mapping[str, Any] | None:
        """The agent who held the chat at `when` (the first one, for a message sent before any)."""
        held = [a for a in self.assignments if a.at <= when]
        if held:
            return max(held, key=lambda a: a.sort_key).agent
        first = self.first_assignment
        return first.agent if first else None


def agent_label(agent: Mapping[str, Any] | None) -> str:
    """How an agent is named to people: name, else e-mail, else id."""
    if not agent:
        return ""
    for key in ("name", "email", "id"):
        if agent.get(key):
            return str(agent[key])
    return ""


def assignments_from(rows: Sequence[Any]) -> list[Assignment]:
    """Assignments out of chat_activity rows (assigned events and ended transfers with a new agent)."""
    found = []
    for row in rows:
        data = row["data"] or {}
        if row["kind"] == "assigned" and data.get("agent"):
            found.append(Assignment(row["at"], row["event_id"], data["agent"], "assigned"))
        elif row["kind"] == "transfer" and data.get("status") == "ended" and data.get("to_agent"):
            found.append(Assignment(row["at"], row["event_id"], data["to_agent"], "transfer"))
    return sorted(found, key=lambda a: a.sort_key)


# Built once per number of chats: every chat log loads this. Each chat's row, its messages and its
# activity (assignments, transfers) in one read for several chats: a chat's row once, then one row per
# message or activity, each saying whose (`of_chat`) and which it is (`source`) in the messages' column
# names. Every row carries every column, NULL where it is not its own: a chat's columns (two of them
# JSON) are decoded once, not once per message.
_HISTORY_COLUMNS = [chat_messages.c[name]
                    for name in ("message_id", "sender", "text", "sent_at", "agent", "media")]


def _nulls(columns: Sequence[Any]) -> list[Any]:
    """NULLs typed as `columns`, so that the rows are read with the right conversions whichever
    part of the UNION they come from."""
    return [type_coerce(null(), column.type).label(column.name) for column in columns]


_NO_CHAT = _nulls(list(chats.c))
_CHAT_COLUMNS = tuple(chats.c.keys())


@functools.cache
def _chats_with_history(count: int) -> DriverStatement:
    return DriverStatement(union_all(
        select(*chats.c, chats.c.id.label("of_chat"), literal("chat").label("source"), *_nulls(_HISTORY_COLUMNS))
        .where(in_numbered(chats.c.id, "chat", count)),
        select(*_NO_CHAT, chat_messages.c.chat_id, literal("message"), *_HISTORY_COLUMNS)
        .where(in_numbered(chat_messages.c.chat_id, "chat", count)),
        select(*_NO_CHAT, chat_activity.c.chat_id, literal("activity"), chat_activity.c.event_id,
               chat_activity.c.kind, null(), chat_activity.c.at, chat_activity.c.data, null())
        .where(in_numbered(chat_activity.c.chat_id, "chat", count))))


@functools.cache
def _media_of(count: int) -> DriverStatement:
    return DriverStatement(select(chat_media).where(in_numbered(chat_media.c.chat_id, "chat", count)))


def load(conn: Connection, chat_id: str) -> ChatState | None:
    """The chat's state as stored now; None when no event of this chat was ever accepted."""
    return load_many(conn, [chat_id]).get(chat_id)


def load_many(conn: Connection, chat_ids: Sequence[str]) -> dict[str, ChatState]:
    """The states of several chats, as stored now, in one read (two when some carry media); a chat
    none of whose events was ever accepted is left out."""
    chat_ids = list(dict.fromkeys(chat_ids))
    rows_of: dict[str, list[dict[str, Any]]] = {chat_id: [] for chat_id in chat_ids}
    for row in _chats_with_history(len(chat_ids)).all(conn, numbered("chat", chat_ids)):
        rows_of[row["of_chat"]].append(row)
    partial = {chat_id: _from_rows(rows) for chat_id, rows in rows_of.items()}
    states = {chat_id: state for chat_id, state in partial.items() if state is not None}
    # Media rows exist only for messages that carry media: most chats have none, and no read for them.
    with_media = [chat_id for chat_id, state in states.items() if any(m.media for m in state.messages)]
    if with_media:
        media: dict[str, dict[tuple[str, int], MediaStatus]] = {chat_id: {} for chat_id in with_media}
        for r in _media_of(len(with_media)).all(conn, numbered("chat", with_media)):
            media[r["chat_id"]][(r["message_id"], r["position"])] = MediaStatus(
                r["status"], r["reason"], r["filename"], r["content_version_id"])
        states.update({chat_id: replace(states[chat_id], media=found) for chat_id, found in media.items()})
    return states


def _from_rows(rows: Sequence[Mapping[str, Any]]) -> ChatState | None:
    chat = next(({name: r[name] for name in _CHAT_COLUMNS} for r in rows if r["source"] == "chat"), None)
    if chat is None:
        return None
    messages = sorted(
        (MessageState(r["message_id"], r["sender"], r["text"] or "", r["sent_at"], r["agent"], r["media"] or [])
         for r in rows if r["source"] == "message"),
        key=lambda m: (m.sent_at, natural_key(m.message_id)))
    activity = [{"event_id": r["message_id"], "kind": r["sender"], "at": r["sent_at"], "data": r["agent"]}
                for r in rows if r["source"] == "activity"]
    transfers = sorted(
        (TransferStep(r["at"], r["event_id"], r["data"].get("status", ""), r["data"].get("from_agent"),
                      r["data"].get("to_agent"), r["data"].get("to_queue"))
         for r in activity if r["kind"] == "transfer"),
        key=lambda t: (t.at, natural_key(t.event_id)))
    return ChatState(chat, tuple(messages), tuple(assignments_from(activity)), tuple(transfers))
