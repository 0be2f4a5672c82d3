"""One suite over every CRM backend: LocalCRM on a real database and SalesforceCRM against a fake org.

Both must keep the same semantics: what is found, what is refused and with which code, and that a
repeated upsert with files changes nothing twice.
"""
from __future__ import annotations

from typing import Any, Iterator

import pytest
import responses

from crmconnector.crm.base import CRMBackend, FileUpload
from crmconnector.crm.errors import CRMNotFound, CRMRejected
from crmconnector.matching import match_number, match_numbers
from tests.fake_salesforce import FakeSalesforce, make_crm


@pytest.fixture(params=["local", "salesforce"])
def backend(request: pytest.FixtureRequest) -> Iterator[CRMBackend]:
    if request.param == "local":
        yield request.getfixturevalue("crm")
        return
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        FakeSalesforce().install(rsps)
        yield make_crm()


def image(key: str) -> FileUpload:
    return FileUpload(key=key, filename=f"{key}.png", content_type="image/png", data=b"\x89PNG" + key.encode())


def test_create_then_get(backend: CRMBackend) -> None:
    account = backend.create("Account", {"Name": "Acme", "Phone": "(415) 555-0100"})
    contact = backend.create("Contact", {"FirstName": "Becky", "LastName": "Thatcher", "AccountId": account})
    record = backend.get("Contact", contact)
    assert record is not None
    assert (record.object, record.id, record.name) == ("Contact", contact, "Becky Thatcher")
    assert record.fields["AccountId"] == account
    assert backend.get("Account", account).fields["Phone"] == "(415) 555-0100"  # type: ignore[union-attr]


def test_get_of_an_unknown_record_is_none(backend: CRMBackend) -> None:
    assert backend.get("Contact", "003000000000000AAA") is None


def test_find_by_field_in_creation_order(backend: CRMBackend) -> None:
    first = backend.create("Case", {"Subject": "Abandoned call 1 from +1 415-555-0132", "Origin": "Phone"})
    backend.create("Case", {"Subject": "something else", "Origin": "Phone"})
    second = backend.create("Case", {"Subject": "Abandoned call 2 from +1 415-555-0132", "Origin": "Phone"})
    found = backend.find("Case", "Subject", ["Abandoned call 2 from +1 415-555-0132",
                                             "Abandoned call 1 from +1 415-555-0132", "no such subject"])
    assert [r.id for r in found] == [first, second]
    assert backend.find("Case", "Subject", []) == []


def test_update_changes_fields(backend: CRMBackend) -> None:
    contact = backend.create("Contact", {"LastName": "Sawyer"})
    backend.update("Contact", contact, {"DoNotCall": True})
    assert backend.get("Contact", contact).fields["DoNotCall"] is True  # type: ignore[union-attr]


def test_update_of_an_unknown_record_is_not_found(backend: CRMBackend) -> None:
    with pytest.raises(CRMNotFound):
        backend.update("Contact", "003000000000000AAA", {"DoNotCall": True})


@pytest.mark.parametrize("object_name, fields, code", [
    ("Contact", {"FirstName": "No last name"}, "REQUIRED_FIELD_MISSING"),
    ("Case", {"Subject": "x" * 256}, "STRING_TOO_LONG"),
    ("Contact", {"LastName": "x", "Shoe": "42"}, "INVALID_FIELD"),
    ("Contact", {"LastName": "x", "AccountId": "001000000000000AAA"}, "INVALID_CROSS_REFERENCE_KEY"),
    ("Task", {"Subject": "x", "CallType": "Sideways"}, "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"),
])
def test_refusals_carry_salesforce_codes(backend: CRMBackend, object_name: str, fields: dict[str, Any],
                                         code: str) -> None:
    with pytest.raises(CRMRejected) as caught:
        backend.create(object_name, fields)
    assert caught.value.code == code


def test_a_task_on_a_lead_cannot_have_a_what_id(backend: CRMBackend) -> None:
    lead = backend.create("Lead", {"LastName": "Finn", "Company": "Raft Co"})
    account = backend.create("Account", {"Name": "Acme"})
    with pytest.raises(CRMRejected) as caught:
        backend.upsert_with_files("Task", "CallObject", {"CallObject": "sms-chat-9", "Subject": "s",
                                                         "Status": "Completed", "WhoId": lead, "WhatId": account})
    assert caught.value.code == "FIELD_INTEGRITY_EXCEPTION"
    assert backend.find("Task", "CallObject", ["sms-chat-9"]) == []


