"""`serve --workers`: a number, or auto (the default): one worker per CPU core, at most four."""
from __future__ import annotations

import os
from typing import Any

import pytest
from click.testing import CliRunner

from crmconnector.cli import main
from webapp import wsgi


@pytest.fixture
def started(workdir, monkeypatch) -> list[int]:
    """The worker counts `serve` would start granian with (granian itself is not started)."""
    counts: list[int] = []

    def serve(settings: Any, address: str, workers: int, threads: int, **_: Any) -> None:
        counts.append(workers)
    monkeypatch.setattr(wsgi, "serve", serve)
    monkeypatch.setattr(wsgi, "listen_address", lambda host, port: "127.0.0.1")
    return counts


POSTGRES = "postgresql://crmconnector:secret@db.internal/crmconnector"


@pytest.mark.parametrize("arguments", [[], ["--workers", "auto"], ["--workers", "AUTO"]])
def test_auto_starts_one_worker_per_usable_core_on_postgresql(started, arguments):
    result = CliRunner().invoke(main, ["serve", *arguments], env={"CRMCONNECTOR_DATABASE_URL": POSTGRES})
    assert result.exit_code == 0, result.output
    assert started == [len(os.sched_getaffinity(0))]


def test_auto_follows_the_cores_this_process_may_use_up_to_four(started, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2})
    CliRunner().invoke(main, ["serve"], env={"CRMCONNECTOR_DATABASE_URL": POSTGRES + "?sslmode=require"})
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(32)))
    CliRunner().invoke(main, ["serve"], env={"CRMCONNECTOR_DATABASE_URL": "postgresql+psycopg://u@h/db"})
    assert started == [3, 4]


@pytest.mark.parametrize("url", ["", "sqlite:///instance/other.db"])
def test_auto_starts_one_worker_per_core_on_a_sqlite_file_up_to_four(started, monkeypatch, url):
    env = {"CRMCONNECTOR_DATABASE_URL": url}
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    CliRunner().invoke(main, ["serve"], env=env)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)))
    result = CliRunner().invoke(main, ["serve"], env=env)
    assert result.exit_code == 0, result.output
    assert started == [2, 4]


def test_auto_starts_one_worker_for_a_sqlite_database_in_memory(started, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    CliRunner().invoke(main, ["serve"], env={"CRMCONNECTOR_DATABASE_URL": "sqlite://"})
    CliRunner().invoke(main, ["serve"], env={"CRMCONNECTOR_DATABASE_URL": "sqlite:///:memory:"})
    assert started == [1, 1]


def test_a_number_is_taken_as_it_is(started):
    CliRunner().invoke(main, ["serve", "--workers", "3"], env={"CRMCONNECTOR_DATABASE_URL": POSTGRES})
    CliRunner().invoke(main, ["serve", "--workers", "2"])
    assert started == [3, 2]


@pytest.mark.parametrize("value", ["0", "-1", "two", "1.5"])
def test_anything_else_is_refused_naming_the_choices(started, value):
    result = CliRunner().invoke(main, ["serve", "--workers", value])
    assert result.exit_code == 2
    assert f"'{value}' is neither a whole number of at least 1 nor auto" in result.stderr
    assert started == []


def test_help_names_the_default():
    result = CliRunner().invoke(main, ["serve", "--help"])
    assert "--workers N|auto" in result.output and "[default: auto]" in result.output
