"""Logging that never writes a full phone number or a secret."""
from __future__ import annotations

import logging
import re

# A run of 8+ digits with phone punctuation, not inside a longer digit run and not followed by a letter
# (so record ids like 0035g000004ABCDAA3 stay readable); "%2B14155550132" and "/chats/14155550132" match.
_PHONE = re.compile(r"(?<!\d)\+?\d[\d\s().-]{6,}\d(?![\w])")
# Dates and hours ("2026-11-21 17" of "2026-11-21 17:03:10") look like phone numbers but are not.
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[ T]\d{2})?")
_SECRET = re.compile(r"(?i)(token|secret|password|passwd|authorization|api[_-]?key|(?<![a-z])sid|session[_-]?id"
                     r"|sig(?:nature)?|v1)([\"']?\s*[:=>]\s*[\"']?)((?:bearer|basic)\s+)?[^\s,\"'&<]+")
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic)\s+[\w.~+/!=-]{8,}")


def redact(text: str) -> str:
    """Mask phone numbers (all but the last 2 digits) and values that follow secret-like keys."""
    def phone(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group(0))
        if len(digits) < 8 or _DATE.fullmatch(match.group(0)):
            return match.group(0)
        return "+" * match.group(0).startswith("+") + "*" * (len(digits) - 2) + digits[-2:]

    text = _SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text)
    text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)} ***", text)
    return _PHONE.sub(phone, text)


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Libraries' start-up chatter (migration plugins, scheduler set-up) would bury the welcome lines.
    for noisy in ("alembic", "apscheduler"):
        logging.getLogger(noisy).setLevel(level if level <= logging.DEBUG else logging.WARNING)
