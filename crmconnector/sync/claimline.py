"""One claim at a time in a process, for every thread waiting to claim.

Each new outbox item wakes a thread, and each woken thread used to claim on its own: one claim
transaction (in the server, an item of the intake writer's batch) per item. Here the threads line up:
one claims for itself and for every thread already in line, in one transaction, and hands the others
their items; threads that arrive meanwhile wait for that claim and take what is left over, or claim
next. Under load one claim serves several items; an idle process claims exactly as before.

Items are only handed to threads that are waiting in line, so none waits on a busy thread while its
lease runs.
"""
from __future__ import annotations

import threading
from collections import deque
from typing import Callable, Generic, TypeVar

T = TypeVar("T")


class ClaimLine(Generic[T]):
    """The line of threads waiting to claim, and the items one claim took for the others."""

    def __init__(self) -> None:
        self._turn = threading.Condition()
        self._waiting = 0  # threads in `next` that have neither an item nor the claim
        self._claiming = False
        self._claims = 0  # claims started so far
        self._last_short = 0  # the latest claim that found fewer items than it was asked for
        self._handed: deque[T] = deque()

    def next(self, claim: Callable[[int], list[T]]) -> T | None:
        """An item for this thread: one handed over by another thread's claim, or the first of
        `claim(limit)`, called with the number of threads in line (this one included). None when there
        is nothing: this thread's claim found nothing, or a claim that started after this thread lined
        up found fewer items than it asked for (it saw every item due when this thread came)."""
        with self._turn:
            came_after = self._claims
            self._waiting += 1
            while self._claiming and not self._handed:
                self._turn.wait()
            self._waiting -= 1
            if self._handed:
                return self._handed.popleft()
            if self._last_short > came_after:
                return None
            self._claiming = True
            self._claims += 1
            number, limit = self._claims, self._waiting + 1
        items: list[T] | None = None
        try:
            items = claim(limit)
        finally:
            with self._turn:
                self._claiming = False
                if items is not None:  # a claim that failed saw nothing: the others try for themselves
                    self._handed.extend(items[1:])
                    if len(items) < limit:
                        self._last_short = number
                self._turn.notify_all()
        return items[0] if items else None
