"""The screen-pop decision from a match and the admin's per-outcome settings (pure logic, no I/O)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from crmconnector.crm.base import Record
from crmconnector.crm.objects import MATCH_OBJECTS
from crmconnector.matching.matcher import MatchResult

# Allowed actions per outcome, the first being the default (CONTRACT section 3).
ACTIONS: dict[str, tuple[str, ...]] = {
    "none": ("new_record", "create_record", "search", "none"),
    "single": ("record", "none"),
    "multiple": ("search", "record", "none"),
}
NEW_RECORD_OBJECTS = ("Contact", "Lead", "Account", "Case")


@dataclass(frozen=True)
class PopSettings:
    none: str = "new_record"
    single: str = "record"
    multiple: str = "search"
    new_record_object: str = "Contact"
    object_order: tuple[str, ...] = MATCH_OBJECTS
    opt_out_field: str = "DoNotCall"

    def problems(self) -> list[tuple[str, str]]:
        """(field, message) for every value outside what the contract allows."""
        found = []
        for outcome, allowed in ACTIONS.items():
            if getattr(self, outcome) not in allowed:
                found.append((outcome, f"action for '{outcome}' must be one of {', '.join(allowed)}"))
        if self.new_record_object not in NEW_RECORD_OBJECTS:
            found.append(("new_record_object", f"new-record object must be one of {', '.join(NEW_RECORD_OBJECTS)}"))
        if sorted(self.object_order) != sorted(set(self.object_order)) or not set(self.object_order) <= set(
                MATCH_OBJECTS) or not self.object_order:
            found.append(("object_order", f"object order must list some of {', '.join(MATCH_OBJECTS)}, each once"))
        if not self.opt_out_field.replace("_", "").isalnum():
            found.append(("opt_out_field", "opt-out field must be a field API name like DoNotCall"))
        return found

    def as_dict(self) -> dict[str, Any]:
        return {"none": self.none, "single": self.single, "multiple": self.multiple,
                "new_record_object": self.new_record_object, "object_order": list(self.object_order),
                "opt_out_field": self.opt_out_field}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "PopSettings":
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "object_order" in known:
            known["object_order"] = tuple(known["object_order"])
        return cls(**known)


@dataclass(frozen=True)
class ScreenPop:
    action: str
    url: str | None = None
    object: str | None = None
    record_id: str | None = None
    open_cti: dict[str, Any] | None = None
    linked: Record | None = field(default=None, compare=False)

    def as_json(self) -> dict[str, Any]:
        return {"action": self.action, "url": self.url, "object": self.object,
                "record_id": self.record_id, "open_cti": self.open_cti}


class Links:
    """Where pops point: the CRM's record and new-record pages, and the console's chat page."""

    def __init__(self, record_url: Callable[[str, str], str], new_record_url: Callable[..., str],
                 chat_url: Callable[[str], str]):
        self.record_url = record_url
        self.new_record_url = new_record_url
        self.chat_url = chat_url


def record_pop(record: Record, links: Links) -> ScreenPop:
    return ScreenPop("record", links.record_url(record.object, record.id), record.object, record.id,
                     {"type": "SOBJECT", "params": {"recordId": record.id}}, linked=record)


def decide(match: MatchResult, settings: PopSettings, links: Links, chat_id: str) -> ScreenPop:
    """The pop for this outcome (for create_record, the caller creates the record, then pops it)."""
    outcome = match.outcome
    action = getattr(settings, outcome)
    if action == "none":
        return ScreenPop("none", linked=match.first)
    if action == "record" and match.first is not None:
        return record_pop(match.first, links)
    if action == "search":
        return ScreenPop("search", links.chat_url(chat_id), None, None,
                         {"type": "SEARCH", "params": {"searchString": match.consumer_number}}, linked=match.first)
    if action in ("new_record", "create_record"):
        obj = settings.new_record_object
        defaults = {("SuppliedPhone" if obj == "Case" else "Phone"): match.consumer_number}
        return ScreenPop("new_record", links.new_record_url(obj, defaults, chat_id=chat_id), obj, None,
                         {"type": "NEW_RECORD_MODAL", "params": {"entityName": obj, "defaultFieldValues": defaults}})
    raise ValueError(f"action {action!r} does not apply to outcome {outcome!r}")
