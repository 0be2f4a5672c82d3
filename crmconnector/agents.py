"""Agents, their one-time console sign-in tokens, and the key that keeps their console sessions valid.

A session cookie is signed but lives in the browser, so it cannot be taken back; it is honoured only
while it carries the agent's current `session_key`. Signing out, `agents sign-out` and removing the
agent clear that key, which revokes every session of the agent at once.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import Connection, Engine, select

from crmconnector import console
from crmconnector.settings import Settings
from crmconnector.store import agent_tokens, agents, reading, utcnow

TOKEN_LIFETIME = timedelta(hours=24)
# The console event that ends the agent's open live streams (it belongs to no chat).
SIGNED_OUT = "signed_out"
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
    """A one-use link that signs the agent in to the console (the token is stored only hashed).

    It replaces the agent's earlier unused links: a link handed out again may be because the last one
    went astray. Sessions already signed in are kept (`end_sessions` ends them)."""
    token = secrets.token_urlsafe(32)
    with engine.begin() as conn:
        conn.execute(agent_tokens.delete().where(agent_tokens.c.agent_id == agent.id,
                                                 agent_tokens.c.used_at.is_(None)))
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


def find_agent(engine: Engine, email: str) -> Agent | None:
    with reading(engine) as conn:
        row = conn.execute(select(agents).where(agents.c.email == email.strip().lower())).mappings().first()
    return Agent(row["id"], row["email"], row["name"]) if row else None


def open_session(engine: Engine, agent: Agent) -> str:
    """The key a new session cookie of the agent carries: the current one, or a fresh one after a sign-out."""
    with engine.begin() as conn:
        conn.execute(agents.update().where(agents.c.id == agent.id, agents.c.session_key.is_(None))
                     .values(session_key=secrets.token_urlsafe(32)))
        return str(conn.execute(select(agents.c.session_key).where(agents.c.id == agent.id)).scalar_one())


def session_agent(engine: Engine, agent_id: int, key: str) -> Agent | None:
    """The agent a session cookie belongs to, unless that session was revoked (one read, by primary key)."""
    with reading(engine) as conn:
        row = conn.execute(select(agents).where(agents.c.id == agent_id)).mappings().first()
    if row is None or not row["session_key"] or not hmac.compare_digest(row["session_key"], key):
        return None
    return Agent(row["id"], row["email"], row["name"])


def end_sessions(engine: Engine, agent: Agent, *, void_links: bool = False) -> None:
    """Revoke every console session of the agent (every browser) and end their open live streams;
    with `void_links`, their unused sign-in links too."""
    with engine.begin() as conn:
        conn.execute(agents.update().where(agents.c.id == agent.id).values(session_key=None))
        if void_links:
            conn.execute(agent_tokens.delete().where(agent_tokens.c.agent_id == agent.id,
                                                     agent_tokens.c.used_at.is_(None)))
        _end_streams(conn, agent)


def remove_agent(engine: Engine, email: str) -> Agent | None:
    """Remove the agent: their sessions and sign-in links stop working at once. Their chats keep
    their history (chats name agents by email). None when there was no such agent."""
    agent = find_agent(engine, email)
    if agent is None:
        return None
    with engine.begin() as conn:
        conn.execute(agent_tokens.delete().where(agent_tokens.c.agent_id == agent.id))
        conn.execute(agents.delete().where(agents.c.id == agent.id))
        _end_streams(conn, agent)
    return agent


def _end_streams(conn: Connection, agent: Agent) -> None:
    console.publish(conn, agent.email, "", SIGNED_OUT, {})
