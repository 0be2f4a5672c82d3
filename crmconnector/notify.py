"""Wake-ups for live listeners (agents' streams) when new console events are committed."""
from __future__ import annotations

import threading


class Wakeup:
    """In-process wake-up: listeners wait, writers notify. Listeners always re-read the database,
    so a missed wake-up only delays an update until the listener's next timeout."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._generation = 0

    def notify(self) -> None:
        with self._condition:
            self._generation += 1
            self._condition.notify_all()

    def wait(self, timeout: float) -> bool:
        """Block until the next notify (True) or the timeout (False)."""
        with self._condition:
            seen = self._generation
            return self._condition.wait_for(lambda: self._generation != seen, timeout)

    def close(self) -> None:
        self.notify()


class WorkSignal:
    """Wakes one idle outbox thread per notify (not all of them): one enqueued item needs one thread.

    Notifies made while every thread is busy are kept as permits, so no item waits for the next poll."""

    def __init__(self) -> None:
        self._permits = threading.Semaphore(0)

    def notify(self) -> None:
        self._permits.release()

    def wait(self, timeout: float) -> bool:
        return self._permits.acquire(timeout=timeout)

    def absorb(self, count: int) -> None:
        """Drop up to `count` kept notifies: a thread that took several new items at once served them."""
        for _ in range(count):
            if not self._permits.acquire(blocking=False):
                return
