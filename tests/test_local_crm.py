"""LocalCRM keeps Salesforce's rules: ids, required fields, limits, picklists, Task WhoId/WhatId, references."""
from __future__ import annotations

import string
from contextlib import contextmanager
from typing import Any, Iterator

import pytest
from sqlalchemy import func, select

from crmconnector.crm import ids
from crmconnector.crm.base import FileUpload
from crmconnector.crm.errors import CRMNotFound, CRMRejected
from crmconnector.crm.local_schema import TABLES


def reference_suffix(id15: str) -> str:
    """Salesforce's published case-safe algorithm, written out independently of crm.ids."""
    alphabet = string.ascii_uppercase + "012345"
    out = ""
    for start in (0, 5, 10):
        chunk = id15[start:start + 5]
        out += alphabet[sum(2 ** i for i, ch in enumerate(chunk) if "A" <= ch <= "Z")]
    return out


def count(crm, object_name: str) -> int:
    with crm.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(TABLES[object_name])).scalar()


@contextmanager
def rejected(code: str) -> Iterator[Any]:
    """Like pytest.raises(CRMRejected), also checking Salesforce's error code."""
    with pytest.raises(CRMRejected) as info:
        yield info
    assert info.value.code == code, str(info.value)


# -- ids -----------------------------------------------------------------------------------------

def test_a_documented_15_character_id_gets_its_known_suffix():
    assert ids.to_18("001A0000006Vm9r") == "001A0000006Vm9rIAC"


def test_only_ascii_capitals_count_in_the_case_safe_suffix():
    assert ids.case_safe_suffix("ÀÀÀÀÀÀÀÀÀÀÀÀÀÀÀ") == "AAA"
    assert ids.case_safe_suffix("AAAAABBBBBCCCCC") == "555"


@pytest.mark.parametrize(("object_name", "prefix"), [
    ("Account", "001"), ("Contact", "003"), ("Lead", "00Q"), ("Case", "500"), ("Task", "00T"),
    ("ContentVersion", "068"),
])
def test_created_ids_are_18_characters_with_prefix_and_case_safe_suffix(crm, object_name, prefix):
    fields = {
        "Account": {"Name": "Acme"}, "Contact": {"LastName": "Doe"}, "Lead": {"LastName": "Doe", "Company": "X"},
        "Case": {"Subject": "Help"}, "Task": {"Subject": "Call"},
        "ContentVersion": {"Title": "a.txt", "PathOnClient": "a.txt", "VersionData": "aGk="},
    }[object_name]
    made = {crm.create(object_name, fields) for _ in range(5)}
    assert len(made) == 5
    for record_id in made:
        assert len(record_id) == 18 and record_id.startswith(prefix)
        assert set(record_id) <= set(string.ascii_letters + string.digits)
        assert record_id[15:] == reference_suffix(record_id[:15])
        assert ids.is_valid_id(record_id, object_name)
        assert ids.object_for_id(record_id) == object_name
        assert crm.get(object_name, record_id).id == record_id


def test_ids_with_a_wrong_suffix_or_characters_are_not_valid():
    good = ids.new_id("Contact")
    wrong_suffix = good[:15] + ("AAA" if good[15:] != "AAA" else "AAB")
    assert ids.is_valid_id(good)
    assert not ids.is_valid_id(wrong_suffix)
    assert not ids.is_valid_id(good[:14] + "-" + good[15:])
    assert not ids.is_valid_id(good[:17])
    assert not ids.is_valid_id(good, "Account")
    assert ids.is_valid_id(good[:15])


def test_random_ids_take_about_one_draw_from_the_os_each_and_use_every_body_character(monkeypatch):
    """A Task is created per chat: its id should not cost a system call per character."""
    import random

    draws = []
    real = random._urandom  # type: ignore[attr-defined]
    monkeypatch.setattr(random, "_urandom", lambda n: draws.append(n) or real(n))
    made = [ids.new_id("Task") for _ in range(200)]
    assert len(draws) < 2 * len(made)  # one draw, and a second now and then (a value out of range)
    assert len(set(made)) == len(made) and all(ids.is_valid_id(i, "Task") for i in made)
    assert {ch for i in made for ch in i[3:15]} == set(string.ascii_letters + string.digits)


