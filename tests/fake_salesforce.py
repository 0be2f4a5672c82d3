"""A small stateful Salesforce for tests and benchmarks, served through `responses` callbacks.

It keeps records in memory and answers the REST calls SalesforceCRM makes (OAuth token, search,
query, sObjects, sObject Collections, Composite with references, Composite Batch describes, the
version's resource list, versions) with Salesforce's shapes and the rules LocalCRM enforces too:
required fields, lengths, picklists, references, and a Task linked to a Lead having no WhatId.
SOSL is emulated the way the search index tokenizes phone numbers (digit groups), fuzzily, so exact
filtering stays the caller's job.
"""
from __future__ import annotations

import base64
import json
import re
import time
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlparse

import requests
import responses
import responses.matchers

from crmconnector.crm import ids
from crmconnector.crm.objects import OBJECTS, PHONE_FIELDS, FieldSpec
from crmconnector.settings import DEFAULT_API_VERSION

LOGIN_URL = "https://acme.my.salesforce.com"
INSTANCE_URL = "https://acme.my.salesforce.com"
VERSION = DEFAULT_API_VERSION
DATA_PATH = f"/services/data/v{VERSION}"
DATA = f"{INSTANCE_URL}{DATA_PATH}"
_EPOCH = datetime(2026, 11, 1, tzinfo=timezone.utc)
Answer = tuple[int, Any]


def sf_error(code: str, message: str, fields: list[str] | None = None) -> list[dict[str, Any]]:
    return [{"errorCode": code, "message": message, "fields": fields or []}]


def _soql_strings(text: str) -> list[str]:
    return [re.sub(r"\\(.)", r"\1", m) for m in re.findall(r"'((?:\\.|[^'\\])*)'", text)]


class Rejected(Exception):
    def __init__(self, status: int, body: Any):
        self.status, self.body = status, body


