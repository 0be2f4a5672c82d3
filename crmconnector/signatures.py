"""HMAC signatures of callbacks: `X-CRMConnector-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]`."""
from __future__ import annotations

import hashlib
import hmac
import time
from typing import Sequence

TOLERANCE_SECONDS = 300
HEADER = "X-CRMConnector-Signature"


def sign(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """The header value the SMS platform sends (used by tests, benchmarks and integrators)."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def same_secret(given: str, expected: str) -> bool:
    """Constant-time equality of a secret a client sent and ours. `hmac.compare_digest` raises on text
    with non-ASCII characters, and a client may send any: their UTF-8 bytes are compared instead."""
    return hmac.compare_digest(given.encode("utf-8", "surrogatepass"), expected.encode("utf-8", "surrogatepass"))


def verify(header: str | None, body: bytes, secrets: Sequence[str], now: float | None = None,
           tolerance: int = TOLERANCE_SECONDS) -> str | None:
    """None when one `v1` matches any secret within the time window; otherwise why not."""
    if not header:
        return "missing X-CRMConnector-Signature header"
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return "the signature's t= is not a whole number of seconds"
        elif key == "v1":
            candidates.append(value.strip().lower())
    if timestamp is None or not candidates:
        return "the signature header needs t= and at least one v1="
    # Whole seconds on both sides, as `t` is: the window is the same width into the past and the future.
    current = int(time.time() if now is None else now)
    if abs(current - timestamp) > tolerance:
        return f"the signature's timestamp is more than {tolerance} s from now"
    message = f"{timestamp}.".encode() + body
    for secret in secrets:
        expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
        if any(same_secret(c, expected) for c in candidates):  # a header may hold non-ASCII characters
            return None
    return "no v1 signature matches a callback secret"
