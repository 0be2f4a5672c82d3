"""SalesforceCRM reads and writes at the HTTP level: exact SOSL/SOQL text, bodies, and error mapping."""
from __future__ import annotations

from typing import Any, Iterator

import pytest
import requests
import responses
from responses import matchers

from crmconnector.crm.errors import CRMNotFound, CRMRejected, RetryableCRMError
from crmconnector.crm.salesforce import SalesforceCRM
from crmconnector.crm.sf_http import retry_after
from crmconnector.matching import match_number, match_numbers
from tests.fake_salesforce import DATA, DATA_PATH, INSTANCE_URL, add_token, bearer, make_crm, sf_error

SEARCH = f"{DATA}/search/"
QUERY = f"{DATA}/query/"
CONTACT_FIELDS = ("Id, FirstName, LastName, AccountId, Email, Phone, MobilePhone, HomePhone, OtherPhone, Title, "
                  "DoNotCall, Description, CreatedDate, LastModifiedDate")
RETURNING = ("Contact(Id, FirstName, LastName, Phone, MobilePhone, HomePhone, OtherPhone, AccountId, "
             "LastModifiedDate), Lead(Id, FirstName, LastName, Company, Phone, MobilePhone, LastModifiedDate), "
             "Account(Id, Name, Phone, LastModifiedDate)")
OBJECTS = ["Contact", "Lead", "Account"]
C1, C2, L1, A1 = "003000000000001AAA", "003000000000002AAA", "00Q000000000001AAA", "001000000000001AAA"


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        add_token(mock)
        yield mock


@pytest.fixture
def crm(rsps: responses.RequestsMock) -> SalesforceCRM:
    return make_crm()


def row(object_name: str, record_id: str, **fields: Any) -> dict[str, Any]:
    return {"attributes": {"type": object_name, "url": f"{DATA_PATH}/sobjects/{object_name}/{record_id}"},
            "Id": record_id, **fields}


# -- find_by_phone ---------------------------------------------------------------------------------

def test_one_sosl_request_with_exact_text_and_fuzzy_hits_filtered(rsps: responses.RequestsMock,
                                                                  crm: SalesforceCRM) -> None:
    sosl = ('FIND {"\\+14155550132" OR "4155550132" OR "415 555 0132"} IN PHONE FIELDS RETURNING ' + RETURNING)
    rsps.add(responses.GET, SEARCH, match=[matchers.query_param_matcher({"q": sosl}), bearer()], json={
        "searchRecords": [
            row("Contact", C1, FirstName="Becky", LastName="Thatcher", Phone="(415) 555-0132",
                LastModifiedDate="2026-11-20T10:00:00.000+0000"),
            # SOSL is fuzzy: the same digit groups in a UK number are a different number.
            row("Contact", C2, FirstName="Tom", LastName="Sawyer", Phone="+44 415 555 0132",
                LastModifiedDate="2026-11-21T10:00:00.000+0000"),
            row("Account", A1, Name="Acme", Phone="415.555.0132", LastModifiedDate="2026-11-19T10:00:00.000+0000"),
        ]})
    result = match_number(crm, "+14155550132", object_order=OBJECTS)
    assert result.outcome == "multiple"
    assert [(r.object, r.id, r.name) for r in result.records] == [("Contact", C1, "Becky Thatcher"),
                                                                   ("Account", A1, "Acme")]
    assert crm.request_count == 2


def test_object_order_sets_the_returning_clause(rsps: responses.RequestsMock, crm: SalesforceCRM) -> None:
    sosl = ('FIND {"\\+14155550132" OR "4155550132" OR "415 555 0132"} IN PHONE FIELDS RETURNING '
            "Account(Id, Name, Phone, LastModifiedDate), "
            "Lead(Id, FirstName, LastName, Company, Phone, MobilePhone, LastModifiedDate)")
    rsps.add(responses.GET, SEARCH, match=[matchers.query_param_matcher({"q": sosl})], json={"searchRecords": []})
    assert match_number(crm, "+14155550132", object_order=["Account", "Lead"]).outcome == "none"


