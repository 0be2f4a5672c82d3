"""A command that cannot reach its database, or is given a database URL that cannot work, says so in one
line naming the setting (password masked): exit 1 for an unreachable database, 2 for an invalid setting."""
from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from crmconnector.cli import main

UNREACHABLE = "postgresql://connector:s3cretpw@127.0.0.1:1/crm"  # nothing listens on port 1: refused at once


@pytest.mark.parametrize("command", [
    ["check"], ["agents", "add", "tom@example.com"], ["jobs"], ["jobs", "run", "abandoned-tickets"],
    ["jobs", "retry", "abandoned-tickets"], ["outbox"], ["outbox", "retry"], ["import", "Contact", "c.csv"]])
def test_an_unreachable_database_is_one_clear_line_and_exit_1(workdir: Path, command: list[str]) -> None:
    (workdir / "c.csv").write_text("LastName\nDoe\n")
    result = CliRunner().invoke(main, command, env={"CRMCONNECTOR_DATABASE_URL": UNREACHABLE})
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [
        "crmconnector: cannot reach the database at postgresql://connector:***@127.0.0.1:1/crm "
        "(CRMCONNECTOR_DATABASE_URL): OperationalError: connection failed: connection to server at "
        '"127.0.0.1", port 1 failed: Connection refused']
    assert "s3cretpw" not in result.output + result.stderr


def test_an_unreachable_sqlite_database_is_named_too(workdir: Path) -> None:
    (workdir / "state.db").mkdir()  # a folder where the database file should be
    result = CliRunner().invoke(main, ["outbox"], env={"CRMCONNECTOR_DATABASE_URL": "sqlite:///state.db"})
    assert result.exit_code == 1
    assert result.stderr.startswith("crmconnector: cannot reach the database at sqlite:///state.db")
    assert "unable to open database file" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.parametrize("command", [["serve"], ["check"], ["outbox"], ["agents", "add", "tom@example.com"]])
@pytest.mark.parametrize("url, problem", [
    ("notaurl", "CRMCONNECTOR_DATABASE_URL 'notaurl' is not a database URL SQLAlchemy can open"),
    ("oracle9://u:s3cretpw@h/db", "CRMCONNECTOR_DATABASE_URL 'oracle9://u:***@h/db' is not a database URL"),
    ("mysql://u:s3cretpw@h/db", "CRMCONNECTOR_DATABASE_URL 'mysql://u:***@h/db' needs the Python driver MySQLdb"),
])
def test_an_invalid_database_url_is_a_setting_error_exit_2(workdir: Path, command: list[str], url: str,
                                                            problem: str) -> None:
    result = CliRunner().invoke(main, command, env={"CRMCONNECTOR_DATABASE_URL": url})
    assert result.exit_code == 2
    assert problem in result.stderr
    assert "Traceback" not in result.output + result.stderr and "s3cretpw" not in result.stderr
    assert not (workdir / "instance").exists()  # refused before anything was created


@pytest.mark.parametrize("command", [["outbox"], ["agents", "add", "tom@example.com"]])
@pytest.mark.parametrize("url, folder, problem", [
    ("sqlite:///taken/instance/state.db", "taken/instance", "Not a directory"),  # a file stands where a folder goes
    ("sqlite:////proc/x/state.db", "/proc/x", "No such file or directory"),
])
def test_a_database_folder_that_cannot_be_created_is_one_clear_line_and_exit_1(
        workdir: Path, command: list[str], url: str, folder: str, problem: str) -> None:
    (workdir / "taken").write_text("")
    result = CliRunner().invoke(main, command, env={"CRMCONNECTOR_DATABASE_URL": url})
    assert result.exit_code == 1, result.output
    assert result.stderr.splitlines() == [
        f"crmconnector: cannot reach the database at {url} (CRMCONNECTOR_DATABASE_URL): "
        f"OperationalError: cannot create the folder {folder} for the database file: {problem}"]
