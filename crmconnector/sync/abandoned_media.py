"""Wait-time SMS media of an abandoned call: downloaded and turned into files for its Case.

The download itself (allowed hosts, address checks, size cap) belongs to the media downloader;
this module only asks it for each item and keeps, for every item it cannot attach, the reason the
Case Description gives. A media failure never holds the Case back.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping, Protocol
from urllib.parse import urlsplit, urlunsplit

from crmconnector.crm.base import FileUpload
from crmconnector.http import make_session
from crmconnector.settings import Settings
from crmconnector.sync.abandoned_case import MediaNote
from crmconnector.sync.media import fetch_media

log = logging.getLogger(__name__)


class Fetched(Protocol):
    filename: str
    content_type: str
    data: bytes


# Downloads one media item ({"url", "content_type", "size_bytes", "filename"}), naming the file
# `fallback_name` when neither the item nor its URL names it; an exception with a `reason` attribute
# (the downloader's MediaRefused) says why it was refused.
MediaFetcher = Callable[[Mapping[str, Any], str], Fetched]


def make_fetcher(settings: Settings) -> MediaFetcher:
    """The media downloader configured by the settings (allowed hosts, size cap, CA bundle, timeouts)."""
    session = make_session(settings)

    def fetch(item: Mapping[str, Any], fallback_name: str) -> Fetched:
        size = item.get("size_bytes")
        return fetch_media(session, str(item.get("url") or ""), allowed_hosts=settings.media_hosts,
                           max_bytes=settings.media_max_bytes,
                           declared_size=size if isinstance(size, int) else None,
                           content_type_hint=item.get("content_type"), filename=item.get("filename"),
                           fallback_name=fallback_name)

    return fetch


def media_label(item: Mapping[str, Any]) -> str:
    """How a media item is named in the Description: its filename, else its URL (never with credentials)."""
    if item.get("filename"):
        return str(item["filename"])
    parts = urlsplit(str(item.get("url") or ""))
    if parts.username is not None or parts.password is not None:
        parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
    return urlunsplit(parts)


def file_key(call_id: str, message_id: str, position: int) -> str:
    """The file's idempotency key on its Case: attached once, however often the job repeats."""
    return f"abandoned-{call_id}-{message_id}-{position}"


def fetch_call_media(fetch: MediaFetcher, call: Mapping[str, Any]) -> tuple[list[FileUpload], list[MediaNote]]:
    """Every wait-time media item as a file to attach, or a note saying why it is not attached."""
    files: list[FileUpload] = []
    notes: list[MediaNote] = []
    for message in call.get("sms_messages") or []:
        for position, item in enumerate(message.get("media") or []):
            try:
                got = fetch(item, f"media-{message['id']}-{position + 1}")
            except Exception as exc:  # noqa: BLE001 - a media failure never holds the Case back
                reason = getattr(exc, "reason", None)
                if not reason:
                    log.warning("wait-time media download failed: %s", type(exc).__name__)
                    reason = "download failed"
                notes.append(MediaNote(message["id"], media_label(item), str(reason)))
                continue
            content_type = got.content_type or item.get("content_type") or "application/octet-stream"
            files.append(FileUpload(file_key(call["id"], message["id"], position), got.filename, content_type,
                                    got.data))
    return files, notes
