"""The chat log and its files in as few Composite requests as possible, safe to repeat after a crash."""
from __future__ import annotations

import base64
import json
from typing import Any, Iterator
from urllib.parse import quote

import pytest
import responses
from responses import matchers

from crmconnector.crm import sf_files
from crmconnector.crm.base import FileUpload
from crmconnector.crm.errors import CRMRejected, RetryableCRMError
from crmconnector.crm.salesforce import SalesforceCRM
from tests.fake_salesforce import DATA, DATA_PATH, FakeSalesforce, add_token, bearer, make_crm, sf_error

COMPOSITE = f"{DATA}/composite"
T1 = "00T000000000001AAA"
FIELDS = {"Subject": "SMS chat with +1 415-555-0132", "CallObject": "sms-chat-2415", "Status": "Completed"}
LOOKUP_TASK = (f"{DATA_PATH}/query/?q=" + quote(
    "SELECT Id FROM Task WHERE CallObject = 'sms-chat-2415' ORDER BY CreatedDate, Id LIMIT 1", safe=""))
LOOKUP_FILES = (f"{DATA_PATH}/query/?q=" + quote(
    "SELECT Id, Description FROM ContentVersion WHERE FirstPublishLocationId = ", safe="")
    + "'@{existing.records[0].Id}'")
HALTED = {"body": sf_error("PROCESSING_HALTED", "Invalid reference specification"), "httpHeaders": {},
          "httpStatusCode": 400, "referenceId": "files"}


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=True) as mock:
        add_token(mock)
        yield mock


@pytest.fixture
def crm(rsps: responses.RequestsMock) -> SalesforceCRM:
    return make_crm()


def upload(key: str, size: int = 10) -> FileUpload:
    return FileUpload(key=key, filename=f"{key}.jpg", content_type="image/jpeg", data=bytes([65]) * size)


def file_sub(index: int, item: FileUpload, parent: str) -> dict[str, Any]:
    return {"method": "POST", "url": f"{DATA_PATH}/sobjects/ContentVersion", "referenceId": f"file{index}",
            "body": {"Title": item.filename, "PathOnClient": item.filename,
                     "VersionData": base64.b64encode(item.data).decode(), "FirstPublishLocationId": parent,
                     "Description": f"crmconnector-key:{item.key}"}}


def answer(ref: str, status: int, body: Any) -> dict[str, Any]:
    return {"body": body, "httpHeaders": {}, "httpStatusCode": status, "referenceId": ref}


def lookup_request(with_files: bool = True) -> Any:
    subs = [{"method": "GET", "url": LOOKUP_TASK, "referenceId": "existing"}]
    if with_files:
        subs.append({"method": "GET", "url": LOOKUP_FILES, "referenceId": "files"})
    return matchers.json_params_matcher({"allOrNone": False, "compositeRequest": subs})


def no_task() -> dict[str, Any]:
    return {"compositeResponse": [answer("existing", 200, {"totalSize": 0, "done": True, "records": []}), HALTED]}


def test_new_task_and_files_in_two_composite_requests(rsps: responses.RequestsMock, crm: SalesforceCRM) -> None:
    files = [upload("m1"), upload("m2")]
    rsps.add(responses.POST, COMPOSITE, match=[lookup_request(), bearer()], json=no_task())
    rsps.add(responses.POST, COMPOSITE, match=[bearer(), matchers.json_params_matcher({
        "allOrNone": False, "compositeRequest": [
            {"method": "POST", "url": f"{DATA_PATH}/sobjects/Task", "referenceId": "record", "body": FIELDS},
            file_sub(0, files[0], "@{record.id}"), file_sub(1, files[1], "@{record.id}")]})],
        json={"compositeResponse": [answer("record", 201, {"id": T1, "success": True, "errors": []}),
                                    answer("file0", 201, {"id": "068000000000001AAA", "success": True}),
                                    answer("file1", 201, {"id": "068000000000002AAA", "success": True})]})
    result = crm.upsert_with_files("Task", "CallObject", FIELDS, files)
    assert (result.id, result.created) == (T1, True)
    assert dict(result.file_ids) == {"m1": "068000000000001AAA", "m2": "068000000000002AAA"}
    assert crm.request_count == 3  # login included


