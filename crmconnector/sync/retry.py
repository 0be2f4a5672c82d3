"""The one retry policy: which CRM errors are retried, and when.

Only the outbox worker retries. Retryable errors (timeouts, connection errors, 5xx,
REQUEST_LIMIT_EXCEEDED, UNABLE_TO_LOCK_ROW) and authentication errors (the backend has already
re-logged in once) wait with exponential backoff and full jitter, or as long as the CRM asked with
Retry-After; a rejection is final and kept for the admin.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable

from crmconnector.crm.errors import CRMAuthError, CRMRejected, RetryableCRMError


@dataclass(frozen=True)
class RetryPolicy:
    base_seconds: float = 2.0
    cap_seconds: float = 600.0
    random: Callable[[], float] = field(default=random.random, compare=False)

    def is_final(self, error: BaseException) -> bool:
        """True when retrying cannot help (the CRM rejected the data itself)."""
        return isinstance(error, CRMRejected)

    def delay(self, attempt: int, error: BaseException | None = None) -> float:
        """Seconds to wait before attempt `attempt + 1` (attempt counts from 1)."""
        ceiling = min(self.cap_seconds, self.base_seconds * 2 ** max(0, attempt - 1))
        # Half fixed, half random: spreads retries of many items without ever retrying at once.
        wait = ceiling / 2 + self.random() * ceiling / 2
        if isinstance(error, RetryableCRMError) and error.retry_after:
            wait = max(float(error.retry_after), 0.0) + self.random() * min(self.base_seconds, 1.0)
        elif isinstance(error, CRMAuthError):
            wait = max(wait, self.base_seconds)
        return min(wait, max(self.cap_seconds, float(getattr(error, "retry_after", 0) or 0)))


DEFAULT_POLICY = RetryPolicy()
