"""Media download for chat logs and tickets, safe against server-side request forgery.

A media URL comes from outside (the SMS platform's event), so fetching it must never let anyone reach
the connector's own network: loopback, private, link-local (cloud metadata at 169.254.169.254), CGNAT,
multicast and other non-public addresses are refused after DNS resolution and again on every redirect,
unless the host is listed explicitly in CRMCONNECTOR_MEDIA_HOSTS. The TCP connection goes to the very
address that was checked (no second lookup a rebinding DNS server could answer differently), while the
Host header, TLS SNI and certificate checks keep using the name. Media never goes through a proxy.

API (stable; the chat-log worker and the abandoned-call job use it):
- `fetch_media(session, url, *, allowed_hosts, max_bytes, declared_size, content_type_hint, filename=None,
  fallback_name="media") -> FetchedMedia(data, content_type, filename)`; raises `MediaRefused(reason)`,
  whose short reason goes into the transcript ("host not allowed", "private address 10.0.0.5 refused",
  "larger than 10485760 bytes", "content type text/html not allowed", "HTTP 404", "timed out", ...).
- `media_uploads(session, settings, chat_id, message_id, position, item) -> FileUpload | str`: one media
  item of an event (`{"url", "content_type", "size_bytes", "filename"}`) as a `FileUpload` keyed
  `"<chat_id>/<message_id>/<position>"`, or the refusal reason; for a failure that may pass (timeout,
  connection error, 5xx, 429, DNS) it raises MediaUnavailable, and the chat log tries again later.
  Media never holds a Task back.
- `make_fetcher(settings, session=None)`: `item -> FetchedMedia` under the settings' rules, raising
  MediaRefused (for callers that name their files themselves, like the abandoned-call Cases).
- `not_attached_note(item, reason)`: the transcript's `[media not attached: <filename or URL> (<reason>)]`.
Sessions come from `crmconnector.http.make_session` (default timeout, CA bundle); one may be shared by
threads, since each download sends through its own pinned adapter. Which item was attached or refused is
remembered per chat in `chat_media` by the chat-log worker, so an item is not fetched again once settled.
"""
from __future__ import annotations

import logging
import socket
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping
from urllib.parse import urljoin, urlsplit

import requests
from urllib3.exceptions import HTTPError, ProtocolError, ReadTimeoutError

from crmconnector.crm.base import FileUpload
from crmconnector.http import PinnedAdapter, SockAddr, default_timeout, make_session
from crmconnector.settings import Settings
from crmconnector.sync.addresses import address_problem
from crmconnector.sync.media_names import extension, not_attached_note, safe_filename, url_filename

__all__ = ["FetchedMedia", "MediaRefused", "fetch_item", "fetch_media", "make_fetcher", "media_key", "media_uploads",
           "not_attached_note", "safe_filename"]

log = logging.getLogger(__name__)

MAX_REDIRECTS = 5
REDIRECTS = frozenset({301, 302, 303, 307, 308})
CHUNK_BYTES = 64 * 1024
MIN_DEADLINE_SECONDS = 60.0
ALLOWED_MAJOR_TYPES = ("image", "video", "audio")
ALLOWED_TYPES = ("application/pdf",)
# SVG is an image that can carry script: opened from the CRM or the local CRM's pages it would run there.
REFUSED_TYPES = ("image/svg+xml",)
GENERIC_TYPES = ("", "application/octet-stream", "binary/octet-stream")


class MediaRefused(Exception):
    """A media item was not fetched; `reason` is short and human, for the transcript.

    `transient` marks failures that may pass (timeouts, connection errors, 5xx, 429, DNS): the chat log
    tries such an item again later instead of giving the consumer's picture up for good."""

    def __init__(self, reason: str, *, transient: bool = False):
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


