"""Tables of the embedded local CRM, built from the object specs (same names as Salesforce)."""
from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, Column, Date, Index, Integer, PrimaryKeyConstraint, String, Table, Text

from sqlalchemy.types import TypeEngine

from crmconnector.crm.objects import OBJECTS, FieldSpec
from crmconnector.store import UTC, metadata

_INDEXED = {("Task", "CallObject"), ("Case", "Subject"), ("ContentVersion", "Description")}


def _column(object_name: str, spec: FieldSpec) -> Column:
    index = spec.type == "reference" or (object_name, spec.name) in _INDEXED
    kind: TypeEngine[Any]
    if spec.type in ("textarea",) or spec.length > 4000:
        kind = Text()
    elif spec.type == "boolean":
        kind = Boolean()
    elif spec.type == "int":
        kind = Integer()
    elif spec.type == "date":
        kind = Date()
    else:
        kind = String(max(spec.length, 1))
    return Column(spec.name, kind, index=index and kind.__class__ is not Text)


def _table(object_name: str) -> Table:
    columns = [_column(object_name, s) for s in OBJECTS[object_name] if s.type != "base64"]
    return Table(
        f"crm_{object_name.lower()}", metadata,
        Column("Id", String(18), primary_key=True),
        *columns,
        Column("CreatedDate", UTC, nullable=False),
        Column("LastModifiedDate", UTC, nullable=False),
    )


TABLES: dict[str, Table] = {name: _table(name) for name in OBJECTS}

# E.164 form of every phone field: matching is an indexed lookup, never a scan.
phone_index = Table(
    "crm_phone_index", metadata,
    Column("object", String(32), nullable=False),
    Column("record_id", String(18), nullable=False),
    Column("field", String(40), nullable=False),
    Column("e164", String(32), nullable=False),
    PrimaryKeyConstraint("object", "record_id", "field"),
    Index("ix_crm_phone_index_e164", "e164"),
)
