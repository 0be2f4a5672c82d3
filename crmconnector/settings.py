"""Configuration: one immutable object built from the environment (and `.env`).

Nothing else in the package reads `os.environ`; the settings are passed in.
"""
from __future__ import annotations

import json
import os
import re
import secrets
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping
from urllib.parse import urlsplit

import phonenumbers
from dotenv import dotenv_values

# Summer '26. Salesforce ships three versions a year and every org has had this one since mid-2026;
# raise it as releases go by (tests and the fake org take it from here).
DEFAULT_API_VERSION = "67.0"
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
        problems: list[str] = []
        env = _read_dotenv(dotenv_path, problems) if dotenv_path else {}
        env.update(os.environ if environ is None else environ)

        def integer(name: str, default: int, minimum: int = 0, maximum: int | None = None) -> int:
            raw = env.get(name, "").strip()
            if not raw:
                return default
            try:
                value = int(raw)
            except ValueError:
                problems.append(f"{name} must be a whole number, not {raw!r}")
                return default
            if value < minimum or (maximum is not None and value > maximum):
                bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
                problems.append(f"{name} must be {bounds}, not {value}")
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
        problems.extend(f"CRMCONNECTOR_MEDIA_HOSTS names hosts (like media.example.com: no scheme, port or path), "
                        f"not {h!r}" for h in media_hosts or () if not _is_host(h))

        database_url = env.get("CRMCONNECTOR_DATABASE_URL", "").strip() or cls.database_url
        problems.extend(_database_url_problems(database_url))
        public_url = env.get("CRMCONNECTOR_PUBLIC_URL", "").strip()
        if public_url:
            problems.extend(_url_problems("CRMCONNECTOR_PUBLIC_URL", public_url, "https://connector.example.com"))
        login_url = env.get("SALESFORCE_LOGIN_URL", "").strip() or cls.salesforce_login_url
        ca_bundle = env.get("REQUESTS_CA_BUNDLE", "").strip() or None
        if ca_bundle and not os.path.exists(ca_bundle):  # else every HTTPS request fails, far from its cause
            problems.append(f"REQUESTS_CA_BUNDLE {ca_bundle!r} does not exist (a file or folder of CA certificates)")
        if crm == "salesforce":
            problems.extend(_url_problems("SALESFORCE_LOGIN_URL", login_url, "https://yourcompany.my.salesforce.com",
                                          https_only=True))
        settings = cls(
            database_url=database_url,
            crm=crm,
            host=env.get("CRMCONNECTOR_HOST", "").strip() or cls.host,
            port=integer("CRMCONNECTOR_PORT", cls.port, 1, 65535),
            callback_secrets=_split(env.get("CRMCONNECTOR_CALLBACK_SECRETS", "")),
            admin_token=env.get("CRMCONNECTOR_ADMIN_TOKEN", "").strip(),
            default_region=region,
            media_hosts=media_hosts,
            media_max_bytes=integer("CRMCONNECTOR_MEDIA_MAX_BYTES", cls.media_max_bytes, 1),
            abandoned_tickets=abandoned,
            abandoned_interval_seconds=integer("CRMCONNECTOR_ABANDONED_INTERVAL_SECONDS", 60, 1),
            salesforce_login_url=login_url.rstrip("/"),
            salesforce_client_id=env.get("SALESFORCE_CLIENT_ID", "").strip(),
            salesforce_client_secret=env.get("SALESFORCE_CLIENT_SECRET", "").strip(),
            salesforce_username=env.get("SALESFORCE_USERNAME", "").strip(),
            salesforce_password=env.get("SALESFORCE_PASSWORD", ""),
            salesforce_security_token=env.get("SALESFORCE_SECURITY_TOKEN", "").strip(),
            salesforce_domain=env.get("SALESFORCE_DOMAIN", "").strip(),
            salesforce_api_version=env.get("SALESFORCE_API_VERSION", "").strip() or DEFAULT_API_VERSION,
            instance_path=env.get("CRMCONNECTOR_INSTANCE_PATH", "").strip() or cls.instance_path,
            public_url=public_url.rstrip("/"),
            ca_bundle=ca_bundle,
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
        client = (("SALESFORCE_CLIENT_ID", self.salesforce_client_id),
                  ("SALESFORCE_CLIENT_SECRET", self.salesforce_client_secret))
        password = (("SALESFORCE_USERNAME", self.salesforce_username),
                    ("SALESFORCE_PASSWORD", self.salesforce_password))
        if self.salesforce_client_id or self.salesforce_client_secret:
            flow, missing = "the client-credentials flow", [n for n, v in client if not v]
        elif self.salesforce_username or self.salesforce_password:
            flow, missing = "username-password login", [n for n, v in password if not v]
        else:
            return ["CRMCONNECTOR_CRM=salesforce needs SALESFORCE_CLIENT_ID and SALESFORCE_CLIENT_SECRET "
                    "(client-credentials flow), or SALESFORCE_USERNAME and SALESFORCE_PASSWORD"]
        return [f"CRMCONNECTOR_CRM=salesforce with {flow} needs {' and '.join(missing)}"] if missing else []

    def with_generated_secrets(self) -> "Settings":
        """Fill an unset callback secret or admin token from the instance folder, generating them once."""
        if self.callback_secrets and self.admin_token:
            return self
        try:
            stored, generated = _stored_secrets(self.secrets_file)
        except OSError as exc:  # a folder that cannot be created or written: a setting, not a crash
            raise SettingsError([f"CRMCONNECTOR_INSTANCE_PATH {self.instance_path!r}: cannot keep the generated "
                                 f"secrets in {self.secrets_file} ({exc.strerror or exc}); name a folder this "
                                 "user may create and write, or set CRMCONNECTOR_ADMIN_TOKEN and "
                                 "CRMCONNECTOR_CALLBACK_SECRETS"]) from None
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
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address is bracketed in a URL
        return self.public_url or f"http://{host}:{self.port}"


def _read_dotenv(path: str | os.PathLike[str], problems: list[str]) -> dict[str, str]:
    """The `.env` file's variables, if there is one; one that cannot be read is a problem to name,
    not a traceback."""
    if not Path(path).is_file():
        return {}
    try:
        return {k: v for k, v in dotenv_values(path).items() if v is not None}
    except UnicodeDecodeError as exc:
        problems.append(f"{path} is not UTF-8 text (byte {exc.start}); save it as UTF-8")
    except OSError as exc:
        problems.append(f"{path} cannot be read: {exc.strerror or exc}")
    return {}


def _stored_secrets(store: Path) -> tuple[dict[str, str], list[str]]:
    """The instance's secrets, creating any that are missing; returns them and the names made now.

    The file is written to a temporary name and linked into place, so when several workers start
    at once exactly one set of secrets wins and every worker uses it.
    """
    store.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    for _ in range(5):
        stored = _read_secrets(store)
        missing = [k for k in ("callback_secret", "admin_token") if not stored.get(k)]
        if not missing:
            return stored, []
        complete = {**stored, **{k: secrets.token_urlsafe(32) for k in missing}}
        temp = store.with_name(f".{store.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(complete, handle)
        try:
            if stored:
                os.replace(temp, store)  # completing an older file: nobody else creates it
            else:
                os.link(temp, store)  # fails if another process created it first
        except FileExistsError:
            continue  # another process won the race: use its secrets
        finally:
            if temp.exists():
                temp.unlink()
        return complete, missing
    raise SettingsError([f"could not create {store}"])  # pragma: no cover - endless races only


def _read_secrets(store: Path) -> dict[str, str]:
    if not store.is_file():
        return {}
    try:
        data = json.loads(store.read_text())
    except (OSError, ValueError) as exc:
        raise SettingsError([f"{store} is unreadable ({exc}); fix it or delete it to generate new secrets"]) from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise SettingsError([f"{store} is not a JSON object of secrets; fix it or delete it to generate new ones"])
    return data


def _database_url_problems(url: str) -> list[str]:
    """A URL SQLAlchemy cannot parse, or whose database it does not know, would otherwise fail deep
    inside the first command that opens it."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    from crmconnector.store import engine_url

    try:
        dialect = engine_url(make_url(url)).get_dialect()
    except (ArgumentError, NoSuchModuleError, ValueError) as exc:
        return [f"CRMCONNECTOR_DATABASE_URL {mask_url(url)!r} is not a database URL SQLAlchemy can open "
                f"(like sqlite:///instance/crmconnector.db or postgresql://user:password@host/db): "
                f"{str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"]
    try:
        dialect.import_dbapi()
    except ImportError as exc:
        return [f"CRMCONNECTOR_DATABASE_URL {mask_url(url)!r} needs the Python driver {exc.name or exc}, "
                "which is not installed"]
    return []


_LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def _url_problems(name: str, url: str, example: str, *, https_only: bool = False) -> list[str]:
    """An address without a scheme or host would fail only later, far from its cause: as sign-in links
    that lead nowhere, or as `MissingSchema` from the first request. Credentials sent to a login URL
    travel over HTTPS, except to this machine (a test org, a tunnel)."""
    parts = urlsplit(url)
    try:
        parts.port  # raises ValueError for a port that is no number up to 65535
    except ValueError:
        return [f"{name} {url!r} has an invalid port"]
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return [f"{name} must be an http:// or https:// address with a host, like {example}, not {url!r}"]
    if parts.query or parts.fragment:
        return [f"{name} must not have a query or fragment (?…, #…), not {url!r}"]
    if https_only and parts.scheme != "https" and parts.hostname not in _LOOPBACK_HOSTS:
        return [f"{name} must be an https:// address (http:// only for localhost), like {example}, not {url!r}"]
    return []


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, even when SQLAlchemy cannot parse it."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return re.sub(r"(://[^/@:]*:)[^@/]*@", r"\1***@", url)


def _is_host(name: str) -> bool:
    """A host name or IP address, as media URLs are compared with: a URL or `host:port` in the media host
    list would match no download, and that host's media would be refused far from the cause."""
    import ipaddress

    try:
        ipaddress.ip_address(name.strip("[]"))
        return True
    except ValueError:
        return re.search(r"[\s/\\:@?#\[\]]", name) is None


def _split(raw: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in raw.split(",") if part.strip())
