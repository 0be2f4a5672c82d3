"""The connector assembled from settings: database, CRM backend, intake and background work."""
from __future__ import annotations

import logging
from typing import Any, Callable

from crmconnector.crm import CRMBackend, make_backend
from crmconnector.intake import EventContext, Intake
from crmconnector.notify_pg import make_wakeup
from crmconnector.settings import Settings
from crmconnector.store import make_engine, migrate

log = logging.getLogger(__name__)


class Runtime:
    """Owns the engine, the CRM backend and background threads; `close()` releases them."""

    def __init__(self, settings: Settings, *, crm: CRMBackend | None = None, migrate_schema: bool = True):
        self.settings = settings
        self.engine = make_engine(settings.database_url)
        if migrate_schema:
            migrate(self.engine)
        self.crm = crm or make_backend(settings, self.engine)
        self.wakeup = make_wakeup(self.engine)  # LISTEN/NOTIFY on PostgreSQL: wakes other instances too
        self.context = EventContext(self.engine, self.crm, settings, self.wakeup.notify)
        self.intake = Intake(self.context)
        self._stoppers: list[Callable[[], Any]] = []

    def on_close(self, stop: Callable[[], Any]) -> None:
        self._stoppers.append(stop)

    def start_background(self) -> None:
        """Start the outbox worker and the scheduler in this process."""
        from crmconnector.sync import background

        background.start(self)

    def close(self) -> None:
        for stop in reversed(self._stoppers):
            try:
                stop()
            except Exception:  # noqa: BLE001 - closing must go on
                log.exception("error while stopping background work")
        self._stoppers.clear()
        self.wakeup.close()
        self.engine.dispose()
