"""Background work in the server process: the outbox worker and the scheduler."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from crmconnector.runtime import Runtime


def start(runtime: "Runtime") -> None:
    """Start every background service; each registers its stop with `runtime.on_close`."""
    from crmconnector.sync.worker import Worker

    worker = Worker.for_runtime(runtime)
    worker.start()
    runtime.on_close(worker.stop)

    from crmconnector.sync import scheduler

    scheduler.start(runtime)
