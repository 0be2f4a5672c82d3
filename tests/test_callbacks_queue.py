"""A queue is an object `{"id", "name"}` or, as platforms that know queues only by name send it, the name alone."""
from __future__ import annotations

import pytest
from sqlalchemy import func, select

from crmconnector.store import abandoned_calls, events, reading
from tests.abandoned_support import call_data, post_call
from tests.chat_support import HUCK, TOM, assigned, ended, make_worker, started, tasks, transferred


def test_a_chats_queues_may_be_sent_by_name(platform, runtime, crm):
    assert platform.post("chat.started", started(queue="Sales")).status_code == 200
    platform.post("chat.assigned", assigned(TOM, 5))
    platform.post("chat.transferred", transferred("ended", 30, from_agent=TOM, to_agent=HUCK, to_queue="Billing"))
    platform.post("chat.ended", ended(60))
    make_worker(runtime).run_once()
    [task] = tasks(crm)
    assert "Queue: Sales\n" in task.fields["Description"]
    assert "from Tom Sawyer to Huck Finn in queue Billing" in task.fields["Description"]


def test_an_abandoned_calls_queue_may_be_sent_by_name(platform, runtime):
    post_call(platform, queue="Sales")
    with reading(runtime.engine) as conn:
        assert conn.execute(select(abandoned_calls.c.queue)).scalar_one() == {"name": "Sales"}


@pytest.mark.parametrize("queue", [12, ["Sales"], True])
@pytest.mark.parametrize("event_type, data, field", [
    ("chat.started", lambda queue: started(queue=queue), "data.chat.queue"),
    ("call.abandoned", lambda queue: call_data(queue=queue), "data.call.queue"),
])
def test_any_other_queue_is_a_400_that_says_what_is_expected(platform, runtime, queue, event_type, data, field):
    response = platform.post(event_type, data(queue))
    assert response.status_code == 400
    assert response.json["error"] == {
        "code": "invalid_payload", "field": field,
        "message": f"{field}: must be an object with the queue's id and name, or its name"}
    with reading(runtime.engine) as conn:
        assert conn.execute(select(func.count()).select_from(events)).scalar_one() == 0


def test_a_value_that_must_be_an_object_says_so_without_internal_names(platform):
    response = platform.post("call.abandoned", {"call": ["c-100"]})
    assert response.status_code == 400
    assert response.json["error"]["message"] == "data.call: must be a JSON object"
