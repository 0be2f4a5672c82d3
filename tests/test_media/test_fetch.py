"""fetch_media against real local servers: what is fetched, what is refused, and that refused
addresses are never connected to."""
from __future__ import annotations

from http.server import BaseHTTPRequestHandler

import pytest

from crmconnector.http import make_session
from crmconnector.sync.media import FetchedMedia, MediaRefused, fetch_media
from tests.test_media.conftest import PUBLIC_IP, MediaServer, Network

JPEG = b"\xff\xd8\xff\xe0" + b"x" * 5000
MAX = 10_000


def fetch(url: str, allowed: tuple[str, ...] | None = None, *, max_bytes: int = MAX,
          declared_size: int | None = None, hint: str | None = "image/jpeg", timeout: float = 5.0,
          ca_bundle: str | None = None) -> FetchedMedia:
    with make_session(timeout=timeout, ca_bundle=ca_bundle) as session:
        return fetch_media(session, url, allowed_hosts=allowed, max_bytes=max_bytes, declared_size=declared_size,
                           content_type_hint=hint)


def refusal(url: str, allowed: tuple[str, ...] | None = None, **kwargs: object) -> str:
    with pytest.raises(MediaRefused) as caught:
        fetch(url, allowed, **kwargs)  # type: ignore[arg-type]
    return caught.value.reason


def test_loopback_is_fetched_when_listed_explicitly(media_server: MediaServer, network: Network) -> None:
    media_server.serve("/m/photo.jpg", JPEG)

    got = fetch(media_server.url("/m/photo.jpg"), ("127.0.0.1",))

    assert got == FetchedMedia(data=JPEG, content_type="image/jpeg", filename="photo.jpg")
    assert media_server.connections == 1
    assert network.connects == [("127.0.0.1", media_server.port)]


def test_loopback_is_refused_without_a_connection(media_server: MediaServer, network: Network) -> None:
    media_server.serve("/m/photo.jpg", JPEG)

    assert refusal(media_server.url("/m/photo.jpg")) == "loopback address 127.0.0.1 refused"
    assert media_server.connections == 0
    assert network.connects == []


def test_host_not_listed_is_refused_before_any_lookup(media_server: MediaServer, network: Network) -> None:
    media_server.serve("/m/photo.jpg", JPEG)

    assert refusal(media_server.url("/m/photo.jpg"), ("media.example.com",)) == "host not allowed"
    assert network.lookups == []
    assert media_server.connections == 0


