"""One CRM record per chat for the `create_record` pop, however often chat.started arrives.

The platform retries chat.started until it gets a 2xx, and a retry may arrive (at this process, another
worker or another instance) while the first request is still waiting for the CRM's create: both passed
the replay check, since nothing is stored until the CRM has answered. So the chat is claimed first, in a
transaction of its own committed before the CRM is asked, and the row's primary key decides who creates:

- the claimant creates the record and writes its id on the row;
- a request that finds the id pops that record;
- a request that finds a recent claim without an id raises CreateInProgress (the callback answers 503,
  and the platform's retry then gets the first request's stored answer);
- a claim older than `stale_after` without an id is taken over: its claimant died in the CRM call (or
  does not know whether the CRM created the record). That makes the create at least once after a crash,
  not exactly once: the dead claimant's record, if the CRM made it, is left over. The number is searched
  again before every take-over, so such a record is usually found and matched instead.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Connection, Engine, select

from crmconnector.crm.errors import RetryableCRMError
from crmconnector.settings import Settings
from crmconnector.store import created_records, insert_if_new, utcnow

RETRY_AFTER_SECONDS = 5
# Each attempt writes a claim, or finds one that stands; only a claim released between its INSERT and
# its look (the claimant's create was refused) sends it round again.
_ATTEMPTS = 3


class CreateInProgress(RetryableCRMError):
    """Another request holds the chat's claim and is still creating the record: try again shortly
    (a callback answers 503 with Retry-After; the outbox reschedules its item)."""

    def __init__(self, chat_id: str):
        super().__init__(f"the CRM record of chat {chat_id} is being created by an earlier request",
                         code="CREATE_IN_PROGRESS", retry_after=RETRY_AFTER_SECONDS)


@dataclass(frozen=True)
class Claim:
    """What claiming a chat found: our token (we create the record), or the record created already."""

    object: str
    token: str | None = None
    record_id: str | None = None


def stale_after(settings: Settings) -> timedelta:
    """How long a claim without a record stands. A create is at most a sign-in and the request, and both
    once more after an expired session, each bounded by the HTTP timeout: a claimant still silent after
    that is gone. Too long only delays the take-over after a crash; too short would create twice."""
    return timedelta(seconds=4 * settings.http_timeout_seconds)


def claim(engine: Engine, chat_id: str, obj: str, stale: timedelta) -> Claim:
    """Claim the chat's record, committed before the caller asks the CRM; raises CreateInProgress when
    another request holds a recent claim."""
    for _ in range(_ATTEMPTS):
        token, now = uuid.uuid4().hex, utcnow()
        with engine.begin() as conn:
            row = {"chat_id": chat_id, "object": obj, "record_id": None, "claimed_at": now, "claim": token}
            if insert_if_new(conn, created_records, row):  # the primary key decides, never a look first
                return Claim(obj, token=token)
            found = conn.execute(select(created_records.c.object, created_records.c.record_id,
                                        created_records.c.claimed_at)
                                 .where(created_records.c.chat_id == chat_id)).first()
            if found is None:
                continue  # released meanwhile: claim again
            if found.record_id is not None:
                return Claim(found.object, record_id=found.record_id)
            if now - found.claimed_at < stale or not _take_over(conn, chat_id, obj, token, now, now - stale):
                raise CreateInProgress(chat_id)
            return Claim(obj, token=token)
    raise CreateInProgress(chat_id)


def _take_over(conn: Connection, chat_id: str, obj: str, token: str, now: datetime, cutoff: datetime) -> bool:
    """Compare-and-set: the claim becomes ours only if it is still stale and still without a record, so
    of two requests taking over at the same moment one wins (the other's UPDATE then finds it fresh)."""
    statement = (created_records.update()
                 .where(created_records.c.chat_id == chat_id, created_records.c.record_id.is_(None),
                        created_records.c.claimed_at < cutoff)
                 .values(object=obj, claimed_at=now, claim=token))
    return conn.execute(statement).rowcount == 1


def record(engine: Engine, chat_id: str, obj: str, record_id: str) -> tuple[str, str]:
    """Write the created record's id on the claim; (object, id) of the record that stands: ours, or the
    one a request that took our claim over recorded first (every answer then pops the same record)."""
    with engine.begin() as conn:
        updated = conn.execute(created_records.update()
                               .where(created_records.c.chat_id == chat_id, created_records.c.record_id.is_(None))
                               .values(object=obj, record_id=record_id)).rowcount
        if updated:
            return obj, record_id
        found = conn.execute(select(created_records.c.object, created_records.c.record_id)
                             .where(created_records.c.chat_id == chat_id)).first()
    if found is None or found.record_id is None:
        return obj, record_id
    return found.object, found.record_id


def release(engine: Engine, chat_id: str, token: str) -> None:
    """Give the claim up (the CRM refused the record): a later chat.started of the chat may try again.
    Only our own claim, and only while it has no record."""
    with engine.begin() as conn:
        conn.execute(created_records.delete().where(created_records.c.chat_id == chat_id,
                                                    created_records.c.claim == token,
                                                    created_records.c.record_id.is_(None)))
