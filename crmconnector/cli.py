"""The `crmconnector` command: serve, check, import, agents, jobs, outbox."""
from __future__ import annotations

import logging
import signal
import sys
from contextlib import contextmanager
from typing import Any, Iterator

import click

from crmconnector.settings import Settings, SettingsError


def load_settings(**overrides: Any) -> Settings:
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        click.echo(f"crmconnector: {exc}", err=True)
        sys.exit(2)
    if overrides:
        from dataclasses import replace

        settings = replace(settings, **{k: v for k, v in overrides.items() if v is not None})
    context = click.get_current_context(silent=True)
    if context is not None:
        context.meta[_SETTINGS] = settings  # for naming the database if a command cannot reach it
    return settings


_SETTINGS = "crmconnector.settings"


def open_runtime(settings: Settings) -> Any:
    """A Runtime whose schema is current. Migrated here first, so that an unreachable database fails the
    command at once (`Main` reports it) instead of the Runtime waiting for it as the server does."""
    from crmconnector.runtime import Runtime
    from crmconnector.store import make_engine, migrate

    engine = make_engine(settings.database_url)
    try:
        migrate(engine)
    finally:
        engine.dispose()
    return Runtime(settings, migrate_schema=False)


class Main(click.Group):
    """The command group; a database error in any command is one line on stderr, not a traceback:
    exit 1 (2 is for settings that cannot work, which `load_settings` reports)."""

    def invoke(self, ctx: click.Context) -> Any:
        from sqlalchemy.exc import DBAPIError

        from crmconnector.outage import is_unreachable, reason
        from crmconnector.settings import mask_url

        try:
            return super().invoke(ctx)
        except DBAPIError as exc:
            settings = ctx.meta.get(_SETTINGS)
            where = f" at {mask_url(settings.database_url)}" if settings else ""
            problem = "cannot reach the database" if is_unreachable(exc) else "the database refused the command"
            logging.getLogger(__name__).debug("database error", exc_info=exc)  # the traceback with -v
            click.echo(f"crmconnector: {problem}{where} (CRMCONNECTOR_DATABASE_URL): {reason(exc)}", err=True)
            sys.exit(1)


@contextmanager
def connector(settings: Settings | None = None) -> Iterator[Any]:
    """A Runtime for one command (no background work), closed when the command is done."""
    runtime = open_runtime(settings or load_settings())
    try:
        yield runtime
    finally:
        runtime.close()


@click.group(cls=Main)
@click.option("-v", "--verbose", is_flag=True, help="Log debug details.")
def main(verbose: bool) -> None:
    """Connects an SMS contact-center platform to a Salesforce-style CRM."""
    from crmconnector.logs import configure

    configure(logging.DEBUG if verbose else logging.INFO)


class WorkerCount(click.ParamType):
    """A number of worker processes, at least 1, or `auto` (None: `auto_workers` decides)."""

    name = "N|auto"

    def get_metavar(self, *args: Any, **kwargs: Any) -> str:
        return "N|auto"  # as it is typed, where click would write it in capitals

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int | None:
        if value is None or isinstance(value, int) and value >= 1:
            return value
        if str(value).strip().lower() == "auto":
            return None
        try:
            count = int(value)
        except ValueError:
            count = 0
        if count < 1:
            self.fail(f"{value!r} is neither a whole number of at least 1 nor auto", param, ctx)
        return count


AUTO_WORKERS_AT_MOST = 4


def auto_workers(database_url: str) -> int:
    """One worker per CPU core this process may use (one Python process computes on one core at a time),
    at most AUTO_WORKERS_AT_MOST: each worker's pool may hold 32 PostgreSQL connections, where a server
    allows 100 by default, and SQLite's writers take turns on one lock anyway. One for a SQLite database
    that is not a plain file (in memory, or a `file:` URI), which each process may have to itself."""
    import os

    from sqlalchemy.engine import make_url

    from crmconnector.store import sqlite_file

    if make_url(database_url).get_backend_name() == "sqlite" and sqlite_file(database_url) is None:
        return 1
    return min(max(1, len(os.sched_getaffinity(0))), AUTO_WORKERS_AT_MOST)


@main.command(short_help="Run the connector: callbacks, consoles, admin pages, outbox.")
@click.option("--host", default=None, help="Listen address (CRMCONNECTOR_HOST).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Listen port (CRMCONNECTOR_PORT).")
# Each open agent console holds a thread for its live stream, so the default leaves room for about a
# hundred agents per process besides the callbacks.
@click.option("--threads", type=click.IntRange(min=1), default=128, show_default=True,
              help="Request threads per worker process.")
@click.option("--workers", type=WorkerCount(), default="auto", show_default=True,
              help="Worker processes, each with its share of the outbox. auto: one per CPU core, at most "
                   f"{AUTO_WORKERS_AT_MOST}.")
def serve(host: str | None, port: int | None, threads: int, workers: int | None) -> None:
    """Run the connector: callbacks, agent console, admin pages, outbox worker and scheduler."""
    settings = load_settings(host=host, port=port)
    workers = workers or auto_workers(settings.database_url)
    with shared_metrics(workers):
        _serve(settings, workers, threads)


