"""Agents and their one-time console sign-in tokens."""
from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Engine, select

from crmconnector.settings import Settings
from crmconnector.store import agent_tokens, agents, reading, utcnow

TOKEN_LIFETIME = timedelta(hours=24)
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class InvalidAgent(ValueError):
    pass


@dataclass(frozen=True)
class Agent:
    id: int
    email: str
    name: str | None


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def add_agent(engine: Engine, email: str, name: str | None = None) -> Agent:
    """Create the agent, or update their name; emails are compared case-insensitively."""
    email = email.strip().lower()
    if not _EMAIL.match(email) or len(email) > 320:
        raise InvalidAgent(f"not an email address: {email!r}")
    with engine.begin() as conn:
        row = conn.execute(select(agents).where(agents.c.email == email)).mappings().first()
        if row is None:
            inserted = conn.execute(agents.insert().values(email=email, name=name, created_at=utcnow()))
            agent_id = int(inserted.inserted_primary_key[0])  # type: ignore[index]
        else:
            agent_id = row["id"]
            if name is not None:
                conn.execute(agents.update().where(agents.c.id == agent_id).values(name=name))
            name = name if name is not None else row["name"]
    return Agent(agent_id, email, name)


def sign_in_link(engine: Engine, settings: Settings, agent: Agent) -> str:
    """A one-use link that signs the agent in to the console (the token is stored only hashed)."""
    token = secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(agent_tokens.insert().values(token_hash=token_hash(token), agent_id=agent.id,
                                                  expires_at=utcnow() + TOKEN_LIFETIME))
    return f"{settings.base_url}/agent/sign-in?token={token}"


def redeem(engine: Engine, token: str) -> Agent | None:
    """The agent a valid, unused, unexpired token belongs to; the token is spent either way."""
    digest = token_hash(token)
    with engine.begin() as conn:
        row = conn.execute(select(agent_tokens).where(agent_tokens.c.token_hash == digest)).mappings().first()
        if row is None or row["used_at"] is not None or row["expires_at"] < utcnow():
            return None
        spent = conn.execute(agent_tokens.update().where(agent_tokens.c.token_hash == digest,
                                                         agent_tokens.c.used_at.is_(None)).values(used_at=utcnow()))
        if spent.rowcount != 1:
            return None
        agent = conn.execute(select(agents).where(agents.c.id == row["agent_id"])).mappings().one()
    return Agent(agent["id"], agent["email"], agent["name"])


def get_agent(engine: Engine, agent_id: int) -> Agent | None:
    with reading(engine) as conn:
        row = conn.execute(select(agents).where(agents.c.id == agent_id)).mappings().first()
    return Agent(row["id"], row["email"], row["name"]) if row else None