class FakeSalesforce:
    """In-memory org. `install(rsps)` routes the org's URLs to it; `requests` counts what it answered."""

    def __init__(self, latency: float = 0.0):
        self.records: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in OBJECTS}
        self.token_number = 1
        self.requests = 0
        self.logins = 0
        self.refused_sessions = 0
        self.searched: list[list[str]] = []  # the decoded terms of each search, oldest first
        self.latency = latency
        self.drop_next_answer = False  # the write lands, the answer is lost (a crash before our commit)
        self._seq = 0

    @property
    def token(self) -> str:
        return f"token-{self.token_number}"

    def expire_session(self) -> None:
        self.token_number += 1

    def install(self, rsps: responses.RequestsMock) -> "FakeSalesforce":
        rsps.add_callback(responses.POST, f"{LOGIN_URL}/services/oauth2/token", callback=self._token)
        for method in (responses.GET, responses.POST, responses.PATCH):
            rsps.add_callback(method, re.compile(re.escape(INSTANCE_URL) + r"/services/data/.*"),
                              callback=self._rest)
        return self

    # -- HTTP --------------------------------------------------------------------------------------

    def _token(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        self.requests += 1
        self.logins += 1
        form = parse_qs(str(request.body))
        if form.get("client_secret") != ["secret"]:
            return 400, {}, json.dumps({"error": "invalid_client", "error_description": "invalid client credentials"})
        return 200, {}, json.dumps({"access_token": self.token, "instance_url": INSTANCE_URL,
                                    "token_type": "Bearer"})

    def _rest(self, request: requests.PreparedRequest) -> tuple[int, dict[str, str], str]:
        self.requests += 1
        if self.latency:
            time.sleep(self.latency)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            self.refused_sessions += 1
            return 401, {}, json.dumps(sf_error("INVALID_SESSION_ID", "Session expired or invalid"))
        url = urlparse(str(request.url))
        params = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = json.loads(request.body) if request.body else None
        writes_before = self._seq
        status, answer = self.handle(str(request.method), url.path, params, body)
        if self.drop_next_answer and self._seq > writes_before:
            self.drop_next_answer = False
            raise requests.ConnectionError("connection reset after the write")
        return status, {"Content-Type": "application/json"}, "" if answer is None else json.dumps(answer)

    def handle(self, method: str, path: str, params: dict[str, str], body: Any) -> Answer:
        """One REST call (also each Composite subrequest): (status, JSON body)."""
        if path in ("/services/data", "/services/data/"):
            return 200, [{"version": v, "url": f"/services/data/v{v}"} for v in ("61.0", VERSION)]
        rest = path.split(f"/services/data/v{VERSION}", 1)[-1].rstrip("/")
        try:
            if rest == "":
                return 200, {"sobjects": f"/services/data/v{VERSION}/sobjects",
                             "query": f"/services/data/v{VERSION}/query", "search": f"/services/data/v{VERSION}/search"}
            if rest == "/search":
                return 200, {"searchRecords": self.search(params["q"])}
            if rest == "/query":
                rows = self.query(params["q"])
                return 200, {"totalSize": len(rows), "done": True, "records": rows}
            if rest == "/composite/sobjects" and method == "POST":
                return 200, [self._collection_row(body["records"][i]) for i in range(len(body["records"]))]
            if rest == "/composite" and method == "POST":
                return 200, {"compositeResponse": self.composite(body["compositeRequest"])}
            if rest == "/composite/batch" and method == "POST":
                return 200, {"hasErrors": False, "results": [self.describe(r["url"]) for r in body["batchRequests"]]}
            parts = rest.split("/")[1:]
            if parts[0] == "sobjects" and len(parts) == 2 and method == "POST":
                return 201, {"id": self.insert(parts[1], body), "success": True, "errors": []}
            if parts[0] == "sobjects" and len(parts) == 3 and method == "GET":
                return 200, self.read(parts[1], parts[2], params.get("fields"))
            if parts[0] == "sobjects" and len(parts) == 3 and method == "PATCH":
                self.patch(parts[1], parts[2], body)
                return 204, None
        except Rejected as exc:
            return exc.status, exc.body
        return 404, sf_error("NOT_FOUND", f"The requested resource does not exist: {path}")

    # -- data --------------------------------------------------------------------------------------

    def insert(self, object_name: str, fields: dict[str, Any]) -> str:
        values = self.validate(object_name, fields, current=None)
        record_id = ids.new_id(object_name)
        self._seq += 1
        stamp = (_EPOCH + timedelta(seconds=self._seq)).strftime("%Y-%m-%dT%H:%M:%S.000+0000")
        record = {"Id": record_id, "CreatedDate": stamp, "LastModifiedDate": stamp, **values}
        if object_name == "ContentVersion":
            record["ContentSize"] = len(base64.b64decode(record["VersionData"]))
        self.records[object_name][record_id] = record
        return record_id

    def patch(self, object_name: str, record_id: str, fields: dict[str, Any]) -> None:
        current = self.records.get(object_name, {}).get(record_id)
        if current is None:
            raise Rejected(404, sf_error("NOT_FOUND", "The requested resource does not exist"))
        values = self.validate(object_name, fields, current=current)
        self._seq += 1
        current.update(values, LastModifiedDate=(_EPOCH + timedelta(seconds=self._seq))
                       .strftime("%Y-%m-%dT%H:%M:%S.000+0000"))

    def read(self, object_name: str, record_id: str, fields: str | None) -> dict[str, Any]:
        record = self.records.get(object_name, {}).get(record_id)
        if record is None:
            raise Rejected(404, sf_error("NOT_FOUND", "The requested resource does not exist"))
        return self._shape(object_name, record, fields.split(",") if fields else list(record))

    def validate(self, object_name: str, fields: dict[str, Any], current: dict[str, Any] | None) -> dict[str, Any]:
        specs: dict[str, FieldSpec] = {s.name: s for s in OBJECTS.get(object_name, ())}
        if not specs:
            raise Rejected(404, sf_error("NOT_FOUND", f"sObject type '{object_name}' is not supported"))
        for name, value in fields.items():
            spec = specs.get(name)
            if spec is None:
                raise Rejected(400, sf_error("INVALID_FIELD", f"No such column '{name}' on sobject of type "
                                                             f"{object_name}"))
            self._check_value(spec, value)
        merged = {**(current or {}), **fields}
        for spec in specs.values():
            if current is None and merged.get(spec.name) in (None, "") and spec.default is not None:
                merged[spec.name] = spec.default
            if spec.required and merged.get(spec.name) in (None, ""):
                raise Rejected(400, sf_error("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{spec.name}]",
                                             [spec.name]))
        who, what = merged.get("WhoId"), merged.get("WhatId")
        if object_name == "Task" and who and what and ids.object_for_id(who) == "Lead":
            raise Rejected(400, sf_error("FIELD_INTEGRITY_EXCEPTION",
                                         "A task linked to a lead cannot also be linked to a related record"))
        return {k: v for k, v in merged.items() if k in specs}

    def _check_value(self, spec: FieldSpec, value: Any) -> None:
        if value in (None, ""):
            return
        if spec.type in ("string", "textarea", "phone", "email", "picklist") and len(str(value)) > spec.length:
            raise Rejected(400, sf_error("STRING_TOO_LONG", f"{spec.name}: data value too large", [spec.name]))
        if spec.values and value not in spec.values:
            raise Rejected(400, sf_error("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST", f"{spec.name}: bad value"))
        if spec.type == "reference":
            target = ids.object_for_id(str(value))
            if target not in spec.references or str(value) not in self.records.get(target, {}):
                raise Rejected(400, sf_error("INVALID_CROSS_REFERENCE_KEY", f"{spec.name}: invalid cross reference id"))

    def _collection_row(self, row: dict[str, Any]) -> dict[str, Any]:
        fields = {k: v for k, v in row.items() if k != "attributes"}
        try:
            return {"id": self.insert(row["attributes"]["type"], fields), "success": True, "errors": []}
        except Rejected as exc:
            return {"success": False, "errors": [{"statusCode": e["errorCode"], "message": e["message"],
                                                  "fields": e["fields"]} for e in exc.body]}

    def _shape(self, object_name: str, record: dict[str, Any], fields: list[str]) -> dict[str, Any]:
        row = {"attributes": {"type": object_name, "url": f"/services/data/v{VERSION}/sobjects/{object_name}/"
                                                          f"{record['Id']}"}}
        for name in fields:
            name = name.strip()
            row[name] = (f"/services/data/v{VERSION}/sobjects/ContentVersion/{record['Id']}/VersionData"
                         if name == "VersionData" else record.get(name))
        return row

    # -- queries -----------------------------------------------------------------------------------

    def query(self, soql: str) -> list[dict[str, Any]]:
        match = re.fullmatch(r"SELECT (.+?) FROM (\w+) WHERE (\w+) (=|IN) (.+?)"
                             r"(?: ORDER BY CreatedDate, Id)?(?: LIMIT (\d+))?", soql)
        if not match:
            raise Rejected(400, sf_error("MALFORMED_QUERY", f"unexpected query: {soql}"))
        fields, object_name, field_name, _, values, limit = match.groups()
        wanted = set(_soql_strings(values))
        rows = sorted((r for r in self.records.get(object_name, {}).values() if r.get(field_name) in wanted),
                      key=lambda r: (r["CreatedDate"], r["Id"]))
        rows = rows[: int(limit)] if limit else rows
        return [self._shape(object_name, r, fields.split(",")) for r in rows]

    def search(self, sosl: str) -> list[dict[str, Any]]:
        match = re.fullmatch(r"FIND \{(.*)\} IN PHONE FIELDS RETURNING (.*)", sosl, re.S)
        if not match:
            raise Rejected(400, sf_error("MALFORMED_SEARCH", f"unexpected search: {sosl}"))
        phrase = r'"(?:\\.|[^"\\?&|!{}\[\]()^~*:\'+-])*"'  # every reserved character escaped
        if not re.fullmatch(f"{phrase}(?: OR {phrase})*", match.group(1)):
            raise Rejected(400, sf_error("MALFORMED_SEARCH", f"unescaped reserved character in: {match.group(1)}"))
        phrases = [re.sub(r"\\(.)", r"\1", p) for p in re.findall(r'"((?:\\.|[^"\\])*)"', match.group(1))]
        self.searched.append(phrases)
        wanted = {_term_key(re.findall(r"\d+", p)) for p in phrases} - {None}
        index = self._phone_index()
        found = []
        for object_name, fields in re.findall(r"(\w+)\(([^)]*)\)", match.group(2)):
            hits = set().union(*(index.get((object_name, key), set()) for key in wanted)) if wanted else set()
            for record_id in sorted(hits):
                found.append(self._shape(object_name, self.records[object_name][record_id], fields.split(",")))
        return found

    def _phone_index(self) -> dict[tuple[str, Any], set[str]]:
        """(object, search key) -> record ids, rebuilt when the data changed since the last search."""
        if getattr(self, "_index_seq", None) != self._seq:
            index: dict[tuple[str, Any], set[str]] = {}
            for object_name, fields in PHONE_FIELDS.items():
                for record_id, record in self.records.get(object_name, {}).items():
                    for value in (record.get(f) for f in fields):
                        for key in _value_keys(str(value)) if value else ():
                            index.setdefault((object_name, key), set()).add(record_id)
            self._index, self._index_seq = index, self._seq
        return self._index

    def describe(self, url: str) -> dict[str, Any]:
        object_name = url.split("/sobjects/")[1].split("/")[0]
        fields = [{"name": s.name, "type": s.type, "createable": True, "updateable": True}
                  for s in OBJECTS[object_name]]
        return {"statusCode": 200, "result": {"name": object_name, "queryable": True, "createable": True,
                                              "fields": [{"name": "Id"}, *fields]}}

    # -- composite ---------------------------------------------------------------------------------

    def composite(self, subrequests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        answers: dict[str, Any] = {}
        out = []
        for sub in subrequests:
            try:
                url = _resolve(sub["url"], answers, quote_url=True)
                body = _resolve(sub.get("body"), answers)
                parsed = urlparse(url)
                params = {k: v[0] for k, v in parse_qs(parsed.query).items()}
                status, answer = self.handle(sub["method"], parsed.path, params, body)
            except LookupError:
                status, answer = 400, sf_error("INVALID_REFERENCE", "Invalid reference specification")
            if status < 300:
                answers[sub["referenceId"]] = answer
            out.append({"body": answer, "httpHeaders": {}, "httpStatusCode": status,
                        "referenceId": sub["referenceId"]})
        return out


def _value_keys(value: str) -> set[Any]:
    """What the search index finds a stored phone value by: each digit group, each run of consecutive
    groups (a phrase), and the digits run together, by their last 7 to 10 digits (fuzzy, like SOSL)."""
    groups = re.findall(r"\d+", value)
    keys: set[Any] = set(groups)
    keys.update(tuple(groups[i:j]) for i in range(len(groups)) for j in range(i + 2, len(groups) + 1))
    joined = "".join(groups)
    keys.update(("digits", joined[-n:]) for n in range(7, 11) if len(joined) >= n)
    return keys


def _term_key(term: list[str]) -> Any:
    """The index key a search term looks up (None for a term without digits)."""
    if not term:
        return None
    if len(term) > 1:
        return tuple(term)
    return ("digits", term[0][-10:]) if len(term[0]) >= 7 else term[0]


def _resolve(value: Any, answers: dict[str, Any], quote_url: bool = False) -> Any:
    """Replace @{ref.path} references by earlier subresponses' values (LookupError when missing)."""
    if isinstance(value, dict):
        return {k: _resolve(v, answers) for k, v in value.items()}
    if not isinstance(value, str) or "@{" not in value:
        return value

    def lookup(match: re.Match[str]) -> str:
        ref, _, path = match.group(1).partition(".")
        node: Any = answers[ref]
        for key, index in re.findall(r"(\w+)(?:\[(\d+)\])?", path):
            node = node[key]
            if index:
                node = node[int(index)]
        return str(node)

    text = unquote(value) if quote_url else value
    resolved = re.sub(r"@\{([^}]+)\}", lookup, text)
    if quote_url:
        path, _, query = resolved.partition("?q=")
        return f"{path}?q={quote(query, safe='')}" if query else path
    return resolved


def make_settings(**changes: Any) -> Any:
    from crmconnector.settings import Settings

    base = dict(crm="salesforce", salesforce_login_url=LOGIN_URL, salesforce_client_id="client",
                salesforce_client_secret="secret", salesforce_api_version=VERSION, http_timeout_seconds=5.0)
    return Settings(**{**base, **changes})


def make_crm(**changes: Any) -> Any:
    from crmconnector.crm.salesforce import SalesforceCRM

    return SalesforceCRM.from_settings(make_settings(**changes))



# -- helpers for exact-request tests ----------------------------------------------------------------

TOKEN_URL = f"{LOGIN_URL}/services/oauth2/token"


def add_token(rsps: responses.RequestsMock, token: str = "token-1") -> None:
    """The client-credentials token answer, asserting the request's form."""
    rsps.add(responses.POST, TOKEN_URL,
             json={"access_token": token, "instance_url": INSTANCE_URL, "token_type": "Bearer"},
             match=[responses.matchers.urlencoded_params_matcher(
                 {"grant_type": "client_credentials", "client_id": "client", "client_secret": "secret"})])


def bearer(token: str = "token-1") -> Any:
    return responses.matchers.header_matcher({"Authorization": f"Bearer {token}"})