@pytest.mark.parametrize(("url", "reason"), [
    ("http://10.0.0.5/a.jpg", "private address 10.0.0.5 refused"),
    ("http://10.255.255.254:8080/a.jpg", "private address 10.255.255.254 refused"),
    ("http://172.16.0.1/a.jpg", "private address 172.16.0.1 refused"),
    ("http://192.168.1.20/a.jpg", "private address 192.168.1.20 refused"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata address 169.254.169.254 refused"),
    ("http://169.254.10.1/a.jpg", "link-local address 169.254.10.1 refused"),
    ("http://100.64.0.1/a.jpg", "carrier-grade NAT address 100.64.0.1 refused"),
    ("http://0.0.0.0/a.jpg", "unspecified address 0.0.0.0 refused"),
    ("http://224.0.0.1/a.jpg", "multicast address 224.0.0.1 refused"),
    ("http://[::1]/a.jpg", "loopback address ::1 refused"),
    ("http://[fe80::1]/a.jpg", "link-local address fe80::1 refused"),
    ("http://[fc00::7]/a.jpg", "private address fc00::7 refused"),
    ("http://[::ffff:10.0.0.1]/a.jpg", "private address ::ffff:10.0.0.1 refused"),
    ("http://[::ffff:169.254.169.254]/a.jpg", "cloud metadata address ::ffff:169.254.169.254 refused"),
    ("http://[64:ff9b::7f00:1]/a.jpg", "loopback address 64:ff9b::7f00:1 refused"),
    ("http://2130706433/a.jpg", "loopback address 127.0.0.1 refused"),  # 127.0.0.1 written as a number
])
def test_non_public_addresses_are_refused_without_a_connection(url: str, reason: str, network: Network) -> None:
    assert refusal(url) == reason
    assert network.connects == []


def test_a_name_resolving_to_a_private_address_is_refused(network: Network) -> None:
    network.names["media.test"] = ["10.1.2.3"]

    assert refusal("https://media.test/a.jpg") == "private address 10.1.2.3 refused"
    assert network.connects == []


def test_a_name_with_one_private_address_among_public_ones_is_refused(network: Network) -> None:
    network.names["media.test"] = [PUBLIC_IP, "192.168.0.9"]

    assert refusal("http://media.test/a.jpg") == "private address 192.168.0.9 refused"
    assert network.connects == []


def test_an_unknown_host_is_refused(network: Network) -> None:
    assert refusal("http://nowhere.test/a.jpg") == "host not found"
    assert network.connects == []


@pytest.mark.parametrize(("url", "reason"), [
    ("file:///etc/passwd", "scheme file not allowed"),
    ("ftp://media.test/a.jpg", "scheme ftp not allowed"),
    ("gopher://127.0.0.1:70/", "scheme gopher not allowed"),
    ("media.test/a.jpg", "invalid URL"),
    ("http:///a.jpg", "invalid URL"),
])
def test_only_http_and_https_urls_are_fetched(url: str, reason: str, network: Network) -> None:
    assert refusal(url) == reason
    assert network.connects == []


def test_the_checked_address_is_connected_to_with_one_lookup_and_the_name_as_host(
        media_server: MediaServer, network: Network) -> None:
    seen: dict[str, str] = {}

    def handle(handler: BaseHTTPRequestHandler) -> None:
        seen.update(handler.headers.items())
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Content-Length", "3")
        handler.end_headers()
        handler.wfile.write(b"png")
    media_server.route("/p", handle)
    network.names["media.test"] = ["127.0.0.1"]

    got = fetch(media_server.url("/p", host="media.test"), ("media.test",), hint=None)

    assert got == FetchedMedia(data=b"png", content_type="image/png", filename="p.png")
    assert network.lookups.count("media.test") == 1
    assert network.connects == [("127.0.0.1", media_server.port)]
    assert seen["Host"] == f"media.test:{media_server.port}"


def test_session_credentials_never_travel_to_a_media_host(media_server: MediaServer, network: Network) -> None:
    seen: dict[str, str] = {}

    def handle(handler: BaseHTTPRequestHandler) -> None:
        seen.update(handler.headers.items())
        media_server.serve("/x", JPEG)  # answer as an image from now on
        media_server.routes["/x"](handler)
    media_server.route("/x", handle)
    with make_session(timeout=5) as session:
        session.headers["Authorization"] = "Bearer crm-session-token"
        session.cookies.set("sid", "crm-cookie")
        fetch_media(session, media_server.url("/x"), allowed_hosts=("127.0.0.1",), max_bytes=MAX,
                    declared_size=None, content_type_hint=None)

    assert "Authorization" not in seen and "Cookie" not in seen
    assert seen["User-Agent"].startswith("crmconnector/")


# --- Redirects ---------------------------------------------------------------------------------------------

def test_redirects_within_allowed_hosts_are_followed(media_server: MediaServer, network: Network) -> None:
    media_server.redirect("/a", "/b", 301)
    media_server.redirect("/b", media_server.url("/c"), 307)
    media_server.serve("/c", JPEG)

    got = fetch(media_server.url("/a"), ("127.0.0.1",))

    assert got.data == JPEG and got.filename == "a.jpg"
    assert media_server.paths == ["/a", "/b", "/c"]


def test_five_redirects_are_followed_and_a_sixth_is_refused(media_server: MediaServer, network: Network) -> None:
    for hop in range(6):
        media_server.redirect(f"/r{hop}", f"/r{hop + 1}")
    media_server.serve("/r5", JPEG)
    media_server.serve("/r6", JPEG)

    assert fetch(media_server.url("/r0"), ("127.0.0.1",)).data == JPEG
    media_server.redirect("/r5", "/r6")
    assert refusal(media_server.url("/r0"), ("127.0.0.1",)) == "more than 5 redirects"
    assert "/r6" not in media_server.paths


@pytest.mark.parametrize("target", [
    "http://127.0.0.1:{port}/secret",
    "http://localhost:{port}/secret",
    "http://[::1]:{port}/secret",
    "http://10.0.0.5/secret",
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
])
def test_a_redirect_from_an_allowed_server_to_an_unlisted_host_is_refused(
        target: str, media_server: MediaServer, network: Network) -> None:
    network.names["media.test"] = ["127.0.0.1"]
    media_server.redirect("/start", target.format(port=media_server.port))
    media_server.serve("/secret", b"internal")

    assert refusal(media_server.url("/start", host="media.test"), ("media.test",)) == "host not allowed"
    assert media_server.paths == ["/start"]
    assert network.connects == [("127.0.0.1", media_server.port)]


@pytest.mark.parametrize(("target", "reason"), [
    ("http://127.0.0.1:{port}/secret", "loopback address 127.0.0.1 refused"),
    ("http://[::ffff:127.0.0.1]:{port}/secret", "loopback address ::ffff:127.0.0.1 refused"),
    ("http://10.0.0.5/secret", "private address 10.0.0.5 refused"),
    ("http://169.254.169.254/latest/meta-data/", "cloud metadata address 169.254.169.254 refused"),
    ("http://internal.test/secret", "private address 10.9.9.9 refused"),
    ("file:///etc/passwd", "scheme file not allowed"),
])
def test_a_redirect_from_a_public_host_to_a_non_public_address_is_refused(
        target: str, reason: str, media_server: MediaServer, network: Network) -> None:
    network.names["cdn.test"] = [PUBLIC_IP]
    network.names["internal.test"] = ["10.9.9.9"]
    network.routes[(PUBLIC_IP, 80)] = ("127.0.0.1", media_server.port)  # the simulated internet
    media_server.redirect("/start", target.format(port=media_server.port))
    media_server.serve("/secret", b"internal")

    assert refusal("http://cdn.test/start") == reason
    assert media_server.paths == ["/start"]
    assert network.connects == [(PUBLIC_IP, 80)]


def test_a_public_host_is_fetched_when_no_host_list_is_set(media_server: MediaServer, network: Network) -> None:
    network.names["cdn.test"] = [PUBLIC_IP]
    network.routes[(PUBLIC_IP, 80)] = ("127.0.0.1", media_server.port)
    media_server.serve("/v/clip", b"\x00\x00\x00\x18ftypmp42", "video/mp4")

    got = fetch("http://cdn.test/v/clip", hint="video/mp4")

    assert got == FetchedMedia(data=b"\x00\x00\x00\x18ftypmp42", content_type="video/mp4", filename="clip.mp4")


# --- Size, type, status, time --------------------------------------------------------------------------------

def test_a_declared_size_over_the_cap_is_refused_before_connecting(network: Network) -> None:
    assert refusal("http://127.0.0.1:9/a.jpg", ("127.0.0.1",), declared_size=MAX + 1) == f"larger than {MAX} bytes"
    assert network.connects == []


def test_a_content_length_over_the_cap_is_refused(media_server: MediaServer, network: Network) -> None:
    media_server.serve("/big.jpg", b"y" * (MAX + 1))

    assert refusal(media_server.url("/big.jpg"), ("127.0.0.1",)) == f"larger than {MAX} bytes"


def test_a_chunked_body_over_the_cap_is_refused(media_server: MediaServer, network: Network) -> None:
    media_server.serve("/big.jpg", b"y" * (MAX * 50), chunked=True)

    assert refusal(media_server.url("/big.jpg"), ("127.0.0.1",)) == f"larger than {MAX} bytes"


def test_a_body_of_exactly_the_cap_is_fetched(media_server: MediaServer, network: Network) -> None:
    media_server.serve("/edge.jpg", b"z" * MAX, chunked=True)

    assert fetch(media_server.url("/edge.jpg"), ("127.0.0.1",), declared_size=MAX).data == b"z" * MAX


@pytest.mark.parametrize(("served", "hint", "outcome"), [
    ("text/html", None, "content type text/html not allowed"),
    ("text/html; charset=utf-8", "image/jpeg", "content type text/html not allowed"),
    ("image/svg+xml", None, "content type image/svg+xml not allowed"),
    ("application/zip", "application/pdf", "content type application/zip not allowed"),
    ("application/octet-stream", None, "content type application/octet-stream not allowed"),
    ("video/mp4", "image/jpeg", "content type video/mp4 does not match the declared image/jpeg"),
    ("image/jpeg; charset=binary", "image/jpeg", "image/jpeg"),
    ("image/png", "image/jpeg", "image/png"),
    ("application/octet-stream", "image/png", "image/png"),
    ("application/pdf", "application/pdf", "application/pdf"),
    ("audio/amr", None, "audio/amr"),
])
def test_content_types(served: str, hint: str | None, outcome: str, media_server: MediaServer,
                       network: Network) -> None:
    media_server.serve("/f", b"data", served)
    url = media_server.url("/f")
    if "/" in outcome and " " not in outcome:
        assert fetch(url, ("127.0.0.1",), hint=hint).content_type == outcome
    else:
        assert refusal(url, ("127.0.0.1",), hint=hint) == outcome


def test_a_declared_type_that_is_not_allowed_is_refused_before_connecting(network: Network) -> None:
    assert refusal("http://127.0.0.1:9/page", ("127.0.0.1",), hint="text/html") == \
        "content type text/html not allowed"
    assert network.connects == []


@pytest.mark.parametrize("status", [404, 403, 500])
def test_http_errors_are_refusals(status: int, media_server: MediaServer, network: Network) -> None:
    media_server.serve("/gone.jpg", b"no", "text/plain", status=status)

    assert refusal(media_server.url("/gone.jpg"), ("127.0.0.1",)) == f"HTTP {status}"


def test_a_server_that_does_not_answer_times_out(media_server: MediaServer, network: Network) -> None:
    media_server.hang("/slow.jpg")

    assert refusal(media_server.url("/slow.jpg"), ("127.0.0.1",), timeout=0.3) == "timed out"


def test_a_server_dripping_bytes_meets_the_download_deadline(media_server: MediaServer, network: Network) -> None:
    media_server.drip("/drip.jpg")

    with make_session(timeout=5) as session, pytest.raises(MediaRefused) as caught:
        fetch_media(session, media_server.url("/drip.jpg"), allowed_hosts=("127.0.0.1",), max_bytes=MAX,
                    declared_size=None, content_type_hint=None, deadline_seconds=0.3)
    assert caught.value.reason == "timed out"


def test_a_body_cut_short_is_a_connection_failure(media_server: MediaServer, network: Network) -> None:
    media_server.truncate("/cut.jpg")

    assert refusal(media_server.url("/cut.jpg"), ("127.0.0.1",)) == "connection failed"


def test_a_closed_port_is_a_connection_failure(media_server: MediaServer, network: Network) -> None:
    port = media_server.port
    media_server.server.server_close()

    assert refusal(f"http://127.0.0.1:{port}/a.jpg", ("127.0.0.1",)) == "connection failed"
