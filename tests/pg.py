"""A throwaway PostgreSQL server for tests and benchmarks, from the Debian server binaries.

`PgServer.start()` runs initdb and pg_ctl in a temporary folder and listens on a free loopback port;
as root it runs them as the `postgres` system user (PostgreSQL refuses to run as root). Each test gets
its own database, copied from a template that already holds the migrated schema.
"""
from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

SERVER_SETTINGS = {
    # A test server: surviving a power cut is not the point, so no fsync; but a commit must survive the
    # server process being killed (the outage tests do that), so commits still write their WAL.
    "fsync": "off",
    "full_page_writes": "off",
    "max_connections": "400",
    "shared_buffers": "128MB",
    "listen_addresses": "'127.0.0.1'",
}


class PgUnavailable(RuntimeError):
    """No PostgreSQL server can be started here; the message says why."""


def server_bindir() -> Path | None:
    """The newest installed PostgreSQL server's bin folder, if any."""
    override = os.environ.get("CRMCONNECTOR_PG_BINDIR")  # a folder, or "none" to run without PostgreSQL
    if override:
        found_override = Path(override)
        return found_override if (found_override / "postgres").is_file() else None
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name),
                        reverse=True)
    for path in candidates:
        if (Path(path) / "postgres").is_file() and (Path(path) / "initdb").is_file():
            return Path(path)
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and (Path(found).parent / "initdb").is_file() else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PgServer:
    """One PostgreSQL cluster in a temporary folder; `stop()`/`start_again()` simulate an outage."""

    def __init__(self, bindir: Path, root: Path, port: int, run_as: str | None):
        self.bindir = bindir
        self.root = root
        self.data = root / "data"
        self.port = port
        self.run_as = run_as
        self._names = itertools.count(1)
        self.template: str | None = None

    @classmethod
    def start(cls) -> "PgServer":
        bindir = server_bindir()
        if bindir is None:
            raise PgUnavailable("no PostgreSQL server binaries (apt-get install postgresql)")
        run_as = None
        if os.geteuid() == 0:
            try:
                import pwd

                pwd.getpwnam("postgres")
            except KeyError:
                raise PgUnavailable("running as root and there is no 'postgres' user to run the server as") from None
            run_as = "postgres"
        root = Path(tempfile.mkdtemp(prefix="crmconnector-pg-"))
        if run_as:
            shutil.chown(root, run_as, run_as)
        server = cls(bindir, root, free_port(), run_as)
        server._run("initdb", "-D", str(server.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                    "--locale=C.UTF-8", "--no-sync")
        with open(server.data / "postgresql.conf", "a") as conf:
            conf.write("".join(f"{k} = {v}\n" for k, v in SERVER_SETTINGS.items()))
            conf.write(f"port = {server.port}\nunix_socket_directories = '{root}'\n")
        if run_as:
            shutil.chown(server.data / "postgresql.conf", run_as, run_as)
        server.start_again()
        return server

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bindir / tool), *args]
        if self.run_as:
            command = ["runuser", "-u", self.run_as, "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, cwd=self.root)
        if result.returncode != 0:
            raise PgUnavailable(f"{tool} failed: {result.stderr.strip() or result.stdout.strip()}")

    def start_again(self) -> None:
        """Start (or restart after `stop`) the server and wait until it accepts connections."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-w", "-t", "60", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`immediate` is a crash: no clean shutdown)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def destroy(self) -> None:
        try:
            self.stop("immediate")
        except PgUnavailable:
            pass
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def socket_url(self, database: str = "postgres") -> str:
        """The same database over the server's Unix socket, as a client on the same machine connects."""
        return f"postgresql://postgres@/{database}?host={self.root}&port={self.port}"

    def admin(self) -> psycopg.Connection:
        return psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres",
                               autocommit=True)

    def create_database(self, template: str | None = None) -> str:
        """A new empty database (or a copy of `template`); returns its name."""
        name = f"t{os.getpid()}_{next(self._names)}"
        with self.admin() as conn:
            suffix = f" TEMPLATE {template} STRATEGY FILE_COPY" if template else ""
            conn.execute(f"CREATE DATABASE {name}{suffix}")  # type: ignore[arg-type]
        return name

    def drop_database(self, name: str) -> None:
        with self.admin() as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")  # type: ignore[arg-type]

    def migrated_database(self) -> str:
        """A new database holding the current schema (copied from a template migrated once)."""
        if self.template is None:
            from crmconnector.store import make_engine, migrate

            template = self.create_database()
            engine = make_engine(self.url(template))
            try:
                migrate(engine)
            finally:
                engine.dispose()
            self.template = template
        return self.create_database(self.template)

    def wait_until_down(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
            except OSError:
                return
            time.sleep(0.05)
        raise TimeoutError("the PostgreSQL server did not stop")
