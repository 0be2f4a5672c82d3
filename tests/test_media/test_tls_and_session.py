"""The shared session (timeouts, CA bundle) and TLS on pinned connections: the address is pinned, the
certificate is still checked against the name."""
from __future__ import annotations

import ssl
from pathlib import Path
from typing import Callable

import pytest
import requests
import trustme

from crmconnector.http import make_session, timeout_for
from crmconnector.settings import Settings
from crmconnector.sync.media import FetchedMedia, MediaRefused, fetch_media
from tests.test_media.conftest import MediaServer, Network

PNG = b"\x89PNG\r\n\x1a\n" + b"p" * 100


@pytest.fixture
def ca(tmp_path: Path) -> tuple[trustme.CA, str]:
    authority = trustme.CA()
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    return authority, str(bundle)


def tls_server(start: Callable[[ssl.SSLContext], MediaServer], authority: trustme.CA, name: str) -> MediaServer:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert(name).configure_cert(context)
    server = start(context)
    server.serve("/img/logo", PNG, "image/png")
    return server


def fetch_logo(server: MediaServer, bundle: str | None) -> FetchedMedia:
    """The logo by the name media.test (which the test network resolves to 127.0.0.1)."""
    with make_session(timeout=5, ca_bundle=bundle) as session:
        return fetch_media(session, server.url("/img/logo", host="media.test"), allowed_hosts=("media.test",),
                           max_bytes=1000, declared_size=None, content_type_hint="image/png")


def test_https_connects_to_the_pinned_address_and_verifies_the_name(
        start_tls_server: Callable[[ssl.SSLContext], MediaServer], ca: tuple[trustme.CA, str],
        network: Network) -> None:
    authority, bundle = ca
    server = tls_server(start_tls_server, authority, "media.test")
    network.names["media.test"] = ["127.0.0.1"]

    got = fetch_logo(server, bundle)

    assert got == FetchedMedia(data=PNG, content_type="image/png", filename="logo.png")
    assert network.lookups.count("media.test") == 1
    assert network.connects == [("127.0.0.1", server.port)]


def test_a_certificate_for_another_name_is_refused(
        start_tls_server: Callable[[ssl.SSLContext], MediaServer], ca: tuple[trustme.CA, str],
        network: Network) -> None:
    authority, bundle = ca
    server = tls_server(start_tls_server, authority, "other.test")
    network.names["media.test"] = ["127.0.0.1"]

    with pytest.raises(MediaRefused) as caught:
        fetch_logo(server, bundle)

    assert caught.value.reason == "TLS certificate not accepted"
    assert server.paths == []


def test_a_certificate_from_an_unknown_authority_is_refused(
        start_tls_server: Callable[[ssl.SSLContext], MediaServer], ca: tuple[trustme.CA, str],
        network: Network) -> None:
    authority, _bundle = ca
    server = tls_server(start_tls_server, authority, "media.test")
    network.names["media.test"] = ["127.0.0.1"]

    with pytest.raises(MediaRefused) as caught:
        fetch_logo(server, None)  # the default trust store does not know this test authority

    assert caught.value.reason == "TLS certificate not accepted"


def test_the_session_applies_a_default_timeout(media_server: MediaServer) -> None:
    media_server.hang("/slow")

    with make_session(timeout=0.3) as session, pytest.raises(requests.exceptions.ReadTimeout):
        session.get(media_server.url("/slow"))


def test_the_session_takes_timeout_and_ca_bundle_from_settings(ca: tuple[trustme.CA, str]) -> None:
    _authority, bundle = ca
    settings = Settings(http_timeout_seconds=42.0, ca_bundle=bundle)

    with make_session(settings) as session:
        assert session.default_timeout == (10.0, 42.0)
        assert session.verify == bundle
        assert session.headers["User-Agent"].startswith("crmconnector/")
    with make_session(Settings()) as session:
        assert session.verify is True
    assert timeout_for(3.0) == (3.0, 3.0)


def test_the_settings_ca_bundle_is_trusted_for_https(
        start_tls_server: Callable[[ssl.SSLContext], MediaServer], ca: tuple[trustme.CA, str]) -> None:
    authority, bundle = ca
    server = tls_server(start_tls_server, authority, "127.0.0.1")

    with make_session(Settings(ca_bundle=bundle, http_timeout_seconds=5)) as session:
        response = session.get(server.url("/img/logo"))
    assert response.content == PNG
    with make_session(Settings(http_timeout_seconds=5)) as session, pytest.raises(requests.exceptions.SSLError):
        session.get(server.url("/img/logo"))
