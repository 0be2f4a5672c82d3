"""Named leases in the `leases` table: one active runner across threads, processes and instances.

A lease is a row (name, holder, until). Taking it is one atomic statement: an UPDATE that only
succeeds when the lease expired or is already ours, or else an INSERT that the primary key lets
only one contender win. A holder that dies simply lets its lease expire; a holder that works for
long renews it between steps and stops when a renewal fails.
"""
from __future__ import annotations

import os
import socket
import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import Engine, and_, or_, select
from sqlalchemy.exc import IntegrityError, OperationalError

from crmconnector.store import leases, reading, utcnow


class LeaseLost(Exception):
    """Another holder took the lease (ours had expired): stop working on what it protects."""


def new_holder(label: str = "") -> str:
    """A holder id unique to this process and call: host, pid and a random part."""
    prefix = f"{label}:" if label else ""
    return f"{prefix}{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def acquire(engine: Engine, name: str, holder: str, ttl_seconds: float) -> bool:
    """Take (or extend) the lease for `ttl_seconds`; False while someone else holds it."""
    now = utcnow()
    until = now + timedelta(seconds=ttl_seconds)
    try:
        with engine.begin() as conn:
            taken = conn.execute(
                leases.update()
                .where(leases.c.name == name, or_(leases.c.until < now, leases.c.holder == holder))
                .values(holder=holder, until=until)
            ).rowcount
            if taken == 1:
                return True
            if conn.execute(select(leases.c.name).where(leases.c.name == name)).first() is not None:
                return False
            conn.execute(leases.insert().values(name=name, holder=holder, until=until))
        return True
    except IntegrityError:
        return False  # another contender inserted the row first


def renew(engine: Engine, name: str, holder: str, ttl_seconds: float) -> bool:
    """Extend our lease; False when it is no longer ours (it expired and someone took it)."""
    with engine.begin() as conn:
        return conn.execute(
            leases.update().where(leases.c.name == name, leases.c.holder == holder)
            .values(until=utcnow() + timedelta(seconds=ttl_seconds))
        ).rowcount == 1


def release(engine: Engine, name: str, holder: str) -> None:
    """Give the lease up at once (only if it is still ours)."""
    try:
        with engine.begin() as conn:
            conn.execute(leases.delete().where(and_(leases.c.name == name, leases.c.holder == holder)))
    except OperationalError:
        pass  # the lease expires by itself


def holder_of(engine: Engine, name: str) -> tuple[str, Any] | None:
    """(holder, until) of a lease that is still valid, else None."""
    with reading(engine) as conn:
        row = conn.execute(select(leases.c.holder, leases.c.until).where(leases.c.name == name)).first()
    if row is None or row.until < utcnow():
        return None
    return row.holder, row.until


class Lease:
    """A held lease: `renew()` between steps of long work, `release()` at the end."""

    def __init__(self, engine: Engine, name: str, ttl_seconds: float, holder: str | None = None):
        self.engine, self.name, self.ttl = engine, name, ttl_seconds
        self.holder = holder or new_holder(name)
        self.held = False

    def acquire(self) -> bool:
        self.held = acquire(self.engine, self.name, self.holder, self.ttl)
        return self.held

    def renew(self) -> None:
        """Extend the lease or raise LeaseLost."""
        if not renew(self.engine, self.name, self.holder, self.ttl):
            self.held = False
            raise LeaseLost(f"lease {self.name!r} was taken over by another runner")

    def release(self) -> None:
        if self.held:
            release(self.engine, self.name, self.holder)
            self.held = False

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.release()