# crmconnector.metrics.SHARED_FOLDER: that module must not be imported before the folder is set.
_METRICS_FOLDER = "PROMETHEUS_MULTIPROC_DIR"


@contextmanager
def shared_metrics(workers: int) -> Iterator[None]:
    """Several workers count in one shared folder, so that /metrics, which a scrape finds in one of them,
    reports them all. Set before the metrics are first imported (here, by the server), so the workers
    inherit it; removed when serving ends. A folder set by the operator is used as it is."""
    import os
    import shutil
    import tempfile

    if workers < 2 or os.environ.get(_METRICS_FOLDER):
        yield
        return
    folder = tempfile.mkdtemp(prefix="crmconnector-metrics-")
    os.environ[_METRICS_FOLDER] = folder
    try:
        yield
    finally:
        del os.environ[_METRICS_FOLDER]
        shutil.rmtree(folder, ignore_errors=True)


def _serve(settings: Settings, workers: int, threads: int) -> None:
    from webapp import wsgi

    # SIGTERM (service managers, containers) stops as cleanly as Ctrl-C, even before the server is up
    # (then the server takes the signals over: workers finish their requests and release their work).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        address = wsgi.listen_address(settings.host, settings.port)
    except OSError as exc:
        click.echo(f"crmconnector: cannot listen on {settings.host}:{settings.port}: {exc.strerror} "
                   "(set CRMCONNECTOR_HOST / CRMCONNECTOR_PORT, or --host / --port)", err=True)
        sys.exit(1)
    wsgi.serve(settings, address, workers, threads, on_ready=lambda: _print_welcome(settings, workers),
               verbose=logging.getLogger().getEffectiveLevel() <= logging.DEBUG)


def _print_welcome(settings: Settings, workers: int) -> None:
    base = settings.base_url
    click.echo(f"crmconnector is listening on {base} (CRM: {settings.crm}, database: {_safe_url(settings)}, "
               f"{workers} worker{'s' if workers > 1 else ''})")
    click.echo(f"  Agent console:   {base}/agent   (sign-in links: crmconnector agents add EMAIL)")
    click.echo(f"  Admin pages:     {base}/admin   (sign in with the admin token)")
    click.echo(f"  Callback URL:    {base}/callbacks/events")
    click.echo(f"  API description: {base}/openapi.json")
    where = settings.secrets_file.resolve()
    for key, label, variable, value in (
            ("admin_token", "Admin token", "CRMCONNECTOR_ADMIN_TOKEN", settings.admin_token),
            ("callback_secret", "Callback secret", "CRMCONNECTOR_CALLBACK_SECRETS",
             settings.callback_secrets[0] if settings.callback_secrets else "")):
        if key in settings.generated:
            click.echo(f"  {label} (generated now, shown once; kept owner-only in {where}): {value}")
        elif _stored_secret(settings, key) == value:
            click.echo(f"  {label}: in {where} (owner-only)")
        else:
            click.echo(f"  {label}: from {variable}")


def _stored_secret(settings: Settings, key: str) -> str | None:
    import json

    try:
        return json.loads(settings.secrets_file.read_text()).get(key)
    except (OSError, ValueError, AttributeError):
        return None


def _safe_url(settings: Settings) -> str:
    from crmconnector.settings import mask_url

    return mask_url(settings.database_url)


@main.command(short_help="Verify CRM credentials and access; exit 1 on a problem.")
def check() -> None:
    """Verify CRM credentials and object/field access; exit 1 on any problem."""
    settings = load_settings()
    from crmconnector.crm import make_backend
    from crmconnector.crm.errors import CRMError
    from crmconnector.store import make_engine, migrate

    from crmconnector.preferences import pop_settings

    engine = make_engine(settings.database_url)
    migrate(engine)
    crm = make_backend(settings, engine)
    try:
        lines = crm.check(pop_settings(engine).opt_out_field)
    except CRMError as exc:
        click.echo(f"FAIL  CRM connection: {exc}")
        sys.exit(1)
    for line in lines:
        click.echo(f"{'ok  ' if line.ok else 'FAIL'}  {line.what}" + (f": {line.detail}" if line.detail else ""))
    failed = sum(not line.ok for line in lines)
    click.echo(f"{len(lines) - failed} ok, {failed} failed")
    sys.exit(1 if failed else 0)


@main.command(name="import", short_help="Load records into the local CRM from a CSV file.")
@click.argument("object_name")
@click.argument("csv_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--batch-size", type=int, default=5000, show_default=True,
              help="Records written per transaction.")
