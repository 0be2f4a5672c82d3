"""Salesforce-style record ids: 15 base-62 characters plus the 3-character case-safe suffix."""
from __future__ import annotations

import secrets
import string

KEY_PREFIXES = {
    "Account": "001",
    "Contact": "003",
    "Lead": "00Q",
    "Case": "500",
    "Task": "00T",
    "ContentVersion": "068",
    "ContentDocument": "069",
}
_ALPHABET = string.digits + string.ascii_uppercase + string.ascii_lowercase
_SUFFIX = string.ascii_uppercase + "012345"
_BODY_LENGTH = 12  # after the 3-character key prefix
_BODIES = len(_ALPHABET) ** _BODY_LENGTH


def case_safe_suffix(id15: str) -> str:
    """The checksum Salesforce appends so that an 18-character id survives case-folding: per 5-character
    chunk, one bit for each ASCII capital (other characters, even other capitals, count as none)."""
    suffix = ""
    for chunk in (id15[0:5], id15[5:10], id15[10:15]):
        bits = sum(1 << i for i, ch in enumerate(chunk) if "A" <= ch <= "Z")
        suffix += _SUFFIX[bits]
    return suffix


def to_18(record_id: str) -> str:
    """Expand a 15-character id; an 18-character one is returned as it is."""
    if len(record_id) == 15:
        return record_id + case_safe_suffix(record_id)
    return record_id


def new_id(object_name: str, sequence: int | None = None) -> str:
    """A fresh 18-character id with the object's key prefix and a random body, drawn from the OS
    in one go rather than a character at a time, or the body that numbers `sequence`."""
    prefix = KEY_PREFIXES[object_name]
    n = secrets.randbelow(_BODIES) if sequence is None else sequence
    body = ""
    for _ in range(_BODY_LENGTH):
        n, r = divmod(n, 62)
        body = _ALPHABET[r] + body
    return to_18(prefix + body)


def is_valid_id(record_id: str, object_name: str | None = None) -> bool:
    """True for a well-formed 15/18-character id (of the given object, if named)."""
    if len(record_id) not in (15, 18) or any(ch not in _ALPHABET for ch in record_id):
        return False
    if len(record_id) == 18 and case_safe_suffix(record_id[:15]) != record_id[15:]:
        return False
    return object_name is None or record_id.startswith(KEY_PREFIXES[object_name])


def object_for_id(record_id: str) -> str | None:
    """The object whose key prefix the id carries."""
    for name, prefix in KEY_PREFIXES.items():
        if record_id.startswith(prefix):
            return name
    return None
