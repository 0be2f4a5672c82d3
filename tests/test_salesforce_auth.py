"""Salesforce login at the HTTP level: token request shape, laziness, one re-login, bad credentials."""
from __future__ import annotations

import time
from typing import Iterator

import pytest
import requests
import responses
from responses.registries import OrderedRegistry

from crmconnector.crm.errors import CRMAuthError, RetryableCRMError
from crmconnector.crm.salesforce import PING_FRESH_SECONDS
from crmconnector.metrics import REGISTRY
from tests.fake_salesforce import (DATA, DATA_PATH, INSTANCE_URL, TOKEN_URL, VERSION, add_token, bearer, make_crm,
                                   sf_error)

PING = f"{DATA}/"
SOAP_URL = f"https://test.salesforce.com/services/Soap/u/{VERSION}"
SOAP_OK = (b'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
           b'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns="urn:partner.soap.sforce.com">'
           b"<soapenv:Body><loginResponse><result>"
           + f"<serverUrl>{INSTANCE_URL}/services/Soap/u/{VERSION}/00D000000000001</serverUrl>".encode()
           + b"<sessionId>00D!session</sessionId></result></loginResponse></soapenv:Body></soapenv:Envelope>")
SOAP_FAULT = (b'<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
              b'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
              b'xmlns:sf="urn:fault.partner.soap.sforce.com"><soapenv:Body><soapenv:Fault>'
              b"<faultcode>sf:INVALID_LOGIN</faultcode><faultstring>INVALID_LOGIN</faultstring><detail>"
              b"<sf:LoginFault><sf:exceptionCode>INVALID_LOGIN</sf:exceptionCode><sf:exceptionMessage>"
              b"Invalid username, password, security token; or user locked out.</sf:exceptionMessage>"
              b"</sf:LoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>")


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        yield mock


@pytest.fixture
def ordered() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True, registry=OrderedRegistry) as mock:
        yield mock


def test_nothing_connects_until_first_use(rsps: responses.RequestsMock) -> None:
    make_crm()
    assert len(rsps.calls) == 0


def test_client_credentials_token_request_and_bearer_header(rsps: responses.RequestsMock) -> None:
    add_token(rsps)
    rsps.add(responses.GET, PING, json={}, match=[bearer("token-1")])
    crm = make_crm()
    crm.ping()
    token_request = rsps.calls[0].request
    assert token_request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert crm.request_count == 2


def test_login_happens_once_for_many_requests(rsps: responses.RequestsMock) -> None:
    query = f"{DATA}/query/"
    rsps.add(responses.GET, query, json={"done": True, "records": []}, match=[bearer("token-1")])
    add_token(rsps)
    crm = make_crm()
    crm.query("SELECT Id FROM Contact")
    crm.query("SELECT Id FROM Contact")
    assert [c.request.url.split("?")[0] for c in rsps.calls] == [TOKEN_URL, query, query]