class MediaUnavailable(Exception):
    """Raised by `media_uploads` for a transient failure: not attached now, worth another try."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass  # not frozen: callers describe it with a Protocol of plain attributes
class FetchedMedia:
    data: bytes
    content_type: str
    filename: str


@dataclass(frozen=True)
class _Target:
    host: str
    port: int
    addresses: tuple[SockAddr, ...]


def fetch_media(session: requests.Session, url: str, *, allowed_hosts: tuple[str, ...] | None, max_bytes: int,
                declared_size: int | None, content_type_hint: str | None, filename: str | None = None,
                fallback_name: str = "media", deadline_seconds: float | None = None) -> FetchedMedia:
    """Download `url` under the media rules (module docstring); raise MediaRefused saying why not.

    Each network wait is bounded by the session's timeout, the whole download by `deadline_seconds`
    (default: four read timeouts, at least a minute)."""
    if declared_size is not None and declared_size > max_bytes:
        raise MediaRefused(f"larger than {max_bytes} bytes")
    declared = _media_type(content_type_hint)
    if declared not in GENERIC_TYPES and not _allowed_type(declared):
        raise MediaRefused(f"content type {declared} not allowed")
    allowed = None if allowed_hosts is None else frozenset(_host_key(h) for h in allowed_hosts)
    deadline = time.monotonic() + (deadline_seconds if deadline_seconds is not None
                                   else max(MIN_DEADLINE_SECONDS, 4 * default_timeout(session)[1]))
    current = url
    try:
        for _hop in range(MAX_REDIRECTS + 1):
            got = _get(session, current, allowed, declared, max_bytes, deadline)
            if isinstance(got, str):
                current = got
                continue
            data, content_type = got
            name = safe_filename(filename) or url_filename(url, content_type) \
                or safe_filename(fallback_name + extension(content_type)) or "media"
            return FetchedMedia(data=data, content_type=content_type, filename=name)
        raise MediaRefused(f"more than {MAX_REDIRECTS} redirects")
    except (requests.exceptions.MissingSchema, requests.exceptions.InvalidSchema, requests.exceptions.InvalidURL):
        raise MediaRefused("invalid URL") from None
    except requests.exceptions.SSLError:
        raise MediaRefused("TLS certificate not accepted") from None
    except (requests.exceptions.Timeout, ReadTimeoutError):
        raise MediaRefused("timed out", transient=True) from None
    except (requests.exceptions.ConnectionError, ProtocolError):
        raise MediaRefused("connection failed", transient=True) from None
    except (requests.exceptions.RequestException, HTTPError):
        raise MediaRefused("download failed", transient=True) from None


def _get(session: requests.Session, url: str, allowed: frozenset[str] | None, declared: str, max_bytes: int,
         deadline: float) -> str | tuple[bytes, str]:
    """One hop: the URL it redirects to, or the body and its content type."""
    prepared = _request(session, url)
    target = _check(prepared.url or "", allowed)
    adapter = PinnedAdapter(target.host, target.port, target.addresses)
    try:
        with adapter.send(prepared, stream=True, timeout=default_timeout(session), verify=session.verify,
                          cert=session.cert) as response:
            if response.status_code in REDIRECTS:
                location = response.headers.get("Location")
                if not location:
                    raise MediaRefused(f"HTTP {response.status_code} without a Location")
                return urljoin(url, location.strip())
            if response.status_code != 200:
                raise MediaRefused(f"HTTP {response.status_code}",
                                   transient=response.status_code >= 500 or response.status_code == 429)
            content_type = _settle_type(_media_type(response.headers.get("Content-Type")), declared)
            _check_length(response.headers.get("Content-Length"), max_bytes)
            return _read_capped(response, max_bytes, deadline), content_type
    finally:
        adapter.close()


def _host_key(host: str) -> str:
    """Host names compared as requests sends them: lower case, IDNA-encoded, no brackets or final dot."""
    host = host.strip().lower().strip("[]").rstrip(".")
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            pass
    return host


def _check(url: str, allowed: frozenset[str] | None) -> _Target:
    """Refuse a URL by scheme, host list and resolved addresses; return the addresses to pin."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise MediaRefused(f"scheme {scheme or 'missing'} not allowed")
    host = _host_key(parts.hostname or "")
    if not host:
        raise MediaRefused("no host in URL")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise MediaRefused("invalid port") from None
    listed = allowed is not None and host in allowed
    if allowed is not None and not listed:
        raise MediaRefused("host not allowed")
    addresses = _resolve(host, port)
    if not listed:
        for _family, sockaddr in addresses:
            problem = address_problem(sockaddr[0].split("%")[0])
            if problem:
                raise MediaRefused(f"{problem} {sockaddr[0]} refused")
    return _Target(host=host, port=port, addresses=addresses)


