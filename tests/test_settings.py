"""Settings: the environment and .env, validation that names what is wrong, secrets generated once."""
from __future__ import annotations

import json
import os
import stat
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from crmconnector.settings import DEFAULT_API_VERSION, Settings, SettingsError


def load(tmp_path: Path, dotenv: str | None = None, **environ: str) -> Settings:
    env_file = tmp_path / ".env"
    if dotenv is not None:
        env_file.write_text(dotenv)
    environ.setdefault("CRMCONNECTOR_INSTANCE_PATH", str(tmp_path / "instance"))
    return Settings.from_env(environ, dotenv_path=env_file)


def problems(tmp_path: Path, **environ: str) -> list[str]:
    with pytest.raises(SettingsError) as info:
        load(tmp_path, **environ)
    return info.value.problems


def test_defaults_follow_the_contract(tmp_path):
    s = load(tmp_path)
    assert (s.database_url, s.crm, s.host, s.port) == ("sqlite:///instance/crmconnector.db", "local", "127.0.0.1",
                                                        8000)
    assert (s.default_region, s.media_hosts, s.media_max_bytes) == ("US", None, 10485760)
    assert (s.abandoned_tickets, s.abandoned_interval_seconds) == ("with_sms", 60)
    assert s.salesforce_login_url == "https://login.salesforce.com"
    assert s.salesforce_api_version == DEFAULT_API_VERSION
    assert s.base_url == "http://127.0.0.1:8000"


def test_the_default_api_version_is_a_current_one():
    assert float(DEFAULT_API_VERSION) >= 65.0  # Winter '26, the oldest release of the past year


def test_every_variable_is_read(tmp_path):
    bundle = tmp_path / "corp.pem"
    bundle.write_text("")
    s = load(tmp_path,
             CRMCONNECTOR_DATABASE_URL="postgresql://u:p@db/crm", CRMCONNECTOR_HOST="0.0.0.0",
             CRMCONNECTOR_PORT="9000", CRMCONNECTOR_CALLBACK_SECRETS="new, old ,", CRMCONNECTOR_ADMIN_TOKEN="tok",
             CRMCONNECTOR_DEFAULT_REGION="gb", CRMCONNECTOR_MEDIA_HOSTS="Media.Example.com, cdn.example.net",
             CRMCONNECTOR_MEDIA_MAX_BYTES="2048", CRMCONNECTOR_ABANDONED_TICKETS="ALL",
             CRMCONNECTOR_ABANDONED_INTERVAL_SECONDS="300", CRMCONNECTOR_CRM="salesforce",
             SALESFORCE_LOGIN_URL="https://acme.my.salesforce.com/", SALESFORCE_CLIENT_ID="cid",
             SALESFORCE_CLIENT_SECRET="csecret", SALESFORCE_API_VERSION="61.0",
             REQUESTS_CA_BUNDLE=str(bundle))
    assert s.database_url == "postgresql://u:p@db/crm"
    assert (s.host, s.port, s.callback_secrets, s.admin_token) == ("0.0.0.0", 9000, ("new", "old"), "tok")
    assert (s.default_region, s.media_hosts, s.media_max_bytes) == ("GB", ("media.example.com", "cdn.example.net"),
                                                                     2048)
    assert (s.abandoned_tickets, s.abandoned_interval_seconds) == ("all", 300)
    assert (s.crm, s.salesforce_login_url, s.salesforce_client_id, s.salesforce_client_secret) == (
        "salesforce", "https://acme.my.salesforce.com", "cid", "csecret")
    assert (s.salesforce_api_version, s.ca_bundle) == ("61.0", str(bundle))
    assert s.generated == ()
    assert not (tmp_path / "instance" / "secrets.json").exists()


def test_media_hosts_may_be_names_and_addresses(tmp_path):
    s = load(tmp_path, CRMCONNECTOR_MEDIA_HOSTS="media.example.com., 10.0.0.5, [fd00::5], fd00::6, bücher.example")
    assert s.media_hosts == ("media.example.com.", "10.0.0.5", "[fd00::5]", "fd00::6", "bücher.example")


def test_dotenv_is_read_and_the_environment_wins(tmp_path):
    s = load(tmp_path, "CRMCONNECTOR_PORT=8123\nCRMCONNECTOR_DEFAULT_REGION=DE\n# a comment\n"
                       "CRMCONNECTOR_ADMIN_TOKEN='from dotenv'\n",
             CRMCONNECTOR_DEFAULT_REGION="FR")
    assert (s.port, s.default_region, s.admin_token) == (8123, "FR", "from dotenv")


def test_a_dotenv_that_is_not_utf8_is_named_not_a_traceback(tmp_path):
    (tmp_path / ".env").write_bytes(b"CRMCONNECTOR_ADMIN_TOKEN=M\xfcller\n")
    [message] = problems(tmp_path)
    assert message.startswith(f"{tmp_path / '.env'} is not UTF-8 text")


