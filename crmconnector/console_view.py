"""What the agent console shows: a JSON snapshot per chat, built from the chat's stored state.

The live stream sends whole snapshots rather than deltas, so a console that missed updates (a
dropped connection, a restart) is made whole again by the next snapshot of each chat it hears of.
An agent only ever gets the chats whose current agent they are. Each snapshot carries a `version`
(the newest console event id when it was read), so a console that gets two snapshots of one chat
out of order (a request's answer overtaken by the stream) keeps the newer.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Iterable, Mapping
from urllib.parse import urlsplit

from sqlalchemy import Connection, Engine, RowMapping, and_, func, or_, select

from crmconnector.chats import new_record_fields
from crmconnector.chatstate import ChatState, agent_label, assignments_from
from crmconnector.crm.base import CRMBackend
from crmconnector.matching import international
from crmconnector.preferences import pop_settings
from crmconnector.store import chat_activity, chat_media, chat_messages, chats, console_events, reading, utcnow

# Ended chats stay on the console this long after their last change, so the agent sees them posted.
ENDED_VISIBLE_FOR = timedelta(hours=12)
MAX_MESSAGES = 500
IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
# The fields the console's new-record form offers, per object (the phone field is prefilled).
FORM_FIELDS: dict[str, tuple[str, ...]] = {
    "Contact": ("FirstName", "LastName", "Email", "Phone"),
    "Lead": ("FirstName", "LastName", "Company", "Email", "Phone"),
    "Account": ("Name", "Phone"),
    "Case": ("Subject", "SuppliedPhone", "Description"),
}


@dataclass(frozen=True)
class ConsoleUpdate:
    """The newest console event of one chat in a batch read by the stream."""

    id: int
    chat_id: str
    kind: str


def _iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def _display(number: str | None) -> str:
    if not number:
        return ""
    try:
        return international(number)
    except Exception:  # noqa: BLE001 - a stored number that no longer parses is shown as stored
        return number


def _web_url(url: Any) -> str | None:
    """The URL when the console may link to it (http or https with a host); None for any other scheme
    (javascript:, data:...), which the console shows as text, as the chat log refuses to fetch it."""
    if not isinstance(url, str):
        return None
    parts = urlsplit(url)
    return url if parts.scheme.lower() in ("http", "https") and parts.netloc and url == url.strip() else None


def _media_json(items: Iterable[Mapping[str, Any]], stored: Mapping[int, Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for position, item in enumerate(items or ()):
        kind = str(item.get("content_type") or "").split(";")[0].strip().lower()
        fetched = stored.get(position, {})
        out.append({"url": _web_url(item.get("url")), "filename": item.get("filename") or item.get("url"),
                    "content_type": kind or None, "is_image": kind in IMAGE_TYPES,
                    "status": fetched.get("status"), "reason": fetched.get("reason")})
    return out


def _messages(conn: Connection, chat_id: str, held_by: ChatState) -> list[dict[str, Any]]:
    """The chat's messages; an agent's is named as the chat log names it: by the event's `agent`, else
    by the agent who held the chat when it was sent (`held_by`)."""
    rows = conn.execute(select(chat_messages).where(chat_messages.c.chat_id == chat_id)
                        .order_by(chat_messages.c.sent_at, chat_messages.c.message_id).limit(MAX_MESSAGES)
                        ).mappings().all()
    media_rows = conn.execute(select(chat_media).where(chat_media.c.chat_id == chat_id)).mappings().all()
    media: dict[str, dict[int, Mapping[str, Any]]] = {}
    for m in media_rows:
        media.setdefault(m["message_id"], {})[m["position"]] = dict(m)
    return [{"id": r["message_id"], "sender": r["sender"], "text": r["text"] or "", "sent_at": _iso(r["sent_at"]),
             "agent_name": _agent_name(r, held_by) if r["sender"] == "agent" else None,
             "media": _media_json(r["media"] or [], media.get(r["message_id"], {}))} for r in rows]


def _agent_name(message: RowMapping, held_by: ChatState) -> str | None:
    agent = message["agent"] if isinstance(message["agent"], dict) else None
    return agent_label(agent) or agent_label(held_by.agent_at(message["sent_at"])) or None


def _activity(conn: Connection, chat_id: str) -> list[RowMapping]:
    """The chat's assignments and transfers, oldest first."""
    return list(conn.execute(select(chat_activity).where(chat_activity.c.chat_id == chat_id)
                             .order_by(chat_activity.c.at)).mappings().all())


def _transfers(activity: Iterable[RowMapping]) -> list[dict[str, Any]]:
    return [{"kind": r["kind"], "at": _iso(r["at"]), "data": r["data"]} for r in activity if r["kind"] != "assigned"]


def _crm_status(row: Mapping[str, Any], crm: CRMBackend) -> dict[str, Any]:
    status = row["crm_status"] or ("pending" if row["ended_at"] else "open")
    task_url = crm.record_url("Task", row["task_id"]) if row["task_id"] else None
    return {"status": status, "task_id": row["task_id"], "task_url": task_url,
            "error": row["crm_error"] if status == "failed" else None}


