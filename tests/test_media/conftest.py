"""Local media servers, a fake resolver and a connection log for the media download tests.

Every outbound TCP connect in a test goes through `network.connect`, which records the address and can
translate a made-up public address to a local server (a simulated network). A refused URL must leave
`network.connects` empty: that is how the tests show no connection was made to it.
"""
from __future__ import annotations

import socket
import ssl
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import pytest

Route = Callable[[BaseHTTPRequestHandler], None]

PUBLIC_IP = "93.184.216.34"  # a public address the simulated network routes to a local server


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, routes: dict[str, Route]):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.routes = routes
        self.connections = 0
        self.paths: list[str] = []
        self.release = threading.Event()

    def process_request(self, request: Any, client_address: Any) -> None:
        self.connections += 1
        super().process_request(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.server.paths.append(self.path)
        route = self.server.routes.get(self.path.split("?")[0])
        if route is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        route(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class MediaServer:
    server: _Server
    routes: dict[str, Route]
    scheme: str = "http"

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    @property
    def connections(self) -> int:
        return self.server.connections

    @property
    def paths(self) -> list[str]:
        return self.server.paths

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"{self.scheme}://{host}:{self.port}{path}"

    def route(self, path: str, route: Route) -> None:
        self.routes[path] = route

    def serve(self, path: str, body: bytes, content_type: str = "image/jpeg", *, chunked: bool = False,
              status: int = 200, headers: dict[str, str] | None = None) -> None:
        def handle(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(status)
            handler.send_header("Content-Type", content_type)
            for name, value in (headers or {}).items():
                handler.send_header(name, value)
            if chunked:
                handler.send_header("Transfer-Encoding", "chunked")
                handler.end_headers()
                for start in range(0, len(body), 4096):
                    piece = body[start:start + 4096]
                    try:
                        handler.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    except OSError:
                        return  # the client stopped reading: that is the point of the cap
                handler.wfile.write(b"0\r\n\r\n")
            else:
                handler.send_header("Content-Length", str(len(body)))
                handler.end_headers()
                try:
                    handler.wfile.write(body)
                except OSError:
                    return
        self.routes[path] = handle

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        def handle(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(status)
            handler.send_header("Location", location)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
        self.routes[path] = handle

    def drip(self, path: str, interval: float = 0.02) -> None:
        """Send a byte at a time, each well within any read timeout, until the test ends."""
        def handle(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Type", "image/jpeg")
            handler.send_header("Content-Length", "1000")
            handler.end_headers()
            try:
                while not self.server.release.wait(interval):
                    handler.wfile.write(b"d")
                    handler.wfile.flush()
            except OSError:
                return
        self.routes[path] = handle

    def truncate(self, path: str) -> None:
        """Promise 5000 bytes, send 100, hang up."""
        def handle(handler: BaseHTTPRequestHandler) -> None:
            handler.send_response(200)
            handler.send_header("Content-Type", "image/jpeg")
            handler.send_header("Content-Length", "5000")
            handler.end_headers()
            handler.wfile.write(b"t" * 100)
            handler.wfile.flush()
            handler.close_connection = True
        self.routes[path] = handle

    def hang(self, path: str) -> None:
        """Accept the request and answer nothing until the test ends."""
        def handle(handler: BaseHTTPRequestHandler) -> None:
            self.server.release.wait(30)
        self.routes[path] = handle


def _start(ssl_context: ssl.SSLContext | None = None) -> MediaServer:
    routes: dict[str, Route] = {}
    server = _Server(routes)
    if ssl_context is not None:
        server.socket = ssl_context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return MediaServer(server, routes, "https" if ssl_context else "http")


def _stop(media: MediaServer) -> None:
    media.server.release.set()
    media.server.shutdown()
    media.server.server_close()


@pytest.fixture
def media_server() -> Iterator[MediaServer]:
    media = _start()
    yield media
    _stop(media)


@pytest.fixture
def start_tls_server() -> Iterator[Callable[[ssl.SSLContext], MediaServer]]:
    started: list[MediaServer] = []

    def start(context: ssl.SSLContext) -> MediaServer:
        started.append(_start(context))
        return started[-1]
    yield start
    for media in started:
        _stop(media)


@dataclass
class Network:
    """The test's view of DNS and TCP: fake names, simulated routes, and a log of every lookup and connect."""

    names: dict[str, list[str]] = field(default_factory=dict)
    routes: dict[tuple[str, int], tuple[str, int]] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)
    connects: list[tuple[str, int]] = field(default_factory=list)


@pytest.fixture
def network(monkeypatch: pytest.MonkeyPatch) -> Network:
    net = Network()
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect

    def getaddrinfo(host: Any, port: Any, family: int = 0, type: int = 0, proto: int = 0,
                    flags: int = 0) -> Any:
        name = host.decode() if isinstance(host, bytes) else str(host)
        net.lookups.append(name)
        if name in net.names:
            return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "",
                     (ip, port) if ":" not in ip else (ip, port, 0, 0)) for ip in net.names[name]]
        if name.endswith(".test"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real_getaddrinfo(host, port, family, type, proto, flags)

    def routed_connect(sock: socket.socket, address: Any) -> Any:
        host, port = address[0], address[1]
        net.connects.append((host, port))
        return real_connect(sock, net.routes.get((host, port), address))

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", routed_connect)
    return net
