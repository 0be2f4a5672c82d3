"""Opt-out and opt-in keywords: a consumer texting STOP (or START) sets (or clears) the linked
record's opt-out field in the CRM.

The latest keyword by `sent_at` wins, so the result does not depend on the order events arrived in.
The CRM write goes through the outbox (kind "opt_out", key = chat id).
"""
from __future__ import annotations

import re
from typing import Sequence

from sqlalchemy import Connection, func, select

from crmconnector.chatstate import MessageState, natural_key
from crmconnector.crm.base import CRMBackend
from crmconnector.crm.objects import OPT_OUT_OBJECTS
from crmconnector.store import chat_messages

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


def latest_choice(messages: Sequence[MessageState]) -> bool | None:
    """The consumer's latest choice (True = opted out), or None if they never sent a keyword."""
    choices = [(m.sent_at, natural_key(m.message_id), choice) for m in messages
               if m.sender == "consumer" and (choice := keyword(m.text)) is not None]
    return max(choices)[2] if choices else None


def has_keyword(conn: Connection, chat_id: str) -> bool:
    """Whether the consumer sent any opt-out or opt-in keyword in this chat."""
    texts = conn.execute(select(chat_messages.c.text).where(
        chat_messages.c.chat_id == chat_id, chat_messages.c.sender == "consumer",
        func.length(chat_messages.c.text) <= 40)).scalars()  # keywords are short; skip long texts in SQL
    return any(keyword(text) is not None for text in texts)


def apply_choice(crm: CRMBackend, linked_object: str | None, linked_id: str | None, field: str,
                 opted_out: bool) -> bool:
    """Write the choice to the linked record; False when no record can carry it."""
    if not linked_id or linked_object not in OPT_OUT_OBJECTS:
        return False
    crm.update(linked_object, linked_id, {field: opted_out})
    return True