def test_create_many_keeps_good_rows_and_reports_bad_ones(backend: CRMBackend) -> None:
    results = backend.create_many("Case", [{"Subject": "one", "Origin": "Phone"}, {"Subject": "x" * 300},
                                           {"Subject": "three", "Origin": "Phone"}])
    assert [r.id is not None for r in results] == [True, False, True]
    assert results[1].error is not None and results[1].error.startswith("STRING_TOO_LONG")
    assert {r.name for r in backend.find("Case", "Subject", ["one", "three"])} == {"one", "three"}


def test_upsert_with_files_is_idempotent(backend: CRMBackend) -> None:
    contact = backend.create("Contact", {"LastName": "Thatcher"})
    fields = {"CallObject": "sms-chat-2415", "Subject": "SMS chat with +1 415-555-0132", "Status": "Completed",
              "WhoId": contact}
    first = backend.upsert_with_files("Task", "CallObject", fields, [image("m1"), image("m2")])
    assert first.created is True and set(first.file_ids) == {"m1", "m2"}
    again = backend.upsert_with_files("Task", "CallObject", {**fields, "Subject": "updated"},
                                      [image("m1"), image("m2"), image("m3")])
    assert (again.id, again.created) == (first.id, False)
    assert {k: again.file_ids[k] for k in ("m1", "m2")} == dict(first.file_ids)
    assert len(set(again.file_ids.values())) == 3
    tasks = backend.find("Task", "CallObject", ["sms-chat-2415"])
    assert [t.id for t in tasks] == [first.id] and tasks[0].fields["Subject"] == "updated"
    files = backend.find("ContentVersion", "FirstPublishLocationId", [first.id])
    assert sorted(f.fields["Description"] for f in files) == ["crmconnector-key:m1", "crmconnector-key:m2",
                                                              "crmconnector-key:m3"]


def test_phone_match_outcomes_whatever_the_stored_format(backend: CRMBackend) -> None:
    account = backend.create("Account", {"Name": "Acme", "Phone": "415.555.0132"})
    contact = backend.create("Contact", {"FirstName": "Becky", "LastName": "Thatcher", "MobilePhone": "(415) 555-0132",
                                         "AccountId": account})
    lead = backend.create("Lead", {"LastName": "Finn", "Company": "Raft Co", "Phone": "+1 (212) 555-0199"})
    backend.create("Contact", {"LastName": "Elsewhere", "Phone": "+44 415 555 0132"})  # same digits, other number
    results = match_numbers(backend, ["+14155550132", "+12125550199", "+13125550100"])
    assert results["+14155550132"].outcome == "multiple"
    assert [(r.object, r.id) for r in results["+14155550132"].records] == [("Contact", contact), ("Account", account)]
    assert results["+12125550199"].outcome == "single" and results["+12125550199"].records[0].id == lead
    assert results["+13125550100"].outcome == "none"
    only_accounts = match_number(backend, "+14155550132", object_order=["Account"])
    assert [r.id for r in only_accounts.records] == [account]


def test_a_phone_field_with_a_label_before_the_number_matches(backend: CRMBackend) -> None:
    contact = backend.create("Contact", {"LastName": "Thatcher", "MobilePhone": "Cell: (415) 555-0132"})
    lead = backend.create("Lead", {"LastName": "Finn", "Company": "Raft Co", "Phone": "Work - 415.555.0132 x12"})
    result = match_number(backend, "+14155550132")
    assert [(r.object, r.id) for r in result.records] == [("Contact", contact), ("Lead", lead)]


def test_links_name_the_record(backend: CRMBackend) -> None:
    contact = backend.create("Contact", {"LastName": "Thatcher"})
    assert backend.record_url("Contact", contact).endswith(f"/Contact/{contact}" + (
        "/view" if backend.name == "salesforce" else ""))
    assert "Phone=%2B14155550132" in backend.new_record_url("Contact", {"Phone": "+14155550132"})


def test_check_passes_on_a_healthy_backend(backend: CRMBackend) -> None:
    lines = backend.check()
    assert lines and all(line.ok for line in lines)
    backend.ping()
