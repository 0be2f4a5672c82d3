"""Prometheus metrics of the connector (exposed at GET /metrics)."""
from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

REGISTRY = CollectorRegistry(auto_describe=True)

EVENTS = Counter("crmconnector_events_total", "Callback events by type and response status",
                 ["type", "status"], registry=REGISTRY)
EVENT_SECONDS = Histogram("crmconnector_event_seconds", "Time to answer a callback event", ["type"],
                          registry=REGISTRY, buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
INTAKE_BATCH = Histogram("crmconnector_intake_batch_events", "Events written per intake transaction (group commit)",
                         registry=REGISTRY, buckets=(1, 2, 4, 8, 16, 32, 64))
MATCHES = Counter("crmconnector_match_outcomes_total", "Match outcomes of chat.started", ["outcome"],
                  registry=REGISTRY)
CRM_REQUESTS = Counter("crmconnector_crm_requests_total", "Requests sent to the CRM", ["backend", "kind"],
                       registry=REGISTRY)
OUTBOX = Gauge("crmconnector_outbox_items", "Outbox items by status", ["status"], registry=REGISTRY,
               multiprocess_mode="mostrecent")  # read from the database by whichever worker is scraped
OUTBOX_DONE = Counter("crmconnector_outbox_processed_total", "Outbox items processed by result",
                      ["kind", "result"], registry=REGISTRY)

# prometheus_client's own switch: set (before this module is imported) to a folder the worker processes share.
SHARED_FOLDER = "PROMETHEUS_MULTIPROC_DIR"


def exposition() -> bytes:
    """The metrics as Prometheus text. A scrape reaches one worker process; when the workers share a
    folder (`serve` with several workers sets one up), each writes its values there and the scrape reports
    the sum of all of them, so that counters never seem to go back; otherwise this process's own."""
    folder = os.environ.get(SHARED_FOLDER)
    if not folder:
        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=folder)
    return generate_latest(registry)
