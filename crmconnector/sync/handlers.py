"""What the worker does for each outbox kind: chat_log, match and opt_out.

Each handler reads the chat's current state, makes its CRM calls outside any transaction, then
records the result and finishes its item in one transaction. A handler with nothing to do yet
(the chat has not started, its match is pending) finishes its item: the event that completes the
state enqueues the work again.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from sqlalchemy import select

from crmconnector import chatstate, console, optout
from crmconnector.metrics import OUTBOX_DONE
from crmconnector.preferences import pop_settings
from crmconnector.settings import Settings
from crmconnector.store import chat_media, chats, reading, utcnow
from crmconnector.crm.base import FileUpload, UpsertResult
from crmconnector.crm.objects import OPT_OUT_OBJECTS
from crmconnector.sync.chatlog import MediaFetcher, MediaOutcome, RenderedTask, gather_media, render
from crmconnector.sync.outbox import (enqueue, failed_match, queue_chat_log, record_posted_at_once,
                                      set_crm_status, settle_failed)
from crmconnector.sync.worker import Done, Item, finish_done

if TYPE_CHECKING:
    from crmconnector.sync.worker import Worker

log = logging.getLogger(__name__)
# A consumer's picture whose host timed out or answered 5xx is fetched again every few minutes for a
# while after the chat ended; the same Task is updated when it arrives.
MEDIA_RETRY_DELAY = timedelta(minutes=5)
MEDIA_RETRY_WINDOW = timedelta(hours=2)


def chat_log(worker: "Worker", item: Item) -> None:
    """Create or update the chat's one Task (keyed by CallObject) from its current state."""
    with reading(worker.engine) as conn:
        state = chatstate.load(conn, item.key)
    waiting = _not_ready(state)
    if waiting:
        worker.write(lambda conn: _finish_waiting(conn, item, waiting))
        raise Done
    assert state is not None
    done = _post_task(worker, item, state)
    changed = record_posted_at_once(worker.engine, {state.id: done.task_id})
    worker.write(lambda conn: _record_all_posted(conn, [done], changed))
    worker.notify()
    raise Done


def chat_logs(worker: "Worker", items: Sequence[Item]) -> None:
    """`chat_log` for the items of several chats at once: one read of their states, their Tasks in one
    CRM call when the CRM takes several (the local CRM), else one each; then (PostgreSQL) one statement
    for their posted statuses and one transaction that records them and finishes the items. A CRM error
    fails or reschedules only its own item."""
    with reading(worker.engine) as conn:
        states = chatstate.load_many(conn, [item.key for item in items])
    rendered: list[_Rendered] = []
    waiting: list[tuple[Item, str]] = []
    for item in items:
        state = states.get(item.key)
        note = _not_ready(state)
        if note:
            waiting.append((item, note))
            continue
        assert state is not None
        try:
            rendered.append(_render_task(worker, item, state))
        except Exception as exc:  # noqa: BLE001 - every failure is recorded on its own item
            worker.failed(item, exc)
    posted: list[_Posted] = []
    for job, result in zip(rendered, _upsert_tasks(worker.crm, rendered)):
        if isinstance(result, Exception):
            worker.failed(job.item, result)
        else:
            posted.append(job.posted(result, worker.clock()))
    changed = record_posted_at_once(worker.engine, {done.state.id: done.task_id for done in posted})

    def record(conn: Any) -> None:
        _record_all_posted(conn, posted, changed)
        for item, note in waiting:
            _finish_waiting(conn, item, note)
    worker.write(record)
    worker.notify()
    for _ in range(len(posted) + len(waiting)):
        OUTBOX_DONE.labels("chat_log", "done").inc()


def _upsert_tasks(crm: Any, rendered: Sequence["_Rendered"]) -> list[UpsertResult | Exception]:
    """Each rendered Task written to the CRM: in one call when it takes several (`upsert_many`)."""
    many = getattr(crm, "upsert_many", None)
    if many is not None and len(rendered) > 1:
        return list(many("Task", "CallObject", [(job.task.fields, job.task.files) for job in rendered]))
    results: list[UpsertResult | Exception] = []
    for job in rendered:
        try:
            results.append(crm.upsert_with_files("Task", "CallObject", job.task.fields, job.task.files))
        except Exception as exc:  # noqa: BLE001 - every failure is recorded on its own item
            results.append(exc)
    return results