def test_sequence_ids_are_deterministic_and_distinct():
    assert ids.new_id("Contact", 1) == ids.new_id("Contact", 1)
    assert len({ids.new_id("Contact", n) for n in range(1000)}) == 1000


# -- fields ----------------------------------------------------------------------------------------

@pytest.mark.parametrize(("object_name", "fields", "missing"), [
    ("Contact", {"FirstName": "Ann"}, "LastName"),
    ("Lead", {"LastName": "Doe"}, "Company"),
    ("Account", {"Phone": "4155550132"}, "Name"),
    ("ContentVersion", {"Title": "x", "VersionData": "aGk="}, "PathOnClient"),
])
def test_required_fields_are_enforced_and_nothing_is_stored(crm, object_name, fields, missing):
    with rejected("REQUIRED_FIELD_MISSING") as info:
        crm.create(object_name, fields)
    assert missing in str(info.value)
    assert count(crm, object_name) == 0


def test_a_required_field_cannot_be_blanked_by_an_update(crm):
    cid = crm.create("Contact", {"LastName": "Doe"})
    with rejected("REQUIRED_FIELD_MISSING"):
        crm.update("Contact", cid, {"LastName": ""})
    assert crm.get("Contact", cid).fields["LastName"] == "Doe"


def test_text_limits(crm):
    crm.create("Contact", {"LastName": "L" * 80, "FirstName": "F" * 40})
    with rejected("STRING_TOO_LONG") as info:
        crm.create("Contact", {"LastName": "L" * 81})
    assert "max length=80" in str(info.value)
    crm.create("Task", {"Subject": "s", "Description": "d" * 32000})
    with rejected("STRING_TOO_LONG"):
        crm.create("Task", {"Subject": "s", "Description": "d" * 32001})


@pytest.mark.both_databases
def test_a_nul_character_is_refused_like_any_value_a_field_cannot_hold(crm):
    with rejected("INVALID_TYPE_ON_FIELD_IN_RECORD") as info:  # PostgreSQL cannot store one in text
        crm.create("Contact", {"LastName": "Doe\x00"})
    assert "LastName" in str(info.value)
    assert crm.query("Contact", {}) == []


def test_restricted_picklist_and_defaults(crm):
    with rejected("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"):
        crm.create("Task", {"Subject": "s", "CallType": "Sideways"})
    task = crm.get("Task", crm.create("Task", {"Subject": "s", "CallType": "Inbound"}))
    assert (task.fields["CallType"], task.fields["Status"], task.fields["Priority"]) == ("Inbound", "Not Started",
                                                                                          "Normal")
    case = crm.get("Case", crm.create("Case", {"Subject": "c"}))
    assert (case.fields["Status"], case.fields["Priority"]) == ("New", "Medium")


@pytest.mark.parametrize(("object_name", "fields", "code"), [
    ("Contact", {"LastName": "x", "Shoe_Size__c": "9"}, "INVALID_FIELD"),
    ("Contact", {"LastName": "x", "DoNotCall": "perhaps"}, "INVALID_TYPE_ON_FIELD_IN_RECORD"),
    ("Task", {"Subject": "x", "CallDurationInSeconds": "ten"}, "INVALID_TYPE_ON_FIELD_IN_RECORD"),
    ("Task", {"Subject": "x", "ActivityDate": "next week"}, "INVALID_TYPE_ON_FIELD_IN_RECORD"),
    ("Opportunity", {"Name": "x"}, "INVALID_TYPE"),
])
def test_unknown_fields_objects_and_wrong_types_are_rejected(crm, object_name, fields, code):
    with rejected(code):
        crm.create(object_name, fields)