def import_csv(object_name: str, csv_file: str, batch_size: int) -> None:
    """Load records into the local CRM from a CSV whose header is field API names.

    OBJECT_NAME is a local CRM object: Account, Contact, Lead, Case, Task or ContentVersion (phone
    fields are indexed for matching as they load)."""
    from crmconnector.crm.importer import import_file

    with connector() as runtime:
        report = import_file(runtime.crm, object_name, csv_file, batch_size=batch_size)
    if report.fatal:
        where = f"{csv_file}, line {report.problems[0].line}: " if report.problems[0].line else ""
        click.echo(f"crmconnector: nothing imported: {where}{report.fatal}", err=True)
        sys.exit(1)
    shown = 200
    for problem in report.problems[:shown]:
        click.echo(f"{csv_file}, line {problem.line}: {problem.reason}", err=True)
    if len(report.problems) > shown:
        click.echo(f"... and {len(report.problems) - shown} more bad rows", err=True)
    click.echo(f"imported {report.imported} {object_name} records"
               + (f"; {len(report.problems)} bad rows skipped (listed above)" if report.problems else ""))
    # Non-zero when rows were skipped, so scripts notice; the good rows are kept either way.
    sys.exit(1 if report.problems else 0)


@main.group()
def agents() -> None:
    """Agents of the console."""


@agents.command(name="add")
@click.argument("email")
@click.option("--name", default=None, help="The agent's display name.")
def agents_add(email: str, name: str | None) -> None:
    """Add (or update) an agent and print their console sign-in link."""
    from crmconnector.agents import InvalidAgent, add_agent, sign_in_link

    with connector() as runtime:
        try:
            agent = add_agent(runtime.engine, email, name)
        except InvalidAgent as exc:
            click.echo(f"crmconnector: {exc}", err=True)
            sys.exit(2)
        link = sign_in_link(runtime.engine, runtime.settings, agent)
    click.echo(f"Agent {agent.email}" + (f" ({agent.name})" if agent.name else ""))
    click.echo(f"Sign-in link (one use, valid 24 hours; earlier unused links no longer work): {link}")


@agents.command(name="sign-out", short_help="Sign the agent out everywhere and void their unused links.")
@click.argument("email")
def agents_sign_out(email: str) -> None:
    """Sign the agent out of every browser and void their unused sign-in links (a lost laptop, a
    leaked link); `agents add` gives them a new link."""
    from crmconnector.agents import end_sessions, find_agent

    with connector() as runtime:
        agent = find_agent(runtime.engine, email)
        if agent is not None:
            end_sessions(runtime.engine, agent, void_links=True)
    if agent is None:
        click.echo(f"crmconnector: no agent {email.strip().lower()}", err=True)
        sys.exit(1)
    click.echo(f"Agent {agent.email} is signed out everywhere; their unused sign-in links no longer work")


@agents.command(name="remove", short_help="Remove the agent; their sessions and links stop working.")
@click.argument("email")
def agents_remove(email: str) -> None:
    """Remove the agent: their console sessions and sign-in links stop working at once."""
    from crmconnector.agents import remove_agent

    with connector() as runtime:
        agent = remove_agent(runtime.engine, email)
    if agent is None:
        click.echo(f"crmconnector: no agent {email.strip().lower()}", err=True)
        sys.exit(1)
    click.echo(f"Agent {agent.email} removed and signed out everywhere")


@main.group(invoke_without_command=True, short_help="Scheduled jobs: last and next runs; `jobs run NAME`.")
@click.pass_context
def jobs(ctx: click.Context) -> None:
    """Scheduled jobs: their last and next runs (`jobs run NAME` runs one now, `jobs retry NAME`
    re-queues what the CRM rejected)."""
    if ctx.invoked_subcommand is None:
        from crmconnector.sync.jobs_report import print_jobs

        with connector() as runtime:
            print_jobs(runtime, click.echo)


@jobs.command(name="run")
@click.argument("name", type=click.Choice(["abandoned-tickets"]))
def jobs_run(name: str) -> None:
    """Run a scheduled job once, now."""
    from crmconnector.sync.abandoned import run_abandoned_tickets

    with connector() as runtime:
        result = run_abandoned_tickets(runtime)
    click.echo(result.summary())
    sys.exit(1 if result.failed else 0)


@jobs.command(name="retry")
@click.argument("name", type=click.Choice(["abandoned-tickets"]))
def jobs_retry(name: str) -> None:
    """Give the calls the CRM rejected another try in the job's next run."""
    from crmconnector.sync.abandoned import retry_failed_calls

    with connector() as runtime:
        count = retry_failed_calls(runtime.engine)
    click.echo(f"re-queued {count} failed call(s) for the next run")


@main.group(invoke_without_command=True, short_help="Pending and failed CRM writes; `outbox retry`.")
@click.pass_context
def outbox(ctx: click.Context) -> None:
    """Outbox counts: pending and failed CRM writes (`outbox retry` re-queues failed ones)."""
    if ctx.invoked_subcommand is None:
        from crmconnector.sync.worker import outbox_counts

        with connector() as runtime:
            counts = outbox_counts(runtime.engine)
        click.echo(f"pending: {counts['pending']}  failed: {counts['failed']}  done: {counts['done']}")


@outbox.command(name="retry")
def outbox_retry() -> None:
    """Re-queue every failed outbox item."""
    from crmconnector.sync.worker import retry_failed

    with connector() as runtime:
        count = retry_failed(runtime.engine)
    click.echo(f"re-queued {count} failed item(s)")


if __name__ == "__main__":  # pragma: no cover
    main()
