"""The one small hierarchy of CRM errors; drivers' errors are translated at the backend edge.

    CRMError                      anything the CRM did not do
     ├── RetryableCRMError        timeouts, connection errors, 5xx, REQUEST_LIMIT_EXCEEDED,
     │                            UNABLE_TO_LOCK_ROW: try again later (retry_after, when the CRM says)
     ├── CRMAuthError             credentials refused or session expired (re-login once, then retryable)
     └── CRMRejected              validation: retrying cannot help; shown to the admin
"""
from __future__ import annotations


class CRMError(Exception):
    """The CRM did not do what was asked."""

    def __init__(self, message: str, *, code: str = "", status: int | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.status = status

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.code else self.message


class RetryableCRMError(CRMError):
    """A passing failure: the same request may succeed later."""

    def __init__(self, message: str, *, code: str = "", status: int | None = None,
                 retry_after: float | None = None):
        super().__init__(message, code=code, status=status)
        self.retry_after = retry_after


class CRMAuthError(CRMError):
    """The CRM refused our credentials or our session."""


class CRMRejected(CRMError):
    """The CRM refused the data itself (a validation rule, a missing field); not retryable."""


class CRMNotFound(CRMRejected):
    """The record asked for does not exist."""