def test_ping_spends_no_request_while_salesforce_answered_recently(rsps: responses.RequestsMock,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    add_token(rsps)
    rsps.add(responses.GET, PING, json={})
    crm = make_crm()
    crm.ping()
    crm.ping()  # a health probe right after: the last answer is proof enough
    assert crm.request_count == 2
    later = time.monotonic() + PING_FRESH_SECONDS + 1
    monkeypatch.setattr(time, "monotonic", lambda: later)
    crm.ping()
    assert crm.request_count == 3


def test_expired_session_logs_in_again_once_and_repeats_the_request(ordered: responses.RequestsMock) -> None:
    add_token(ordered, "token-1")
    ordered.add(responses.GET, PING, status=401, json=sf_error("INVALID_SESSION_ID", "Session expired or invalid"),
                match=[bearer("token-1")])
    add_token(ordered, "token-2")
    ordered.add(responses.GET, PING, json={"sobjects": f"{DATA_PATH}/sobjects"}, match=[bearer("token-2")])
    crm = make_crm()
    crm.ping()
    assert crm.request_count == 4


def test_a_second_expired_session_is_an_auth_error(ordered: responses.RequestsMock) -> None:
    add_token(ordered, "token-1")
    ordered.add(responses.GET, PING, status=401, json=sf_error("INVALID_SESSION_ID", "Session expired or invalid"))
    add_token(ordered, "token-2")
    ordered.add(responses.GET, PING, status=401, json=sf_error("INVALID_SESSION_ID", "Session expired or invalid"))
    crm = make_crm()
    with pytest.raises(CRMAuthError) as caught:
        crm.ping()
    assert caught.value.code == "INVALID_SESSION_ID"
    assert len(ordered.calls) == 4  # no third login


def test_bad_client_credentials_give_the_oauth_error(rsps: responses.RequestsMock) -> None:
    rsps.add(responses.POST, TOKEN_URL, status=400,
             json={"error": "invalid_client", "error_description": "invalid client credentials"})
    crm = make_crm(salesforce_client_secret="wrong")
    with pytest.raises(CRMAuthError) as caught:
        crm.ping()
    assert caught.value.code == "invalid_client"
    assert str(caught.value) == "invalid_client: Salesforce refused the client credentials: invalid client credentials"


def test_bad_credentials_fail_the_check_report(rsps: responses.RequestsMock) -> None:
    rsps.add(responses.POST, TOKEN_URL, status=400,
             json={"error": "invalid_grant", "error_description": "no client credentials user enabled"})
    lines = make_crm().check()
    assert len(lines) == 1
    assert not lines[0].ok and lines[0].what == "Salesforce login"
    assert lines[0].detail == ("invalid_grant: Salesforce refused the client credentials: "
                               "no client credentials user enabled")


def test_login_server_down_is_retryable(rsps: responses.RequestsMock) -> None:
    rsps.add(responses.POST, TOKEN_URL, status=503, body="unavailable", headers={"Retry-After": "7"})
    with pytest.raises(RetryableCRMError) as caught:
        make_crm().ping()
    assert caught.value.retry_after == 7.0


def test_login_server_unreachable_is_retryable(rsps: responses.RequestsMock) -> None:
    rsps.add(responses.POST, TOKEN_URL, body=requests.ConnectionError("refused"))
    with pytest.raises(RetryableCRMError) as caught:
        make_crm().ping()
    assert caught.value.code == "CONNECTION"


def test_username_password_login_as_simple_salesforce_does_it(rsps: responses.RequestsMock) -> None:
    rsps.add(responses.POST, SOAP_URL, body=SOAP_OK, content_type="text/xml")
    rsps.add(responses.GET, PING, json={}, match=[bearer("00D!session")])
    crm = make_crm(salesforce_client_id="", salesforce_client_secret="", salesforce_username="int@acme.example",
                   salesforce_password="pa<ss", salesforce_security_token="TOKEN",
                   salesforce_login_url="https://test.salesforce.com")
    crm.ping()
    body = str(rsps.calls[0].request.body)
    assert "<n1:username>int@acme.example</n1:username>" in body
    assert "<n1:password>pa&lt;ssTOKEN</n1:password>" in body
    assert crm.http.instance_url == INSTANCE_URL


def test_refused_password_login_is_an_auth_error(rsps: responses.RequestsMock) -> None:
    rsps.add(responses.POST, f"{INSTANCE_URL}/services/Soap/u/{VERSION}", body=SOAP_FAULT, status=500,
             content_type="text/xml")
    crm = make_crm(salesforce_client_id="", salesforce_client_secret="", salesforce_username="int@acme.example",
                   salesforce_password="wrong")
    with pytest.raises(CRMAuthError) as caught:
        crm.ping()
    assert caught.value.code == "INVALID_LOGIN"
    assert "Invalid username, password, security token" in str(caught.value)


def test_every_request_has_a_timeout_and_the_ca_bundle(rsps: responses.RequestsMock,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # requests would let these variables win over the session; the settings are what must count here.
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    add_token(rsps)
    rsps.add(responses.GET, PING, json={})
    crm = make_crm(ca_bundle="/etc/ssl/corporate-ca.pem", http_timeout_seconds=12.5)
    crm.ping()
    assert all(call.request.req_kwargs["timeout"] == (10.0, 12.5) for call in rsps.calls)  # connect, read
    assert all(call.request.req_kwargs["verify"] == "/etc/ssl/corporate-ca.pem" for call in rsps.calls)


def test_requests_are_counted_in_the_metrics(rsps: responses.RequestsMock) -> None:
    def sample(kind: str) -> float:
        return REGISTRY.get_sample_value("crmconnector_crm_requests_total",
                                         {"backend": "salesforce", "kind": kind}) or 0.0

    before = sample("auth"), sample("ping")
    add_token(rsps)
    rsps.add(responses.GET, PING, json={})
    make_crm().ping()
    assert (sample("auth"), sample("ping")) == (before[0] + 1, before[1] + 1)
