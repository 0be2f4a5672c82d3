"""Screen-pop settings are read once per few seconds: a save on this instance counts at once, a save
on another instance (another engine on the same database) within POP_SETTINGS_SECONDS."""
from __future__ import annotations

import pytest

from crmconnector import preferences
from crmconnector.store import make_engine


@pytest.fixture
def clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(preferences.time, "monotonic", lambda: now[0])
    return now


@pytest.mark.both_databases
def test_a_save_here_counts_at_once_and_one_elsewhere_within_the_cache_time(runtime, database_url, clock):
    other_instance = make_engine(database_url)
    try:
        assert preferences.pop_settings(runtime.engine).single == "record"
        preferences.save_pop_settings(runtime.engine, {"single": "none"})
        assert preferences.pop_settings(runtime.engine).single == "none"

        preferences.save_pop_settings(other_instance, {"single": "record"})
        clock[0] += preferences.POP_SETTINGS_SECONDS / 2
        assert preferences.pop_settings(runtime.engine).single == "none"  # still this instance's copy
        clock[0] += preferences.POP_SETTINGS_SECONDS
        assert preferences.pop_settings(runtime.engine).single == "record"
    finally:
        other_instance.dispose()
