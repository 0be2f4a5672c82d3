"""Arrival order does not matter: any permutation of a chat's events, with duplicates, and with the
worker posting at any moment in between, ends with the very Task that in-order delivery gives."""
from __future__ import annotations

import itertools

from hypothesis import HealthCheck, given, settings, strategies as st

from tests.chat_support import full_chat, make_worker, post_all, task_files, tasks

EVENTS = len(full_chat())
_ids = itertools.count(1)


def _final_task(crm, chat_id):
    [task] = tasks(crm, chat_id)
    fields = {k: v for k, v in task.fields.items() if k not in ("Id", "CreatedDate", "LastModifiedDate")}
    fields["CallObject"] = fields["CallObject"].replace(chat_id, "<chat>")
    fields["Description"] = fields["Description"].replace(f"Chat ID: {chat_id}\n", "Chat ID: <chat>\n")
    return fields, task_files(crm, task.id)


@st.composite
def deliveries(draw):
    """A delivery plan: each step posts one event (by index) and maybe runs the worker after it."""
    order = draw(st.permutations(range(EVENTS)))
    repeats = draw(st.lists(st.integers(0, EVENTS - 1), max_size=5))
    plan = list(order)
    for index in repeats:
        plan.insert(draw(st.integers(0, len(plan))), index)
    runs = draw(st.lists(st.booleans(), min_size=len(plan), max_size=len(plan)))
    return list(zip(plan, runs))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(plan=deliveries())
def test_any_order_and_any_duplicates_give_the_in_order_task(platform, runtime, crm, plan):
    # One database for every example: each example is its own chat (the CRM contact is shared).
    if not tasks(crm, "in-order"):
        crm.create("Contact", {"FirstName": "Becky", "LastName": "Thatcher", "Phone": "(415) 555-0132"})
        post_all(platform, full_chat("in-order"))
        make_worker(runtime).run_once()
    expected = _final_task(crm, "in-order")

    chat_id = f"shuffled-{next(_ids)}"
    events = full_chat(chat_id)
    worker = make_worker(runtime)
    for index, run_worker in plan:
        event_id, kind, data = events[index]
        response = platform.post(kind, data, event_id=event_id)
        assert response.status_code == (202 if kind == "chat.ended" else 200)
        if run_worker:
            worker.run_once()
    worker.run_once()
    assert _final_task(crm, chat_id) == expected