def test_salesforce_without_credentials_names_the_missing_variables(tmp_path):
    found = problems(tmp_path, CRMCONNECTOR_CRM="salesforce")
    assert len(found) == 1
    assert "SALESFORCE_CLIENT_ID" in found[0] and "SALESFORCE_CLIENT_SECRET" in found[0]


@pytest.mark.parametrize(("given", "message"), [
    ({"SALESFORCE_CLIENT_ID": "x"}, "with the client-credentials flow needs SALESFORCE_CLIENT_SECRET"),
    ({"SALESFORCE_CLIENT_SECRET": "x"}, "with the client-credentials flow needs SALESFORCE_CLIENT_ID"),
    ({"SALESFORCE_USERNAME": "a@b.c"}, "with username-password login needs SALESFORCE_PASSWORD"),
    ({"SALESFORCE_PASSWORD": "pw"}, "with username-password login needs SALESFORCE_USERNAME"),
])
def test_half_given_credentials_name_the_other_half(tmp_path, given, message):
    assert problems(tmp_path, CRMCONNECTOR_CRM="salesforce", **given) == [f"CRMCONNECTOR_CRM=salesforce {message}"]


@pytest.mark.parametrize("credentials", [
    {"SALESFORCE_CLIENT_ID": "id", "SALESFORCE_CLIENT_SECRET": "secret"},
    {"SALESFORCE_USERNAME": "a@b.c", "SALESFORCE_PASSWORD": "pw"},
])
def test_either_login_is_enough_for_salesforce(tmp_path, credentials):
    assert load(tmp_path, CRMCONNECTOR_CRM="salesforce", **credentials).crm == "salesforce"


@pytest.mark.parametrize(("name", "value", "says"), [
    ("CRMCONNECTOR_DEFAULT_REGION", "XX", "CRMCONNECTOR_DEFAULT_REGION 'XX' is not a known region"),
    ("CRMCONNECTOR_PORT", "eighty", "CRMCONNECTOR_PORT must be a whole number, not 'eighty'"),
    ("CRMCONNECTOR_PORT", "0", "CRMCONNECTOR_PORT must be between 1 and 65535"),
    ("CRMCONNECTOR_PORT", "70000", "CRMCONNECTOR_PORT must be between 1 and 65535"),
    ("CRMCONNECTOR_MEDIA_MAX_BYTES", "10MB", "CRMCONNECTOR_MEDIA_MAX_BYTES must be a whole number"),
    ("CRMCONNECTOR_ABANDONED_INTERVAL_SECONDS", "0", "CRMCONNECTOR_ABANDONED_INTERVAL_SECONDS must be at least 1"),
    ("CRMCONNECTOR_ABANDONED_TICKETS", "sometimes", "CRMCONNECTOR_ABANDONED_TICKETS must be one of off, all, with_sms"),
    ("CRMCONNECTOR_CRM", "hubspot", "CRMCONNECTOR_CRM must be 'local' or 'salesforce'"),
    ("CRMCONNECTOR_MEDIA_HOSTS", "media.example.com, https://cdn.example.com/",
     "CRMCONNECTOR_MEDIA_HOSTS names hosts (like media.example.com: no scheme, port or path), not 'https://cdn"),
    ("CRMCONNECTOR_MEDIA_HOSTS", "cdn.example.com:8443", "CRMCONNECTOR_MEDIA_HOSTS names hosts"),
    ("REQUESTS_CA_BUNDLE", "/etc/ssl/no-such-bundle.pem",
     "REQUESTS_CA_BUNDLE '/etc/ssl/no-such-bundle.pem' does not exist"),
])
def test_invalid_values_are_named(tmp_path, name, value, says):
    [message] = problems(tmp_path, **{name: value})
    assert message.startswith(says)


def test_every_problem_is_reported_at_once(tmp_path):
    found = problems(tmp_path, CRMCONNECTOR_PORT="x", CRMCONNECTOR_DEFAULT_REGION="ZZ", CRMCONNECTOR_CRM="salesforce")
    assert [p.split()[0] for p in found] == ["CRMCONNECTOR_DEFAULT_REGION", "CRMCONNECTOR_PORT",
                                             "CRMCONNECTOR_CRM=salesforce"]
    with pytest.raises(SettingsError) as info:
        load(tmp_path, CRMCONNECTOR_PORT="x", CRMCONNECTOR_DEFAULT_REGION="ZZ")
    assert "CRMCONNECTOR_PORT" in str(info.value) and "CRMCONNECTOR_DEFAULT_REGION" in str(info.value)


def test_secrets_are_generated_once_owner_only_and_reused(tmp_path):
    first = load(tmp_path)
    store = tmp_path / "instance" / "secrets.json"
    assert set(first.generated) == {"callback_secret", "admin_token"}
    assert len(first.admin_token) >= 32 and len(first.callback_secrets[0]) >= 32
    assert first.admin_token != first.callback_secrets[0]
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
    assert json.loads(store.read_text()) == {"callback_secret": first.callback_secrets[0],
                                             "admin_token": first.admin_token}
    second = load(tmp_path)
    assert second.generated == ()
    assert (second.admin_token, second.callback_secrets) == (first.admin_token, first.callback_secrets)
    assert [p.name for p in store.parent.iterdir()] == ["secrets.json"]


