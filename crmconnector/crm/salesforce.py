"""SalesforceCRM: the CRM backend for a Salesforce org, sparing with API requests.

A match is one SOSL request per 50 numbers; a chat log and its files are two Composite requests
(look-up, then write); batches of Cases go through sObject Collections, 200 a request. SOQL is only
built with simple-salesforce's `format_soql`, SOSL only through `crm/sosl.py`.
"""
from __future__ import annotations

import re
import time
from datetime import date, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Mapping, Sequence
from urllib.parse import quote

from simple_salesforce.format import format_soql

from crmconnector.crm import sosl
from crmconnector.crm.base import CheckLine, CreateResult, FileUpload, Record, UpsertResult
from crmconnector.crm.errors import CRMNotFound, CRMRejected, RetryableCRMError
from crmconnector.crm.objects import OBJECTS, display_name
from crmconnector.crm.sf_checks import OPT_OUT_FIELD, check_opt_out_field, check_org
from crmconnector.crm.sf_files import upsert_with_files
from crmconnector.crm.sf_http import SalesforceHTTP, client_credentials_login, domain_of, password_login, translate
from crmconnector.http import make_session

if TYPE_CHECKING:
    import requests

    from crmconnector.settings import Settings

PING_FRESH_SECONDS = 30.0
COLLECTION_SIZE = 200  # sObject Collections take at most 200 records a request
SOQL_IN_CHARS = 6000  # keeps each query URL well under the REST API's 16,384-byte URI limit
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,79}$")


def api_name(name: str, what: str = "sObject type") -> str:
    """An object or field API name, refused unless it is a plain identifier (it is put into queries)."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise CRMRejected(f"{what} '{name}' is not a valid API name", code="INVALID_TYPE")
    return name


def select_fields(object_name: str) -> list[str]:
    """The fields read back for a record: the spec's fields (not file bodies) and the system dates."""
    names = [spec.name for spec in OBJECTS.get(object_name, ()) if spec.type != "base64"]
    return ["Id", *names, "CreatedDate", "LastModifiedDate"]


def to_record(object_name: str, row: Mapping[str, Any]) -> Record:
    """A Record from Salesforce JSON (attributes dropped, Name composed as Salesforce shows it)."""
    fields = {k: v for k, v in row.items() if k != "attributes"}
    fields["Name"] = display_name(object_name, fields) or fields.get("Name") or ""
    return Record(object=object_name, id=str(row["Id"]), name=fields["Name"], fields=fields,
                  last_modified=parse_datetime(fields.get("LastModifiedDate")))


def parse_datetime(value: Any) -> datetime | None:
    """Salesforce's `2026-11-21T17:03:10.000+0000`."""
    if not isinstance(value, str) or not value:
        return None
    for pattern in ("%Y-%m-%dT%H:%M:%S.%f%z", "%Y-%m-%dT%H:%M:%S%z"):
        try:
            return datetime.strptime(value, pattern)
        except ValueError:
            continue
    return None