@pytest.mark.parametrize("evil, escaped", [
    ("}", "\\}"), ("'", "\\'"), ("\\", "\\\\"), ("*", "\\*"), ("OR", "OR"),
    ('" OR "x', '\\" OR \\"x'), ("} RETURNING User(Id", "\\} RETURNING User\\(Id"),
])
def test_input_cannot_break_out_of_the_search_term(rsps: responses.RequestsMock, crm: SalesforceCRM,
                                                   evil: str, escaped: str) -> None:
    sosl = f'FIND {{"{escaped}"}} IN PHONE FIELDS RETURNING Account(Id, Name, Phone, LastModifiedDate)'
    rsps.add(responses.GET, SEARCH, match=[matchers.query_param_matcher({"q": sosl})], json={"searchRecords": []})
    assert crm.find_by_phone([evil], ["Account"]) == []


def test_many_numbers_take_one_search_per_fifty(rsps: responses.RequestsMock, crm: SalesforceCRM) -> None:
    numbers = [f"+1415555{i:04d}" for i in range(120)]
    rsps.add(responses.GET, SEARCH, json={"searchRecords": [
        row("Contact", C1, FirstName="A", LastName="B", Phone="415-555-0007")]})
    results = match_numbers(crm, numbers)
    assert len(rsps.calls) == 1 + 3
    assert [n for n, r in results.items() if r.outcome != "none"] == ["+14155550007"]
    assert results["+14155550007"].records[0].id == C1


def test_records_from_several_batches_are_not_repeated(rsps: responses.RequestsMock, crm: SalesforceCRM) -> None:
    rsps.add(responses.GET, SEARCH, json={"searchRecords": [row("Account", A1, Name="Acme", Phone="x")]})
    records = crm.find_by_phone([f"+1415555{i:04d}" for i in range(60)], ["Account"])
    assert [r.id for r in records] == [A1]


# -- get / find ------------------------------------------------------------------------------------

def test_get_reads_the_record_with_its_fields(rsps: responses.RequestsMock, crm: SalesforceCRM) -> None:
    rsps.add(responses.GET, f"{DATA}/sobjects/Contact/{C1}",
             match=[matchers.query_param_matcher({"fields": CONTACT_FIELDS.replace(", ", ",")})],
             json=row("Contact", C1, FirstName="Becky", LastName="Thatcher", AccountId=A1,
                      LastModifiedDate="2026-11-20T10:00:00.000+0000"))
    record = crm.get("Contact", C1)
    assert record is not None
    assert (record.object, record.id, record.name, record.fields["AccountId"]) == ("Contact", C1, "Becky Thatcher", A1)
    assert "attributes" not in record.fields
    assert record.last_modified is not None and record.last_modified.isoformat() == "2026-11-20T10:00:00+00:00"


def test_get_of_a_missing_record_is_none(rsps: responses.RequestsMock, crm: SalesforceCRM) -> None:
    rsps.add(responses.GET, f"{DATA}/sobjects/Contact/{C2}", status=404,
             json=sf_error("NOT_FOUND", "The requested resource does not exist"))
    assert crm.get("Contact", C2) is None


def test_get_of_a_malformed_id_sends_nothing(crm: SalesforceCRM, rsps: responses.RequestsMock) -> None:
    assert crm.get("Contact", "../../limits") is None
    assert len(rsps.calls) == 0
    rsps.reset()  # not even a login was needed


def test_find_uses_format_soql_and_splits_long_in_lists(rsps: responses.RequestsMock, crm: SalesforceCRM) -> None:
    first = ("SELECT Id, Subject, Description, Origin, Status, Priority, SuppliedPhone, ContactId, AccountId, "
             "CreatedDate, LastModifiedDate FROM Case WHERE Subject IN ('It\\'s a \\\\ test','plain') "
             "ORDER BY CreatedDate, Id")
    rsps.add(responses.GET, QUERY, match=[matchers.query_param_matcher({"q": first})],
             json={"totalSize": 1, "done": True, "records": [row("Case", "500000000000001AAA", Subject="plain")]})
    records = crm.find("Case", "Subject", ["It's a \\ test", "plain"])
    assert [(r.id, r.name) for r in records] == [("500000000000001AAA", "plain")]


def test_find_with_many_values_takes_several_queries_and_follows_next_pages(rsps: responses.RequestsMock,
                                                                           crm: SalesforceCRM) -> None:
    subjects = [f"Abandoned call {i:04d} from +1 415-555-{i:04d}" for i in range(300)]
    rsps.add(responses.GET, QUERY, json={"totalSize": 2, "done": False, "nextRecordsUrl":
                                         f"{DATA_PATH}/query/01g-2000",
                                         "records": [row("Case", "500000000000001AAA", Subject=subjects[0])]})
    rsps.add(responses.GET, f"{DATA}/query/01g-2000", json={"done": True, "records": [
        row("Case", "500000000000002AAA", Subject=subjects[1])]})
    records = crm.find("Case", "Subject", subjects)
    queries = [c.request for c in rsps.calls if c.request.url.startswith(QUERY + "?")]
    assert len(queries) >= 2
    assert all(len(q.url) < 12000 for q in queries)
    assert [r.id for r in records][:2] == ["500000000000001AAA", "500000000000002AAA"]


