"""An agent re-links their chat to another CRM record (the console's pick).

Before the chat log is posted this only changes what it will attach to; after posting, the chat log
is rendered again so the same Task moves to the new record (WhoId/WhatId).
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from crmconnector import console, optout
from crmconnector.chats import link_values
from crmconnector.crm.base import CRMBackend
from crmconnector.crm.errors import CRMRejected
from crmconnector.store import chats, utcnow
from crmconnector.sync.outbox import enqueue, queue_chat_log

# What a chat log can attach to: the Task's WhoId (Contact, Lead) or WhatId (Account, Case). A Case is
# what the console creates when the admin chose it as the new-record object.
LINKABLE_OBJECTS = ("Contact", "Lead", "Account", "Case")


class LinkError(Exception):
    """The link cannot be made: `status` 404 (no such chat for this agent, no such record) or 400."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field


def check_chat(engine: Engine, chat_id: str, agent_email: str | None) -> None:
    """Raise LinkError 404 unless the chat exists and is the agent's (`agent_email` None: the admin,
    who may link any chat). Another agent's chat is reported exactly like a chat that does not
    exist, so an agent cannot probe for other agents' chats."""
    with engine.connect() as conn:
        chat = conn.execute(select(chats.c.agent_email).where(chats.c.id == chat_id)).first()
    if chat is None or (agent_email is not None
                        and (chat.agent_email or "").lower() != agent_email.strip().lower()):
        raise LinkError(404, "not_found", f"no chat {chat_id} assigned to you")


def link_chat(engine: Engine, crm: CRMBackend, chat_id: str, agent_email: str | None, object_name: str,
              record_id: str) -> dict[str, Any]:
    """Link the agent's chat (`agent_email` None: the admin's, any chat) to the record; returns
    {"object", "id", "name"}."""
    check_chat(engine, chat_id, agent_email)
    if object_name not in LINKABLE_OBJECTS:
        raise LinkError(400, "invalid_payload", f"object must be one of {', '.join(LINKABLE_OBJECTS)}", "object")
    try:
        record = crm.get(object_name, str(record_id).strip())
    except CRMRejected:  # a malformed id, or one of another object
        record = None
    if record is None:
        raise LinkError(404, "not_found", f"no {object_name} with id {record_id}", "id")
    with engine.begin() as conn:
        current = conn.execute(select(chats).where(chats.c.id == chat_id)).mappings().one()
        conn.execute(chats.update().where(chats.c.id == chat_id).values(**link_values(record), updated_at=utcnow()))
        if current["ended_at"] is not None:
            queue_chat_log(conn, chat_id)
        if optout.has_keyword(conn, chat_id):
            enqueue(conn, "opt_out", chat_id)  # the consumer's choice follows them to the new record
        if current["agent_email"]:
            console.publish(conn, current["agent_email"], chat_id, "linked",
                            {"chat_id": chat_id, "object": record.object, "id": record.id})
    return {"object": record.object, "id": record.id, "name": record.name}
