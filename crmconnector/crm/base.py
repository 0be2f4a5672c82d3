"""The one CRM backend protocol and the dataclasses that cross the backend edge.

Backends return these dataclasses, never Salesforce JSON or database rows.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Iterable, Mapping, Protocol, Sequence


@dataclass(frozen=True)
class Record:
    """A CRM record as the connector needs it."""

    object: str
    id: str
    name: str
    fields: Mapping[str, Any] = field(default_factory=dict)
    last_modified: datetime | None = None

    def phones(self) -> list[str]:
        from crmconnector.crm.objects import PHONE_FIELDS

        return [v for f in PHONE_FIELDS.get(self.object, ()) if (v := self.fields.get(f))]


@dataclass(frozen=True)
class FileUpload:
    """A file to attach to a record; `key` makes the upload idempotent (same key: not uploaded twice)."""

    key: str
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class UpsertResult:
    id: str
    created: bool
    file_ids: Mapping[str, str] = field(default_factory=dict)  # file key -> ContentVersion id


@dataclass(frozen=True)
class CreateResult:
    """One row of a batch create: the id, or the CRM's error for that row."""

    id: str | None = None
    error: str | None = None
    retryable: bool = False  # the CRM asked to try the row again later (e.g. UNABLE_TO_LOCK_ROW)


@dataclass(frozen=True)
class CheckLine:
    """One line of the `check` report."""

    ok: bool
    what: str
    detail: str = ""


class CRMBackend(Protocol):
    """What the connector asks of a CRM. Both implementations keep the same semantics."""

    name: str
    # True when calls cross the network: the outbox overlaps many of them in threads; False (a CRM in the
    # connector's own database) lets it process several items together in fewer threads.
    remote: bool

    def find_by_phone(self, numbers: Sequence[str], objects: Sequence[str]) -> list[Record]:
        """Candidate records whose phone fields may hold any of the E.164 `numbers` (callers filter exactly)."""
        ...

    def get(self, object_name: str, record_id: str) -> Record | None: ...

    def find(self, object_name: str, field_name: str, values: Iterable[str]) -> list[Record]:
        """Records whose `field_name` equals one of `values`."""
        ...

    def create(self, object_name: str, fields: Mapping[str, Any]) -> str: ...

    def create_many(self, object_name: str, rows: Sequence[Mapping[str, Any]]) -> list[CreateResult]: ...

    def update(self, object_name: str, record_id: str, fields: Mapping[str, Any]) -> None: ...

    def upsert_with_files(self, object_name: str, key_field: str, fields: Mapping[str, Any],
                          files: Sequence[FileUpload] = ()) -> UpsertResult:
        """Create the record whose `key_field` value is fields[key_field], or update the one that exists;
        then attach every file whose key it does not have yet. Safe to repeat after a crash."""
        ...

    def record_url(self, object_name: str, record_id: str) -> str: ...

    def new_record_url(self, object_name: str, defaults: Mapping[str, str], chat_id: str | None = None) -> str:
        """The CRM's new-record page with `defaults` prefilled; where the page can, it links the new
        record to `chat_id`."""
        ...

    def ping(self) -> None:
        """Raise CRMError unless the CRM answers."""
        ...

    def check(self, opt_out_field: str = "DoNotCall") -> list[CheckLine]:
        """The `crmconnector check` report, the admin's opt-out field included."""
        ...

    def opt_out_field_problems(self, field_name: str) -> list[CheckLine]:
        """Why `field_name` cannot be the opt-out field of Contact and Lead (a checkbox the connector may
        update); empty when it can. Raises CRMError when the CRM does not answer."""
        ...
