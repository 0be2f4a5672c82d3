"""The one outbound HTTP session factory: every request gets a timeout and the configured CA bundle.

`requests` waits forever by default; a CRM or media host that stops answering would then hold a worker
thread for good. Every session the connector uses (simple-salesforce's and the media downloader's) comes
from `make_session`, so no request can leave without a timeout, and `REQUESTS_CA_BUNDLE` (read once into
`Settings.ca_bundle`) is honoured for every HTTPS call.

`PinnedAdapter` is the media downloader's transport: it connects only to socket addresses that were
resolved and checked beforehand, so no second DNS answer can send the connection elsewhere.
"""
from __future__ import annotations

import socket
from typing import Any

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NewConnectionError
from urllib3.util.timeout import _DEFAULT_TIMEOUT

from crmconnector import __version__ as _version
from crmconnector.settings import Settings

Timeout = tuple[float, float]

USER_AGENT = f"crmconnector/{_version}"
CONNECT_TIMEOUT_CAP = 10.0  # a host that has not accepted a TCP connection in 10 s will not


def timeout_for(seconds: float) -> Timeout:
    """(connect, read) timeouts from one configured figure: connecting never needs the full read budget."""
    return (min(CONNECT_TIMEOUT_CAP, seconds), seconds)


class TimeoutAdapter(HTTPAdapter):
    """An adapter that applies a default timeout when the caller gave none (requests' default is none)."""

    def __init__(self, timeout: Timeout, **kwargs: Any):
        self.default_timeout = timeout
        super().__init__(**kwargs)

    def send(self, request: requests.PreparedRequest, stream: bool = False, timeout: Any = None,
             verify: Any = True, cert: Any = None, proxies: Any = None) -> requests.Response:
        return super().send(request, stream=stream, timeout=self.default_timeout if timeout is None else timeout,
                            verify=verify, cert=cert, proxies=proxies)


class Session(requests.Session):
    """A requests.Session that knows its default timeout (the media downloader sends through its own
    pinned adapters and reads it from here)."""

    default_timeout: Timeout

    def merge_environment_settings(self, url: Any, proxies: Any, stream: Any, verify: Any,
                                   cert: Any) -> dict[str, Any]:
        # requests lets the process environment's REQUESTS_CA_BUNDLE override session.verify; the
        # connector's configuration (Settings.ca_bundle, itself read from that variable) decides instead.
        merged = super().merge_environment_settings(url, proxies, stream, verify, cert)
        merged["verify"] = self.verify if verify is None else verify
        return merged


def make_session(settings: Settings | None = None, *, timeout: float | None = None,
                 ca_bundle: str | None = None) -> Session:
    """The connector's session: default timeout on every request, CA bundle from the settings.

    `timeout` and `ca_bundle` override the settings (tests, benchmarks)."""
    seconds = timeout if timeout is not None else (settings.http_timeout_seconds if settings else 30.0)
    bundle = ca_bundle if ca_bundle is not None else (settings.ca_bundle if settings else None)
    session = Session()
    session.default_timeout = timeout_for(seconds)
    adapter = TimeoutAdapter(session.default_timeout)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    if bundle:
        session.verify = bundle
    session.headers["User-Agent"] = USER_AGENT
    return session


def default_timeout(session: requests.Session) -> Timeout:
    """The session's default timeout, or the connector's default for a plain requests.Session."""
    return getattr(session, "default_timeout", timeout_for(30.0))


# --- Connections pinned to addresses that were already checked -------------------------------------------

SockAddr = tuple[socket.AddressFamily, tuple[Any, ...]]


class _PinnedConnectionMixin:
    """Connect to the given socket addresses instead of resolving the host name again.

    The host name stays the connection's `host`, so the Host header, TLS SNI and certificate
    verification all use the name; only the TCP connect goes to the address that was checked.
    This closes the window in which a second DNS answer (DNS rebinding) could point elsewhere."""

    host: str
    port: int
    timeout: Any
    source_address: Any
    socket_options: Any

    def __init__(self, *args: Any, pinned: tuple[SockAddr, ...] = (), **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._pinned = pinned

    def _new_conn(self) -> socket.socket:
        if not self._pinned:
            raise NewConnectionError(self, "no checked address to connect to")  # type: ignore[arg-type]
        error: OSError | None = None
        for family, sockaddr in self._pinned:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                for option in self.socket_options or ():
                    sock.setsockopt(*option)
                if self.timeout is not _DEFAULT_TIMEOUT:
                    sock.settimeout(self.timeout)
                if self.source_address:
                    sock.bind(self.source_address)
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        if isinstance(error, socket.timeout):
            raise ConnectTimeoutError(self, f"connection to {self.host} timed out")
        raise NewConnectionError(self, f"failed to connect to {self.host}: {error}")  # type: ignore[arg-type]


class _PinnedHTTPConnection(_PinnedConnectionMixin, HTTPConnection):
    pass


class _PinnedHTTPSConnection(_PinnedConnectionMixin, HTTPSConnection):
    pass


class _PinnedHTTPPool(HTTPConnectionPool):
    ConnectionCls = _PinnedHTTPConnection


class _PinnedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _PinnedHTTPSConnection


class PinnedAdapter(HTTPAdapter):
    """An adapter for one (host, port) that connects only to `pinned` addresses and never via a proxy.

    Use one per request hop and close it afterwards; any other host is refused (requests' InvalidURL)."""

    def __init__(self, host: str, port: int, pinned: tuple[SockAddr, ...]):
        super().__init__(max_retries=0)
        self._target = (host.lower(), port)
        self._pinned = pinned
        self._pool: HTTPConnectionPool | None = None

    def get_connection_with_tls_context(self, request: requests.PreparedRequest, verify: Any,
                                        proxies: Any = None, cert: Any = None) -> HTTPConnectionPool:
        host_params, pool_kwargs = self.build_connection_pool_key_attributes(request, verify, cert)
        scheme = host_params["scheme"]
        port = host_params["port"] or (443 if scheme == "https" else 80)
        if (str(host_params["host"]).lower(), port) != self._target:
            raise requests.exceptions.InvalidURL(f"this connection is pinned to {self._target[0]}")
        if self._pool is None:
            if scheme == "https":
                self._pool = _PinnedHTTPSPool(host_params["host"], port, pinned=self._pinned, **pool_kwargs)
            else:
                self._pool = _PinnedHTTPPool(host_params["host"], port, pinned=self._pinned)
        return self._pool

    def request_url(self, request: requests.PreparedRequest, proxies: Any) -> str:
        return request.path_url  # never the absolute form a proxy would need

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        super().close()
