"""`crmconnector check` against Salesforce: login, API version, object and field access."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
import responses
from click.testing import CliRunner
from responses import matchers

from crmconnector.cli import main
from crmconnector.crm.objects import OBJECTS
from tests.fake_salesforce import (DATA, DATA_PATH, INSTANCE_URL, LOGIN_URL, TOKEN_URL, VERSION, FakeSalesforce,
                                   add_token, bearer, make_crm)

VERSIONS = [{"version": "61.0", "url": "/services/data/v61.0"}, {"version": VERSION, "url": DATA_PATH}]
DESCRIBE_BODY = {"batchRequests": [{"method": "GET", "url": f"v{VERSION}/sobjects/{name}/describe"} for name in OBJECTS]}


def describe(name: str) -> dict[str, Any]:
    fields = [{"name": "Id", "createable": False, "updateable": False},
              *({"name": s.name, "type": s.type, "createable": True, "updateable": True} for s in OBJECTS[name])]
    return {"statusCode": 200, "result": {"name": name, "queryable": True, "createable": True, "fields": fields}}


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


def org(rsps: responses.RequestsMock, results: list[dict[str, Any]], versions: Any = VERSIONS) -> None:
    add_token(rsps)
    rsps.add(responses.GET, f"{INSTANCE_URL}/services/data/", json=versions, match=[bearer()])
    if results:
        rsps.add(responses.POST, f"{DATA}/composite/batch", match=[matchers.json_params_matcher(DESCRIBE_BODY)],
                 json={"hasErrors": False, "results": results})


def test_a_healthy_org_passes_in_three_requests(rsps: responses.RequestsMock) -> None:
    org(rsps, [describe(name) for name in OBJECTS])
    crm = make_crm()
    lines = crm.check()
    assert all(line.ok for line in lines)
    assert [line.what for line in lines] == [
        "Salesforce login", f"API version {VERSION}", "Account: read", "Contact: read, update DoNotCall",
        "Lead: read, update DoNotCall", "Case: create and read", "Task: create, update and read",
        "ContentVersion: create and read"]
    assert crm.request_count == 3


def test_each_missing_permission_is_a_failing_line(rsps: responses.RequestsMock) -> None:
    results = {name: describe(name) for name in OBJECTS}
    task = copy.deepcopy(results["Task"])
    task["result"]["fields"] = [f for f in task["result"]["fields"] if f["name"] != "CallObject"]
    for field in task["result"]["fields"]:
        if field["name"] == "Description":
            field["updateable"] = False
    results["Task"] = task
    results["Case"]["result"]["createable"] = False
    results["Contact"]["result"]["fields"] = [
        {**f, "updateable": False} if f["name"] == "DoNotCall" else f for f in results["Contact"]["result"]["fields"]]
    results["ContentVersion"] = {"statusCode": 404, "result": [{"errorCode": "NOT_FOUND",
                                                                "message": "The requested resource does not exist"}]}
    org(rsps, list(results.values()))
    failing = [(line.what, line.detail) for line in make_crm().check() if not line.ok]
    assert failing == [
        ("Contact.DoNotCall", "not updateable for the integration user"),
        ("Case: create", "the integration user cannot create records"),
        ("Task.Description", "not updateable for the integration user"),
        ("Task.CallObject", "missing or not visible to the integration user (field-level security)"),
        ("ContentVersion: describe", "NOT_FOUND: The requested resource does not exist"),
    ]


def test_an_api_version_the_org_lacks_fails(rsps: responses.RequestsMock) -> None:
    org(rsps, [], versions=[{"version": "58.0"}, {"version": "61.0"}])
    lines = make_crm().check()
    assert lines[-1].ok is False
    assert lines[-1].detail == "not offered by this org (newest: 61.0); set SALESFORCE_API_VERSION"


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.chdir(tmp_path)  # no stray .env
    return {"CRMCONNECTOR_CRM": "salesforce", "SALESFORCE_LOGIN_URL": LOGIN_URL, "SALESFORCE_CLIENT_ID": "client",
            "SALESFORCE_CLIENT_SECRET": "secret", "SALESFORCE_API_VERSION": VERSION,
            "CRMCONNECTOR_DATABASE_URL": f"sqlite:///{tmp_path / 'state.db'}",
            "CRMCONNECTOR_INSTANCE_PATH": str(tmp_path / "instance"), "CRMCONNECTOR_ADMIN_TOKEN": "t",
            "CRMCONNECTOR_CALLBACK_SECRETS": "s"}


def test_cli_check_passes_against_a_healthy_org(cli_env: dict[str, str]) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeSalesforce().install(rsps)
        result = CliRunner().invoke(main, ["check"], env=cli_env)
    assert result.exit_code == 0, result.output
    assert "ok    Task: create, update and read" in result.output
    assert "8 ok, 0 failed" in result.output
    assert fake.requests == 3


def test_cli_check_with_bad_credentials_says_so_and_exits_1(cli_env: dict[str, str],
                                                            rsps: responses.RequestsMock) -> None:
    rsps.add(responses.POST, TOKEN_URL, status=400,
             json={"error": "invalid_client", "error_description": "invalid client credentials"})
    result = CliRunner().invoke(main, ["check"], env={**cli_env, "SALESFORCE_CLIENT_SECRET": "wrong"})
    assert result.exit_code == 1
    assert ("FAIL  Salesforce login: invalid_client: Salesforce refused the client credentials: "
            "invalid client credentials") in result.output
    assert "0 ok, 1 failed" in result.output


def test_an_unreachable_org_is_one_failing_connection_line(rsps: responses.RequestsMock) -> None:
    rsps.add(responses.POST, TOKEN_URL, body=requests.ConnectionError("no route to host"))
    lines = make_crm().check()
    assert [(line.ok, line.what) for line in lines] == [(False, "Salesforce connection")]
    assert lines[0].detail == "CONNECTION: cannot reach the Salesforce login server: ConnectionError"


def test_an_answer_that_is_no_json_is_one_failing_connection_line(cli_env: dict[str, str],
                                                                  rsps: responses.RequestsMock) -> None:
    """A TLS-inspecting proxy or a wrong instance may answer 200 with an HTML page: a clear line, no traceback."""
    add_token(rsps)
    rsps.add(responses.GET, f"{INSTANCE_URL}/services/data/", body="<html>blocked</html>", content_type="text/html")
    result = CliRunner().invoke(main, ["check"], env=cli_env)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)
    assert "FAIL  Salesforce connection: " in result.output and "not JSON" in result.output
    assert "0 ok, 1 failed" in result.output


def test_check_verifies_the_opt_out_field_the_admin_chose(rsps: responses.RequestsMock) -> None:
    results = {name: describe(name) for name in OBJECTS}
    results["Contact"]["result"]["fields"].append(
        {"name": "SMS_Opt_Out__c", "type": "boolean", "createable": True, "updateable": True})
    results["Lead"]["result"]["fields"].append(
        {"name": "SMS_Opt_Out__c", "type": "string", "createable": True, "updateable": True})
    org(rsps, list(results.values()))
    lines = make_crm().check("SMS_Opt_Out__c")
    assert [(line.ok, line.what, line.detail) for line in lines if "Contact" in line.what or "Lead" in line.what] == [
        (True, "Contact: read, update SMS_Opt_Out__c", "Phone, MobilePhone, HomePhone, OtherPhone, SMS_Opt_Out__c"),
        (False, "Lead.SMS_Opt_Out__c",
         "its type is string, not checkbox (boolean); STOP and START set it to true and false")]


def test_cli_check_fails_when_the_saved_opt_out_field_is_missing(cli_env: dict[str, str]) -> None:
    from crmconnector import preferences
    from crmconnector.store import make_engine, migrate

    engine = make_engine(cli_env["CRMCONNECTOR_DATABASE_URL"])
    migrate(engine)
    preferences.save_pop_settings(engine, {"opt_out_field": "Bogus__c"})  # as the admin page saved it
    engine.dispose()
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeSalesforce().install(rsps)
        result = CliRunner().invoke(main, ["check"], env=cli_env)
    assert result.exit_code == 1, result.output
    assert ("FAIL  Contact.Bogus__c: missing or not visible to the integration user (field-level security)"
            in result.output)
    assert "FAIL  Lead.Bogus__c: missing or not visible" in result.output
    assert "6 ok, 2 failed" in result.output
    assert fake.requests == 3


def test_an_opt_out_field_is_verified_in_one_request(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    results = [describe("Contact"), describe("Lead")]
    results[1]["result"]["fields"] = [{**f, "updateable": False} if f["name"] == "DoNotCall" else f
                                      for f in results[1]["result"]["fields"]]
    rsps.add(responses.POST, f"{DATA}/composite/batch", match=[bearer(), matchers.json_params_matcher(
        {"batchRequests": [{"method": "GET", "url": f"v{VERSION}/sobjects/Contact/describe"},
                           {"method": "GET", "url": f"v{VERSION}/sobjects/Lead/describe"}]})],
        json={"hasErrors": False, "results": results})
    crm = make_crm()
    problems = crm.opt_out_field_problems("DoNotCall")
    assert [(p.what, p.detail) for p in problems] == [("Lead.DoNotCall", "not updateable for the integration user")]
    assert crm.request_count == 2  # sign-in and the describes
