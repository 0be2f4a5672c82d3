"""The abandoned-call ticket job on the embedded CRM: which calls get a Case, and exactly what it holds."""
from __future__ import annotations

import pytest
from sqlalchemy import select

from crmconnector import preferences
from crmconnector.store import abandoned_calls, job_runs, utcnow
from crmconnector.sync.abandoned import run_abandoned_tickets
from tests.abandoned_support import LocalMediaServer, MediaHost, post_call

NO_MEDIA = MediaHost({})


def _run(runtime, fetcher=NO_MEDIA, **kw):
    return run_abandoned_tickets(runtime, fetcher=fetcher, **kw)


def _calls(runtime):
    with runtime.engine.connect() as conn:
        return {r["id"]: dict(r) for r in conn.execute(select(abandoned_calls)).mappings()}


def _cases(crm):
    return crm.query("Case", {"Origin": "Phone"})


def _case_of(runtime, crm, call_id):
    return crm.get("Case", _calls(runtime)[call_id]["case_id"])


def test_with_sms_tickets_only_calls_that_carried_messages(platform, runtime, crm):
    post_call(platform, "with-text")
    post_call(platform, "no-text", "+14155550177", messages=[])
    post_call(platform, "declined", "+14155550178", status="denied", messages=[])
    result = _run(runtime)
    assert (result.mode, result.created, result.skipped, result.failed) == ("with_sms", 1, 2, 0)
    calls = _calls(runtime)
    assert calls["with-text"]["status"] == "ticketed"
    assert (calls["no-text"]["status"], calls["no-text"]["error"]) == ("skipped", "no wait-time SMS messages")
    assert calls["declined"]["case_id"] is None
    assert [c.fields["Subject"] for c in _cases(crm)] == ["Abandoned call with-text from +1 415-555-0132"]


def test_all_tickets_every_call(platform, runtime, crm, make_settings):
    runtime.settings = make_settings(abandoned_tickets="all")
    post_call(platform, "a1")
    post_call(platform, "a2", "+14155550177", status="not_offered", messages=[])
    assert _run(runtime).created == 2
    assert sorted(c.fields["SuppliedPhone"] for c in _cases(crm)) == ["+14155550132", "+14155550177"]


def test_off_creates_nothing(platform, runtime, crm, make_settings):
    runtime.settings = make_settings(abandoned_tickets="off")
    post_call(platform, "a1")
    result = _run(runtime)
    assert (result.created, result.skipped) == (0, 1)
    assert _cases(crm) == []
    assert _calls(runtime)["a1"]["error"] == "abandoned-call tickets are off"


def test_the_admin_setting_overrides_the_environment_default(platform, runtime, crm):
    preferences.save_abandoned_mode(runtime.engine, "all")
    post_call(platform, "a2", status="no_response", messages=[])
    assert _run(runtime).created == 1


def test_the_case_has_exactly_the_contract_fields_with_no_match(platform, runtime, crm):
    post_call(platform, messages=[
        {"id": "m2", "text": "It is the  back\nfence", "sent_at": "2026-11-21T17:04:02Z"},
        {"id": "m1", "text": "Need a quote", "sent_at": "2026-11-21T17:03:30Z"}])
    _run(runtime)
    case = _case_of(runtime, crm, "c-100")
    assert {k: case.fields[k] for k in ("Subject", "Origin", "Status", "SuppliedPhone", "ContactId", "AccountId")} == {
        "Subject": "Abandoned call c-100 from +1 415-555-0132", "Origin": "Phone", "Status": "New",
        "SuppliedPhone": "+14155550132", "ContactId": None, "AccountId": None}
    assert case.fields["Description"] == (
        "Abandoned call: c-100\n"
        "Caller: +1 415-555-0132\n"
        "Dialed number: +1 888-246-8888\n"
        "Queue: Fence painting (12)\n"
        "Language: en\n"
        "Started: 2026-11-21 17:02:10Z\n"
        "Abandoned: 2026-11-21 17:04:40Z\n"
        "Waited: 150 seconds\n"
        "Wait-time SMS: allowed (accepted), 2 messages\n"
        "CRM match: none\n"
        "\n"
        "Wait-time SMS messages:\n"
        "[2026-11-21 17:03:30Z] Caller: Need a quote\n"
        "[2026-11-21 17:04:02Z] Caller: It is the back fence")
    assert _calls(runtime)["c-100"]["case_id"] == case.id


def test_a_single_contact_match_links_the_contact_and_its_account(platform, runtime, crm):
    account = crm.create("Account", {"Name": "Thatcher Fencing"})
    contact = crm.create("Contact", {"FirstName": "Becky", "LastName": "Thatcher", "Phone": "(415) 555-0132",
                                     "AccountId": account})
    post_call(platform)
    _run(runtime)
    case = _case_of(runtime, crm, "c-100")
    assert (case.fields["ContactId"], case.fields["AccountId"]) == (contact, account)
    assert f"CRM match: single; first: Contact Becky Thatcher ({contact})" in case.fields["Description"]


