"""Match outcomes on the embedded CRM: none/single/multiple, the ordering rule, and formats through the app."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import func, select

from crmconnector.crm.base import Record
from crmconnector.matching import match_number, match_numbers, order_records
from crmconnector.store import chats, events

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=timezone.utc)
ORDER = ("Contact", "Lead", "Account")


def _rec(obj: str, rid: str, modified: datetime | None) -> Record:
    return Record(object=obj, id=rid, name=rid, last_modified=modified)


def test_order_records_object_order_then_recency_then_id():
    records = [
        _rec("Account", "001A", T0 + timedelta(days=9)),
        _rec("Lead", "00QB", T0),
        _rec("Contact", "003C", T0),
        _rec("Contact", "003B", T0 + timedelta(hours=1)),
        _rec("Lead", "00QA", T0),                       # tie with 00QB on recency: id decides
        _rec("Contact", "003A", T0),                    # tie with 003C: id decides
    ]
    ordered = [r.id for r in order_records(records, ORDER)]
    assert ordered == ["003B", "003A", "003C", "00QA", "00QB", "001A"]


def test_order_records_follows_the_admins_object_order():
    records = [_rec("Contact", "003A", T0), _rec("Account", "001A", T0), _rec("Lead", "00QA", T0)]
    assert [r.id for r in order_records(records, ("Account", "Lead", "Contact"))] == ["001A", "00QA", "003A"]


def test_order_records_unknown_modification_time_sorts_last_and_naive_times_are_utc():
    records = [
        _rec("Contact", "003A", None),
        _rec("Contact", "003B", datetime(2026, 11, 1, 12, 0)),            # naive = UTC
        _rec("Contact", "003C", datetime(2026, 11, 1, 13, 0, tzinfo=timezone(timedelta(hours=2)))),  # 11:00 UTC
    ]
    assert [r.id for r in order_records(records, ORDER)] == ["003B", "003C", "003A"]


def test_no_record_is_outcome_none(crm):
    result = match_number(crm, "+14155550132")
    assert (result.outcome, result.records, result.first) == ("none", (), None)


def test_one_record_is_outcome_single(crm):
    cid = crm.create("Contact", {"LastName": "Thatcher", "HomePhone": "415.555.0132"})
    result = match_number(crm, "+14155550132")
    assert result.outcome == "single"
    assert [r.id for r in result.records] == [cid]


def test_one_record_with_the_number_in_two_fields_is_still_single(crm):
    cid = crm.create("Contact", {"LastName": "Twice", "Phone": "4155550132", "OtherPhone": "+1 415 555 0132"})
    assert [r.id for r in match_number(crm, "+14155550132").records] == [cid]


def test_every_phone_field_of_every_object_matches(crm):
    aid = crm.create("Account", {"Name": "Fence Co", "Phone": "(415) 555-0132"})
    made = {aid}
    for field in ("Phone", "MobilePhone", "HomePhone", "OtherPhone"):
        made.add(crm.create("Contact", {"LastName": field, field: "415-555-0132"}))
    for field in ("Phone", "MobilePhone"):
        made.add(crm.create("Lead", {"LastName": field, "Company": "X", field: "+14155550132"}))
    result = match_number(crm, "+14155550132")
    assert result.outcome == "multiple"
    assert {r.id for r in result.records} == made


def test_fields_that_are_not_phone_fields_do_not_match(crm):
    crm.create("Contact", {"LastName": "Notes", "Description": "+14155550132", "Title": "+14155550132"})
    assert match_number(crm, "+14155550132").outcome == "none"


def test_multiple_are_ordered_object_then_most_recently_modified(crm):
    lead = crm.create("Lead", {"LastName": "L", "Company": "C", "Phone": "4155550132"})
    older = crm.create("Contact", {"LastName": "Older", "Phone": "4155550132"})
    newer = crm.create("Contact", {"LastName": "Newer", "Phone": "4155550132"})
    crm.update("Contact", older, {"Title": "touched last"})
    result = match_number(crm, "+14155550132")
    assert [r.id for r in result.records] == [older, newer, lead]
    assert result.first.id == older


def test_objects_left_out_of_the_order_are_not_matched(crm):
    crm.create("Account", {"Name": "A", "Phone": "4155550132"})
    lead = crm.create("Lead", {"LastName": "L", "Company": "C", "Phone": "4155550132"})
    result = match_number(crm, "+14155550132", object_order=("Lead",))
    assert [r.id for r in result.records] == [lead]


def test_an_updated_phone_moves_the_match(crm):
    cid = crm.create("Contact", {"LastName": "Mover", "Phone": "4155550132"})
    crm.update("Contact", cid, {"Phone": "4155550199"})
    assert match_number(crm, "+14155550132").outcome == "none"
    assert [r.id for r in match_number(crm, "+14155550199").records] == [cid]


def test_match_numbers_answers_each_number_from_one_search(crm):
    a = crm.create("Contact", {"LastName": "A", "Phone": "4155550101"})
    b = crm.create("Contact", {"LastName": "B", "Phone": "4155550102", "MobilePhone": "4155550101"})
    results = match_numbers(crm, ["+14155550101", "+14155550102", "+14155550103", "+14155550101"])
    assert set(results) == {"+14155550101", "+14155550102", "+14155550103"}
    assert {r.id for r in results["+14155550101"].records} == {a, b}
    assert [r.id for r in results["+14155550102"].records] == [b]
    assert results["+14155550103"].outcome == "none"


def test_crm_region_decides_numbers_stored_without_country_code(runtime):
    from crmconnector.crm.local import LocalCRM

    gb = LocalCRM(runtime.engine, region="GB")
    cid = gb.create("Contact", {"LastName": "London", "Phone": "020 7946 0018"})
    assert [r.id for r in match_number(gb, "+442079460018", region="GB").records] == [cid]


# -- through the app -----------------------------------------------------------------------------

@pytest.mark.parametrize("consumer_number", [
    "+14155550132", "(415) 555-0132", "415.555.0132", "1-415-555-0132", "+1 415 555 0132",
    "001 415 555 0132", "011 1 415 555 0132", "415-555-0132 ext. 9", "tel:+1-415-555-0132",
    "tel:+1-415-555-0132;ext=12",
])
def test_consumer_number_in_any_format_finds_the_contact(platform, crm, consumer_number):
    cid = crm.create("Contact", {"LastName": "Thatcher", "Phone": "(415) 555-0132"})
    body = platform.start_chat(number=consumer_number).json
    assert body["match"]["consumer_number"] == "+14155550132"
    assert body["match"]["outcome"] == "single"
    assert body["match"]["records"][0]["id"] == cid
    assert body["match"]["records"][0]["phone"] == "(415) 555-0132"


@pytest.mark.parametrize("crm_phone", [
    "4155550132", "415.555.0132", "+1 (415) 555-0132", "1 415 555 0132", "+1-415-555-0132 x77",
    "tel:+14155550132", "00 1 415 555 0132",
])
def test_crm_phone_in_any_format_is_found(platform, crm, crm_phone):
    cid = crm.create("Contact", {"LastName": "Thatcher", "MobilePhone": crm_phone})
    records = platform.start_chat(number="+14155550132").json["match"]["records"]
    assert [(r["id"], r["phone"]) for r in records] == [(cid, crm_phone)]


def test_vanity_consumer_number_matches_its_digits(platform, crm):
    cid = crm.create("Account", {"Name": "Flowers", "Phone": "+1 800 356 9377"})
    body = platform.start_chat(number="1-800-FLOWERS").json
    assert body["match"]["consumer_number"] == "+18003569377"
    assert [r["id"] for r in body["match"]["records"]] == [cid]


@pytest.mark.parametrize("number", ["call 4155550132", "555-0132", "4155550132abc", "+1 415 555 013", "n/a"])
def test_invalid_consumer_number_is_400_and_leaves_no_chat(platform, runtime, number):
    response = platform.start_chat(number=number)
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_phone_number"
    assert response.json["error"]["field"] == "data.chat.consumer_number"
    with runtime.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(chats)).scalar() == 0
        assert conn.execute(select(func.count()).select_from(events)).scalar() == 0


def test_multiple_through_the_app_lists_every_match_in_order(platform, crm):
    account = crm.create("Account", {"Name": "Fence", "Phone": "415.555.0132"})
    contact = crm.create("Contact", {"LastName": "C", "AccountId": account, "Phone": "4155550132"})
    lead = crm.create("Lead", {"LastName": "L", "Company": "X", "MobilePhone": "+14155550132"})
    body = platform.start_chat().json
    assert body["match"]["outcome"] == "multiple"
    assert [r["id"] for r in body["match"]["records"]] == [contact, lead, account]
