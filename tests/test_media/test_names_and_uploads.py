"""File names, transcript notes, and the helpers the chat-log worker and the abandoned-call job call."""
from __future__ import annotations

from dataclasses import replace

import pytest

from crmconnector.crm.base import FileUpload
from crmconnector.http import make_session
from crmconnector.settings import Settings
from crmconnector.sync import media
from crmconnector.sync.media import (FetchedMedia, MediaRefused, MediaUnavailable, make_fetcher, media_uploads,
                                     not_attached_note, safe_filename)
from tests.test_media.conftest import MediaServer, Network

LOCAL = Settings(media_hosts=("127.0.0.1",), media_max_bytes=1000, http_timeout_seconds=5)


@pytest.mark.parametrize(("raw", "safe"), [
    ("fence.jpg", "fence.jpg"),
    ("../../etc/passwd", "passwd"),
    ("C:\\Users\\becky\\photo.png", "photo.png"),
    ("a\x00b\x1fc\x7f.jpg", "a_b_c_.jpg"),
    ('what?<is>"this"|*.png', "what__is__this___.png"),
    ("  .hidden.jpg  ", "hidden.jpg"),
    ("..", ""),
    ("/", ""),
    ("", ""),
    (None, ""),
    ("caf\u0065\u0301.jpg", "caf\u00e9.jpg"),
])
def test_safe_filename(raw: str | None, safe: str) -> None:
    assert safe_filename(raw) == safe


def test_a_long_filename_is_cut_to_255_characters_keeping_its_extension() -> None:
    name = safe_filename("x" * 400 + ".jpeg")
    assert len(name) == 255 and name.endswith("x.jpeg")
    assert len(safe_filename("y" * 400)) == 255


def test_the_not_attached_note_names_the_file_or_else_the_url_without_credentials() -> None:
    assert not_attached_note({"url": "https://m.example/1", "filename": "a.jpg"}, "HTTP 404") == \
        "[media not attached: a.jpg (HTTP 404)]"
    assert not_attached_note({"url": "https://user:pw@m.example/p/1?x=2"}, "timed out") == \
        "[media not attached: https://m.example/p/1?x=2 (timed out)]"


def test_media_uploads_gives_a_keyed_file_upload(media_server: MediaServer, network: Network) -> None:
    media_server.serve("/files/", b"%PDF-1.7", "application/pdf")
    media_server.serve("/files/scan", b"%PDF-1.7", "application/pdf")
    media_server.serve("/files/q.pdf", b"%PDF-1.7", "application/pdf")

    with make_session(LOCAL) as session:
        nameless = media_uploads(session, LOCAL, "2415", "m3", 1, {"url": media_server.url("/files/")})
        from_url = media_uploads(session, LOCAL, "2415", "m3", 2, {"url": media_server.url("/files/scan")})
        named = media_uploads(session, LOCAL, "2415", "m3", 3, {"url": media_server.url("/files/q.pdf"),
                                                                "filename": "../quote.pdf"})

    assert nameless == FileUpload("2415/m3/1", "media-2.pdf", "application/pdf", b"%PDF-1.7")
    assert from_url == FileUpload("2415/m3/2", "scan.pdf", "application/pdf", b"%PDF-1.7")
    assert named == FileUpload("2415/m3/3", "quote.pdf", "application/pdf", b"%PDF-1.7")


def test_media_uploads_follows_the_settings(media_server: MediaServer, network: Network) -> None:
    media_server.serve("/a.jpg", b"j" * 600)
    url = media_server.url("/a.jpg")

    with make_session(LOCAL) as session:
        assert media_uploads(session, replace(LOCAL, media_hosts=None), "1", "m", 0, {"url": url}) == \
            "loopback address 127.0.0.1 refused"
        assert media_uploads(session, replace(LOCAL, media_max_bytes=500), "1", "m", 0, {"url": url}) == \
            "larger than 500 bytes"
        assert media_uploads(session, LOCAL, "1", "m", 0, {"url": url, "size_bytes": 5000}) == \
            "larger than 1000 bytes"
        assert media_uploads(session, LOCAL, "1", "m", 0, {"url": ""}) == "no URL"
    assert media_server.paths == ["/a.jpg"]


def test_an_unexpected_error_is_a_failure_worth_another_try(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object, **kwargs: object) -> FetchedMedia:
        raise RuntimeError("unexpected")
    monkeypatch.setattr(media, "fetch_media", broken)

    with make_session(LOCAL) as session, pytest.raises(MediaUnavailable) as caught:
        media_uploads(session, LOCAL, "1", "m", 0, {"url": "http://127.0.0.1/a.jpg"})
    assert caught.value.reason == "download failed"


@pytest.mark.parametrize("status, transient", [(503, True), (500, True), (429, True), (404, False), (403, False)])
def test_server_errors_and_rate_limits_are_transient_other_statuses_final(
        media_server: MediaServer, network: Network, status: int, transient: bool) -> None:
    media_server.serve("/p.jpg", b"no", status=status)
    with make_session(LOCAL) as session:
        if transient:
            with pytest.raises(MediaUnavailable) as caught:
                media_uploads(session, LOCAL, "1", "m", 0, {"url": media_server.url("/p.jpg")})
            assert caught.value.reason == f"HTTP {status}"
        else:
            assert media_uploads(session, LOCAL, "1", "m", 0, {"url": media_server.url("/p.jpg")}) == \
                f"HTTP {status}"


def test_make_fetcher_downloads_items_and_raises_refusals(media_server: MediaServer, network: Network) -> None:
    media_server.serve("/w/1.gif", b"GIF89a", "image/gif")
    fetch = make_fetcher(LOCAL)

    assert fetch({"url": media_server.url("/w/1.gif"), "content_type": "image/gif"}) == \
        FetchedMedia(b"GIF89a", "image/gif", "1.gif")
    with pytest.raises(MediaRefused) as caught:
        fetch({"url": "http://10.0.0.8/w.gif"})
    assert caught.value.reason == "host not allowed"