def test_values_are_stored_with_their_types(crm):
    task = crm.get("Task", crm.create("Task", {"Subject": "s", "CallDurationInSeconds": "95",
                                               "ActivityDate": "2026-11-21", "Status": "Completed"}))
    assert task.fields["CallDurationInSeconds"] == 95
    assert task.fields["ActivityDate"] == "2026-11-21"
    contact = crm.get("Contact", crm.create("Contact", {"LastName": "x", "DoNotCall": "true"}))
    assert contact.fields["DoNotCall"] is True
    assert contact.name == "x"


# -- references and the Task rules -----------------------------------------------------------------

def test_task_on_a_lead_cannot_have_a_what_id(crm):
    lead = crm.create("Lead", {"LastName": "L", "Company": "C"})
    account = crm.create("Account", {"Name": "A"})
    with rejected("FIELD_INTEGRITY_EXCEPTION"):
        crm.create("Task", {"Subject": "s", "WhoId": lead, "WhatId": account})
    task = crm.create("Task", {"Subject": "s", "WhoId": lead})
    with rejected("FIELD_INTEGRITY_EXCEPTION"):
        crm.update("Task", task, {"WhatId": account})
    assert crm.get("Task", task).fields["WhatId"] is None
    assert count(crm, "Task") == 1


def test_task_on_a_contact_may_name_its_account(crm):
    account = crm.create("Account", {"Name": "A"})
    contact = crm.create("Contact", {"LastName": "C", "AccountId": account})
    task = crm.get("Task", crm.create("Task", {"Subject": "s", "WhoId": contact, "WhatId": account}))
    assert (task.fields["WhoId"], task.fields["WhatId"]) == (contact, account)


def test_references_must_point_at_an_existing_record_of_an_allowed_object(crm):
    account = crm.create("Account", {"Name": "A"})
    with rejected("FIELD_INTEGRITY_EXCEPTION"):
        crm.create("Task", {"Subject": "s", "WhoId": account})           # WhoId is Contact or Lead
    with rejected("INVALID_CROSS_REFERENCE_KEY"):
        crm.create("Task", {"Subject": "s", "WhoId": ids.new_id("Contact")})   # well formed, absent
    with rejected("FIELD_INTEGRITY_EXCEPTION"):
        crm.create("Contact", {"LastName": "C", "AccountId": "not-an-id"})
    with rejected("FIELD_INTEGRITY_EXCEPTION"):
        crm.create("Contact", {"LastName": "C", "AccountId": account[:15] + "ZZZ"})   # bad checksum
    assert count(crm, "Task") == 0 and count(crm, "Contact") == 0


def test_a_15_character_reference_is_stored_as_18(crm):
    account = crm.create("Account", {"Name": "A"})
    contact = crm.get("Contact", crm.create("Contact", {"LastName": "C", "AccountId": account[:15]}))
    assert contact.fields["AccountId"] == account


def test_updating_a_missing_record_is_not_found(crm):
    with pytest.raises(CRMNotFound):
        crm.update("Contact", ids.new_id("Contact"), {"LastName": "x"})


def test_update_changes_last_modified(crm):
    cid = crm.create("Contact", {"LastName": "x"})
    before = crm.get("Contact", cid).last_modified
    crm.update("Contact", cid, {"Title": "Boss"})
    after = crm.get("Contact", cid)
    assert after.last_modified > before and after.fields["Title"] == "Boss"


# -- finding, upserts and files ----------------------------------------------------------------------

def test_find_and_query(crm):
    a = crm.create("Case", {"Subject": "one", "Origin": "Phone"})
    b = crm.create("Case", {"Subject": "two", "Origin": "Phone"})
    crm.create("Case", {"Subject": "three", "Origin": "Web"})
    assert [r.id for r in crm.find("Case", "Subject", ["one", "two"])] == [a, b]
    assert {r.id for r in crm.query("Case", {"Origin": "Phone"})} == {a, b}
    with rejected("INVALID_FIELD"):
        crm.find("Case", "Nope", ["x"])