def test_multiple_matches_link_the_first_in_the_admins_order(platform, runtime, crm):
    crm.create("Lead", {"LastName": "Finn", "Company": "Raft", "Phone": "+14155550132"})
    account = crm.create("Account", {"Name": "Thatcher Fencing", "Phone": "415.555.0132"})
    contact = crm.create("Contact", {"LastName": "Thatcher", "MobilePhone": "4155550132"})
    post_call(platform)
    _run(runtime)
    case = _case_of(runtime, crm, "c-100")
    assert (case.fields["ContactId"], case.fields["AccountId"]) == (contact, None)  # the Contact has no Account
    preferences.save_pop_settings(runtime.engine, {"object_order": ["Account", "Contact", "Lead"]})
    post_call(platform, "c-101")
    _run(runtime)
    case = _case_of(runtime, crm, "c-101")
    assert (case.fields["ContactId"], case.fields["AccountId"]) == (None, account)


def test_a_lead_cannot_be_linked_to_a_case_so_the_description_names_it(platform, runtime, crm):
    lead = crm.create("Lead", {"FirstName": "Huck", "LastName": "Finn", "Company": "Raft", "Phone": "+14155550132"})
    post_call(platform)
    _run(runtime)
    case = _case_of(runtime, crm, "c-100")
    assert (case.fields["ContactId"], case.fields["AccountId"]) == (None, None)
    assert f"CRM match: single; first: Lead Huck Finn ({lead})" in case.fields["Description"]


def test_wait_time_media_is_attached_to_the_case(platform, runtime, crm):
    host = MediaHost({"https://media.example/fence.jpg": b"\xff\xd8jpeg-bytes"})
    post_call(platform, messages=[
        {"id": "m1", "text": "Here is the fence", "sent_at": "2026-11-21T17:03:30Z", "media": [
            {"url": "https://media.example/fence.jpg", "content_type": "image/jpeg", "filename": "fence.jpg"},
            {"url": "https://media.example/gone.png", "content_type": "image/png"}]}])
    assert _run(runtime, host).created == 1
    case = _case_of(runtime, crm, "c-100")
    files = crm.find("ContentVersion", "FirstPublishLocationId", [case.id])
    assert [(f.fields["Title"], f.fields["PathOnClient"]) for f in files] == [("fence.jpg", "fence.jpg")]
    assert crm.file_data(files[0].id) == b"\xff\xd8jpeg-bytes"
    assert case.fields["Description"].endswith(
        "[2026-11-21 17:03:30Z] Caller: Here is the fence "
        "[media not attached: https://media.example/gone.png (HTTP 404)]")


def test_media_is_attached_once_however_often_the_job_repeats(platform, runtime, crm):
    host = MediaHost({"https://media.example/a.jpg": b"a"})
    post_call(platform, messages=[{"id": "m1", "text": "", "sent_at": "2026-11-21T17:03:30Z",
                                   "media": [{"url": "https://media.example/a.jpg", "filename": "a.jpg"}]}])
    _run(runtime, host)
    with runtime.engine.begin() as conn:  # as if the run had died before recording the Case
        conn.execute(abandoned_calls.update().values(status="new", case_id=None))
    result = _run(runtime, host)
    assert (result.created, result.existing) == (0, 1)
    assert len(_cases(crm)) == 1
    assert len(crm.find("ContentVersion", "Title", ["a.jpg"])) == 1


def test_running_twice_creates_nothing_new(platform, runtime, crm):
    post_call(platform, "c1")
    post_call(platform, "c2", "+14155550177")
    assert _run(runtime).created == 2
    second = _run(runtime)
    assert (second.created, second.existing, second.skipped, second.failed) == (0, 0, 0, 0)
    assert len(_cases(crm)) == 2


def test_a_case_created_before_a_crash_is_found_by_its_subject_not_created_again(platform, runtime, crm):
    post_call(platform)
    # A run sent the Case and died before recording it: the call is marked as attempted, the Case exists.
    with runtime.engine.begin() as conn:
        conn.execute(abandoned_calls.update().values(attempted_at=utcnow()))
    earlier = crm.create("Case", {"Subject": "Abandoned call c-100 from +1 415-555-0132", "Origin": "Phone"})
    result = _run(runtime)
    assert (result.created, result.existing) == (0, 1)
    assert [c.id for c in _cases(crm)] == [earlier]
    assert _calls(runtime)["c-100"]["case_id"] == earlier


