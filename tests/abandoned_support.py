"""Helpers for the abandoned-call tests: the platform's call.abandoned events and a fake media host."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from crmconnector.crm.errors import CRMRejected, RetryableCRMError
from crmconnector.crm.local import LocalCRM


def call_data(call_id: str = "c-100", number: str = "+14155550132", *, status: str = "allowed",
              messages: list[dict[str, Any]] | None = None, **call: Any) -> dict[str, Any]:
    if messages is None:
        messages = [{"id": "m1", "text": "Need a quote for my fence", "sent_at": "2026-11-21T17:03:30Z"}]
    return {"call": {"id": call_id, "caller_number": number, "dialed_number": "+18882468888",
                     "queue": {"id": "12", "name": "Fence painting"}, "lang": "en",
                     "started_at": "2026-11-21T17:02:10Z", "abandoned_at": "2026-11-21T17:04:40Z",
                     "wait_seconds": 150, "wait_time_sms": {"status": status, "messages": messages}, **call}}


def post_call(platform: Any, call_id: str = "c-100", number: str = "+14155550132", **kw: Any) -> Any:
    response = platform.post("call.abandoned", call_data(call_id, number, **kw))
    assert response.status_code == 202, response.json
    return response


@dataclass
class Served:
    filename: str | None
    content_type: str
    data: bytes


class MediaHost:
    """A fake media host: URLs it knows give their bytes; others are refused with a reason."""

    def __init__(self, files: Mapping[str, bytes]):
        self.files = dict(files)
        self.requests: list[str] = []

    def __call__(self, item: Mapping[str, Any]) -> Served:
        self.requests.append(item["url"])
        if item["url"] not in self.files:
            raise Refused("HTTP 404")
        return Served(None, item.get("content_type") or "application/octet-stream", self.files[item["url"]])


class Refused(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class FlakyCRM(LocalCRM):
    """The local CRM with the failures a real one has: down for a while, or a validation rule."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.down = False
        self.rejected_phones: set[str] = set()
        self.calls: list[str] = []

    def _check(self, what: str) -> None:
        self.calls.append(what)
        if self.down:
            raise RetryableCRMError("Service Unavailable", code="SERVER_UNAVAILABLE", status=503)

    def find_by_phone(self, numbers: Any, objects: Any) -> Any:
        self._check("find_by_phone")
        return super().find_by_phone(numbers, objects)

    def find(self, object_name: str, field_name: str, values: Any) -> Any:
        self._check("find")
        return super().find(object_name, field_name, values)

    def create_many(self, object_name: str, rows: Any) -> Any:
        self._check("create_many")
        return super().create_many(object_name, rows)

    def upsert_with_files(self, object_name: str, key_field: str, fields: Any, files: Any = ()) -> Any:
        self._check("upsert_with_files")
        if fields.get("SuppliedPhone") in self.rejected_phones:
            raise CRMRejected("SuppliedPhone: the number is blocked by a validation rule",
                              code="FIELD_CUSTOM_VALIDATION_EXCEPTION")
        return super().upsert_with_files(object_name, key_field, fields, files)

    def create(self, object_name: str, fields: Any) -> str:
        if object_name == "Case" and fields.get("SuppliedPhone") in self.rejected_phones:
            raise CRMRejected("SuppliedPhone: the number is blocked by a validation rule",
                              code="FIELD_CUSTOM_VALIDATION_EXCEPTION")
        return super().create(object_name, fields)
