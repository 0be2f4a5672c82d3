"""Waiting in tests for another thread or process to get somewhere, with a deadline, never for ever."""
from __future__ import annotations

import time
from typing import Any, Callable


def wait_for(condition: Callable[[], Any], seconds: float = 10.0, interval: float = 0.002) -> None:
    """Return once `condition()` is true; fail the test if it is not within `seconds`."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"still not true after {seconds} s: {condition}"
        time.sleep(interval)