@pytest.mark.parametrize("object_name, field_name", [("Contact", "Phone = '' OR Id"), ("Contact WHERE", "Id"),
                                                     ("Case", "Subject) FROM User--")])
def test_names_are_never_put_into_queries_unchecked(crm: SalesforceCRM, object_name: str, field_name: str,
                                                    rsps: responses.RequestsMock) -> None:
    with pytest.raises(CRMRejected):
        crm.find(object_name, field_name, ["x"])
    assert len(rsps.calls) == 0
    rsps.reset()  # not even a login was needed


# -- writes ----------------------------------------------------------------------------------------

def test_create_posts_the_fields(rsps: responses.RequestsMock, crm: SalesforceCRM) -> None:
    rsps.add(responses.POST, f"{DATA}/sobjects/Contact/", status=201, json={"id": C1, "success": True, "errors": []},
             match=[matchers.json_params_matcher({"LastName": "Thatcher", "Phone": "+14155550132"}), bearer()])
    assert crm.create("Contact", {"LastName": "Thatcher", "Phone": "+14155550132"}) == C1


def test_update_patches_the_record(rsps: responses.RequestsMock, crm: SalesforceCRM) -> None:
    rsps.add(responses.PATCH, f"{DATA}/sobjects/Contact/{C1}", status=204,
             match=[matchers.json_params_matcher({"DoNotCall": True})])
    assert crm.update("Contact", C1, {"DoNotCall": True}) is None


def test_update_of_a_deleted_record_is_not_found(rsps: responses.RequestsMock, crm: SalesforceCRM) -> None:
    rsps.add(responses.PATCH, f"{DATA}/sobjects/Contact/{C1}", status=404,
             json=sf_error("ENTITY_IS_DELETED", "entity is deleted"))
    with pytest.raises(CRMNotFound) as caught:
        crm.update("Contact", C1, {"DoNotCall": True})
    assert caught.value.code == "ENTITY_IS_DELETED"


def test_create_many_uses_collections_of_200_and_reports_row_errors(rsps: responses.RequestsMock,
                                                                   crm: SalesforceCRM) -> None:
    rows = [{"Subject": f"Abandoned call {i}", "Origin": "Phone"} for i in range(250)]
    first = [{"id": f"5000000000{i:05d}AAA", "success": True, "errors": []} for i in range(200)]
    first[3] = {"success": False, "errors": [{"statusCode": "REQUIRED_FIELD_MISSING",
                                              "message": "Required fields are missing: [Status]",
                                              "fields": ["Status"]}]}
    rsps.add(responses.POST, f"{DATA}/composite/sobjects", json=first, match=[matchers.json_params_matcher(
        {"allOrNone": False, "records": [{"attributes": {"type": "Case"}, **r} for r in rows[:200]]})])
    rsps.add(responses.POST, f"{DATA}/composite/sobjects",
             json=[{"id": f"5000000001{i:05d}AAA", "success": True, "errors": []} for i in range(50)],
             match=[matchers.json_params_matcher(
                 {"allOrNone": False, "records": [{"attributes": {"type": "Case"}, **r} for r in rows[200:]]})])
    results = crm.create_many("Case", rows)
    assert len(results) == 250 and crm.request_count == 3
    assert results[3].id is None
    assert results[3].error == "REQUIRED_FIELD_MISSING: Required fields are missing: [Status] (fields: Status)"
    assert results[0].id == "500000000000000AAA" and results[249].id == "500000000100049AAA"
    assert not results[3].retryable


def test_a_row_that_was_locked_is_reported_as_worth_trying_again(rsps: responses.RequestsMock,
                                                                  crm: SalesforceCRM) -> None:
    rows = [{"Subject": "Abandoned call a", "Origin": "Phone"}, {"Subject": "Abandoned call b", "Origin": "Phone"}]
    rsps.add(responses.POST, f"{DATA}/composite/sobjects", json=[
        {"id": "500000000000001AAA", "success": True, "errors": []},
        {"success": False, "errors": [{"statusCode": "UNABLE_TO_LOCK_ROW",
                                       "message": "unable to obtain exclusive access to this record", "fields": []}]}])
    first, second = crm.create_many("Case", rows)
    assert (first.id, first.retryable) == ("500000000000001AAA", False)
    assert second.id is None and second.retryable
    assert second.error is not None and "UNABLE_TO_LOCK_ROW" in second.error