def test_existing_task_is_patched_and_only_missing_files_sent(rsps: responses.RequestsMock,
                                                              crm: SalesforceCRM) -> None:
    files = [upload("m1"), upload("m2")]
    rsps.add(responses.POST, COMPOSITE, match=[lookup_request()], json={"compositeResponse": [
        answer("existing", 200, {"totalSize": 1, "done": True, "records": [{"Id": T1}]}),
        answer("files", 200, {"totalSize": 2, "done": True, "records": [
            {"Id": "068000000000001AAA", "Description": "crmconnector-key:m1"},
            {"Id": "068000000000009AAA", "Description": "uploaded by hand"}]})]})
    rsps.add(responses.POST, COMPOSITE, match=[matchers.json_params_matcher({
        "allOrNone": False, "compositeRequest": [
            {"method": "PATCH", "url": f"{DATA_PATH}/sobjects/Task/{T1}", "referenceId": "record",
             "body": FIELDS},
            file_sub(0, files[1], T1)]})],
        json={"compositeResponse": [answer("record", 204, None),
                                    answer("file0", 201, {"id": "068000000000002AAA", "success": True})]})
    result = crm.upsert_with_files("Task", "CallObject", FIELDS, files)
    assert (result.id, result.created) == (T1, False)
    assert dict(result.file_ids) == {"m1": "068000000000001AAA", "m2": "068000000000002AAA"}


def test_without_files_the_lookup_has_one_subrequest(rsps: responses.RequestsMock, crm: SalesforceCRM) -> None:
    rsps.add(responses.POST, COMPOSITE, match=[lookup_request(with_files=False)], json={"compositeResponse": [
        answer("existing", 200, {"totalSize": 1, "done": True, "records": [{"Id": T1}]})]})
    rsps.add(responses.POST, COMPOSITE, json={"compositeResponse": [answer("record", 204, None)]})
    assert crm.upsert_with_files("Task", "CallObject", FIELDS).id == T1


def test_ten_images_of_600_kb_take_three_requests_in_all(rsps: responses.RequestsMock, crm: SalesforceCRM) -> None:
    files = [upload(f"m{i}", 600 * 1024) for i in range(10)]
    rsps.add(responses.POST, COMPOSITE, json=no_task())
    rsps.add(responses.POST, COMPOSITE, json={"compositeResponse": [
        answer("record", 201, {"id": T1}), *[answer(f"file{i}", 201, {"id": f"0680000000000{i:02d}AAA"})
                                             for i in range(10)]]})
    result = crm.upsert_with_files("Task", "CallObject", FIELDS, files)
    assert len(result.file_ids) == 10
    assert crm.request_count == 3
    write = json.loads(rsps.calls[2].request.body)
    assert len(write["compositeRequest"]) == 11


def test_more_than_25_subrequests_are_split(rsps: responses.RequestsMock, crm: SalesforceCRM) -> None:
    files = [upload(f"m{i}") for i in range(30)]
    rsps.add(responses.POST, COMPOSITE, json=no_task())
    rsps.add(responses.POST, COMPOSITE, json={"compositeResponse": [
        answer("record", 201, {"id": T1}), *[answer(f"file{i}", 201, {"id": f"06800000000{i:04d}AAA"})
                                             for i in range(24)]]})
    rsps.add(responses.POST, COMPOSITE, match=[matchers.json_params_matcher({
        "allOrNone": False, "compositeRequest": [file_sub(i, files[i], T1) for i in range(24, 30)]})],
        json={"compositeResponse": [answer(f"file{i}", 201, {"id": f"06800000000{i:04d}AAA"})
                                    for i in range(24, 30)]})
    result = crm.upsert_with_files("Task", "CallObject", FIELDS, files)
    assert len(result.file_ids) == 30
    assert len(json.loads(rsps.calls[2].request.body)["compositeRequest"]) == 25


