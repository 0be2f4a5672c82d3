"""`crmconnector jobs` and `jobs run abandoned-tickets`, and the scheduler in the server process."""
from __future__ import annotations


import pytest
from click.testing import CliRunner
from sqlalchemy import select

from crmconnector import cli
from crmconnector.runtime import Runtime
from crmconnector.store import job_schedule
from crmconnector.sync import scheduler as job_scheduler
from crmconnector.sync.abandoned import JOB_NAME, run_abandoned_tickets
from tests.abandoned_support import FlakyCRM, MediaHost, post_call
from tests.waiting import wait_for


@pytest.fixture
def cli_env(settings, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env
    env = {"CRMCONNECTOR_DATABASE_URL": settings.database_url, "CRMCONNECTOR_CALLBACK_SECRETS": "s",
           "CRMCONNECTOR_ADMIN_TOKEN": "t", "CRMCONNECTOR_INSTANCE_PATH": str(tmp_path / "cli-instance"),
           "CRMCONNECTOR_ABANDONED_TICKETS": "with_sms", "CRMCONNECTOR_CRM": "local"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def _invoke(*args):
    return CliRunner().invoke(cli.main, list(args), catch_exceptions=False)


def test_jobs_run_creates_the_tickets_and_says_so(platform, crm, cli_env):
    post_call(platform, "c1")
    post_call(platform, "c2", "+14155550177", messages=[])
    result = _invoke("jobs", "run", "abandoned-tickets")
    assert result.exit_code == 0, result.stdout
    assert "abandoned-call tickets (mode with_sms): 1 created, 1 skipped, 0 rejected by the CRM" in result.stdout
    assert [c.fields["Subject"] for c in crm.query("Case", {"Origin": "Phone"})] == [
        "Abandoned call c1 from +1 415-555-0132"]
    again = _invoke("jobs", "run", "abandoned-tickets")
    assert "0 created" in again.stdout


def test_jobs_run_exits_1_when_the_crm_is_down(platform, runtime, cli_env, monkeypatch):
    post_call(platform)
    down = FlakyCRM(runtime.engine)
    down.down = True
    monkeypatch.setattr(cli, "open_runtime", lambda settings: Runtime(settings, crm=down))
    result = _invoke("jobs", "run", "abandoned-tickets")
    assert result.exit_code == 1
    assert "stopped early: CRM unavailable: SERVER_UNAVAILABLE: Service Unavailable; 1 call(s) wait" in result.stdout


def test_jobs_before_any_run(runtime, cli_env):
    result = _invoke("jobs")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "abandoned-tickets  (mode: with_sms; every 60 s while the server runs)",
        "  last run:  never",
        "  next run:  not scheduled (no server is running; `crmconnector serve` runs the job, "
        "`crmconnector jobs run abandoned-tickets` runs it now)",
        "  tickets created: 0; waiting: 0; skipped: 0; failed: 0",
    ]


def test_jobs_shows_the_last_run_and_failures_with_the_crms_error(platform, runtime, cli_env):
    runtime.crm = FlakyCRM(runtime.engine)
    runtime.crm.rejected_phones = {"+14155550177"}
    post_call(platform, "ok-call")
    post_call(platform, "bad-call", "+14155550177")
    run_abandoned_tickets(runtime, fetcher=MediaHost({}))
    lines = _invoke("jobs").stdout.splitlines()
    assert lines[1].startswith("  last run:  20") and lines[1].endswith("(ok): 1 created, 1 failed, 0 skipped")
    assert lines[3] == "  tickets created: 1; waiting: 0; skipped: 0; failed: 1"
    assert lines[4:] == ["  failures (the CRM's error):",
                         "    call bad-call: FIELD_CUSTOM_VALIDATION_EXCEPTION: SuppliedPhone: the number is "
                         "blocked by a validation rule"]


def test_the_scheduler_runs_the_job_on_its_interval_and_stops_with_the_runtime(platform, settings, crm,
                                                                               make_settings, cli_env):
    post_call(platform)
    server = Runtime(make_settings(abandoned_interval_seconds=45))
    scheduler = job_scheduler.start(server)
    job = scheduler.scheduler.get_job(JOB_NAME)
    assert job.trigger.interval.total_seconds() == 45
    with server.engine.connect() as conn:
        row = conn.execute(select(job_schedule)).mappings().one()
    assert row["interval_seconds"] == 45 and row["next_run_at"] == job.next_run_time
    assert "  next run:  " + row["next_run_at"].strftime("%Y-%m-%d %H:%M:%SZ") in _invoke("jobs").stdout

    scheduler.run_soon()
    wait_for(lambda: scheduler.runs >= 1, seconds=30)
    assert [c.fields["Subject"] for c in crm.query("Case", {"Origin": "Phone"})] == [
        "Abandoned call c-100 from +1 415-555-0132"]
    server.close()
    assert not scheduler.scheduler.running
    with crm.engine.connect() as conn:
        assert conn.execute(select(job_schedule.c.next_run_at)).scalar() is None
    assert "next run:  not scheduled" in _invoke("jobs").stdout


def test_the_server_starts_the_scheduler_in_the_background(settings, make_settings):
    server = Runtime(make_settings(abandoned_interval_seconds=3600))
    server.start_background()
    with server.engine.connect() as conn:
        assert conn.execute(select(job_schedule.c.interval_seconds)).scalar() == 3600
    server.close()


def test_jobs_retry_requeues_the_calls_the_crm_rejected(platform, runtime, crm, cli_env):
    runtime.crm = FlakyCRM(runtime.engine)
    runtime.crm.rejected_phones = {"+14155550132"}
    post_call(platform)
    assert run_abandoned_tickets(runtime, fetcher=MediaHost({})).rejected
    result = _invoke("jobs", "retry", "abandoned-tickets")
    assert result.stdout == "re-queued 1 failed call(s) for the next run\n"
    ran = _invoke("jobs", "run", "abandoned-tickets")  # the CLI's own CRM has no such validation rule
    assert ran.exit_code == 0 and "1 created" in ran.stdout
    assert len(crm.query("Case", {"Origin": "Phone"})) == 1