@dataclass(frozen=True)
class _Rendered:
    """A chat log rendered from its state, ready for the CRM."""

    item: Item
    state: chatstate.ChatState
    media: Mapping[tuple[str, int], MediaOutcome]
    task: RenderedTask

    def posted(self, result: UpsertResult, now: datetime) -> "_Posted":
        return _Posted(self.item, self.state, result.id, self.media, result.file_ids,
                       media_retry_at(self.media, self.state.chat.get("ended_at"), now))


@dataclass(frozen=True)
class _Posted:
    """A chat log the CRM took: what is left to record once its status is known."""

    item: Item
    state: chatstate.ChatState
    task_id: str
    media: Mapping[tuple[str, int], MediaOutcome]
    file_ids: Mapping[str, str]
    retry_at: datetime | None


WAITING_FOR_MATCH = "waiting for the match"


def _not_ready(state: chatstate.ChatState | None) -> str | None:
    """Why the chat's Task cannot be written yet (the event that completes it enqueues it again)."""
    chat = state.chat if state else {}
    if state is None or not chat.get("started") or chat.get("ended_at") is None:
        return "waiting for the chat's start and end"
    if chat.get("match_outcome") == "pending":
        return WAITING_FOR_MATCH
    return None


def _finish_waiting(conn: Any, item: Item, note: str) -> None:
    """Finish a chat log that is not ready; when it waits for a match the CRM refused, that waits for
    the admin, and the chat's CRM status says failed with the CRM's error rather than pending."""
    finish_done(conn, item, note)
    error = failed_match(conn, item.key) if note == WAITING_FOR_MATCH else None
    if error is not None:
        set_crm_status(conn, item.key, "failed", error=error)


def _render_task(worker: "Worker", item: Item, state: chatstate.ChatState) -> _Rendered:
    """The chat's Task from its state, with the media fetched now."""
    chat = state.chat
    account_id = chat.get("linked_account_id") if chat.get("linked_object") == "Contact" else None
    media = gather_media(state, worker.fetch_media)
    return _Rendered(item, state, media, render(state, contact_account_id=account_id, media=media))


def _post_task(worker: "Worker", item: Item, state: chatstate.ChatState) -> _Posted:
    """Render the chat's Task from its state (fetching media) and write it to the CRM."""
    job = _render_task(worker, item, state)
    result = worker.crm.upsert_with_files("Task", "CallObject", job.task.fields, job.task.files)
    return job.posted(result, worker.clock())


def _record_all_posted(conn: Any, posted: Sequence[_Posted], changed: set[str] | None) -> None:
    """In the finishing transaction: each posted chat log (below), and the earlier failures they settle."""
    for done in posted:
        _record_posted(conn, done, changed)
    settle_failed(conn, [done.state.id for done in posted])


def _record_posted(conn: Any, done: _Posted, changed: set[str] | None) -> None:
    """In the finishing transaction: the media outcomes, the posted status (unless `changed`, the chats
    whose status was recorded already, holds it), a later render for media worth retrying, the finish."""
    chat_id = done.state.id
    _record_media(conn, chat_id, done.media, done.file_ids)
    if changed is None or chat_id not in changed:
        set_crm_status(conn, chat_id, "posted", task_id=done.task_id)
    if done.retry_at is not None:
        enqueue(conn, "chat_log", chat_id, due_at=done.retry_at)
    finish_done(conn, done.item)


def media_retry_at(media: Mapping[tuple[str, int], MediaOutcome], ended_at: datetime | None,
                   now: datetime) -> datetime | None:
    """When to render the chat log again because a media download failed in a way that may pass
    (the posted Task notes it meanwhile); None once nothing is worth retrying or the window closed."""
    if ended_at is None or not any(o.retry for o in media.values()):
        return None
    if now - ended_at > MEDIA_RETRY_WINDOW:
        return None
    return now + MEDIA_RETRY_DELAY


def _record_media(conn: Any, chat_id: str, media: Mapping[tuple[str, int], MediaOutcome],
                  file_ids: Mapping[str, str]) -> None:
    for (message_id, position), outcome in media.items():
        if outcome.upload is None and (outcome.attached or not outcome.final):
            continue  # already recorded, or to be tried again next time
        values = {"status": "attached" if outcome.attached else "refused", "reason": outcome.reason,
                  "content_version_id": file_ids.get(outcome.upload.key) if outcome.upload else None}
        if outcome.upload is not None:
            values["filename"] = outcome.upload.filename
        conn.execute(chat_media.update().where(chat_media.c.chat_id == chat_id, chat_media.c.message_id == message_id,
                                               chat_media.c.position == position).values(**values))