def test_a_later_event_reopens_a_skipped_call(platform, runtime, crm):
    post_call(platform, messages=[])
    _run(runtime)
    post_call(platform, messages=[{"id": "m1", "text": "late text", "sent_at": "2026-11-21T17:05:00Z"}])
    assert _run(runtime).created == 1
    assert "late text" in _case_of(runtime, crm, "c-100").fields["Description"]


def test_an_event_after_the_ticket_does_not_reopen_it(platform, runtime, crm):
    post_call(platform)
    _run(runtime)
    response = post_call(platform, messages=[{"id": "m9", "text": "again", "sent_at": "2026-11-21T17:06:00Z"}])
    assert response.json["status"] == "ticketed"
    assert response.json["case_id"] == _calls(runtime)["c-100"]["case_id"]
    assert _run(runtime).created == 0


def test_every_run_is_recorded(platform, runtime, crm):
    post_call(platform)
    post_call(platform, "c-skip", messages=[])
    _run(runtime)
    _run(runtime)
    with runtime.engine.connect() as conn:
        runs = conn.execute(select(job_runs).order_by(job_runs.c.id)).mappings().all()
    assert [(r["job"], r["status"], r["created"], r["failed"], r["skipped"]) for r in runs] == [
        ("abandoned-tickets", "ok", 1, 0, 1), ("abandoned-tickets", "ok", 0, 0, 0)]
    assert all(r["finished_at"] >= r["started_at"] for r in runs)


@pytest.mark.parametrize("count, batch", [(5, 2), (3, 200)])
def test_batches_cover_every_call(platform, runtime, crm, count, batch):
    for i in range(count):
        post_call(platform, f"b{i}", f"+1415555{1000 + i}")
    assert _run(runtime, batch_size=batch).created == count
    assert sorted(c.fields["SuppliedPhone"] for c in _cases(crm)) == [f"+1415555{1000 + i}" for i in range(count)]


def test_media_goes_through_the_safe_downloader(platform, runtime, crm, make_settings):
    """The job's own fetcher: loopback is refused unless listed, then a real download is attached."""
    with LocalMediaServer({"/fence.png": ("image/png", b"\x89PNG-fence"),
                           "/page.html": ("text/html", b"<html>")}) as server:
        post_call(platform, "c-200", "+14155550177", messages=[
            {"id": "m1", "text": "photo", "sent_at": "2026-11-21T17:03:30Z",
             "media": [{"url": server.url("/fence.png"), "filename": "f.png"}]}])
        assert run_abandoned_tickets(runtime).created == 1  # default: any public host, so not 127.0.0.1
        refused = _case_of(runtime, crm, "c-200")
        assert crm.find("ContentVersion", "FirstPublishLocationId", [refused.id]) == []
        assert "Caller: photo [media not attached: f.png (" in refused.fields["Description"]

        post_call(platform, messages=[{"id": "m1", "text": "photo", "sent_at": "2026-11-21T17:03:30Z", "media": [
            {"url": server.url("/fence.png"), "content_type": "image/png"},
            {"url": server.url("/page.html"), "filename": "page.html"}]}])
        runtime.settings = make_settings(media_hosts=("127.0.0.1",))
        assert run_abandoned_tickets(runtime).created == 1
    case = _case_of(runtime, crm, "c-100")
    files = crm.find("ContentVersion", "FirstPublishLocationId", [case.id])
    assert [f.fields["Title"] for f in files] == ["fence.png"]
    assert crm.file_data(files[0].id) == b"\x89PNG-fence"
    assert "[media not attached: page.html (content type text/html not allowed)]" in case.fields["Description"]


def test_a_call_without_wait_time_sms_data_gets_a_plain_case_in_mode_all(platform, runtime, crm):
    preferences.save_abandoned_mode(runtime.engine, "all")
    platform.post("call.abandoned", {"call": {"id": 77, "caller_number": "415-555-0132"}})
    _run(runtime)
    case = _case_of(runtime, crm, "77")
    assert case.fields["Description"] == (
        "Abandoned call: 77\nCaller: +1 415-555-0132\nDialed number: -\nQueue: -\nLanguage: -\nStarted: -\n"
        "Abandoned: -\nWaited: - seconds\nWait-time SMS: not reported, 0 messages\nCRM match: none")


def test_the_description_is_cut_at_a_message_boundary_to_fit_the_field(platform, runtime, crm):
    text = "x" * 3000
    post_call(platform, messages=[{"id": f"m{i:02d}", "text": text, "sent_at": f"2026-11-21T17:03:{i:02d}Z"}
                                  for i in range(12)])
    _run(runtime)
    description = _case_of(runtime, crm, "c-100").fields["Description"]
    assert len(description) <= 32_000
    lines = description.split("\n")
    assert lines[-1] == "[2 more messages not shown: the Case Description is limited to 32000 characters]"
    assert lines[-2] == f"[2026-11-21 17:03:09Z] Caller: {text}"


