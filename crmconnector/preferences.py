"""Admin-editable settings kept in the database (screen pops, object order, opt-out field, tickets)."""
from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, select

from crmconnector.screenpop import PopSettings
from crmconnector.settings import ABANDONED_MODES
from crmconnector.store import app_settings, reading, utcnow

POP_KEY = "screen_pop"
ABANDONED_KEY = "abandoned_tickets"


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
    with reading(engine) as conn:
        stored = _get(conn, POP_KEY)
    return PopSettings.from_dict(stored) if stored else PopSettings()


def save_pop_settings(engine: Engine, changes: dict[str, Any]) -> PopSettings:
    """Apply changes after validating all of them; nothing is saved if any is invalid."""
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
    return updated


def abandoned_mode(engine: Engine, default: str) -> str:
    with reading(engine) as conn:
        return _get(conn, ABANDONED_KEY) or default


def save_abandoned_mode(engine: Engine, mode: str) -> str:
    if mode not in ABANDONED_MODES:
        raise InvalidSetting("abandoned_tickets", f"must be one of {', '.join(ABANDONED_MODES)}")
    with engine.begin() as conn:
        _put(conn, ABANDONED_KEY, mode)
    return mode