def jsonable(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Field values as Salesforce's JSON wants them (dates in ISO 8601)."""
    return {k: (v.isoformat() if isinstance(v, (date, datetime)) else v) for k, v in fields.items()}


def chunks(values: Sequence[str], max_chars: int) -> Iterator[list[str]]:
    """Split values so that each quoted IN list stays within max_chars (and 200 values)."""
    batch: list[str] = []
    size = 0
    for value in values:
        length = len(format_soql("{}", value)) + 1
        if batch and (size + length > max_chars or len(batch) >= COLLECTION_SIZE):
            yield batch
            batch, size = [], 0
        batch.append(value)
        size += length
    if batch:
        yield batch


class SalesforceCRM:
    """The backend for a Salesforce org (REST API, OAuth client credentials or username-password)."""

    name = "salesforce"
    remote = True

    def __init__(self, http: SalesforceHTTP):
        self.http = http

    @classmethod
    def from_settings(cls, settings: "Settings", session: "requests.Session | None" = None) -> "SalesforceCRM":
        """Build the backend (on the given session, or a new one); nothing connects until the first request."""
        session = session or make_session(settings)
        login: Callable[[], tuple[str, str]]
        if settings.salesforce_client_id:
            login = partial(client_credentials_login, session, settings.salesforce_login_url,
                            settings.salesforce_client_id, settings.salesforce_client_secret)
        else:
            login = partial(password_login, session, username=settings.salesforce_username,
                            password=settings.salesforce_password,
                            security_token=settings.salesforce_security_token,
                            domain=settings.salesforce_domain or domain_of(settings.salesforce_login_url),
                            api_version=settings.salesforce_api_version)
        http = SalesforceHTTP(session, api_version=settings.salesforce_api_version, login=login)
        return cls(http)

    @property
    def request_count(self) -> int:
        """Requests sent to Salesforce so far, logins included."""
        return self.http.request_count

    # -- reading -----------------------------------------------------------------------------------

    def find_by_phone(self, numbers: Sequence[str], objects: Sequence[str]) -> list[Record]:
        records: dict[tuple[str, str], Record] = {}
        for batch in sosl.batches(list(numbers)):
            body = self.http.request("GET", "data:/search/", "search",
                                     params={"q": sosl.phone_search(batch, objects)})
            for row in (body or {}).get("searchRecords", []):
                object_name = row.get("attributes", {}).get("type", "")
                if object_name in sosl.RETURNING_FIELDS:
                    records.setdefault((object_name, row["Id"]), to_record(object_name, row))
        return list(records.values())

    def get(self, object_name: str, record_id: str) -> Record | None:
        api_name(object_name)
        if not re.fullmatch(r"[A-Za-z0-9]{15}|[A-Za-z0-9]{18}", record_id or ""):
            return None
        try:
            row = self.http.request("GET", f"data:/sobjects/{object_name}/{record_id}", "read",
                                    params={"fields": ",".join(select_fields(object_name))})
        except CRMNotFound:
            return None
        except CRMRejected as exc:
            if exc.code in ("MALFORMED_ID", "INVALID_ID_FIELD"):
                return None
            raise
        return to_record(object_name, row)

    def find(self, object_name: str, field_name: str, values: Iterable[str]) -> list[Record]:
        api_name(object_name)
        api_name(field_name, "field")
        wanted = list(dict.fromkeys(values))
        records: list[Record] = []
        for batch in chunks(wanted, SOQL_IN_CHARS):
            soql = format_soql("SELECT {fields:literal} FROM {obj:literal} WHERE {field:literal} IN {values} "
                               "ORDER BY CreatedDate, Id", fields=", ".join(select_fields(object_name)),
                               obj=object_name, field=field_name, values=batch)
            records.extend(to_record(object_name, row) for row in self.query(soql))
        return records

    def query(self, soql: str) -> list[dict[str, Any]]:
        """Every row of a SOQL query, following nextRecordsUrl."""
        body = self.http.request("GET", "data:/query/", "query", params={"q": soql})
        rows = list(body.get("records", []))
        while body.get("nextRecordsUrl"):
            body = self.http.request("GET", body["nextRecordsUrl"], "query")
            rows.extend(body.get("records", []))
        return rows

    # -- writing -----------------------------------------------------------------------------------

    def create(self, object_name: str, fields: Mapping[str, Any]) -> str:
        api_name(object_name)
        body = self.http.request("POST", f"data:/sobjects/{object_name}/", "create", json=jsonable(fields))
        return str(body["id"])

    def update(self, object_name: str, record_id: str, fields: Mapping[str, Any]) -> None:
        api_name(object_name)
        if not re.fullmatch(r"[A-Za-z0-9]{15}|[A-Za-z0-9]{18}", record_id or ""):
            raise CRMNotFound(f"{object_name} {record_id!r} does not exist", code="MALFORMED_ID")
        self.http.request("PATCH", f"data:/sobjects/{object_name}/{record_id}", "update", json=jsonable(fields))

    def create_many(self, object_name: str, rows: Sequence[Mapping[str, Any]]) -> list[CreateResult]:
        """sObject Collections, 200 records a request, allOrNone false: one bad row fails alone."""
        api_name(object_name)
        results: list[CreateResult] = []
        for start in range(0, len(rows), COLLECTION_SIZE):
            batch = rows[start:start + COLLECTION_SIZE]
            answer = self.http.request("POST", "data:/composite/sobjects", "collection", json={
                "allOrNone": False,
                "records": [{"attributes": {"type": object_name}, **jsonable(row)} for row in batch]})
            for item in answer:
                if item.get("success"):
                    results.append(CreateResult(id=str(item["id"])))
                else:
                    error = translate(400, item.get("errors") or [])
                    results.append(CreateResult(error=str(error), retryable=isinstance(error, RetryableCRMError)))
        return results

    def upsert_with_files(self, object_name: str, key_field: str, fields: Mapping[str, Any],
                          files: Sequence[FileUpload] = ()) -> UpsertResult:
        api_name(object_name)
        api_name(key_field, "field")
        if fields.get(key_field) in (None, ""):  # `= null` would pick some unrelated record to update
            raise CRMRejected(f"{object_name}.{key_field} must have a value to upsert by", code="MISSING_KEY")
        return upsert_with_files(self.http, object_name, key_field, jsonable(fields), files)

    # -- links, health -----------------------------------------------------------------------------

    def record_url(self, object_name: str, record_id: str) -> str:
        return f"{self.http.instance_url}/lightning/r/{quote(object_name)}/{quote(record_id)}/view"

    def new_record_url(self, object_name: str, defaults: Mapping[str, str], chat_id: str | None = None) -> str:
        """Lightning's new-record page; defaultFieldValues is `Field=value,...`, each value URL-encoded.
        Lightning has nowhere to carry `chat_id`: the agent links the chat in the console."""
        url = f"{self.http.instance_url}/lightning/o/{quote(api_name(object_name))}/new"
        if defaults:
            pairs = ",".join(f"{api_name(k, 'field')}={quote(str(v), safe='')}" for k, v in defaults.items())
            url += f"?defaultFieldValues={pairs}"
        return url

    def ping(self) -> None:
        """Whether Salesforce answers. Health probes call this often, and every request counts against
        the org's allowance, so an answer within the last PING_FRESH_SECONDS is proof enough; otherwise
        the API version's resource list is read (it needs no permission beyond API access)."""
        last = self.http.last_answer
        if last is not None and time.monotonic() - last < PING_FRESH_SECONDS:
            return
        self.http.request("GET", "data:/", "ping")

    def check(self, opt_out_field: str = OPT_OUT_FIELD) -> list[CheckLine]:
        return check_org(self.http, opt_out_field)

    def opt_out_field_problems(self, field_name: str) -> list[CheckLine]:
        return check_opt_out_field(self.http, field_name)


__all__ = ["SalesforceCRM", "api_name", "select_fields", "to_record"]
