"""The Task's Description: the 32,000-character cut at a message boundary with the whole transcript
attached, and media that could not be fetched noted on its message's line."""
from __future__ import annotations

import pytest

from crmconnector.store import reading
from crmconnector.sync.handlers import default_fetcher
from tests.chat_support import (TOM, assigned, ended, fake_fetch, make_worker, message, started, task_files, tasks,
                                transferred)

NOTE = "[Transcript truncated: the full transcript is attached as transcript-2415.txt]"


def _long_chat(platform, count=40, size=1000):
    platform.post("chat.started", started())
    for n in range(count):
        text = f"message {n:02d} " + "x" * (size - 11)
        platform.post("chat.message", message(f"m{n}", "consumer", text, n))
    platform.post("chat.ended", ended(3600))


def test_a_long_transcript_is_cut_at_a_message_boundary_and_attached_whole(platform, runtime, crm):
    _long_chat(platform)
    make_worker(runtime).run_once()
    [task] = tasks(crm)
    description = task.fields["Description"]
    assert len(description) <= 32_000
    lines = description.split("\n")
    assert lines[-1] == NOTE
    kept = [line for line in lines if line.startswith("[2026-")]
    assert all(len(line) == len("[2026-11-21 17:03:10Z] Consumer: ") + 1000 for line in kept)
    assert kept[-1].split("Consumer: message ")[1][:2] == f"{len(kept) - 1:02d}"
    # One more message would not have fitted.
    assert len(description) - len(NOTE) + len(kept[0]) + 1 > 32_000 - len(NOTE)
    [(name, data)] = task_files(crm, task.id)
    assert name == "transcript-2415.txt"
    full = data.decode()
    assert full.startswith("Chat ID: 2415\n")
    assert full.count("Consumer: message ") == 40 and full.endswith("Consumer: message 39 " + "x" * 989 + "\n")
    assert NOTE not in full


def test_a_transcript_that_fits_is_not_cut_and_has_no_file(platform, runtime, crm):
    _long_chat(platform, count=20)
    make_worker(runtime).run_once()
    [task] = tasks(crm)
    assert NOTE not in task.fields["Description"]
    assert task.fields["Description"].count("Consumer: message ") == 20
    assert task_files(crm, task.id) == []


def test_refused_media_is_noted_and_never_holds_the_task_back(platform, runtime, crm):
    """The real downloader: an address on the connector's own machine is refused before connecting."""
    platform.post("chat.started", started())
    media = [{"url": "http://127.0.0.1:9/secret.jpg", "content_type": "image/jpeg", "filename": "x.jpg"},
             {"url": "http://169.254.169.254/latest/meta-data/", "content_type": "image/png"}]
    platform.post("chat.message", message("m1", "consumer", "look", 5, media=media))
    platform.post("chat.ended", ended(60))
    make_worker(runtime, fetch_media=default_fetcher(runtime.settings)).run_once()
    [task] = tasks(crm)
    line = task.fields["Description"].split("\n")[-1]
    assert line.startswith("[2026-11-21 17:03:15Z] Consumer: look [media not attached: x.jpg (")
    assert "[media not attached: http://169.254.169.254/latest/meta-data/ (" in line
    assert task_files(crm, task.id) == []


def test_media_is_fetched_once_and_a_refusal_is_final(platform, runtime, crm):
    calls = []

    def fetch(chat_id, message_id, position, item):
        calls.append(item["url"])
        return "HTTP 404" if "gone" in item["url"] else fake_fetch(chat_id, message_id, position, item)

    platform.post("chat.started", started())
    media = [{"url": "https://media.example/a.jpg", "filename": "a.jpg"}, {"url": "https://media.example/gone"}]
    platform.post("chat.message", message("m1", "consumer", "", 5, media=media))
    platform.post("chat.ended", ended(60))
    worker = make_worker(runtime, fetch_media=fetch)
    worker.run_once()
    platform.post("chat.message", message("m2", "agent", "late reply", 30))
    worker.run_once()
    assert calls == ["https://media.example/a.jpg", "https://media.example/gone"]
    [task] = tasks(crm)
    assert ("[2026-11-21 17:03:15Z] Consumer: [attached: a.jpg] "
            "[media not attached: https://media.example/gone (HTTP 404)]") in task.fields["Description"]
    assert [name for name, _ in task_files(crm, task.id)] == ["a.jpg"]