def match(worker: "Worker", item: Item) -> None:
    """Match a chat whose match was pending because the CRM did not answer during chat.started. A record
    the no-match pop creates is claimed as chat.started claims it (`record_claims`): while a callback is
    still creating it, CreateInProgress (a retryable CRM error) reschedules the item."""
    from crmconnector.chats import link_values, match_and_pop, matched_record_json

    with reading(worker.engine) as conn:
        chat = conn.execute(select(chats).where(chats.c.id == item.key)).mappings().first()
    if chat is None or not chat["started"] or chat["match_outcome"] != "pending":
        _finish(worker, item, "nothing to match")
    assert chat is not None
    number = chat["consumer_number"]
    matched = match_and_pop(worker.crm, worker.engine, worker.settings, pop_settings(worker.engine), item.key,
                            number)
    records = [matched_record_json(r, number, worker.crm, worker.settings.default_region)
               for r in matched.match.records]

    def record(conn: Any) -> None:
        current = conn.execute(select(chats).where(chats.c.id == item.key)).mappings().one()
        values: dict[str, Any] = {"match_outcome": matched.match.outcome, "match_records": records,
                                  "screen_pop": matched.pop.as_json(), "updated_at": utcnow()}
        linked = matched.pop.linked
        if not current["linked_id"] and linked is not None:
            values.update(link_values(linked))
        conn.execute(chats.update().where(chats.c.id == item.key).values(**values))
        if current["agent_email"]:
            console.publish(conn, current["agent_email"], item.key, "pop", {"chat_id": item.key})
        if current["ended_at"] is not None:
            queue_chat_log(conn, item.key)
        if optout.has_keyword(conn, item.key):
            enqueue(conn, "opt_out", item.key)
        finish_done(conn, item)
    worker.write(record)
    worker.notify()
    raise Done


def opt_out(worker: "Worker", item: Item) -> None:
    """Set or clear the linked record's opt-out field from the latest keyword among the record's chats.

    An unlinked chat's item just finishes: linking the chat (chat.started, the match, an agent's
    pick) queues it again.

    Items are serialized per chat, not per record: another chat's item may write the same record
    between this item's read and its write, with a newer keyword. So after each write the record's
    latest choice is read again, and written again if it changed: whichever item writes last has
    read after its own write, and the record ends with the latest keyword. (Another round needs
    another keyword to arrive meanwhile, so this ends when the consumer stops texting them.)
    """
    with reading(worker.engine) as conn:
        chat = conn.execute(select(chats.c.match_outcome, chats.c.linked_object, chats.c.linked_id)
                            .where(chats.c.id == item.key)).first()
        carried, choice = False, None
        if chat is not None and chat.linked_id and chat.linked_object in OPT_OUT_OBJECTS:
            carried, choice = True, optout.latest_choice_for(conn, chat.linked_object, chat.linked_id)
    if chat is None or chat.match_outcome == "pending":
        _finish(worker, item, WAITING_FOR_MATCH)
    assert chat is not None
    if not carried:
        _finish(worker, item, "no linked Contact or Lead to carry the opt-out")
    if choice is None:
        _finish(worker, item)
    field = pop_settings(worker.engine).opt_out_field
    while True:
        worker.crm.update(chat.linked_object, chat.linked_id, {field: choice})
        with reading(worker.engine) as conn:
            latest = optout.latest_choice_for(conn, chat.linked_object, chat.linked_id)
        if latest is None or latest == choice:
            return
        choice = latest


def _finish(worker: "Worker", item: Item, note: str | None = None) -> None:
    worker.write(lambda conn: finish_done(conn, item, note))
    raise Done


HANDLERS: dict[str, Callable[["Worker", Item], None]] = {"chat_log": chat_log, "match": match, "opt_out": opt_out}
# Kinds whose items of several keys one thread can process together (`Worker.batch`).
BATCH_HANDLERS: dict[str, Callable[["Worker", Sequence[Item]], None]] = {"chat_log": chat_logs}


def default_fetcher(settings: Settings) -> MediaFetcher | None:
    """The media downloader (allowed hosts, size cap, SSRF rules); None when it is not installed."""
    try:
        from crmconnector.http import make_session
        from crmconnector.sync.media import media_uploads
    except ImportError:
        return None
    session = make_session(settings)

    def fetch(chat_id: str, message_id: str, position: int, item: Mapping[str, Any]) -> FileUpload | str:
        return media_uploads(session, settings, chat_id, message_id, position, item)

    return fetch
