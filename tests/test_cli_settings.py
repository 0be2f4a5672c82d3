"""The command line refuses a configuration that cannot work, naming what is wrong, before doing anything."""
from __future__ import annotations

import pytest
from click.testing import CliRunner

from crmconnector.cli import main


@pytest.mark.parametrize("command", [["serve"], ["check"], ["outbox"], ["import", "Contact", "x.csv"]])
def test_salesforce_without_credentials_exits_naming_the_variables(workdir, command):
    (workdir / "x.csv").write_text("LastName\nDoe\n")
    result = CliRunner().invoke(main, command, env={"CRMCONNECTOR_CRM": "salesforce"})
    assert result.exit_code == 2
    assert "SALESFORCE_CLIENT_ID" in result.stderr and "SALESFORCE_CLIENT_SECRET" in result.stderr
    assert not (workdir / "instance").exists()  # nothing started, nothing created


def test_dotenv_in_the_working_directory_is_read(workdir):
    (workdir / ".env").write_text("CRMCONNECTOR_CRM=salesforce\nSALESFORCE_USERNAME=admin@example.com\n")
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 2
    assert "with username-password login needs SALESFORCE_PASSWORD\n" in result.stderr


def test_invalid_region_and_port_are_named(workdir):
    result = CliRunner().invoke(main, ["serve"], env={"CRMCONNECTOR_DEFAULT_REGION": "Mars",
                                                      "CRMCONNECTOR_PORT": "http"})
    assert result.exit_code == 2
    assert "CRMCONNECTOR_DEFAULT_REGION 'MARS' is not a known region code" in result.stderr
    assert "CRMCONNECTOR_PORT must be a whole number, not 'http'" in result.stderr
    assert "Traceback" not in result.output + result.stderr


def test_a_public_url_without_a_scheme_is_refused_before_a_link_is_made(workdir):
    result = CliRunner().invoke(main, ["agents", "add", "tom@example.com"], env={"CRMCONNECTOR_PUBLIC_URL": "notaurl"})
    assert result.exit_code == 2
    assert "CRMCONNECTOR_PUBLIC_URL must be an http:// or https:// address with a host" in result.stderr
    assert "sign-in" not in result.output and not (workdir / "instance").exists()


def test_a_salesforce_login_url_without_a_scheme_is_refused_before_check_signs_in(workdir):
    result = CliRunner().invoke(main, ["check"], env={
        "CRMCONNECTOR_CRM": "salesforce", "SALESFORCE_LOGIN_URL": "yourcompany.my.salesforce.com",
        "SALESFORCE_CLIENT_ID": "id", "SALESFORCE_CLIENT_SECRET": "secret"})
    assert result.exit_code == 2
    assert "SALESFORCE_LOGIN_URL must be an http:// or https:// address with a host" in result.stderr
    assert "MissingSchema" not in result.output + result.stderr


def test_the_command_list_describes_each_command_without_cutting_it_short():
    from click.testing import CliRunner

    from crmconnector.cli import main

    listing = CliRunner().invoke(main, ["--help"]).output.split("Commands:")[1]
    lines = [line.strip() for line in listing.strip().splitlines()]
    assert [line.split()[0] for line in lines] == ["agents", "check", "import", "jobs", "outbox", "serve"]
    assert not [line for line in lines if line.endswith("...")]
    for group in ("agents", "jobs", "outbox"):
        listing = CliRunner().invoke(main, [group, "--help"]).output.split("Commands:")[1]
        assert not [line for line in listing.strip().splitlines() if line.endswith("...")], group
    import_help = CliRunner().invoke(main, ["import", "--help"]).output
    assert "Contact" in import_help and "Records written per transaction" in import_help


def test_an_instance_folder_that_cannot_be_created_is_named_not_a_traceback(workdir):
    (workdir / "afile").write_text("")  # a file where the instance folder's parent should be
    result = CliRunner().invoke(main, ["outbox"], env={"CRMCONNECTOR_INSTANCE_PATH": "afile/instance"})
    assert result.exit_code == 2
    assert "CRMCONNECTOR_INSTANCE_PATH" in result.stderr and "afile/instance" in result.stderr
    assert isinstance(result.exception, SystemExit)  # a clear message, not a traceback


def test_a_ca_bundle_that_does_not_exist_is_named_before_check_connects(workdir):
    result = CliRunner().invoke(main, ["check"], env={
        "CRMCONNECTOR_CRM": "salesforce", "SALESFORCE_LOGIN_URL": "https://acme.my.salesforce.com",
        "SALESFORCE_CLIENT_ID": "id", "SALESFORCE_CLIENT_SECRET": "secret", "REQUESTS_CA_BUNDLE": "corp-ca.pem"})
    assert result.exit_code == 2
    assert "REQUESTS_CA_BUNDLE 'corp-ca.pem' does not exist" in result.stderr
    assert isinstance(result.exception, SystemExit)  # a clear message, not a traceback