def _resolve(host: str, port: int) -> tuple[SockAddr, ...]:
    """One DNS lookup per hop; its answers are both checked and connected to."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError, OSError):
        raise MediaRefused("host not found", transient=True) from None
    found: dict[tuple[Any, ...], SockAddr] = {}
    for family, _type, _proto, _name, sockaddr in infos:
        if family in (socket.AF_INET, socket.AF_INET6):
            found.setdefault(tuple(sockaddr), (family, tuple(sockaddr)))
    if not found:
        raise MediaRefused("host not found")
    return tuple(found.values())


def _request(session: requests.Session, url: str) -> requests.PreparedRequest:
    """A bare GET: none of the session's headers, cookies or auth travel to a media host."""
    headers = {"User-Agent": str(session.headers.get("User-Agent", "crmconnector")),
               "Accept": "image/*, video/*, audio/*, application/pdf",
               "Accept-Encoding": "identity"}
    return requests.Request("GET", url, headers=headers).prepare()


def _media_type(raw: str | None) -> str:
    return (raw or "").split(";", 1)[0].strip().lower()


def _allowed_type(media_type: str) -> bool:
    if media_type in REFUSED_TYPES:
        return False
    return media_type.partition("/")[0] in ALLOWED_MAJOR_TYPES or media_type in ALLOWED_TYPES


def _settle_type(served: str, declared: str) -> str:
    """The file's type: what the server says, or what the event declared when the server is vague."""
    if served in GENERIC_TYPES:
        if declared not in GENERIC_TYPES:
            return declared
        raise MediaRefused(f"content type {served or 'missing'} not allowed")
    if not _allowed_type(served):
        raise MediaRefused(f"content type {served} not allowed")
    if declared not in GENERIC_TYPES and declared.partition("/")[0] != served.partition("/")[0]:
        raise MediaRefused(f"content type {served} does not match the declared {declared}")
    return served


def _check_length(raw: str | None, max_bytes: int) -> None:
    try:
        length = int(raw) if raw is not None else None
    except ValueError:
        return
    if length is not None and length > max_bytes:
        raise MediaRefused(f"larger than {max_bytes} bytes")


def _read_capped(response: requests.Response, max_bytes: int, deadline: float) -> bytes:
    """Read the body, stopping as soon as it passes `max_bytes` or the whole download its deadline.

    read1 returns whatever one receive brought, so a server dripping a byte at a time (each within the
    read timeout) still meets the deadline instead of holding a worker thread for hours."""
    chunks: list[bytes] = []
    total = 0
    while chunk := response.raw.read1(CHUNK_BYTES, decode_content=True):
        total += len(chunk)
        if total > max_bytes:
            raise MediaRefused(f"larger than {max_bytes} bytes")
        if time.monotonic() > deadline:
            raise MediaRefused("timed out", transient=True)
        chunks.append(chunk)
    return b"".join(chunks)


def media_key(chat_id: str, message_id: str, position: int) -> str:
    return f"{chat_id}/{message_id}/{position}"


def fetch_item(session: requests.Session, settings: Settings, item: Mapping[str, Any],
               fallback_name: str = "media") -> FetchedMedia:
    """Download one event media item under the settings' host list and size cap (raises MediaRefused)."""
    url = item.get("url")
    if not isinstance(url, str) or not url:
        raise MediaRefused("no URL")
    size, hint, filename = item.get("size_bytes"), item.get("content_type"), item.get("filename")
    return fetch_media(session, url, allowed_hosts=settings.media_hosts, max_bytes=settings.media_max_bytes,
                       declared_size=size if isinstance(size, int) else None,
                       content_type_hint=hint if isinstance(hint, str) else None,
                       filename=filename if isinstance(filename, str) else None, fallback_name=fallback_name)


def make_fetcher(settings: Settings,
                 session: requests.Session | None = None) -> Callable[[Mapping[str, Any]], FetchedMedia]:
    """`fetch_item` bound to the settings and one session (made here when not given)."""
    bound = session if session is not None else make_session(settings)
    return lambda item: fetch_item(bound, settings, item)


def media_uploads(session: requests.Session, settings: Settings, chat_id: str, message_id: str, position: int,
                  item: Mapping[str, Any]) -> FileUpload | str:
    """One event media item as a FileUpload for the CRM, or the reason it is not attached for good;
    MediaUnavailable when a later try may succeed. A media failure never holds the Task back."""
    key = media_key(chat_id, message_id, position)
    try:
        fetched = fetch_item(session, settings, item, f"media-{position + 1}")
    except MediaRefused as refused:
        log.info("media %s not attached: %s", key, refused.reason)
        if refused.transient:
            raise MediaUnavailable(refused.reason) from None
        return refused.reason
    except Exception:  # noqa: BLE001 - a media failure must never hold the Task back
        log.exception("media %s: download failed", key)
        raise MediaUnavailable("download failed") from None
    return FileUpload(key=key, filename=fetched.filename, content_type=fetched.content_type, data=fetched.data)
