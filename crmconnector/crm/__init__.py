"""CRM backends behind one protocol: the embedded LocalCRM and Salesforce."""
from __future__ import annotations

from typing import TYPE_CHECKING

from crmconnector.crm.base import CheckLine, CreateResult, CRMBackend, FileUpload, Record, UpsertResult
from crmconnector.crm.errors import CRMAuthError, CRMError, CRMNotFound, CRMRejected, RetryableCRMError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from crmconnector.settings import Settings


def make_backend(settings: "Settings", engine: "Engine") -> CRMBackend:
    """The backend the settings name (nothing connects until it is first used)."""
    if settings.crm == "salesforce":
        from crmconnector.crm.salesforce import SalesforceCRM

        return SalesforceCRM.from_settings(settings)
    from crmconnector.crm.local import LocalCRM

    return LocalCRM(engine, base_url=settings.base_url, region=settings.default_region)


__all__ = ["CRMBackend", "Record", "FileUpload", "UpsertResult", "CreateResult", "CheckLine", "CRMError",
           "RetryableCRMError", "CRMAuthError", "CRMRejected", "CRMNotFound", "make_backend"]