def test_upsert_with_files_is_idempotent_and_keeps_the_bytes(crm):
    contact = crm.create("Contact", {"LastName": "C"})
    files = [FileUpload("m1", "photo.jpg", "image/jpeg", b"\xff\xd8jpeg-bytes"),
             FileUpload("m2", "note.txt", "text/plain", b"hello")]
    fields = {"Subject": "SMS chat", "CallObject": "sms-chat-1", "WhoId": contact, "Status": "Completed"}
    first = crm.upsert_with_files("Task", "CallObject", fields, files)
    again = crm.upsert_with_files("Task", "CallObject", {**fields, "Subject": "SMS chat (updated)"}, files)
    assert first.created and not again.created
    assert again.id == first.id and dict(again.file_ids) == dict(first.file_ids)
    assert count(crm, "Task") == 1 and count(crm, "ContentVersion") == 2
    assert crm.get("Task", first.id).fields["Subject"] == "SMS chat (updated)"
    cv = crm.get("ContentVersion", first.file_ids["m1"])
    assert cv.fields["FirstPublishLocationId"] == first.id
    assert (cv.fields["ContentSize"], cv.fields["FileExtension"], cv.fields["Title"]) == (12, "jpg", "photo.jpg")
    assert ids.is_valid_id(cv.fields["ContentDocumentId"], "ContentDocument")
    assert crm.file_data(first.file_ids["m1"]) == b"\xff\xd8jpeg-bytes"


def test_an_upsert_looks_up_the_records_files_only_when_it_may_have_some(crm, monkeypatch):
    """Nearly every chat log is a Task without files, and a record created just now has none: no look-up
    then. An update with files still finds the ones attached before (the test above)."""
    from tests.conftest import sent_statements

    sent = sent_statements(crm.engine, monkeypatch)
    fields = {"Subject": "SMS chat", "CallObject": "sms-chat-2", "Status": "Completed"}
    crm.upsert_with_files("Task", "CallObject", fields)
    crm.upsert_with_files("Task", "CallObject", fields)
    crm.upsert_with_files("Task", "CallObject", {**fields, "CallObject": "sms-chat-3"},
                          [FileUpload("m1", "a.txt", "text/plain", b"a")])
    assert not any("FROM crm_contentversion" in sql for sql, _ in sent)
    crm.upsert_with_files("Task", "CallObject", {**fields, "CallObject": "sms-chat-3"},
                          [FileUpload("m1", "a.txt", "text/plain", b"a")])
    assert any("FROM crm_contentversion" in sql for sql, _ in sent)
    assert count(crm, "ContentVersion") == 1


@pytest.mark.both_databases
def test_a_new_record_without_files_is_created_by_one_statement(crm, monkeypatch):
    """The chat log's usual upsert: one `INSERT … WHERE NOT EXISTS` (on PostgreSQL in autocommit, so no
    BEGIN and COMMIT either) instead of a look-up and an insert in a transaction. An existing key still
    updates its one record."""
    from crmconnector.driver_sql import DriverStatement

    sent: list[tuple[str, Any]] = []
    run = DriverStatement._execute
    monkeypatch.setattr(DriverStatement, "_execute", lambda self, conn, plan, params: (
        sent.append((plan.compiled.string, conn.get_execution_options().get("isolation_level"))),
        run(self, conn, plan, params))[1])
    fields = {"Subject": "SMS chat", "CallObject": "sms-chat-7", "Status": "Completed"}
    first = crm.upsert_with_files("Task", "CallObject", fields)
    assert first.created and len(sent) == 1
    sql, isolation = sent[0]
    assert sql.startswith("INSERT INTO crm_task") and "NOT (EXISTS" in sql
    if crm.engine.dialect.name == "postgresql":
        assert isolation == "AUTOCOMMIT"
    again = crm.upsert_with_files("Task", "CallObject", {**fields, "Subject": "SMS chat (updated)"})
    assert not again.created and again.id == first.id and count(crm, "Task") == 1
    assert crm.get("Task", first.id).fields["Subject"] == "SMS chat (updated)"


