"""GET /metrics: Prometheus text with the connector's own counters moving as events arrive."""
from __future__ import annotations

import json
import re

from prometheus_client.exposition import CONTENT_TYPE_LATEST

from tests.conftest import signed_headers


def _sample(client, name: str, **labels: str) -> float:
    text = client.get("/metrics").get_data(as_text=True)
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and ",".join(sorted(match.group(1).split(","))) == wanted:
            return float(match.group(2))
    return 0.0


def test_metrics_is_prometheus_text(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    assert "# TYPE crmconnector_events_total counter" in response.get_data(as_text=True)


def test_metrics_content_type_is_prometheus_clients_exactly(client):
    """One `charset` parameter: a duplicated one is not a valid media type, and scrapers may refuse it."""
    response = client.get("/metrics")
    assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
    assert response.headers["Content-Type"].count("charset=") == 1


def test_events_and_match_outcomes_are_counted(client, platform, crm):
    crm.create("Contact", {"LastName": "Thatcher", "Phone": "+14155550132"})
    started = _sample(client, "crmconnector_events_total", type="chat.started", status="200")
    single = _sample(client, "crmconnector_match_outcomes_total", outcome="single")
    rejected = _sample(client, "crmconnector_events_total", type="rejected", status="401")
    assert platform.start_chat().status_code == 200
    body = json.dumps({"id": "x", "type": "chat.started", "data": {}}).encode()
    client.post("/callbacks/events", data=body, headers={"Content-Type": "application/json"})
    assert _sample(client, "crmconnector_events_total", type="chat.started", status="200") == started + 1
    assert _sample(client, "crmconnector_match_outcomes_total", outcome="single") == single + 1
    assert _sample(client, "crmconnector_events_total", type="rejected", status="401") == rejected + 1


def test_platform_chosen_types_do_not_become_labels(client):
    body = json.dumps({"id": "evt_odd", "type": "chat.typing.v7", "data": {}}).encode()
    unknown = _sample(client, "crmconnector_events_total", type="unknown", status="202")
    assert client.post("/callbacks/events", data=body, headers=signed_headers(body)).status_code == 202
    assert _sample(client, "crmconnector_events_total", type="unknown", status="202") == unknown + 1
    assert "chat.typing.v7" not in client.get("/metrics").get_data(as_text=True)


def test_serve_with_several_workers_reports_the_sum_of_all_of_them(tmp_path):
    """A scrape reaches one worker process; each counts its own requests. Prometheus must see the
    instance's totals, not one worker's (which would look like counter resets between scrapes)."""
    import requests

    from crmconnector.signatures import sign
    from tests.instances import SECRET, Instance
    from tests.pg import free_port

    server = Instance(f"sqlite:///{tmp_path / 'state.db'}", tmp_path / "one", free_port(), workers=2).start()
    try:
        for i in range(20):
            body = json.dumps({"id": f"evt-{i}", "type": "x.unknown", "data": {}}).encode()
            requests.post(f"{server.url}/callbacks/events", data=body, timeout=10, headers={
                "Content-Type": "application/json", "X-CRMConnector-Signature": sign(body, SECRET)})
        pattern = re.compile(r'^crmconnector_events_total\{status="202",type="unknown"\} (\S+)$', re.M)
        scraped = {float(pattern.search(requests.get(f"{server.url}/metrics", timeout=10).text).group(1))
                   for _ in range(8)}
        assert scraped == {20.0}
    finally:
        assert server.stop() == 0