@pytest.mark.both_databases
def test_the_chat_state_read_carries_the_chat_row_once_however_many_messages_it_has(platform, runtime):
    """The chat's columns (its match and screen pop are JSON) are read and converted once per chat log,
    not once per message or assignment; the state is the same."""
    from crmconnector import chatstate

    platform.start_chat("long")
    platform.post("chat.assigned", assigned(TOM, 5, "long"))
    for n in range(4):
        platform.post("chat.message", message(f"m{n}", "consumer", f"text {n}", 10 + n, chat_id="long"))
    with reading(runtime.engine) as conn:
        rows = chatstate._chats_with_history(1).all(conn, {"chat_0": "long"})
        state = chatstate.load(conn, "long")
        assert chatstate.load(conn, "no-such-chat") is None
    assert sorted(r["source"] for r in rows) == ["activity", "chat", *["message"] * 4]
    assert [r["id"] for r in rows if r["id"] is not None] == ["long"]
    assert state is not None and state.chat["id"] == "long" and state.chat["match_outcome"] is not None
    assert [m.message_id for m in state.messages] == ["m0", "m1", "m2", "m3"]
    assert [m.text for m in state.messages] == [f"text {n}" for n in range(4)]
    assert [a.agent["email"] for a in state.assignments] == [TOM["email"]]
    assert state.messages[0].sent_at.tzinfo is not None


def test_the_chat_state_is_one_read_and_its_media_rows_are_read_only_for_a_chat_with_media(platform, runtime,
                                                                                           monkeypatch):
    """The chat row with its messages, assignments and transfers in one read; a second for media rows
    only when a message carries media."""
    from crmconnector import chatstate
    from tests.conftest import sent_statements

    platform.start_chat("plain")
    platform.post("chat.message", message("m1", "consumer", "no pictures", 10, chat_id="plain"))
    platform.start_chat("pictures")
    platform.post("chat.message", message("m1", "consumer", "a picture", 10, chat_id="pictures",
                                          media=[{"url": "https://media.example.com/p/1.jpg"}]))
    sent = sent_statements(runtime.engine, monkeypatch)
    with reading(runtime.engine) as conn:
        plain = chatstate.load(conn, "plain")
        assert len(sent) == 1 and [s for s, _ in sent if "FROM chat_media" in s] == []
        pictures = chatstate.load(conn, "pictures")
    assert plain is not None and plain.media == {}
    assert [s for s, _ in sent if "FROM chat_media" in s] != []
    assert pictures is not None and list(pictures.media) == [("m1", 0)]


def test_every_message_stays_on_one_line_whatever_line_breaks_it_carries(platform, runtime, crm):
    """Line breaks of any kind, in the text, the agent's name or a media filename, never split a line."""
    agent = {"id": "7", "email": "tom@example.com", "name": "Tom\nSawyer"}
    platform.post("chat.started", started())
    platform.post("chat.assigned", assigned(agent, 2))
    platform.post("chat.message", message("m1", "consumer", "one\u2028two\u2029three\x85four\x0bfive", 5, media=[
        {"url": "https://media.example/gone", "filename": "back\nfence.jpg"}]))
    platform.post("chat.message", message("m2", "agent", "hi", 6))
    platform.post("chat.ended", ended(60))
    make_worker(runtime, fetch_media=lambda *args: "HTTP 404").run_once()
    [task] = tasks(crm)
    assert task.fields["Description"].splitlines()[-3:] == [
        "",
        "[2026-11-21 17:03:15Z] Consumer: one two three four five "
        "[media not attached: back fence.jpg (HTTP 404)]",
        "[2026-11-21 17:03:16Z] Agent Tom Sawyer: hi"]
    assert "Accepted: 2026-11-21 17:03:12Z by Tom Sawyer" in task.fields["Description"].splitlines()


def test_a_header_too_long_for_the_description_is_cut_too_and_the_task_still_lands(platform, runtime, crm):
    """Fifty transfers between agents and a queue with long names: the header alone passes 32,000
    characters. It is cut at a line like the messages, and the whole transcript is attached."""
    people = {"from_agent": {"id": "1", "name": "A" * 255}, "to_agent": {"id": "2", "name": "B" * 255},
              "to_queue": {"id": "3", "name": "Q" * 255}}
    platform.post("chat.started", started())
    for n in range(50):
        platform.post("chat.transferred", transferred("ended", n, **people))
    platform.post("chat.message", message("m1", "consumer", "hello", 60))
    platform.post("chat.ended", ended(600))
    make_worker(runtime).run_once()
    [task] = tasks(crm)
    description = task.fields["Description"]
    assert len(description) <= 32_000
    lines = description.split("\n")
    assert lines[0] == "Chat ID: 2415" and lines[-2:] == ["", NOTE]
    assert all(line.startswith("Transfer ended: ") for line in lines[7:-2])
    [(name, data)] = task_files(crm, task.id)
    assert name == "transcript-2415.txt"
    full = data.decode()
    assert full.count("Transfer ended: ") == 50 and full.endswith("Consumer: hello\n")