def test_bulk_load_indexes_phones_like_create(crm):
    crm.bulk_load("Contact", [{"LastName": f"n{i:02d}", "Phone": f"(415) 555-01{i:02d}"} for i in range(50)])
    found = crm.find_by_phone(["+14155550107", "+14155550149"], ["Contact"])
    assert sorted(r.name for r in found) == ["n07", "n49"]


def test_bulk_load_takes_rows_with_different_fields_and_applies_defaults(crm):
    crm.bulk_load("Contact", [{"LastName": "A", "Phone": "4155550101"},
                              {"LastName": "B", "MobilePhone": "4155550102", "Title": "Boss"}])
    by_name = {r.name: r for r in crm.query("Contact", {})}
    assert by_name["A"].fields["Title"] is None and by_name["B"].fields["Title"] == "Boss"
    assert by_name["A"].fields["DoNotCall"] is False
    assert [r.name for r in crm.find_by_phone(["+14155550102"], ["Contact"])] == ["B"]


def test_check_reports_every_object(crm):
    lines = crm.check()
    assert all(line.ok for line in lines)
    assert [line.what for line in lines[1:]] == [*(f"{name}: create and read" for name in TABLES),
                                                 "opt-out field DoNotCall"]


def test_check_fails_an_opt_out_field_the_local_crm_lacks_or_that_is_no_checkbox(crm):
    failing = [(line.what, line.detail) for line in crm.check("Bogus__c") if not line.ok]
    assert failing == [("Contact.Bogus__c", "no such field in the local CRM"),
                       ("Lead.Bogus__c", "no such field in the local CRM")]
    assert [line.detail for line in crm.check("Email") if not line.ok] == [
        "its type is email, not checkbox (boolean); STOP and START set it to true and false"] * 2


@pytest.mark.both_databases
def test_the_phone_look_up_finds_every_object_on_the_drivers_cursor(crm, runtime):
    """Every chat.started's match reads the phone index: on the driver's cursor, without SQLAlchemy's
    execution around it, for any number of numbers and objects."""
    from tests.conftest import sqlalchemy_statements

    crm.create("Contact", {"LastName": "Ada", "Phone": "(415) 555-0101"})
    crm.create("Lead", {"LastName": "Bo", "Company": "X", "MobilePhone": "415-555-0102"})
    crm.create("Account", {"Name": "Cy", "Phone": "+1 415 555 0101"})
    through_sqlalchemy = sqlalchemy_statements(runtime.engine)
    both = crm.find_by_phone(["+14155550101", "+14155550102"], ["Contact", "Lead"])
    one = crm.find_by_phone(["+14155550101"], ["Contact", "Lead", "Account"])
    assert sorted((r.object, r.name) for r in both) == [("Contact", "Ada"), ("Lead", "Bo")]
    assert sorted((r.object, r.name) for r in one) == [("Account", "Cy"), ("Contact", "Ada")]
    assert [sql for sql in through_sqlalchemy if "crm_phone_index" in sql] == []


def test_cli_check_fails_a_saved_opt_out_field_the_local_crm_lacks(workdir):
    from click.testing import CliRunner

    from crmconnector import preferences
    from crmconnector.cli import main
    from crmconnector.store import make_engine, migrate

    url = f"sqlite:///{workdir / 'state.db'}"
    engine = make_engine(url)
    migrate(engine)
    preferences.save_pop_settings(engine, {"opt_out_field": "Bogus__c"})
    engine.dispose()
    result = CliRunner().invoke(main, ["check"], env={"CRMCONNECTOR_DATABASE_URL": url})
    assert result.exit_code == 1
    assert "FAIL  Contact.Bogus__c: no such field in the local CRM" in result.output
    assert "FAIL  Lead.Bogus__c: no such field in the local CRM" in result.output
