"""Opt-out and opt-in keywords: a consumer texting STOP (or START) sets (or clears) the linked
record's opt-out field in the CRM.

The latest keyword by `sent_at` among all the chats linked to a record wins, so the result depends
neither on the order events arrived in nor on which of the consumer's chats arrived last.
The CRM write goes through the outbox (kind "opt_out", key = chat id).
"""
from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Connection, Select, func, select

from crmconnector.chatstate import natural_key
from crmconnector.store import chat_messages, chats

OPT_OUT = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
OPT_IN = frozenset({"START", "YES", "UNSTOP"})
_SPACES = re.compile(r"\s+")


def keyword(text: str | None) -> bool | None:
    """True for an opt-out keyword, False for an opt-in one, None for any other text.

    The whole text must be the keyword, in any case; spaces anywhere are ignored ("S T O P" too).
    """
    word = _SPACES.sub("", text or "").upper()
    if word in OPT_OUT:
        return True
    if word in OPT_IN:
        return False
    return None


# Keywords are short: longer texts are left out in SQL.
_MAY_BE_KEYWORD = (chat_messages.c.sender == "consumer", func.length(chat_messages.c.text) <= 40)


def record_keywords(linked_object: str, linked_id: str) -> Select[Any]:
    """The consumer's messages that may be keywords in the chats linked to the record, newest first."""
    return (select(chat_messages.c.chat_id, chat_messages.c.message_id, chat_messages.c.text,
                   chat_messages.c.sent_at)
            .join(chats, chats.c.id == chat_messages.c.chat_id)
            .where(chats.c.linked_id == linked_id, chats.c.linked_object == linked_object, *_MAY_BE_KEYWORD)
            .order_by(chat_messages.c.sent_at.desc()))


def latest_choice_for(conn: Connection, linked_object: str, linked_id: str) -> bool | None:
    """The latest choice (True = opted out) in the chats linked to the record, or None without a keyword.

    A keyword from one chat can arrive after a newer one from another chat of the same record, so
    the choice is taken across the record's chats (index on chats.linked_id), newest message first,
    with (sent_at, chat id, message id) deciding ties so the order of arrival never does.
    """
    latest: tuple[Any, ...] | None = None
    for row in conn.execute(record_keywords(linked_object, linked_id)):
        if latest is not None and row.sent_at < latest[0]:
            break  # only messages sent at the same instant as the latest keyword can still tie with it
        choice = keyword(row.text)
        candidate = (row.sent_at, natural_key(row.chat_id), natural_key(row.message_id), choice)
        if choice is not None and (latest is None or candidate > latest):
            latest = candidate
    return latest[-1] if latest else None


def has_keyword(conn: Connection, chat_id: str) -> bool:
    """Whether the consumer sent any opt-out or opt-in keyword in this chat."""
    texts = conn.execute(select(chat_messages.c.text).where(
        chat_messages.c.chat_id == chat_id, *_MAY_BE_KEYWORD)).scalars()
    return any(keyword(text) is not None for text in texts)

