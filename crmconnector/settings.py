"""Configuration: one immutable object built from the environment (and `.env`).

Nothing else in the package reads `os.environ`; the settings are passed in.
"""
from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

import phonenumbers
from dotenv import dotenv_values

DEFAULT_API_VERSION = "62.0"
ABANDONED_MODES = ("off", "all", "with_sms")
SECRETS_FILE = "secrets.json"


class SettingsError(ValueError):
    """The configuration cannot work; `problems` names every variable at fault."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///instance/crmconnector.db"
    crm: str = "local"
    host: str = "127.0.0.1"
    port: int = 8000
    callback_secrets: tuple[str, ...] = ()
    admin_token: str = ""
    default_region: str = "US"
    media_hosts: tuple[str, ...] | None = None
    media_max_bytes: int = 10 * 1024 * 1024
    abandoned_tickets: str = "with_sms"
    abandoned_interval_seconds: int = 60
    salesforce_login_url: str = "https://login.salesforce.com"
    salesforce_client_id: str = ""
    salesforce_client_secret: str = ""
    salesforce_username: str = ""
    salesforce_password: str = ""
    salesforce_security_token: str = ""
    salesforce_domain: str = ""
    salesforce_api_version: str = DEFAULT_API_VERSION
    instance_path: str = "instance"
    public_url: str = ""
    ca_bundle: str | None = None
    http_timeout_seconds: float = 30.0
    run_background: bool = True
    # Names of secrets this process generated (so the CLI can show them once).
    generated: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        dotenv_path: str | os.PathLike[str] | None = ".env",
        generate_secrets: bool = True,
    ) -> "Settings":
        """Read, validate and complete the configuration; raise SettingsError naming each problem."""
        env: dict[str, str] = {}
        if dotenv_path and Path(dotenv_path).is_file():
            env.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
        env.update(os.environ if environ is None else environ)
        problems: list[str] = []

        def integer(name: str, default: int, minimum: int = 0) -> int:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = int(raw)
            except ValueError:
                problems.append(f"{name} must be a whole number, not {raw!r}")
                return default
            if value < minimum:
                problems.append(f"{name} must be at least {minimum}")
            return value

        crm = env.get("CRMCONNECTOR_CRM", "local").strip().lower() or "local"
        if crm not in ("local", "salesforce"):
            problems.append(f"CRMCONNECTOR_CRM must be 'local' or 'salesforce', not {crm!r}")
        region = env.get("CRMCONNECTOR_DEFAULT_REGION", "US").strip().upper() or "US"
        if region not in phonenumbers.SUPPORTED_REGIONS:
            problems.append(f"CRMCONNECTOR_DEFAULT_REGION {region!r} is not a known region code (like US, GB, DE)")
        abandoned = env.get("CRMCONNECTOR_ABANDONED_TICKETS", "with_sms").strip().lower() or "with_sms"
        if abandoned not in ABANDONED_MODES:
            problems.append(f"CRMCONNECTOR_ABANDONED_TICKETS must be one of {', '.join(ABANDONED_MODES)}")
        hosts_raw = env.get("CRMCONNECTOR_MEDIA_HOSTS", "").strip()
        media_hosts = tuple(h.strip().lower() for h in hosts_raw.split(",") if h.strip()) or None

        settings = cls(
            database_url=env.get("CRMCONNECTOR_DATABASE_URL", "").strip() or cls.database_url,
            crm=crm,
            host=env.get("CRMCONNECTOR_HOST", "").strip() or cls.host,
            port=integer("CRMCONNECTOR_PORT", cls.port, 1),
            callback_secrets=_split(env.get("CRMCONNECTOR_CALLBACK_SECRETS", "")),
            admin_token=env.get("CRMCONNECTOR_ADMIN_TOKEN", "").strip(),
            default_region=region,
            media_hosts=media_hosts,
            media_max_bytes=integer("CRMCONNECTOR_MEDIA_MAX_BYTES", cls.media_max_bytes, 1),
            abandoned_tickets=abandoned,
            abandoned_interval_seconds=integer("CRMCONNECTOR_ABANDONED_INTERVAL_SECONDS", 60, 1),
            salesforce_login_url=(env.get("SALESFORCE_LOGIN_URL", "").strip() or cls.salesforce_login_url).rstrip("/"),
            salesforce_client_id=env.get("SALESFORCE_CLIENT_ID", "").strip(),
            salesforce_client_secret=env.get("SALESFORCE_CLIENT_SECRET", "").strip(),
            salesforce_username=env.get("SALESFORCE_USERNAME", "").strip(),
            salesforce_password=env.get("SALESFORCE_PASSWORD", ""),
            salesforce_security_token=env.get("SALESFORCE_SECURITY_TOKEN", "").strip(),
            salesforce_domain=env.get("SALESFORCE_DOMAIN", "").strip(),
            salesforce_api_version=env.get("SALESFORCE_API_VERSION", "").strip() or DEFAULT_API_VERSION,
            instance_path=env.get("CRMCONNECTOR_INSTANCE_PATH", "").strip() or cls.instance_path,
            public_url=env.get("CRMCONNECTOR_PUBLIC_URL", "").strip().rstrip("/"),
            ca_bundle=env.get("REQUESTS_CA_BUNDLE") or None,
        )
        if crm == "salesforce":
            problems.extend(settings.salesforce_problems())
        if problems:
            raise SettingsError(problems)
        if generate_secrets:
            settings = settings.with_generated_secrets()
        return settings

    def salesforce_problems(self) -> list[str]:
        """Which credentials are missing for either supported Salesforce login."""
        if self.salesforce_client_id or self.salesforce_client_secret:
            missing = [n for n, v in (("SALESFORCE_CLIENT_ID", self.salesforce_client_id),
                                      ("SALESFORCE_CLIENT_SECRET", self.salesforce_client_secret)) if not v]
        elif self.salesforce_username or self.salesforce_password:
            missing = [n for n, v in (("SALESFORCE_USERNAME", self.salesforce_username),
                                      ("SALESFORCE_PASSWORD", self.salesforce_password)) if not v]
        else:
            missing = ["SALESFORCE_CLIENT_ID", "SALESFORCE_CLIENT_SECRET"]
        if not missing:
            return []
        return [f"CRMCONNECTOR_CRM=salesforce needs {' and '.join(missing)} "
                "(client-credentials flow; or SALESFORCE_USERNAME and SALESFORCE_PASSWORD)"]

    def with_generated_secrets(self) -> "Settings":
        """Fill an unset callback secret or admin token from the instance folder, generating them once."""
        if self.callback_secrets and self.admin_token:
            return self
        path = Path(self.instance_path)
        path.mkdir(parents=True, exist_ok=True)
        store = path / SECRETS_FILE
        stored: dict[str, str] = json.loads(store.read_text()) if store.is_file() else {}
        generated = []
        for key in ("callback_secret", "admin_token"):
            if key not in stored:
                stored[key] = secrets.token_urlsafe(32)
                generated.append(key)
        if generated:
            fd = os.open(store, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                json.dump(stored, handle)
            os.chmod(store, 0o600)
        return replace(
            self,
            callback_secrets=self.callback_secrets or (stored["callback_secret"],),
            admin_token=self.admin_token or stored["admin_token"],
            generated=tuple(g for g in generated
                            if (g == "callback_secret" and not self.callback_secrets)
                            or (g == "admin_token" and not self.admin_token)),
        )

    @property
    def secrets_file(self) -> Path:
        return Path(self.instance_path) / SECRETS_FILE

    @property
    def base_url(self) -> str:
        """Where people reach this connector (for links in pops and sign-in links)."""
        return self.public_url or f"http://{self.host}:{self.port}"


def _split(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())