def _new_record(row: Mapping[str, Any], crm: CRMBackend, object_name: str) -> dict[str, Any]:
    number = row["consumer_number"] or ""
    prefill = new_record_fields(object_name, number) if number else {}
    phone_field = "SuppliedPhone" if object_name == "Case" else "Phone"
    fields = [{"name": f, "value": str(prefill.get(f, "")), "required": f in ("LastName", "Company", "Name")}
              for f in FORM_FIELDS[object_name]]
    return {"object": object_name, "fields": fields, "mode": "form" if crm.name == "local" else "link",
            "url": crm.new_record_url(object_name, {phone_field: number}, chat_id=row["id"]) if number else None}


def _local_name(crm: CRMBackend, object_name: str, record_id: str) -> str | None:
    """A linked record's name that the match did not return (picked by id, or created in the console).
    Only the embedded CRM is asked: on Salesforce it would cost an API request per snapshot."""
    if crm.name != "local":
        return None
    record = crm.get(object_name, record_id)
    return record.name if record else None


def _version(conn: Connection) -> int:
    """The newest console event id, read before the chat: the snapshot shows every change up to it."""
    return int(conn.execute(select(func.max(console_events.c.id))).scalar() or 0)


def chat_snapshot(conn: Connection, crm: CRMBackend, row: Mapping[str, Any], new_record_object: str,
                  version: int) -> dict[str, Any]:
    """Everything the console shows for one chat, as of `version` (or newer)."""
    linked = None
    if row["linked_id"]:
        records = row["match_records"] or []
        known = next((r for r in records if r.get("id") == row["linked_id"]), None)
        name = known.get("name") if known else _local_name(crm, row["linked_object"], row["linked_id"])
        linked = {"object": row["linked_object"], "id": row["linked_id"], "name": name,
                  "url": crm.record_url(row["linked_object"], row["linked_id"])}
    outcome = row["match_outcome"]
    activity = _activity(conn, row["id"])
    held_by = ChatState(row, assignments=tuple(assignments_from(activity)))
    return {
        "id": row["id"], "direction": row["direction"], "consumer_number": row["consumer_number"],
        "consumer_display": _display(row["consumer_number"]), "queue": row["queue_name"], "lang": row["lang"],
        "created_at": _iso(row["created_at"]), "assigned_at": _iso(row["assigned_at"]),
        "ended_at": _iso(row["ended_at"]), "disposition": row["disposition"],
        "agent_email": row["agent_email"], "started": bool(row["started"]),
        "match": {"outcome": outcome, "records": row["match_records"] or []},
        "screen_pop": row["screen_pop"], "linked": linked,
        "new_record": _new_record(row, crm, new_record_object) if outcome == "none" else None,
        "messages": _messages(conn, row["id"], held_by), "transfers": _transfers(activity),
        "crm": _crm_status(row, crm), "version": version,
    }


def _visible(email: str) -> Any:
    recent = utcnow() - ENDED_VISIBLE_FOR
    return and_(func.lower(chats.c.agent_email) == email.lower(),
                or_(chats.c.ended_at.is_(None), chats.c.updated_at >= recent))


def agent_chats(engine: Engine, crm: CRMBackend, email: str) -> list[dict[str, Any]]:
    """The agent's current chats, oldest accepted first."""
    obj = pop_settings(engine).new_record_object
    with reading(engine) as conn:
        version = _version(conn)
        rows = conn.execute(select(chats).where(_visible(email))
                            .order_by(chats.c.assigned_at.is_(None), chats.c.assigned_at, chats.c.created_at,
                                      chats.c.id)).mappings().all()
        return [chat_snapshot(conn, crm, r, obj, version) for r in rows]


def agent_chat(engine: Engine, crm: CRMBackend, email: str, chat_id: str) -> dict[str, Any] | None:
    """One chat, or None unless its current agent is `email`."""
    obj = pop_settings(engine).new_record_object
    with reading(engine) as conn:
        version = _version(conn)
        row = conn.execute(select(chats).where(chats.c.id == chat_id)).mappings().first()
        if row is None or (row["agent_email"] or "").lower() != email.lower():
            return None
        return chat_snapshot(conn, crm, row, obj, version)


def latest_event_id(engine: Engine) -> int:
    """The newest console event id: a console that loaded its chats now follows the stream from here."""
    with reading(engine) as conn:
        return _version(conn)


def updates_after(engine: Engine, email: str, after_id: int, limit: int = 500) -> list[ConsoleUpdate]:
    """The agent's console events after `after_id`, one per chat (its newest), in id order."""
    with reading(engine) as conn:
        rows = conn.execute(select(console_events.c.id, console_events.c.chat_id, console_events.c.kind)
                            .where(console_events.c.agent_email == email.lower(), console_events.c.id > after_id)
                            .order_by(console_events.c.id).limit(limit)).all()
    newest: dict[str, ConsoleUpdate] = {}
    for row in rows:
        newest.pop(row.chat_id, None)  # re-insert so dict order follows the newest id
        newest[row.chat_id] = ConsoleUpdate(row.id, row.chat_id, row.kind)
    return list(newest.values())