# -- error mapping ---------------------------------------------------------------------------------

@pytest.mark.parametrize("code", ["REQUIRED_FIELD_MISSING", "FIELD_INTEGRITY_EXCEPTION", "STRING_TOO_LONG",
                                  "INVALID_CROSS_REFERENCE_KEY"])
def test_validation_errors_are_rejected_with_salesforce_code(rsps: responses.RequestsMock, crm: SalesforceCRM,
                                                             code: str) -> None:
    rsps.add(responses.POST, f"{DATA}/sobjects/Task/", status=400, json=sf_error(code, "the message"))
    with pytest.raises(CRMRejected) as caught:
        crm.create("Task", {"Subject": "x"})
    assert (caught.value.code, caught.value.message, caught.value.status) == (code, "the message", 400)
    assert not isinstance(caught.value, RetryableCRMError)


@pytest.mark.parametrize("status, body, headers, code, wait", [
    (503, "Service Unavailable", {"Retry-After": "30"}, "", 30.0),
    (500, sf_error("UNKNOWN_EXCEPTION", "boom"), {}, "UNKNOWN_EXCEPTION", None),
    (403, sf_error("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."), {}, "REQUEST_LIMIT_EXCEEDED", None),
    (400, sf_error("UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access"), {}, "UNABLE_TO_LOCK_ROW", None),
    (429, "", {"Retry-After": "2"}, "", 2.0),
])
def test_passing_failures_are_retryable(rsps: responses.RequestsMock, crm: SalesforceCRM, status: int, body: Any,
                                        headers: dict[str, str], code: str, wait: float | None) -> None:
    kwargs = {"json": body} if isinstance(body, list) else {"body": body}
    rsps.add(responses.POST, f"{DATA}/sobjects/Case/", status=status, headers=headers, **kwargs)
    with pytest.raises(RetryableCRMError) as caught:
        crm.create("Case", {"Subject": "x"})
    assert (caught.value.code, caught.value.status, caught.value.retry_after) == (code, status, wait)


@pytest.mark.parametrize("failure, code", [(requests.ConnectTimeout("slow"), "TIMEOUT"),
                                           (requests.ReadTimeout("slow"), "TIMEOUT"),
                                           (requests.ConnectionError("refused"), "CONNECTION")])
def test_network_failures_are_retryable(rsps: responses.RequestsMock, crm: SalesforceCRM,
                                        failure: Exception, code: str) -> None:
    rsps.add(responses.GET, f"{DATA}/", body=failure)
    with pytest.raises(RetryableCRMError) as caught:
        crm.ping()
    assert caught.value.code == code


def test_refused_permission_is_rejected(rsps: responses.RequestsMock, crm: SalesforceCRM) -> None:
    rsps.add(responses.POST, f"{DATA}/sobjects/Case/", status=403,
             json=sf_error("INSUFFICIENT_ACCESS", "insufficient access rights"))
    with pytest.raises(CRMRejected) as caught:
        crm.create("Case", {"Subject": "x"})
    assert caught.value.code == "INSUFFICIENT_ACCESS"


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after({"Retry-After": "120"}) == 120.0
    assert retry_after({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0  # in the past
    assert retry_after({"Retry-After": "soon"}) is None
    assert retry_after({}) is None


# -- links -----------------------------------------------------------------------------------------

def test_lightning_urls(rsps: responses.RequestsMock, crm: SalesforceCRM) -> None:
    assert crm.record_url("Contact", C1) == f"{INSTANCE_URL}/lightning/r/Contact/{C1}/view"
    assert crm.new_record_url("Contact", {"Phone": "+14155550132"}) == (
        f"{INSTANCE_URL}/lightning/o/Contact/new?defaultFieldValues=Phone=%2B14155550132")
    assert crm.new_record_url("Lead", {"Phone": "+1 415, 555", "Company": "A&B=C"}) == (
        f"{INSTANCE_URL}/lightning/o/Lead/new?defaultFieldValues=Phone=%2B1%20415%2C%20555,Company=A%26B%3DC")
    assert crm.new_record_url("Contact", {}) == f"{INSTANCE_URL}/lightning/o/Contact/new"
    assert len(rsps.calls) == 1  # the instance URL came from the one login
