"""Admin-editable settings kept in the database (screen pops, object order, opt-out field, tickets)."""
from __future__ import annotations

import threading
import time
import weakref
from typing import Any

from sqlalchemy import Connection, Engine, select

from crmconnector.screenpop import PopSettings
from crmconnector.settings import ABANDONED_MODES
from crmconnector.store import app_settings, reading, utcnow

POP_KEY = "screen_pop"
ABANDONED_KEY = "abandoned_tickets"
# Every chat.started reads the screen-pop settings, and the read cost more than the CRM match itself
# (a read transaction each). They are kept for a few seconds: a save here takes effect at once, a
# save on another instance within POP_SETTINGS_SECONDS.
POP_SETTINGS_SECONDS = 2.0
_pop_cache: "weakref.WeakKeyDictionary[Engine, tuple[float, PopSettings]]" = weakref.WeakKeyDictionary()
_pop_cache_lock = threading.Lock()
_pop_saves = 0  # a read that overlapped a save does not keep what it read


class InvalidSetting(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field, self.message = field, message


def _get(conn: Connection, key: str) -> Any:
    return conn.execute(select(app_settings.c.value).where(app_settings.c.key == key)).scalar()


def _put(conn: Connection, key: str, value: Any) -> None:
    if _get(conn, key) is None:
        conn.execute(app_settings.insert().values(key=key, value=value, updated_at=utcnow()))
    else:
        conn.execute(app_settings.update().where(app_settings.c.key == key).values(value=value, updated_at=utcnow()))


def pop_settings(engine: Engine) -> PopSettings:
    now = time.monotonic()
    with _pop_cache_lock:
        cached, saves = _pop_cache.get(engine), _pop_saves
    if cached is not None and now < cached[0]:
        return cached[1]
    with reading(engine) as conn:
        stored = _get(conn, POP_KEY)
    found = PopSettings.from_dict(stored) if stored else PopSettings()
    with _pop_cache_lock:
        if saves == _pop_saves:
            _pop_cache[engine] = (now + POP_SETTINGS_SECONDS, found)
    return found


def save_pop_settings(engine: Engine, changes: dict[str, Any]) -> PopSettings:
    """Apply changes after validating all of them; nothing is saved if any is invalid."""
    global _pop_saves
    current = pop_settings(engine).as_dict()
    unknown = set(changes) - set(current)
    if unknown:
        raise InvalidSetting(sorted(unknown)[0], f"unknown setting {sorted(unknown)[0]!r}")
    try:
        updated = PopSettings.from_dict({**current, **changes})
    except (TypeError, ValueError) as exc:
        raise InvalidSetting("screen_pop", str(exc)) from None
    problems = updated.problems()
    if problems:
        raise InvalidSetting(*problems[0])
    with engine.begin() as conn:
        _put(conn, POP_KEY, updated.as_dict())
    with _pop_cache_lock:
        _pop_saves += 1
        _pop_cache.pop(engine, None)
    return updated


USE_ENVIRONMENT = "environment"  # the admin page's choice that forgets a saved mode


def abandoned_mode(engine: Engine, default: str) -> str:
    """The mode in effect: the one saved on the admin page, else `default` (CRMCONNECTOR_ABANDONED_TICKETS)."""
    return saved_abandoned_mode(engine) or default


def saved_abandoned_mode(engine: Engine) -> str | None:
    """The mode saved on the admin page, or None while the environment's setting applies."""
    with reading(engine) as conn:
        return _get(conn, ABANDONED_KEY)


def choose_abandoned_mode(engine: Engine, choice: str, default: str) -> str:
    """Apply the admin page's choice and return the mode in effect.

    A mode is stored only when it differs from the one in effect, so saving the page for another
    setting leaves the environment in charge; USE_ENVIRONMENT forgets a saved mode.
    """
    if choice not in (*ABANDONED_MODES, USE_ENVIRONMENT):
        raise InvalidSetting("abandoned_tickets", f"must be one of {', '.join(ABANDONED_MODES)}")
    with engine.begin() as conn:
        saved = _get(conn, ABANDONED_KEY)
        if choice == USE_ENVIRONMENT:
            if saved is not None:
                conn.execute(app_settings.delete().where(app_settings.c.key == ABANDONED_KEY))
            return default
        if choice != (saved or default):
            _put(conn, ABANDONED_KEY, choice)
    return choice


def save_abandoned_mode(engine: Engine, mode: str) -> str:
    """Pin a mode, whatever the environment says."""
    if mode not in ABANDONED_MODES:
        raise InvalidSetting("abandoned_tickets", f"must be one of {', '.join(ABANDONED_MODES)}")
    with engine.begin() as conn:
        _put(conn, ABANDONED_KEY, mode)
    return mode
