"""Helpers for the abandoned-call tests: the platform's call.abandoned events and a fake media host."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterator, Mapping

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
    filename: str
    content_type: str
    data: bytes


class MediaHost:
    """A fake media host: URLs it knows give their bytes; others are refused with a reason."""

    def __init__(self, files: Mapping[str, bytes]):
        self.files = dict(files)
        self.requests: list[str] = []

    def __call__(self, item: Mapping[str, Any], fallback_name: str) -> Served:
        self.requests.append(item["url"])
        if item["url"] not in self.files:
            raise Refused("HTTP 404")
        return Served(item.get("filename") or fallback_name, item.get("content_type") or "application/octet-stream",
                      self.files[item["url"]])


class Refused(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class FlakyCRM(LocalCRM):
    """The local CRM with the failures a real one has: down for a while, or a validation rule."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.down = False
        self.creates_until_down: int | None = None  # goes down after this many batch creates
        self.rejected_phones: set[str] = set()
        self.lose_next_answer = False  # the batch is written, but the answer never arrives (a timeout)
        self.unsearchable: set[str] = set()  # numbers whose search the CRM refuses
        self.calls: list[str] = []

    def _check(self, what: str) -> None:
        self.calls.append(what)
        if what == "create_many" and self.creates_until_down is not None:
            if self.creates_until_down == 0:
                self.down = True
            self.creates_until_down -= 1
        if self.down:
            raise RetryableCRMError("Service Unavailable", code="SERVER_UNAVAILABLE", status=503)

    def find_by_phone(self, numbers: Any, objects: Any) -> Any:
        self._check("find_by_phone")
        if self.unsearchable & set(numbers):
            raise CRMRejected("search term is not valid", code="INVALID_SEARCH")
        return super().find_by_phone(numbers, objects)

    def find(self, object_name: str, field_name: str, values: Any) -> Any:
        self._check("find")
        return super().find(object_name, field_name, values)

    def create_many(self, object_name: str, rows: Any) -> Any:
        self._check("create_many")
        results = super().create_many(object_name, rows)
        if self.lose_next_answer:
            self.lose_next_answer = False
            raise RetryableCRMError("Salesforce did not answer in time (collection)", code="TIMEOUT")
        return results

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


class LocalMediaServer:
    """Media files on a real HTTP server at 127.0.0.1 (the downloader only fetches allowed hosts)."""

    def __init__(self, files: Mapping[str, tuple[str, bytes]]):
        served = dict(files)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                if self.path not in served:
                    self.send_error(404)
                    return
                content_type, data = served[self.path]
                self.send_response(200)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def __enter__(self) -> "LocalMediaServer":
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def media_server(files: Mapping[str, tuple[str, bytes]]) -> Iterator[LocalMediaServer]:
    with LocalMediaServer(files) as server:
        yield server


def run_job_in_process(database_url: str, instance_path: str, barrier: Any, results: Any) -> None:
    """One connector process running the job once, started together with others (multiprocessing)."""
    from crmconnector.runtime import Runtime
    from crmconnector.settings import Settings
    from crmconnector.sync.abandoned import run_abandoned_tickets

    settings = Settings(database_url=database_url, callback_secrets=("s",), admin_token="t",
                        instance_path=instance_path, run_background=False, abandoned_tickets="all")
    runtime = Runtime(settings, migrate_schema=False)
    try:
        barrier.wait()
        result = run_abandoned_tickets(runtime, batch_size=7)
        results.put((result.created, result.existing, result.busy, result.error))
    finally:
        runtime.close()
