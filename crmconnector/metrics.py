"""Prometheus metrics of the connector (exposed at GET /metrics)."""
from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
OUTBOX = Gauge("crmconnector_outbox_items", "Outbox items by status", ["status"], registry=REGISTRY)
OUTBOX_DONE = Counter("crmconnector_outbox_processed_total", "Outbox items processed by result",
                      ["kind", "result"], registry=REGISTRY)
