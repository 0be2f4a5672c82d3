"""What the SSRF-safe media download costs: `fetch_media` against a plain `session.get` of the same file.

A local HTTP server on 127.0.0.1 serves a 600 KB image; the host is listed in allowed_hosts (loopback is
otherwise refused). Each download of `fetch_media` resolves the host, checks every address, connects to
the checked address through its own pinned adapter (a new connection per download), caps and times the
body; `session.get` reuses pooled connections and checks nothing. Also: downloads per second with
several threads sharing one session (the outbox worker's shape), and refusals per second (no connection).

    .venv/bin/python bench/media_fetch.py [--downloads 300] [--threads 4]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crmconnector.http import make_session  # noqa: E402
from crmconnector.sync.media import MediaRefused, fetch_media  # noqa: E402

BODY = b"\xff\xd8\xff\xe0" + bytes(600 * 1024 - 4)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802
        self.send_response(200)
        self.send_header("Content-Type", "image/jpeg")
        self.send_header("Content-Length", str(len(BODY)))
        self.end_headers()
        self.wfile.write(BODY)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def timed(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append((time.perf_counter() - start) * 1000)
    return out


def pct(values: list[float], p: float) -> float:
    return sorted(values)[min(len(values) - 1, int(len(values) * p))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--downloads", type=int, default=300)
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/m/photo.jpg"
    session = make_session(timeout=10)

    def safe() -> bytes:
        return fetch_media(session, url, allowed_hosts=("127.0.0.1",), max_bytes=10 * 1024 * 1024,
                           declared_size=len(BODY), content_type_hint="image/jpeg").data

    def plain() -> bytes:
        return session.get(url).content

    def refused() -> None:
        try:
            fetch_media(session, "http://169.254.169.254/latest/meta-data/", allowed_hosts=None,
                        max_bytes=1024, declared_size=None, content_type_hint=None)
        except MediaRefused:
            return
        raise AssertionError("not refused")

    assert safe() == BODY and plain() == BODY
    timed(safe, 20), timed(plain, 20)  # warm up
    rows = [("fetch_media (checked, pinned)", timed(safe, args.downloads)),
            ("session.get (unchecked, pooled)", timed(plain, args.downloads))]
    print(f"600 KB image from 127.0.0.1, {args.downloads} sequential downloads each")
    for name, ms in rows:
        print(f"  {name:34s} p50 {statistics.median(ms):6.2f} ms   p99 {pct(ms, 0.99):6.2f} ms")
    start = time.perf_counter()
    with ThreadPoolExecutor(args.threads) as pool:
        assert all(d == BODY for d in pool.map(lambda _: safe(), range(args.downloads)))
    elapsed = time.perf_counter() - start
    print(f"  fetch_media, {args.threads} threads, one session: {args.downloads / elapsed:6.0f} downloads/s")
    ms = timed(refused, args.downloads)
    print(f"  refusal of 169.254.169.254 (no connection): p50 {statistics.median(ms) * 1000:6.1f} us")
    server.shutdown()
    session.close()


if __name__ == "__main__":
    main()
