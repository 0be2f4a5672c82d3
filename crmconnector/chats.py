"""chat.started: match the consumer, decide the screen pop, and record the chat.

The match is the one CRM call made inside a callback; when the CRM cannot answer (or refuses), the
chat is stored anyway, the response says the match is pending, and the outbox matches it later.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Mapping
from urllib.parse import quote

from sqlalchemy import Connection, Engine, bindparam, select

from crmconnector import console, optout, record_claims
from crmconnector.crm.base import CRMBackend, Record
from crmconnector.crm.errors import CRMError, CRMRejected
from crmconnector.driver_sql import DriverStatement
from crmconnector.events import ChatStarted, Envelope
from crmconnector.intake import EventContext, Outcome, RetryLater, handles
from crmconnector.matching import MatchResult, international, match_number, try_normalize
from crmconnector.metrics import MATCHES
from crmconnector.preferences import pop_settings
from crmconnector.screenpop import PopSettings, ScreenPop, decide
from crmconnector.screenpop.decide import Links, record_pop
from crmconnector.settings import Settings
from crmconnector.store import chats, insert_if_new, update_chat, utcnow
from crmconnector.sync.outbox import enqueue, queue_chat_log

log = logging.getLogger(__name__)


@dataclass
class MatchedPop:
    match: MatchResult
    pop: ScreenPop


def links_for(crm: CRMBackend, settings: Settings) -> Links:
    return Links(crm.record_url, crm.new_record_url, lambda chat_id: chat_page_url(settings, chat_id))


def chat_page_url(settings: Settings, chat_id: str) -> str:
    """The chat's page in the agent console; the id is quoted, since the platform's ids may hold
    characters ("#", "?") that would end the path."""
    return f"{settings.base_url}/agent/chats/{quote(chat_id, safe='')}"


def new_record_fields(object_name: str, e164: str, given: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Fields for a record created for an unknown consumer: the phone, and placeholders for what
    the CRM requires that an SMS does not tell us."""
    label = f"SMS {international(e164)}"
    defaults: dict[str, dict[str, Any]] = {
        "Contact": {"LastName": label, "Phone": e164},
        "Lead": {"LastName": label, "Company": "Unknown", "Phone": e164},
        "Account": {"Name": label, "Phone": e164},
        "Case": {"Subject": f"SMS from {international(e164)}", "SuppliedPhone": e164, "Origin": "Phone"},
    }
    fields = dict(defaults[object_name])
    fields.update({k: v for k, v in (given or {}).items() if v not in (None, "")})
    return fields


def match_and_pop(crm: CRMBackend, engine: Engine, settings: Settings, prefs: PopSettings, chat_id: str,
                  number: str) -> MatchedPop:
    """Match the number and decide the pop; for `create_record`, create the record and pop it."""
    match = match_number(crm, number, region=settings.default_region, object_order=prefs.object_order)
    links = links_for(crm, settings)
    pop = decide(match, prefs, links, chat_id)
    if match.outcome == "none" and prefs.none == "create_record":
        pop = create_and_pop(crm, engine, settings, links, prefs.new_record_object, number, chat_id) or pop
    return MatchedPop(match, pop)


def create_and_pop(crm: CRMBackend, engine: Engine, settings: Settings, links: Links, obj: str, number: str,
                   chat_id: str) -> ScreenPop | None:
    """Create the chat's record and pop it, once per chat however often chat.started arrives (see
    `record_claims`): raises CreateInProgress while another request is creating it. None when the CRM
    refuses it (a validation rule, a required field of the org's own): the new-record page is popped
    instead, for the agent to complete, and the claim is released so a later attempt may try again.

    Any other CRM error keeps the claim: the CRM may have created the record before failing to answer."""
    held = record_claims.claim(engine, chat_id, obj, record_claims.stale_after(settings))
    if held.token is None:
        assert held.record_id is not None
        return _record_pop(crm, links, held.object, held.record_id)
    try:
        record_id = crm.create(obj, new_record_fields(obj, number))
    except CRMRejected as exc:
        record_claims.release(engine, chat_id, held.token)
        log.warning("chat %s: the CRM refused to create a %s (%s); popping its new-record page", chat_id, obj, exc)
        return None
    return _record_pop(crm, links, *record_claims.record(engine, chat_id, obj, record_id))


def _record_pop(crm: CRMBackend, links: Links, obj: str, record_id: str) -> ScreenPop:
    created = crm.get(obj, record_id) or Record(obj, record_id, "")
    return record_pop(created, links)


