"""The CRM objects and fields the connector reads and writes, with Salesforce's names and limits.

`LocalCRM` builds its tables from these specs and enforces the same rules; `check` verifies them on
Salesforce; `import` validates CSV rows against them.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str = "string"  # string, textarea, phone, email, boolean, int, date, datetime, reference, picklist, base64
    length: int = 255
    required: bool = False
    default: object = None
    references: tuple[str, ...] = ()
    values: tuple[str, ...] = ()
    writes: bool = False  # the connector writes this field (checked by `crmconnector check`)


def _f(name: str, type: str = "string", length: int = 255, **kw: object) -> FieldSpec:
    return FieldSpec(name, type, length, **kw)  # type: ignore[arg-type]


PHONE_FIELDS: dict[str, tuple[str, ...]] = {
    "Contact": ("Phone", "MobilePhone", "HomePhone", "OtherPhone"),
    "Lead": ("Phone", "MobilePhone"),
    "Account": ("Phone",),
}
MATCH_OBJECTS = ("Contact", "Lead", "Account")
# Objects with a do-not-contact flag of their own (an Account has none in a standard org): STOP and START set it.
OPT_OUT_OBJECTS = ("Contact", "Lead")

OBJECTS: dict[str, tuple[FieldSpec, ...]] = {
    "Account": (
        _f("Name", required=True, writes=True),
        _f("Phone", "phone", 40, writes=True),
        _f("Type", length=255),
        _f("Industry", length=255),
        _f("Website", length=255),
        _f("Description", "textarea", 32000),
    ),
    "Contact": (
        _f("FirstName", length=40, writes=True),
        _f("LastName", length=80, required=True, writes=True),
        _f("AccountId", "reference", 18, references=("Account",)),
        _f("Email", "email", 80),
        _f("Phone", "phone", 40, writes=True),
        _f("MobilePhone", "phone", 40),
        _f("HomePhone", "phone", 40),
        _f("OtherPhone", "phone", 40),
        _f("Title", length=128),
        _f("DoNotCall", "boolean", default=False, writes=True),
        _f("Description", "textarea", 32000),
    ),
    "Lead": (
        _f("FirstName", length=40, writes=True),
        _f("LastName", length=80, required=True, writes=True),
        _f("Company", length=255, required=True, writes=True),
        _f("Email", "email", 80),
        _f("Phone", "phone", 40, writes=True),
        _f("MobilePhone", "phone", 40),
        _f("Status", "picklist", 255, default="Open - Not Contacted"),
        _f("DoNotCall", "boolean", default=False, writes=True),
        _f("Description", "textarea", 32000),
    ),
    "Case": (
        _f("Subject", length=255, writes=True),
        _f("Description", "textarea", 32000, writes=True),
        _f("Origin", "picklist", 255, writes=True),
        _f("Status", "picklist", 255, default="New", writes=True),
        _f("Priority", "picklist", 255, default="Medium"),
        _f("SuppliedPhone", "string", 40, writes=True),
        _f("ContactId", "reference", 18, references=("Contact",), writes=True),
        _f("AccountId", "reference", 18, references=("Account",), writes=True),
    ),
    "Task": (
        _f("Subject", length=255, writes=True),
        _f("Description", "textarea", 32000, writes=True),
        _f("CallObject", length=255, writes=True),
        _f("CallType", "picklist", 40, values=("Inbound", "Outbound", "Internal"), writes=True),
        _f("CallDisposition", length=255, writes=True),
        _f("CallDurationInSeconds", "int", writes=True),
        _f("Status", "picklist", 40, required=True, default="Not Started", writes=True),
        _f("Priority", "picklist", 40, default="Normal"),
        _f("ActivityDate", "date", writes=True),
        _f("WhoId", "reference", 18, references=("Contact", "Lead"), writes=True),
        _f("WhatId", "reference", 18, references=("Account", "Case"), writes=True),
    ),
    "ContentVersion": (
        _f("Title", length=255, required=True, writes=True),
        _f("PathOnClient", length=500, required=True, writes=True),
        _f("VersionData", "base64", 0, required=True, writes=True),
        _f("FirstPublishLocationId", "reference", 18, references=("Task", "Case", "Account", "Contact", "Lead"),
           writes=True),
        _f("Description", "textarea", 1000, writes=True),
        _f("ContentDocumentId", "string", 18),
        _f("ContentSize", "int"),
        _f("FileExtension", length=40),
    ),
}


def field_spec(object_name: str, field_name: str) -> FieldSpec | None:
    for spec in OBJECTS.get(object_name, ()):
        if spec.name == field_name:
            return spec
    return None


def display_name(object_name: str, fields: dict) -> str:
    """The record's Name as Salesforce shows it (Contact/Lead: first + last; others: Name or Subject)."""
    if object_name in ("Contact", "Lead"):
        return " ".join(p for p in (fields.get("FirstName"), fields.get("LastName")) if p)
    if object_name == "Case":
        return fields.get("Subject") or ""
    if object_name == "Task":
        return fields.get("Subject") or ""
    if object_name == "ContentVersion":
        return fields.get("Title") or ""
    return fields.get("Name") or ""
