"""The Case an abandoned call becomes: subject key, linked records and the Description.

The Subject is the call's key in the CRM ("Abandoned call <id> from <number>"): the job looks it
up before creating, so a run interrupted after the CRM's create cannot make a second Case.

Linking follows the first match (admin's object order): a Contact sets ContactId and, when the
Contact belongs to an Account, AccountId; an Account sets AccountId; a Lead cannot be linked
(Case has no Lead lookup), so the Description names it instead; no match links nothing.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from typing import Any, Mapping, Sequence

from crmconnector.crm.base import Record
from crmconnector.matching import MatchResult, try_normalize
from crmconnector.matching import international as _international
from crmconnector.sync.chatlog import one_line

DESCRIPTION_LIMIT = 32_000
LINE_LIMIT = DESCRIPTION_LIMIT // 2  # one huge message must not push out every other one
SMS_STATUS_TEXT = {"allowed": "accepted", "denied": "declined", "no_response": "no answer",
                   "not_offered": "not offered"}


@dataclass(frozen=True)
class MediaNote:
    """A wait-time media item that could not be attached, and why."""

    message_id: str
    name: str
    reason: str


@lru_cache(maxsize=4096)
def international(e164: str) -> str:
    """Formatting parses the number again: a batch names each caller several times, and dialed numbers repeat."""
    return _international(e164)


def subject(call_id: str, caller_e164: str) -> str:
    return f"Abandoned call {call_id} from {international(caller_e164)}"


def stamp(value: Any) -> str:
    """`2026-11-21 17:03:10Z`: the transcript's timestamp format."""
    if value is None:
        return "-"
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return when.strftime("%Y-%m-%d %H:%M:%SZ")


def _phone(value: str | None) -> str:
    if not value:
        return "-"
    e164 = try_normalize(value)
    return international(e164) if e164 else value


def links(first: Record | None) -> dict[str, str]:
    """ContactId/AccountId from the first match (nothing for a Lead or no match)."""
    if first is None:
        return {}
    if first.object == "Contact":
        account = first.fields.get("AccountId")
        return {"ContactId": first.id, **({"AccountId": account} if account else {})}
    if first.object == "Account":
        return {"AccountId": first.id}
    return {}


def header(call: Mapping[str, Any], match: MatchResult | None) -> list[str]:
    queue = call.get("queue") or {}
    queue_text = " ".join(p for p in (queue.get("name"), f"({queue['id']})" if queue.get("id") else None) if p)
    messages = call.get("sms_messages") or []
    status = call.get("sms_status")
    count = f"{len(messages)} message{'s' * (len(messages) != 1)}"
    sms = f"{status} ({SMS_STATUS_TEXT[status]}), {count}" if status else f"not reported, {count}"
    wait = call.get("wait_seconds")
    lines = [
        f"Abandoned call: {call['id']}",
        f"Caller: {international(call['caller_number'])}",
        f"Dialed number: {_phone(call.get('dialed_number'))}",
        f"Queue: {queue_text or '-'}",
        f"Language: {call.get('lang') or '-'}",
        f"Started: {stamp(call.get('started_at'))}",
        f"Abandoned: {stamp(call.get('abandoned_at'))}",
        f"Waited: {wait if wait is not None else '-'} seconds",
        f"Wait-time SMS: {sms}",
    ]
    if match is not None:
        first = match.first
        lines.append(f"CRM match: {match.outcome}"
                     + (f"; first: {first.object} {first.name} ({first.id})" if first else ""))
    return [one_line(line) for line in lines]


def message_lines(messages: Sequence[Mapping[str, Any]], notes: Sequence[MediaNote]) -> list[str]:
    """One line per wait-time message, oldest first, with media that could not be attached."""
    by_message: dict[str, list[MediaNote]] = {}
    for note in notes:
        by_message.setdefault(note.message_id, []).append(note)
    lines = []
    for message in sorted(messages, key=lambda m: (m["sent_at"], m["id"])):
        text = " ".join(str(message.get("text") or "").split())
        if len(text) > LINE_LIMIT:
            text = text[:LINE_LIMIT] + " [message cut]"
        extra = " ".join(f"[media not attached: {n.name} ({n.reason})]" for n in by_message.get(message["id"], ()))
        lines.append(one_line(f"[{stamp(message['sent_at'])}] Caller: {' '.join(p for p in (text, extra) if p)}"))
    return lines


def description(call: Mapping[str, Any], match: MatchResult | None, notes: Sequence[MediaNote] = ()) -> str:
    """Header, then the wait-time SMS messages; cut at a message boundary to fit the field."""
    head = "\n".join(header(call, match))
    lines = message_lines(call.get("sms_messages") or [], notes)
    if not lines:
        return head
    body = head + "\n\nWait-time SMS messages:"
    for i, line in enumerate(lines):
        after = _cut_marker(len(lines) - i - 1) if i < len(lines) - 1 else ""
        if len(body) + 1 + len(line) + len(after) > DESCRIPTION_LIMIT:
            return body + _cut_marker(len(lines) - i)  # fits: the previous step reserved its room
        body += "\n" + line
    return body


def _cut_marker(left: int) -> str:
    return (f"\n[{left} more message{'s' * (left != 1)} not shown: the Case Description is limited to "
            f"{DESCRIPTION_LIMIT} characters]")


def case_fields(call: Mapping[str, Any], match: MatchResult | None,
                notes: Sequence[MediaNote] = ()) -> dict[str, Any]:
    """The Case of CONTRACT section 4 for one abandoned call."""
    return {
        "Subject": subject(call["id"], call["caller_number"]),
        "Origin": "Phone",
        "Status": "New",
        "SuppliedPhone": call["caller_number"],
        **links(match.first if match else None),
        "Description": description(call, match, notes),
    }
