"""Salesforce over HTTP: login, authenticated calls, and error translation at the edge.

One `requests.Session` from `crmconnector.http.make_session` (default timeout, REQUESTS_CA_BUNDLE)
carries every call, including simple-salesforce's username-password login. Nothing connects until
the first request; a 401 INVALID_SESSION_ID logs in again once and repeats the request. Every failure
leaves this module as one of the errors of `crm/errors.py`.
"""
from __future__ import annotations

import email.utils
import logging
import threading
import time
from typing import Any, Callable, Mapping
from urllib.parse import urlparse

import requests
from simple_salesforce.exceptions import (SalesforceAuthenticationFailed, SalesforceError,
                                          SalesforceExpiredSession, SalesforceMalformedRequest,
                                          SalesforceMoreThanOneRecord, SalesforceRefusedRequest,
                                          SalesforceResourceNotFound)
from simple_salesforce.login import SalesforceLogin
from simple_salesforce.util import exception_handler

from crmconnector.crm.errors import CRMAuthError, CRMError, CRMNotFound, CRMRejected, RetryableCRMError
from crmconnector.metrics import CRM_REQUESTS

log = logging.getLogger(__name__)

# Error codes that mean "not now" whatever the HTTP status that carries them.
RETRYABLE_CODES = frozenset({"REQUEST_LIMIT_EXCEEDED", "UNABLE_TO_LOCK_ROW", "SERVER_UNAVAILABLE",
                             "QUERY_TIMEOUT", "TXN_SECURITY_METERING_ERROR", "CONCURRENT_REQUEST_LIMIT_EXCEEDED"})


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None."""
    raw = (headers.get("Retry-After") or "").strip()
    if not raw:
        return None
    if raw.isdigit():
        return float(raw)
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def error_detail(content: Any) -> tuple[str, str]:
    """(errorCode, message) from a Salesforce error body: a list of errors, one error, or text."""
    if isinstance(content, list) and content and isinstance(content[0], Mapping):
        content = content[0]
    if isinstance(content, Mapping):
        code = str(content.get("errorCode") or content.get("statusCode") or content.get("error") or "")
        message = str(content.get("message") or content.get("error_description") or "")
        fields = content.get("fields")
        if fields and isinstance(fields, list):
            message = f"{message} (fields: {', '.join(map(str, fields))})"
        return code, message
    return "", str(content or "")[:500]


def translate(status: int, content: Any, headers: Mapping[str, str] | None = None) -> CRMError:
    """The project's error for one failed Salesforce answer (status, decoded body, headers)."""
    code, message = error_detail(content)
    message = message or f"HTTP {status}"
    if code in RETRYABLE_CODES or status >= 500 or status == 429:
        return RetryableCRMError(message, code=code, status=status, retry_after=retry_after(headers or {}))
    if status == 401:
        return CRMAuthError(message, code=code or "INVALID_SESSION_ID", status=status)
    if status == 404:
        return CRMNotFound(message, code=code or "NOT_FOUND", status=status)
    return CRMRejected(message, code=code, status=status)


def translate_response(response: requests.Response) -> CRMError:
    """Route the response through simple-salesforce's status table, then into our hierarchy."""
    try:
        exception_handler(response)
    except (SalesforceMoreThanOneRecord, SalesforceMalformedRequest, SalesforceExpiredSession,
            SalesforceRefusedRequest, SalesforceResourceNotFound, SalesforceError) as exc:
        return translate(exc.status, exc.content, response.headers)
    raise AssertionError("exception_handler always raises")  # pragma: no cover