def test_a_stopping_server_ends_the_run_between_batches(platform, runtime, crm):
    for i in range(4):
        post_call(platform, f"s{i}", f"+1415555{3000 + i}")
    batches = []
    result = _run(runtime, batch_size=2, should_stop=lambda: batches.append(1) or len(batches) > 1)
    assert result.created == 2 and result.left == 2 and result.error is None
    assert _run(runtime, batch_size=2).created == 2  # the next run takes the rest


def test_a_row_the_crm_asks_to_try_again_stays_new_and_the_next_run_creates_it(platform, runtime, crm,
                                                                             monkeypatch):
    from crmconnector.crm.base import CreateResult

    post_call(platform, "c1")
    post_call(platform, "c2", "+14155550177")
    real = crm.create_many
    locked = {"first": True}

    def one_row_locked(object_name, rows):
        results = real(object_name, rows[:1])
        if locked.pop("first", False):
            return results + [CreateResult(error="UNABLE_TO_LOCK_ROW: unable to obtain exclusive access",
                                           retryable=True)]
        return results + real(object_name, rows[1:])
    monkeypatch.setattr(runtime.crm, "create_many", one_row_locked)
    first = _run(runtime)
    assert (first.created, len(first.rejected), len(first.retried), first.failed) == (1, 0, 1, 1)
    assert "try again" in first.summary()
    statuses = {call_id: call["status"] for call_id, call in _calls(runtime).items()}
    assert sorted(statuses.values()) == ["new", "ticketed"]
    second = _run(runtime)
    assert (second.created, second.failed) == (1, 0)
    assert len(_cases(crm)) == 2


def test_line_breaks_in_names_from_the_platform_never_split_a_line(platform, runtime, crm):
    post_call(platform, queue="Fence\npainting", messages=[
        {"id": "m1", "text": "back\u2028fence", "sent_at": "2026-11-21T17:03:30Z",
         "media": [{"url": "https://media.example/gone.png", "filename": "back\nfence.png"}]}])
    _run(runtime)
    lines = _case_of(runtime, crm, "c-100").fields["Description"].splitlines()
    assert "Queue: Fence painting" in lines
    assert lines[-1] == "[2026-11-21 17:03:30Z] Caller: back fence [media not attached: back fence.png (HTTP 404)]"


@pytest.mark.both_databases
def test_a_message_arriving_while_the_run_decides_keeps_the_call_for_a_case(platform, runtime, crm, monkeypatch):
    """The run read the call without messages; the caller's text arrives before it marks the call
    skipped. The call qualifies now, so it is not skipped behind the event's back."""
    from crmconnector.sync import abandoned

    post_call(platform, messages=[])
    read = abandoned._next_calls

    def read_then_text_arrives(*args, **kwargs):
        calls = read(*args, **kwargs)
        if calls:
            post_call(platform, messages=[{"id": "m1", "text": "still there?", "sent_at": "2026-11-21T17:05:00Z"}])
        return calls
    monkeypatch.setattr(abandoned, "_next_calls", read_then_text_arrives)
    _run(runtime)
    monkeypatch.setattr(abandoned, "_next_calls", read)
    assert _calls(runtime)["c-100"]["status"] == "new"
    assert _run(runtime).created == 1
    assert "still there?" in _case_of(runtime, crm, "c-100").fields["Description"]


@pytest.mark.both_databases
def test_a_message_arriving_while_the_case_is_sent_reaches_that_case(platform, runtime, crm, monkeypatch):
    """The caller's second text merges into the call while the run sends its Case: the run does not
    mark the call ticketed over it, and the next run writes it into the same Case."""
    post_call(platform)
    create_many = crm.create_many

    def create_then_text_arrives(*args, **kwargs):
        results = create_many(*args, **kwargs)
        post_call(platform, messages=[{"id": "m2", "text": "call me back", "sent_at": "2026-11-21T17:05:00Z"}])
        return results
    monkeypatch.setattr(crm, "create_many", create_then_text_arrives)
    assert _run(runtime).created == 1
    monkeypatch.setattr(crm, "create_many", create_many)
    assert _calls(runtime)["c-100"]["status"] == "new"
    result = _run(runtime)
    assert (result.created, result.existing) == (0, 1)
    [case] = _cases(crm)
    assert "Need a quote for my fence" in case.fields["Description"] and "call me back" in case.fields["Description"]
    assert (_calls(runtime)["c-100"]["status"], _calls(runtime)["c-100"]["case_id"]) == ("ticketed", case.id)
