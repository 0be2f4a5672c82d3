"""call.abandoned: record the call for the ticket job (registered with the intake).

No CRM call happens here: the scheduled job decides, matches and creates the Case later, so the
platform gets its answer at once even when the CRM is slow or down. A later event about the same
call (more wait-time messages) merges into the row as long as no ticket exists yet.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sqlalchemy import Connection, select

from crmconnector.events import AbandonedCall, CallAbandoned, Envelope, WaitTimeMessage
from crmconnector.intake import EventContext, Outcome, handles
from crmconnector.store import abandoned_calls, utcnow

# Rows in these states are decided again by the next run when a new event changes the call.
REOPENABLE = ("new", "skipped", "failed")


def _message_json(message: WaitTimeMessage) -> dict[str, Any]:
    return {"id": message.id, "text": message.text, "sent_at": message.sent_at.isoformat(),
            "media": [m.model_dump(exclude_none=True) for m in message.media]}


def _merge_messages(old: list[dict[str, Any]], new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Union by message id (a later copy of a message replaces the earlier), oldest first."""
    merged = {m["id"]: m for m in old}
    merged.update({m["id"]: m for m in new})
    return sorted(merged.values(), key=lambda m: (m["sent_at"], m["id"]))


def _values(call: AbandonedCall) -> dict[str, Any]:
    sms = call.wait_time_sms
    return {
        "caller_number": call.caller_number, "dialed_number": call.dialed_number,
        "queue": call.queue.model_dump(exclude_none=True) if call.queue else None, "lang": call.lang,
        "started_at": call.started_at, "abandoned_at": call.abandoned_at, "wait_seconds": call.wait_seconds,
        "sms_status": sms.status if sms else None,
    }


@handles("call.abandoned")
def apply_abandoned(context: EventContext, conn: Connection, envelope: Envelope, data: BaseModel,
                    prepared: Any) -> Outcome:
    assert isinstance(data, CallAbandoned)  # the intake validated it with this model
    call = data.call
    messages = [_message_json(m) for m in (call.wait_time_sms.messages if call.wait_time_sms else [])]
    existing = conn.execute(select(abandoned_calls).where(abandoned_calls.c.id == call.id)).mappings().first()
    if existing is None:
        conn.execute(abandoned_calls.insert().values(id=call.id, sms_messages=_merge_messages([], messages),
                                                     status="new", received_at=utcnow(), **_values(call)))
        status = "new"
    elif existing["status"] in REOPENABLE:
        conn.execute(abandoned_calls.update().where(abandoned_calls.c.id == call.id).values(
            sms_messages=_merge_messages(existing["sms_messages"] or [], messages), status="new", error=None,
            **_values(call)))
        status = "new"
    else:
        status = existing["status"]  # the Case exists: it is not rewritten
    body: dict[str, Any] = {"call_id": call.id, "status": "recorded" if status == "new" else status}
    if existing is not None and existing["case_id"]:
        body["case_id"] = existing["case_id"]
    return Outcome(202, body)
