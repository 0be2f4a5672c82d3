"""What `crmconnector serve` says on start: where everything is, and secrets only when it made them."""
from __future__ import annotations

from click.testing import CliRunner

from crmconnector.cli import _print_welcome
from crmconnector.settings import Settings


def welcome(settings: Settings, workers: int = 1) -> str:
    import click

    @click.command()
    def show() -> None:
        _print_welcome(settings, workers)

    return CliRunner().invoke(show).output


def test_configured_secrets_are_never_printed(workdir):
    settings = Settings.from_env({"CRMCONNECTOR_ADMIN_TOKEN": "configured-token",
                                  "CRMCONNECTOR_CALLBACK_SECRETS": "configured-secret,older"}, dotenv_path=None)
    text = welcome(settings)
    assert "configured-token" not in text and "configured-secret" not in text
    assert "Admin token: from CRMCONNECTOR_ADMIN_TOKEN" in text
    assert "Callback secret: from CRMCONNECTOR_CALLBACK_SECRETS" in text
    assert not (workdir / "instance").exists()


def test_generated_secrets_are_shown_on_the_start_that_made_them_only(workdir):
    first = Settings.from_env({}, dotenv_path=None)
    shown = welcome(first)
    where = workdir / "instance" / "secrets.json"
    assert f"Admin token (generated now, shown once; kept owner-only in {where}): {first.admin_token}" in shown
    assert f"(generated now, shown once; kept owner-only in {where}): {first.callback_secrets[0]}" in shown
    again = welcome(Settings.from_env({}, dotenv_path=None))
    assert first.admin_token not in again and first.callback_secrets[0] not in again
    assert f"Admin token: in {where} (owner-only)" in again


def test_one_secret_configured_and_one_generated(workdir):
    settings = Settings.from_env({"CRMCONNECTOR_ADMIN_TOKEN": "configured-token"}, dotenv_path=None)
    text = welcome(settings)
    assert "Admin token: from CRMCONNECTOR_ADMIN_TOKEN" in text and "configured-token" not in text
    assert f": {settings.callback_secrets[0]}" in text


def test_links_use_the_public_url(workdir):
    settings = Settings.from_env({"CRMCONNECTOR_PUBLIC_URL": "https://connector.example.com/",
                                  "CRMCONNECTOR_DATABASE_URL": "postgresql://crm:hunter2@db/crm"}, dotenv_path=None)
    text = welcome(settings)
    assert "Agent console:   https://connector.example.com/agent" in text
    assert "Callback URL:    https://connector.example.com/callbacks/events" in text
    assert "hunter2" not in text and "postgresql://crm:***@db/crm" in text


def test_the_first_line_says_how_many_workers_serve(workdir):
    settings = Settings.from_env({}, dotenv_path=None)
    assert "database: sqlite:///instance/crmconnector.db, 1 worker)\n" in welcome(settings)
    assert "database: sqlite:///instance/crmconnector.db, 2 workers)\n" in welcome(settings, 2)


def test_a_port_option_outside_1_to_65535_is_a_usage_error(workdir):
    from crmconnector.cli import main

    for port in ("70000", "0", "-5"):
        result = CliRunner().invoke(main, ["serve", "--port", port])
        assert result.exit_code == 2, (port, result.output)
        assert "Invalid value for '--port'" in result.stderr and "1<=x<=65535" in result.stderr
