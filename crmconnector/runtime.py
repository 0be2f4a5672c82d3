"""The connector assembled from settings: database, CRM backend, intake and background work."""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable

from sqlalchemy.exc import OperationalError

from crmconnector.crm import CRMBackend, make_backend
from crmconnector.intake import EventContext, Intake
from crmconnector.notify import WorkSignal
from crmconnector.notify_pg import make_wakeup
from crmconnector.outage import Backoff, outage_of
from crmconnector.settings import Settings
from crmconnector.store import make_engine, migrate

log = logging.getLogger(__name__)


class Runtime:
    """Owns the engine, the CRM backend and background threads; `close()` releases them."""

    def __init__(self, settings: Settings, *, crm: CRMBackend | None = None, migrate_schema: bool = True):
        self.settings = settings
        self._stoppers: list[Callable[[], Any]] = []
        self.engine = make_engine(settings.database_url)
        # Set once the schema is current. A database unreachable at start does not stop the process:
        # callbacks and /readyz answer 503 and the schema is migrated as soon as the database answers.
        self.schema_ready = threading.Event()
        if migrate_schema:
            self._migrate_or_wait()
        else:
            self.schema_ready.set()
        self.crm = crm or make_backend(settings, self.engine)
        self.wakeup = make_wakeup(self.engine)  # LISTEN/NOTIFY on PostgreSQL: wakes other instances too
        self.outbox_signal = WorkSignal()  # wakes this process's idle outbox threads
        self.context = EventContext(self.engine, self.crm, settings, self.notify, self.schema_ready.is_set)
        self.intake = Intake(self.context)

    def _prepare(self) -> None:
        """Bring the database up to date: the schema, and the local CRM's phone index for the region."""
        migrate(self.engine)
        if self.settings.crm == "local":
            from crmconnector.crm.phone_region import follow_region

            follow_region(self.engine, self.settings.default_region)

    def _migrate_or_wait(self) -> None:
        try:
            self._prepare()
        except OperationalError as exc:
            outage_of(self.engine).failed(exc, "schema migration at start; callbacks answer 503 meanwhile")
            stopping = threading.Event()
            self.on_close(stopping.set)
            threading.Thread(target=self._migrate_when_reachable, args=(stopping,), name="migrate-retry",
                             daemon=True).start()
        else:
            self.schema_ready.set()

    def _migrate_when_reachable(self, stopping: threading.Event) -> None:
        outage, backoff = outage_of(self.engine), Backoff()
        while not stopping.wait(backoff.next()):
            try:
                self._prepare()
            except Exception as exc:  # noqa: BLE001 - keep trying; the outage log says why
                outage.failed(exc, "schema migration")
                continue
            outage.ok()
            self.schema_ready.set()
            log.info("the schema is current; the connector is ready")
            return

    def notify(self, consoles: bool = True, outbox: int = 1) -> None:
        """After a commit: wake agents' streams (on every instance) and an idle outbox thread for each of
        `outbox` new items."""
        if consoles:
            self.wakeup.notify()
        for _ in range(outbox):
            self.outbox_signal.notify()

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
        self.intake.close()
        self.wakeup.close()
        self.engine.dispose()