def test_configured_secrets_win_over_stored_ones(tmp_path):
    stored = load(tmp_path)
    s = load(tmp_path, CRMCONNECTOR_ADMIN_TOKEN="mine")
    assert (s.admin_token, s.callback_secrets, s.generated) == ("mine", stored.callback_secrets, ())


def test_only_the_secret_that_is_not_configured_is_shown_as_generated(tmp_path):
    s = load(tmp_path, CRMCONNECTOR_CALLBACK_SECRETS="given")
    assert (s.callback_secrets, s.generated) == (("given",), ("admin_token",))


def test_an_incomplete_secrets_file_is_completed_and_kept(tmp_path):
    store = tmp_path / "instance" / "secrets.json"
    store.parent.mkdir()
    store.write_text(json.dumps({"admin_token": "kept"}))
    s = load(tmp_path)
    assert s.admin_token == "kept" and s.generated == ("callback_secret",)
    assert json.loads(store.read_text())["callback_secret"] == s.callback_secrets[0]
    assert stat.S_IMODE(store.stat().st_mode) == 0o600


def test_a_corrupt_secrets_file_is_named(tmp_path):
    store = tmp_path / "instance" / "secrets.json"
    store.parent.mkdir()
    store.write_text("{not json")
    [message] = problems(tmp_path)
    assert str(store) in message and "delete it" in message


def _start(instance: str) -> tuple[str, str, tuple[str, ...]]:
    s = Settings.from_env({"CRMCONNECTOR_INSTANCE_PATH": instance}, dotenv_path=None)
    return s.admin_token, s.callback_secrets[0], s.generated


def test_workers_starting_together_share_one_set_of_secrets(tmp_path):
    instance = str(tmp_path / "instance")
    with ProcessPoolExecutor(4) as pool:
        results = list(pool.map(_start, [instance] * 8))
    assert len({(token, secret) for token, secret, _ in results}) == 1
    assert sum(1 for *_, generated in results if generated) == 1
    assert os.listdir(instance) == ["secrets.json"]


SALESFORCE = {"CRMCONNECTOR_CRM": "salesforce", "SALESFORCE_CLIENT_ID": "id", "SALESFORCE_CLIENT_SECRET": "secret"}


@pytest.mark.parametrize("url", ["notaurl", "connector.example.com", "ftp://connector.example.com",
                                 "https://", "http://connector.example.com:http", "https://connector.example.com/?x=1"])
def test_a_public_url_that_is_no_http_address_is_refused(tmp_path, url):
    [message] = problems(tmp_path, CRMCONNECTOR_PUBLIC_URL=url)
    assert message.startswith("CRMCONNECTOR_PUBLIC_URL") and repr(url) in message


@pytest.mark.parametrize("url", ["http://connector.internal:8080", "https://connector.example.com/sms/"])
def test_http_and_https_public_urls_with_a_path_are_accepted(tmp_path, url):
    assert load(tmp_path, CRMCONNECTOR_PUBLIC_URL=url).base_url == url.rstrip("/")


@pytest.mark.parametrize(("host", "base_url"), [
    ("127.0.0.1", "http://127.0.0.1:8000"), ("connector.internal", "http://connector.internal:8000"),
    ("::1", "http://[::1]:8000"), ("::", "http://[::]:8000"),
])
def test_without_a_public_url_links_use_host_and_port_as_a_valid_url(tmp_path, host, base_url):
    assert load(tmp_path, CRMCONNECTOR_HOST=host).base_url == base_url


@pytest.mark.parametrize(("url", "says"), [
    ("yourcompany.my.salesforce.com", "must be an http:// or https:// address with a host"),
    ("login.salesforce.com/", "must be an http:// or https:// address with a host"),
    ("http://yourcompany.my.salesforce.com", "must be an https:// address (http:// only for localhost)"),
])
def test_a_salesforce_login_url_must_be_https(tmp_path, url, says):
    [message] = problems(tmp_path, SALESFORCE_LOGIN_URL=url, **SALESFORCE)
    assert message.startswith(f"SALESFORCE_LOGIN_URL {says}") and "https://yourcompany.my.salesforce.com" in message


@pytest.mark.parametrize("url", ["https://acme.my.salesforce.com", "http://localhost:8443", "http://127.0.0.1:9"])
def test_https_login_urls_and_plain_http_to_this_machine_are_accepted(tmp_path, url):
    assert load(tmp_path, SALESFORCE_LOGIN_URL=url, **SALESFORCE).salesforce_login_url == url


def test_the_login_url_is_only_checked_when_salesforce_is_the_crm(tmp_path):
    assert load(tmp_path, SALESFORCE_LOGIN_URL="yourcompany.my.salesforce.com").crm == "local"
