"""Logging that never writes a full phone number or a secret."""
from __future__ import annotations

import logging
import re

_PHONE = re.compile(r"(?<![\w/])\+?\d[\d\s().-]{6,}\d(?![\w])")
_SECRET = re.compile(r"(?i)(token|secret|password|authorization|sig(?:nature)?|v1)([\"']?\s*[:=]\s*[\"']?)"
                     r"(bearer\s+)?[^\s,\"'&]+")


def redact(text: str) -> str:
    """Mask phone numbers (all but the last 2 digits) and values that follow secret-like keys."""
    def phone(match: re.Match[str]) -> str:
        digits = re.sub(r"\D", "", match.group(0))
        if len(digits) < 8:
            return match.group(0)
        return "+" * match.group(0).startswith("+") + "*" * (len(digits) - 2) + digits[-2:]

    return _PHONE.sub(phone, _SECRET.sub(lambda m: f"{m.group(1)}{m.group(2)}***", text))


class RedactingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("waitress").setLevel(logging.WARNING)
