"""The chat-log Task (CONTRACT section 4), rendered from a chat's current state.

Rendering is pure: the worker loads the state, fetches media and the linked Contact's Account,
and this module turns them into the Task's fields and files. Rendering the same state twice gives
the same Task, which is what makes late and repeated events converge on one record.
"""
from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit, urlunsplit

from crmconnector.chatstate import ChatState, MessageState, TransferStep, agent_label
from crmconnector.crm.base import FileUpload
from crmconnector.matching import international

log = logging.getLogger(__name__)

DESCRIPTION_LIMIT = 32_000
NO_DOWNLOADER = "media download is not available"


def task_key(chat_id: str) -> str:
    """The Task's CallObject: the key that makes the chat log one record, whatever happens."""
    return f"sms-chat-{chat_id}"


def transcript_filename(chat_id: str) -> str:
    return "transcript-" + re.sub(r"[^A-Za-z0-9._-]", "_", chat_id) + ".txt"


def stamp(when: datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%SZ") if when else ""


# Every character that ends a line for str.splitlines, and so for people reading the Description.
_LINE_BREAKS = re.compile(r"\s*[\n\r\v\f\x1c-\x1e\x85\u2028\u2029]+\s*")


def one_line(text: str) -> str:
    """The text with its line breaks as spaces: a message, or a name from outside (an agent's, a
    media filename), must not split its transcript line in two."""
    return _LINE_BREAKS.sub(" ", text).strip()


# Fetches one consumer media item (chat id, message id, position, {"url", "content_type", "size_bytes",
# "filename"}): the file to attach, or the reason it is not attached for good. Any exception means
# "not now": the item is noted as not attached and tried again on a later render.
MediaFetcher = Callable[[str, str, int, Mapping[str, Any]], "FileUpload | str"]


@dataclass(frozen=True)
class MediaOutcome:
    name: str  # the filename, or the URL when the platform gave none
    attached: bool
    reason: str | None = None
    upload: FileUpload | None = None  # bytes to send now (None when the CRM already has them)
    final: bool = True  # record the outcome (False: try again on the next render)
    retry: bool = False  # a passing failure: worth rendering again later for this item alone


@dataclass(frozen=True)
class RenderedTask:
    fields: dict[str, Any]
    files: list[FileUpload] = field(default_factory=list)


def media_name(item: Mapping[str, Any]) -> str:
    """A media item as the transcript names it: its filename, else its URL without credentials."""
    if item.get("filename"):
        return str(item["filename"])
    url = str(item.get("url") or "")
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        url = urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, parts.query, parts.fragment))
    return url


def gather_media(state: ChatState, fetch: MediaFetcher | None) -> dict[tuple[str, int], MediaOutcome]:
    """What becomes of each consumer media item: already attached, fetched now, or refused (why)."""
    outcomes: dict[tuple[str, int], MediaOutcome] = {}
    for message in state.messages:
        if message.sender != "consumer":
            continue
        for position, item in enumerate(message.media):
            key = (message.message_id, position)
            name = media_name(item)
            known = state.media.get(key)
            if known is not None and known.status == "attached":
                outcomes[key] = MediaOutcome(known.filename or name, True)
            elif known is not None and known.status == "refused":
                outcomes[key] = MediaOutcome(name, False, known.reason)
            elif fetch is None:
                outcomes[key] = MediaOutcome(name, False, NO_DOWNLOADER, final=False)
            else:
                outcomes[key] = _fetch(fetch, state.id, item, message.message_id, position)
    return outcomes


def _fetch(fetch: MediaFetcher, chat_id: str, item: Mapping[str, Any], message_id: str,
           position: int) -> MediaOutcome:
    name = media_name(item)
    try:
        got = fetch(chat_id, message_id, position, item)
    except Exception as exc:  # noqa: BLE001 - a media failure never holds the Task back
        log.warning("media download failed: %s", type(exc).__name__)
        reason = getattr(exc, "reason", None) or "download failed"
        return MediaOutcome(name, False, reason, final=False, retry=True)
    if isinstance(got, str):
        return MediaOutcome(name, False, got)
    return MediaOutcome(name, True, upload=got)


def _who(state: ChatState, message: MessageState) -> str:
    if message.sender == "consumer":
        return "Consumer"
    if message.sender == "system":
        return "System"
    label = agent_label(message.agent) or agent_label(state.agent_at(message.sent_at))
    return f"Agent {label}" if label else "Agent"


def _line(state: ChatState, message: MessageState, media: Mapping[tuple[str, int], MediaOutcome]) -> str:
    parts = [message.text.strip()]
    for position, item in enumerate(message.media):
        outcome = media.get((message.message_id, position))
        if outcome is None:
            parts.append(f"[media: {media_name(item)}]")
        elif outcome.attached:
            parts.append(f"[attached: {outcome.upload.filename if outcome.upload else outcome.name}]")
        else:
            parts.append(f"[media not attached: {outcome.name} ({outcome.reason})]")
    body = " ".join(p for p in parts if p)
    return one_line(f"[{stamp(message.sent_at)}] {_who(state, message)}:" + (f" {body}" if body else ""))


