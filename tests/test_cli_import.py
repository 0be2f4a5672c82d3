"""`crmconnector import OBJECT FILE.csv`: progress bar, bad rows listed by line with reasons, good rows kept."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from crmconnector.cli import main
from crmconnector.crm import ids
from crmconnector.crm.importer import import_file
from crmconnector.matching import match_number
from crmconnector.runtime import Runtime
from crmconnector.settings import Settings


def open_state(workdir) -> Runtime:
    return Runtime(Settings.from_env({}, dotenv_path=None))


CONTACTS = (
    "FirstName,LastName,Phone,MobilePhone,DoNotCall,Email\n"       # line 1
    "Becky,Thatcher,(415) 555-0132,,false,becky@example.com\n"     # 2 good
    "Huck,,415.555.0133,,,\n"                                      # 3 no LastName
    "Tom,Sawyer,+1 415 555 0134,tel:+14155550135,true,\n"          # 4 good
    "Joe,Harper,4155550136,,maybe,\n"                              # 5 not a boolean
    '"Polly, Aunt","Long\nName",4155550137,,,\n'                   # 6-7 good, spans two lines
    "Ben,Rogers,4155550138,,,,extra\n"                             # 8 too many values
    "\n"                                                           # 9 blank: skipped
    "Amy," + "L" * 81 + ",4155550139,,,\n"                         # 10 too long
    "Sid,Sawyer,n/a,,,\n"                                          # 11 good (a messy phone is kept, unmatched)
)


def test_import_keeps_good_rows_and_lists_bad_ones_by_line(workdir):
    (workdir / "contacts.csv").write_text(CONTACTS)
    result = CliRunner().invoke(main, ["import", "Contact", "contacts.csv"])
    assert result.exit_code == 1
    bad = [line for line in result.stderr.splitlines() if line.startswith("contacts.csv, line ")]
    assert [line.split(":")[0] for line in bad] == ["contacts.csv, line 3", "contacts.csv, line 5",
                                                    "contacts.csv, line 8", "contacts.csv, line 10"]
    assert "REQUIRED_FIELD_MISSING" in bad[0] and "LastName" in bad[0]
    assert "DoNotCall: value not of required type: maybe" in bad[1]
    assert "7 values but the header names 6 fields" in bad[2]
    assert "STRING_TOO_LONG" in bad[3] and "max length=80" in bad[3]
    assert "imported 4 Contact records; 4 bad rows skipped" in result.output
    # the progress bar, drawn by tqdm on stderr, reached every row
    assert "import Contact" in result.stderr and "8/8" in result.stderr
    runtime = open_state(workdir)
    try:
        contacts = {r.name: r for r in runtime.crm.query("Contact", {}, limit=100)}
        assert set(contacts) == {"Becky Thatcher", "Tom Sawyer", "Polly, Aunt Long\nName", "Sid Sawyer"}
        tom = contacts["Tom Sawyer"]
        assert ids.is_valid_id(tom.id, "Contact") and tom.fields["DoNotCall"] is True
        # imported phones are indexed: they match like any other record
        assert [r.id for r in match_number(runtime.crm, "+14155550135").records] == [tom.id]
        assert match_number(runtime.crm, "+14155550133").outcome == "none"
    finally:
        runtime.close()


def test_a_clean_file_exits_zero(workdir):
    (workdir / "accounts.csv").write_text("Name,Phone,Industry\nAcme,4155550100,Fencing\nBeta,,\n")
    result = CliRunner().invoke(main, ["import", "Account", "accounts.csv"])
    assert result.exit_code == 0, result.stderr
    assert result.output.strip().endswith("imported 2 Account records")


def test_references_are_checked_on_import(workdir):
    runtime = open_state(workdir)
    try:
        account = runtime.crm.create("Account", {"Name": "Acme"})
    finally:
        runtime.close()
    (workdir / "c.csv").write_text(f"LastName,AccountId\nGood,{account}\nBad,{ids.new_id('Account')}\n")
    result = CliRunner().invoke(main, ["import", "Contact", "c.csv"])
    assert "c.csv, line 3: INVALID_CROSS_REFERENCE_KEY" in result.stderr
    assert "imported 1 Contact records; 1 bad rows skipped" in result.output


@pytest.mark.parametrize(("content", "says"), [
    ("LastName,Shoe_Size__c\nDoe,9\n", "c.csv, line 1: unknown field(s) in the header: Shoe_Size__c"),
    ("LastName,LastName\nDoe,Roe\n", "field(s) named twice in the header: LastName"),
    ("", "the file is empty"),
    (b"LastName\nM\xfcller\n", "the file is not UTF-8 text"),
    # a quote never closed would take every later row into one value, losing those rows without a word
    ('LastName,Title\nDoe,"Boss\nRoe,Clerk\nPoe,Cook\n', "c.csv, line 2: not a readable CSV file"),
])
def test_a_file_that_cannot_be_read_imports_nothing(workdir, content, says):
    path = workdir / "c.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = CliRunner().invoke(main, ["import", "Contact", "c.csv"])
    assert result.exit_code == 1
    assert "nothing imported" in result.stderr and says in result.stderr
    runtime = open_state(workdir)
    try:
        assert runtime.crm.query("Contact", {}) == []
    finally:
        runtime.close()


def test_unknown_object_and_missing_file(workdir):
    (workdir / "c.csv").write_text("Name\nx\n")
    unknown = CliRunner().invoke(main, ["import", "Opportunity", "c.csv"])
    assert unknown.exit_code == 1 and "unknown object 'Opportunity'" in unknown.stderr
    missing = CliRunner().invoke(main, ["import", "Contact", "nope.csv"])
    assert missing.exit_code == 2 and "does not exist" in missing.stderr


def test_utf8_with_byte_order_mark_and_batches(runtime, tmp_path):
    path = tmp_path / "leads.csv"
    rows = "".join(f"Lead{i},Co{i},415555{i:04d}\n" for i in range(25))
    path.write_text("\ufeffLastName,Company,Phone\n" + rows + "X,,1\n", encoding="utf-8")
    report = import_file(runtime.crm, "Lead", str(path), batch_size=4, progress=False)
    assert report.imported == 25
    assert [(p.line, "Company" in p.reason) for p in report.problems] == [(27, True)]
    assert match_number(runtime.crm, "+14155550024").records[0].name == "Lead24"


def test_rows_shorter_than_the_header_are_loaded_with_what_they_have(runtime, tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("LastName,Phone,Title\nA,4155550101,Boss\nB\nC,4155550103\n")
    report = import_file(runtime.crm, "Contact", str(path), progress=False)
    assert (report.imported, report.problems) == (3, [])
    by_name = {r.name: r for r in runtime.crm.query("Contact", {})}
    assert by_name["B"].fields["Phone"] is None and by_name["C"].fields["Title"] is None
