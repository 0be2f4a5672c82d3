"""SOSL text for phone searches: one escaping function, the search terms of a number, and batching.

Every character that SOSL reserves is escaped by `escape_sosl` and every term is a quoted phrase, so
no input (a stray `}`, `"`, `\\`, `*` or the word OR) can leave its term or the FIND braces.

Salesforce's search engine splits stored text into tokens at spaces, punctuation and letter/digit
changes, so "(415) 555-0132" is indexed as 415 / 555 / 0132 and "+1.415.555.0132" as 1 / 415 / 555 /
0132. A number is therefore searched three ways, which between them find it whatever its format:
the E.164 text, the national significant number as one token (numbers typed without separators),
and the digit groups as a phrase (numbers typed with separators, with or without a country code).
The search is fuzzy either way; callers keep only exact E.164 matches.
"""
from __future__ import annotations

import re
from typing import Iterator, Sequence

import phonenumbers

from crmconnector.crm.objects import PHONE_FIELDS

RESERVED = frozenset('?&|!{}[]()^~*:\\"\'+-')
# SOSL drops logical operators from a search query longer than 4,000 characters and returns nothing
# past 10,000; staying under 4,000 keeps every OR meaningful.
MAX_QUERY_CHARS = 4000
MAX_NUMBERS_PER_SEARCH = 50
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

RETURNING_FIELDS: dict[str, tuple[str, ...]] = {
    "Contact": ("Id", "FirstName", "LastName", *PHONE_FIELDS["Contact"], "AccountId", "LastModifiedDate"),
    "Lead": ("Id", "FirstName", "LastName", "Company", *PHONE_FIELDS["Lead"], "LastModifiedDate"),
    "Account": ("Id", "Name", *PHONE_FIELDS["Account"], "LastModifiedDate"),
}


def escape_sosl(text: str) -> str:
    """Backslash-escape every SOSL reserved character; control characters become spaces."""
    text = _CONTROL.sub(" ", text)
    return "".join("\\" + ch if ch in RESERVED else ch for ch in text)


def phrase(text: str) -> str:
    """One quoted search term that matches `text` literally (operators and wildcards inert)."""
    return '"' + escape_sosl(text) + '"'


def number_terms(number: str) -> list[str]:
    """The texts to search for one E.164 number (the raw text when it does not parse)."""
    try:
        parsed = phonenumbers.parse(number, None)
    except phonenumbers.NumberParseException:
        return [number]
    nsn = phonenumbers.national_significant_number(parsed)
    international = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    groups = " ".join(re.findall(r"\d+", international)[1:])  # digit groups after the country code
    terms = [phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164), nsn, groups]
    return list(dict.fromkeys(t for t in terms if t))


def find_clause(numbers: Sequence[str]) -> str:
    """`{"\\+14155550132" OR "4155550132" OR "415 555 0132" OR ...}` for the numbers."""
    terms = [phrase(term) for number in numbers for term in number_terms(number)]
    return "{" + " OR ".join(dict.fromkeys(terms)) + "}"


def returning_clause(objects: Sequence[str]) -> str:
    """`Contact(Id, ...), Lead(...), Account(...)` in the admin's object order (unknown objects skipped)."""
    parts = [f"{name}({', '.join(RETURNING_FIELDS[name])})" for name in dict.fromkeys(objects)
             if name in RETURNING_FIELDS]
    if not parts:
        raise ValueError(f"no searchable object among {list(objects)}")
    return ", ".join(parts)


def phone_search(numbers: Sequence[str], objects: Sequence[str]) -> str:
    """The whole SOSL statement for one batch of numbers."""
    return f"FIND {find_clause(numbers)} IN PHONE FIELDS RETURNING {returning_clause(objects)}"


def batches(numbers: Sequence[str], *, size: int = MAX_NUMBERS_PER_SEARCH,
            max_chars: int = MAX_QUERY_CHARS) -> Iterator[list[str]]:
    """Split numbers into as few searches as the limits allow: at most `size` numbers and a search
    query of at most `max_chars` characters each (a single over-long number still gets its own)."""
    batch: list[str] = []
    for number in dict.fromkeys(numbers):
        candidate = [*batch, number]
        if batch and (len(candidate) > size or len(find_clause(candidate)) - 2 > max_chars):
            yield batch
            candidate = [number]
        batch = candidate
    if batch:
        yield batch