def _transfer_line(step: TransferStep) -> str:
    target = agent_label(step.to_agent)
    queue = (step.to_queue or {}).get("name") or (step.to_queue or {}).get("id")
    if queue:
        target = f"{target} in queue {queue}" if target else f"queue {queue}"
    who = " ".join(p for p in (f"from {agent_label(step.from_agent)}" if step.from_agent else "",
                               f"to {target}" if target else "") if p)
    return f"Transfer {step.status}: {stamp(step.at)}" + (f", {who}" if who else "")


def header(state: ChatState) -> list[str]:
    chat = state.chat
    first = state.first_assignment
    accepted = ""
    if first is not None:
        label = agent_label(first.agent)
        accepted = stamp(first.at) + (f" by {label}" if label else "")
    rows = [("Chat ID", state.id), ("Language", chat.get("lang")),
            ("Queue", chat.get("queue_name") or chat.get("queue_id")), ("Initiated", stamp(chat.get("created_at"))),
            ("Accepted", accepted), ("Terminated", stamp(chat.get("ended_at"))),
            ("Disconnected by", chat.get("disconnected_by"))]
    lines = [f"{name}: {value}" for name, value in rows if value] + [_transfer_line(t) for t in state.transfers]
    return [one_line(line) for line in lines]


def _fitting(lines: list[str], budget: int) -> list[str]:
    """The first lines that fit in `budget` characters, each with its line break."""
    kept: list[str] = []
    for line in lines:
        if len(line) + 1 > budget:
            break
        kept.append(line)
        budget -= len(line) + 1
    return kept


def describe(state: ChatState, media: Mapping[tuple[str, int], MediaOutcome]) -> tuple[str, str | None]:
    """The Description, and the full transcript when the Description had to be cut."""
    head = header(state)
    top = "\n".join(head)
    lines = [_line(state, m, media) for m in state.messages]
    full = top + ("\n\n" + "\n".join(lines) if lines else "")
    if len(full) <= DESCRIPTION_LIMIT:
        return full, None
    note = f"[Transcript truncated: the full transcript is attached as {transcript_filename(state.id)}]"
    budget = DESCRIPTION_LIMIT - 1 - len(note)
    if len(top) + 1 > budget:  # so many transfers that the header alone does not fit: cut it at a line too
        return "\n".join(_fitting(head, budget)) + "\n\n" + note, full + "\n"
    kept = _fitting(lines, budget - len(top) - 1)
    return top + "\n\n" + "".join(line + "\n" for line in kept) + note, full + "\n"


def links(linked_object: str | None, linked_id: str | None, contact_account_id: str | None) -> dict[str, Any]:
    """WhoId/WhatId: a Contact or Lead is the Who; an Account (or the Contact's Account) the What;
    a Lead never has a What. Both are always sent, so a re-linked Task drops the old ones."""
    who = linked_id if linked_object in ("Contact", "Lead") else None
    what = linked_id if linked_object in ("Account", "Case") else None
    if linked_object == "Contact":
        what = contact_account_id
    return {"WhoId": who, "WhatId": what}


def render(state: ChatState, *, contact_account_id: str | None = None,
           media: Mapping[tuple[str, int], MediaOutcome] | None = None) -> RenderedTask:
    """The Task and the files to attach, from the chat's state (which must be started and ended)."""
    chat = state.chat
    media = media or {}
    description, full = describe(state, media)
    first = state.first_assignment
    ended: datetime | None = chat.get("ended_at")
    duration = None
    if first is not None and ended is not None:
        duration = max(0, int((ended - first.at).total_seconds()))
    fields: dict[str, Any] = {
        "Subject": f"SMS chat with {international(chat['consumer_number'])}",
        "CallObject": task_key(state.id),
        "CallType": "Outbound" if chat.get("direction") == "outbound" else "Inbound",
        "CallDisposition": chat.get("disposition"),
        "CallDurationInSeconds": duration,
        "Status": "Completed",
        "ActivityDate": ended.date().isoformat() if ended else None,
        **links(chat.get("linked_object"), chat.get("linked_id"), contact_account_id),
        "Description": description,
    }
    files = [o.upload for o in media.values() if o.upload is not None]
    if full is not None:
        # A new key per content: a transcript that grew after posting is attached again, complete.
        digest = hashlib.sha256(full.encode()).hexdigest()[:16]
        files.append(FileUpload(f"transcript-{digest}", transcript_filename(state.id), "text/plain",
                                full.encode()))
    return RenderedTask(fields, files)
