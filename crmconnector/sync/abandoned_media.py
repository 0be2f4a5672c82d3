"""Wait-time SMS media of an abandoned call: downloaded and turned into files for its Case.

The download itself (allowed hosts, address checks, size cap) belongs to the media downloader;
this module only asks it for each item and keeps, for every item it cannot attach, the reason the
Case Description gives. A media failure never holds the Case back.
"""
from __future__ import annotations

import importlib
import logging
from typing import Any, Callable, Mapping, Protocol
from urllib.parse import unquote, urlsplit

from crmconnector.crm.base import FileUpload
from crmconnector.settings import Settings
from crmconnector.sync.abandoned_case import MediaNote

log = logging.getLogger(__name__)

NO_DOWNLOADER = "media download is not available"


class Fetched(Protocol):
    filename: str | None
    content_type: str
    data: bytes


# Downloads one media item ({"url", "content_type", "size_bytes", "filename"}); an exception with a
# `reason` attribute says why it was refused.
MediaFetcher = Callable[[Mapping[str, Any]], Fetched]


def _unavailable(item: Mapping[str, Any]) -> Fetched:
    raise _Refused(NO_DOWNLOADER)


class _Refused(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def make_fetcher(settings: Settings) -> MediaFetcher:
    """The media downloader configured by the settings (allowed hosts, size cap, CA bundle)."""
    try:
        media = importlib.import_module("crmconnector.sync.media")
    except ModuleNotFoundError as exc:
        if exc.name != "crmconnector.sync.media":
            raise
        return _unavailable
    factory = getattr(media, "make_fetcher", None)
    return factory(settings) if factory else _unavailable


def media_name(item: Mapping[str, Any]) -> str:
    """How a media item is named in the Description: its filename, else its URL."""
    return str(item.get("filename") or item.get("url") or "")


def file_name(item: Mapping[str, Any], message_id: str, position: int) -> str:
    if item.get("filename"):
        return str(item["filename"])
    last = unquote(urlsplit(str(item.get("url", ""))).path.rpartition("/")[2])
    return last or f"media-{message_id}-{position + 1}"


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
                got = fetch(item)
            except Exception as exc:  # noqa: BLE001 - a media failure never holds the Case back
                reason = getattr(exc, "reason", None)
                if not reason:
                    log.warning("wait-time media download failed: %s", type(exc).__name__)
                    reason = "download failed"
                notes.append(MediaNote(message["id"], media_name(item), str(reason)))
                continue
            name = item.get("filename") or getattr(got, "filename", None) or file_name(item, message["id"], position)
            content_type = got.content_type or item.get("content_type") or "application/octet-stream"
            files.append(FileUpload(file_key(call["id"], message["id"], position), str(name), content_type, got.data))
    return files, notes