def matched_record_json(record: Record, number: str, crm: CRMBackend, region: str) -> dict[str, Any]:
    """A match as the callback response and the console show it, with the phone as the CRM holds it."""
    phone = next((p for p in record.phones() if try_normalize(p, region) == number), None)
    return {"object": record.object, "id": record.id, "name": record.name, "phone": phone,
            "url": crm.record_url(record.object, record.id)}


def _prepare(context: EventContext, data: ChatStarted) -> MatchedPop | None:
    prefs = pop_settings(context.engine)
    try:
        matched = match_and_pop(context.crm, context.engine, context.settings, prefs, data.chat.id,
                                data.chat.consumer_number)
    except record_claims.CreateInProgress as exc:
        # An earlier delivery of the event (or another request of the chat) is creating its record: nothing
        # is stored now, and the platform's retry gets that delivery's answer once it is stored.
        raise RetryLater("in_progress", "another request is still creating this chat's CRM record; retry later",
                         exc.retry_after) from exc
    except CRMError:
        # Down, or refusing the search (an object or field the org will not let us search): the event is
        # still accepted, and the outbox matches later or shows the admin the CRM's error.
        MATCHES.labels("pending").inc()
        return None
    MATCHES.labels(matched.match.outcome).inc()
    return matched


def link_values(record: Record | None) -> dict[str, Any]:
    """The chats columns that link a chat to a record (and the Contact's Account, for WhatId)."""
    if record is None:
        return {"linked_object": None, "linked_id": None, "linked_account_id": None}
    account = record.fields.get("AccountId") if record.object == "Contact" else None
    return {"linked_object": record.object, "linked_id": record.id, "linked_account_id": account or None}


def _linked_json(record: Record | None) -> dict[str, str] | None:
    return {"object": record.object, "id": record.id} if record else None


# Built once (building statements per event cost more than running them).
_EXISTING = DriverStatement(select(chats.c.linked_id, chats.c.ended_at, chats.c.agent_email).where(
    chats.c.id == bindparam("chat")))


@handles("chat.started", prepare=_prepare)
def apply_started(context: EventContext, conn: Connection, envelope: Envelope, data: ChatStarted,
                  prepared: MatchedPop | None) -> Outcome:
    chat = data.chat
    values: dict[str, Any] = {
        "started": True, "direction": chat.direction, "consumer_number": chat.consumer_number,
        "business_number": chat.business_number, "queue_id": chat.queue.id if chat.queue else None,
        "queue_name": chat.queue.name if chat.queue else None, "lang": chat.lang,
        "created_at": chat.created_at or envelope.occurred_at or utcnow(), "updated_at": utcnow(),
    }
    body: dict[str, Any] = {"chat_id": chat.id}
    if prepared is None:
        values.update(match_outcome="pending", match_records=[], screen_pop=None)
        body.update(match=None, screen_pop=None, linked_record=None,
                    crm_status="unavailable: the match will be made when the CRM answers")
    else:
        records = [matched_record_json(r, chat.consumer_number, context.crm, context.settings.default_region)
                   for r in prepared.match.records]
        linked = prepared.pop.linked
        values.update(match_outcome=prepared.match.outcome, match_records=records,
                      screen_pop=prepared.pop.as_json(), **link_values(linked))
        body.update(match={"outcome": prepared.match.outcome, "consumer_number": chat.consumer_number,
                           "records": records},
                    screen_pop=prepared.pop.as_json(), linked_record=_linked_json(linked))
    # The chat's row is new unless an earlier event of the chat came first (or the same chat.started under
    # another event id): insert first, one statement in the common case, and look only when it was there.
    existing = None
    if not insert_if_new(conn, chats, {"id": chat.id, **values}):
        existing = _EXISTING.first(conn, {"chat": chat.id})
    if existing is not None:
        if existing["linked_id"]:  # an agent already chose a record: keep their choice
            for column in link_values(None):
                values.pop(column, None)
        update_chat(conn, chat.id, values)
    if prepared is None:
        enqueue(conn, "match", chat.id)
    if existing is not None and existing["ended_at"] is not None:
        queue_chat_log(conn, chat.id)
    if existing is not None and values.get("linked_id") and optout.has_keyword(conn, chat.id):
        enqueue(conn, "opt_out", chat.id)  # a keyword that came before chat.started had no record to go to
    if existing is not None and existing["agent_email"]:
        console.publish(conn, existing["agent_email"], chat.id, "pop", {"chat_id": chat.id})
    return Outcome(200, body)
