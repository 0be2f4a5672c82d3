"""A record and its files in as few Composite requests as Salesforce allows.

Request 1 looks the record up by its key and, in the same Composite call, the ContentVersions already
published to it (that subrequest references the first; when there is no record it fails harmlessly,
allOrNone being false). Request 2 creates or updates the record and inserts every missing file,
referring to a new record as `@{record.id}`. More requests only when the 25-subrequest or body-size
limits force them. A crash after the create finds the record by its key next time: no duplicate.
"""
from __future__ import annotations

import base64
from typing import Any, Mapping, Sequence
from urllib.parse import quote

from simple_salesforce.format import format_soql

from crmconnector.crm.base import FileUpload, UpsertResult
from crmconnector.crm.errors import CRMError
from crmconnector.crm.local import FILE_KEY_PREFIX  # the marker LocalCRM writes too
from crmconnector.crm.sf_http import SalesforceHTTP, translate

MAX_SUBREQUESTS = 25  # the Composite API's limit per request
# A JSON body of base64 data is limited to 37.5 MB by the REST API; keep each request well below.
MAX_BODY_BYTES = 30 * 1024 * 1024
_OVERHEAD = 1024  # a subrequest's JSON around its base64 data


def query_url(http: SalesforceHTTP, soql: str) -> str:
    return f"{http.data_path}/query/?q={quote(soql, safe='')}"


def composite(http: SalesforceHTTP, subrequests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One Composite request (allOrNone false); the subresponses by referenceId."""
    answer = http.request("POST", "data:/composite", "composite",
                          json={"allOrNone": False, "compositeRequest": subrequests})
    return {item["referenceId"]: item for item in answer.get("compositeResponse", [])}


def _failed(item: Mapping[str, Any]) -> CRMError | None:
    status = int(item.get("httpStatusCode", 500))
    if status < 300:
        return None
    return translate(status, item.get("body"), item.get("httpHeaders") or {})


def lookup(http: SalesforceHTTP, object_name: str, key_field: str, key: Any,
           with_files: bool) -> tuple[str | None, dict[str, str]]:
    """(id of the oldest record with this key or None, {file key: ContentVersion id} on it)."""
    record_soql = format_soql("SELECT Id FROM {obj:literal} WHERE {field:literal} = {key} "
                              "ORDER BY CreatedDate, Id LIMIT 1", obj=object_name, field=key_field, key=key)
    subrequests = [{"method": "GET", "url": query_url(http, record_soql), "referenceId": "existing"}]
    if with_files:
        files_soql = "SELECT Id, Description FROM ContentVersion WHERE FirstPublishLocationId = "
        subrequests.append({"method": "GET", "referenceId": "files",
                            "url": query_url(http, files_soql) + "'@{existing.records[0].Id}'"})
    answers = composite(http, subrequests)
    existing = answers.get("existing", {})
    error = _failed(existing) if existing else translate(500, "no answer for the record look-up")
    if error:
        raise error
    records = (existing.get("body") or {}).get("records") or []
    if not records:
        return None, {}
    record_id = str(records[0]["Id"])
    have: dict[str, str] = {}
    if with_files:
        files = answers.get("files", {})
        error = _failed(files) if files else translate(500, "no answer for the file look-up")
        if error:
            raise error
        for row in (files.get("body") or {}).get("records") or []:
            description = row.get("Description") or ""
            if description.startswith(FILE_KEY_PREFIX):
                have.setdefault(description[len(FILE_KEY_PREFIX):], str(row["Id"]))
    return record_id, have


def file_subrequest(http: SalesforceHTTP, index: int, upload: FileUpload, parent: str) -> dict[str, Any]:
    return {"method": "POST", "url": f"{http.data_path}/sobjects/ContentVersion", "referenceId": f"file{index}",
            "body": {"Title": upload.filename, "PathOnClient": upload.filename,
                     "VersionData": base64.b64encode(upload.data).decode("ascii"),
                     "FirstPublishLocationId": parent, "Description": FILE_KEY_PREFIX + upload.key}}


def encoded_size(upload: FileUpload) -> int:
    return (len(upload.data) + 2) // 3 * 4 + _OVERHEAD


def pack(uploads: Sequence[FileUpload], first_slots: int, first_bytes: int) -> list[list[FileUpload]]:
    """Group files into requests. The first request (which also carries the record) has `first_slots`
    subrequests and `first_bytes` left; later ones the whole limits. A file too large for any budget
    still goes, alone. The first group always exists, possibly empty."""
    groups: list[list[FileUpload]] = [[]]
    slots, budget = first_slots, first_bytes
    for upload in uploads:
        size = encoded_size(upload)
        if slots <= 0 or size > budget:  # every group is occupied (the first by the record)
            groups.append([])
            slots, budget = MAX_SUBREQUESTS, MAX_BODY_BYTES
        groups[-1].append(upload)
        slots, budget = slots - 1, budget - size
    return groups


def upsert_with_files(http: SalesforceHTTP, object_name: str, key_field: str, fields: Mapping[str, Any],
                      files: Sequence[FileUpload]) -> UpsertResult:
    """Create or update the record keyed by fields[key_field], then attach the files it lacks."""
    record_id, have = lookup(http, object_name, key_field, fields[key_field], bool(files))
    missing = [f for f in dict((f.key, f) for f in files).values() if f.key not in have]
    created = record_id is None
    if created:
        record_sub = {"method": "POST", "url": f"{http.data_path}/sobjects/{object_name}",
                      "referenceId": "record", "body": dict(fields)}
    else:
        record_sub = {"method": "PATCH", "url": f"{http.data_path}/sobjects/{object_name}/{record_id}",
                      "referenceId": "record", "body": dict(fields)}
    record_bytes = len(str(fields)) + _OVERHEAD
    groups = pack(missing, MAX_SUBREQUESTS - 1, MAX_BODY_BYTES - record_bytes)
    first_error: CRMError | None = None
    index = 0
    for number, group in enumerate(groups):
        parent = "@{record.id}" if created and number == 0 else str(record_id)
        subrequests = [record_sub] if number == 0 else []
        refs: list[tuple[str, FileUpload]] = []
        for upload in group:
            sub = file_subrequest(http, index, upload, parent)
            refs.append((sub["referenceId"], upload))
            subrequests.append(sub)
            index += 1
        answers = composite(http, subrequests)
        if number == 0:
            answer = answers.get("record", {})
            error = _failed(answer) if answer else translate(500, "no answer for the record write")
            if error:
                raise error
            if created:
                record_id = str(answer["body"]["id"])
        for ref, upload in refs:
            answer = answers.get(ref, {})
            error = _failed(answer) if answer else translate(500, f"no answer for file {upload.filename}")
            if error:
                first_error = first_error or error
            else:
                have[upload.key] = str(answer["body"]["id"])
    if first_error:
        raise first_error  # the record is written; a retry finds it and sends only the missing files
    assert record_id is not None
    return UpsertResult(id=record_id, created=created, file_ids={f.key: have[f.key] for f in files})