def test_body_size_limit_splits_large_files(rsps: responses.RequestsMock, crm: SalesforceCRM,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sf_files, "MAX_BODY_BYTES", 5000)
    files = [upload(f"m{i}", 1000) for i in range(3)]
    rsps.add(responses.POST, COMPOSITE, json=no_task())
    rsps.add(responses.POST, COMPOSITE, json={"compositeResponse": [answer("record", 201, {"id": T1}),
                                                                    answer("file0", 201, {"id": "068A"})]})
    rsps.add(responses.POST, COMPOSITE, match=[matchers.json_params_matcher({
        "allOrNone": False, "compositeRequest": [file_sub(1, files[1], T1), file_sub(2, files[2], T1)]})],
        json={"compositeResponse": [answer("file1", 201, {"id": "068B"}), answer("file2", 201, {"id": "068C"})]})
    result = crm.upsert_with_files("Task", "CallObject", FIELDS, files)
    assert dict(result.file_ids) == {"m0": "068A", "m1": "068B", "m2": "068C"}


def test_a_rejected_task_is_reported_with_salesforce_error(rsps: responses.RequestsMock, crm: SalesforceCRM) -> None:
    rsps.add(responses.POST, COMPOSITE, json=no_task())
    rsps.add(responses.POST, COMPOSITE, json={"compositeResponse": [
        answer("record", 400, sf_error("FIELD_INTEGRITY_EXCEPTION", "A task linked to a lead cannot ...")),
        answer("file0", 400, sf_error("PROCESSING_HALTED", "Invalid reference specification"))]})
    with pytest.raises(CRMRejected) as caught:
        crm.upsert_with_files("Task", "CallObject", FIELDS, [upload("m1")])
    assert caught.value.code == "FIELD_INTEGRITY_EXCEPTION"


def test_a_failed_file_raises_after_the_task_is_written(rsps: responses.RequestsMock, crm: SalesforceCRM) -> None:
    rsps.add(responses.POST, COMPOSITE, json=no_task())
    rsps.add(responses.POST, COMPOSITE, json={"compositeResponse": [
        answer("record", 201, {"id": T1}), answer("file0", 201, {"id": "068A"}),
        answer("file1", 503, sf_error("SERVER_UNAVAILABLE", "try later"))]})
    with pytest.raises(RetryableCRMError) as caught:
        crm.upsert_with_files("Task", "CallObject", FIELDS, [upload("m1"), upload("m2")])
    assert caught.value.code == "SERVER_UNAVAILABLE"


def test_a_lost_answer_after_create_makes_no_duplicate() -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeSalesforce().install(rsps)
        crm = make_crm()
        files = [upload("m1"), upload("m2")]
        fake.drop_next_answer = True
        with pytest.raises(RetryableCRMError):
            crm.upsert_with_files("Task", "CallObject", FIELDS, files)
        assert len(fake.records["Task"]) == 1 and len(fake.records["ContentVersion"]) == 2
        result = crm.upsert_with_files("Task", "CallObject", FIELDS, files)
        assert result.created is False
        assert len(fake.records["Task"]) == 1 and len(fake.records["ContentVersion"]) == 2
        assert result.id in fake.records["Task"]
        assert set(result.file_ids.values()) == set(fake.records["ContentVersion"])


def test_pack_keeps_every_request_within_limits() -> None:
    files = [upload(f"m{i}", 100) for i in range(60)]
    groups = sf_files.pack(files, sf_files.MAX_SUBREQUESTS - 1, sf_files.MAX_BODY_BYTES)
    assert [len(g) for g in groups] == [24, 25, 11]
    assert sf_files.pack([], 24, 1000) == [[]]


@pytest.mark.parametrize("key", [None, ""])
def test_an_empty_key_is_refused_before_any_request(rsps: responses.RequestsMock, crm: SalesforceCRM,
                                                   key: Any) -> None:
    with pytest.raises(CRMRejected) as caught:
        crm.upsert_with_files("Task", "CallObject", {**FIELDS, "CallObject": key}, [upload("m1")])
    assert caught.value.code == "MISSING_KEY"
    assert len(rsps.calls) == 0
    rsps.reset()
