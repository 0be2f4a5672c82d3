"""Match outcomes: which CRM records hold a consumer's number, in the order the admin wants."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Sequence

from crmconnector.crm.base import CRMBackend, Record
from crmconnector.crm.objects import MATCH_OBJECTS
from crmconnector.matching.phone import try_normalize

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class MatchResult:
    consumer_number: str
    records: tuple[Record, ...]

    @property
    def outcome(self) -> str:
        return ("none", "single")[len(self.records)] if len(self.records) < 2 else "multiple"

    @property
    def first(self) -> Record | None:
        return self.records[0] if self.records else None


def order_records(records: Sequence[Record], object_order: Sequence[str]) -> list[Record]:
    """Admin's object order, then most recently modified first, then id."""
    rank = {name: i for i, name in enumerate(object_order)}

    def modified(record: Record) -> float:
        when = record.last_modified or _EPOCH
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        return when.timestamp()

    return sorted(records, key=lambda r: (rank.get(r.object, len(rank)), -modified(r), r.id))


def record_numbers(record: Record, region: str) -> set[str]:
    """The E.164 numbers a record's phone fields hold (unparseable values hold none)."""
    return {e164 for phone in record.phones() if (e164 := try_normalize(phone, region))}


def match_numbers(backend: CRMBackend, numbers: Sequence[str], *, region: str = "US",
                  object_order: Sequence[str] = MATCH_OBJECTS) -> dict[str, MatchResult]:
    """Match several E.164 numbers with one backend search (a fuzzy search is filtered exactly here)."""
    unique = list(dict.fromkeys(numbers))
    candidates = backend.find_by_phone(unique, list(object_order)) if unique else []
    found: dict[str, dict[str, Record]] = {n: {} for n in unique}
    for record in candidates:
        if record.object not in object_order:
            continue
        for number in record_numbers(record, region):
            if number in found:
                found[number].setdefault(record.id, record)
    return {n: MatchResult(n, tuple(order_records(list(found[n].values()), object_order))) for n in unique}


def match_number(backend: CRMBackend, number: str, *, region: str = "US",
                 object_order: Sequence[str] = MATCH_OBJECTS) -> MatchResult:
    return match_numbers(backend, [number], region=region, object_order=object_order)[number]