class SalesforceHTTP:
    """Authenticated REST calls to one org, logging in lazily and once more on an expired session."""

    def __init__(self, session: requests.Session, *, api_version: str, login: Callable[[], tuple[str, str]]):
        self.session = session
        self.api_version = api_version.lstrip("v")
        self._login = login
        self._lock = threading.Lock()
        self._count_lock = threading.Lock()
        self._token: str | None = None
        self._instance_url: str | None = None
        self.request_count = 0
        self.last_answer: float | None = None  # time.monotonic() of the last successful answer

    # -- session -----------------------------------------------------------------------------------

    @property
    def instance_url(self) -> str:
        self._ensure_login()
        assert self._instance_url is not None
        return self._instance_url

    @property
    def data_path(self) -> str:
        return f"/services/data/v{self.api_version}"

    def _ensure_login(self, stale: str | None = None) -> str:
        with self._lock:
            if self._token is None or self._token == stale:
                self.count("auth")
                self._token, instance_url = self._login()
                self._instance_url = instance_url.rstrip("/")
            return self._token

    def count(self, kind: str) -> None:
        """One more request sent to Salesforce (metrics and benchmarks)."""
        with self._count_lock:
            self.request_count += 1
        CRM_REQUESTS.labels("salesforce", kind).inc()

    # -- requests ----------------------------------------------------------------------------------

    def request(self, method: str, path: str, kind: str, **kwargs: Any) -> Any:
        """Send one REST call (path below the instance URL, or `data:`-relative) and return its JSON."""
        if path.startswith("data:"):
            path = self.data_path + path[len("data:"):]
        token = self._ensure_login()
        response = self._send(method, path, kind, token, **kwargs)
        if response.status_code == 401 and _is_expired_session(response):
            log.info("Salesforce session expired; logging in again")
            token = self._ensure_login(stale=token)
            response = self._send(method, path, kind, token, **kwargs)
        if response.status_code >= 300:
            raise translate_response(response)
        answer = _json_answer(response)
        self.last_answer = time.monotonic()
        return answer

    def _send(self, method: str, path: str, kind: str, token: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json",
                   **kwargs.pop("headers", {})}
        self.count(kind)
        try:
            return self.session.request(method, f"{self._instance_url}{path}", headers=headers, **kwargs)
        except requests.Timeout as exc:
            raise RetryableCRMError(f"Salesforce did not answer in time ({kind})", code="TIMEOUT") from exc
        except requests.RequestException as exc:
            raise RetryableCRMError(f"cannot reach Salesforce: {type(exc).__name__}", code="CONNECTION") from exc


def _json_answer(response: requests.Response) -> Any:
    """The JSON of a successful answer (None when empty). An HTML page in its place (a TLS-inspecting
    proxy, a wrong instance URL) is a passing failure like a 5xx, not a JSON error deep in a caller."""
    if response.status_code == 204 or not response.content:
        return None
    try:
        return response.json()
    except ValueError:
        kind = response.headers.get("Content-Type") or "no content type"
        raise RetryableCRMError(f"Salesforce answered HTTP {response.status_code} with a body that is not JSON "
                                f"({kind})", code="INVALID_RESPONSE", status=response.status_code) from None


def _is_expired_session(response: requests.Response) -> bool:
    try:
        code, _ = error_detail(response.json())
    except ValueError:
        return True
    return code in ("INVALID_SESSION_ID", "")


# -- logins ----------------------------------------------------------------------------------------

def client_credentials_login(session: requests.Session, login_url: str, client_id: str,
                             client_secret: str) -> tuple[str, str]:
    """OAuth 2.0 client-credentials flow against the org's My Domain: (access token, instance URL)."""
    try:
        response = session.post(f"{login_url.rstrip('/')}/services/oauth2/token",
                                data={"grant_type": "client_credentials", "client_id": client_id,
                                      "client_secret": client_secret},
                                headers={"Accept": "application/json"})
    except requests.RequestException as exc:
        raise RetryableCRMError(f"cannot reach the Salesforce login server: {type(exc).__name__}",
                                code="CONNECTION") from exc
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code >= 500 or response.status_code == 429:
        raise RetryableCRMError(f"Salesforce login answered HTTP {response.status_code}",
                                status=response.status_code, retry_after=retry_after(response.headers))
    if response.status_code != 200 or not body.get("access_token") or not body.get("instance_url"):
        error = str(body.get("error") or f"HTTP {response.status_code}")
        description = str(body.get("error_description") or "the token answer has no access token")
        raise CRMAuthError(f"Salesforce refused the client credentials: {description}",
                           code=error, status=response.status_code)
    return str(body["access_token"]), str(body["instance_url"])


def domain_of(login_url: str) -> str:
    """simple-salesforce's `domain` (login, test, acme.my) from a login URL."""
    host = urlparse(login_url).hostname or ""
    suffix = ".salesforce.com"
    return host[: -len(suffix)] if host.endswith(suffix) and len(host) > len(suffix) else "login"


def password_login(session: requests.Session, *, username: str, password: str, security_token: str,
                   domain: str, api_version: str) -> tuple[str, str]:
    """Username-password login exactly as simple-salesforce does it (SOAP): (session id, instance URL)."""
    try:
        session_id, instance = SalesforceLogin(username=username, password=password,
                                               security_token=security_token or None, domain=domain,
                                               sf_version=api_version.lstrip("v"), session=session)
    except SalesforceAuthenticationFailed as exc:
        code, message = exc.code, exc.auth_message
        if isinstance(code, int) and code >= 500:
            raise RetryableCRMError(f"Salesforce login answered HTTP {code}", status=code) from exc
        raise CRMAuthError(f"Salesforce refused the login: {message}", code=str(code or "")) from exc
    except requests.RequestException as exc:
        raise RetryableCRMError(f"cannot reach the Salesforce login server: {type(exc).__name__}",
                                code="CONNECTION") from exc
    return session_id, f"https://{instance}"
