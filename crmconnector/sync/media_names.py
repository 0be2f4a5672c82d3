"""How media files and media items are named: safe file names for the CRM, labels for the transcript.

A filename comes from outside (the platform's event or a URL), and a CRM stores it as PathOnClient and
offers it for download, so it loses any path, control characters and characters that file systems
refuse, and keeps at most 255 characters with its extension.
"""
from __future__ import annotations

import re
import unicodedata
from typing import Any, Mapping
from urllib.parse import unquote, urlsplit, urlunsplit

EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "image/gif": ".gif", "image/webp": ".webp",
              "image/heic": ".heic", "image/bmp": ".bmp", "image/tiff": ".tiff", "video/mp4": ".mp4",
              "video/3gpp": ".3gp", "video/quicktime": ".mov", "video/webm": ".webm", "audio/mpeg": ".mp3",
              "audio/mp4": ".m4a", "audio/amr": ".amr", "audio/ogg": ".ogg", "audio/wav": ".wav",
              "audio/x-wav": ".wav", "application/pdf": ".pdf"}
MAX_FILENAME = 255


_UNSAFE_CHARS = re.compile(r'[\x00-\x1f\x7f-\x9f<>:"|?*]')


def safe_filename(name: str | None) -> str:
    """A file name with no path, no control characters and at most 255 characters ('' if nothing is left)."""
    if not name:
        return ""
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[/\\]", name)[-1]
    name = _UNSAFE_CHARS.sub("_", name).strip().lstrip(".").strip()
    if len(name) > MAX_FILENAME:
        stem, dot, ext = name.rpartition(".")
        ext = dot + ext if dot and 0 < len(ext) < 16 else ""
        name = (stem if ext else name)[:MAX_FILENAME - len(ext)].rstrip() + ext
    return name


def extension(content_type: str) -> str:
    return EXTENSIONS.get(content_type, "")


def url_filename(url: str, content_type: str) -> str:
    """The URL path's last segment, given the type's extension when it has none (CRMs preview by it)."""
    name = safe_filename(unquote(urlsplit(url).path.rsplit("/", 1)[-1]))
    if name and "." not in name:
        name = safe_filename(name + extension(content_type))
    return name


def media_label(item: Mapping[str, Any]) -> str:
    """What the transcript calls a media item: its filename, else its URL (without any credentials)."""
    filename = safe_filename(item.get("filename"))
    if filename:
        return filename
    url = str(item.get("url") or "")
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        netloc = parts.netloc.rpartition("@")[2]
        url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    return url


def not_attached_note(item: Mapping[str, Any], reason: str) -> str:
    """The transcript note of CONTRACT section 4 for a media item that is not attached."""
    return f"[media not attached: {media_label(item)} ({reason})]"
