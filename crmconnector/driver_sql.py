"""The callbacks' hottest statements, run on the database driver's own cursor.

SQLAlchemy's execution layer costs 25-40 µs per statement (execution context, events, result
wrapping); the driver runs the same SQL in 2-5 µs. A callback writes four to six rows, all inside the
one write transaction that every writer queues for, so here a statement is compiled once per dialect
and set of parameter names and run on the transaction's driver connection, with SQLAlchemy's own
parameter and result conversions (JSON, timestamps). A statement whose compilation needs more than
that (Python-side column defaults) runs through SQLAlchemy as before.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, NoReturn

from sqlalchemy import Connection, bindparam
from sqlalchemy.sql import Executable


def run_script(conn: Connection, statements: list[str]) -> None:
    """Send statements without parameters (see `DriverStatement.literal_sql`) in one round trip, as one
    query string (PostgreSQL's simple query protocol): the first that fails stops the rest and raises as
    SQLAlchemy would."""
    script = ";\n".join(statements)
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(script)
    except conn.dialect.loaded_dbapi.Error as exc:
        conn._handle_dbapi_exception(exc, script, None, None, None)
    finally:
        cursor.close()


def in_numbered(column: Any, name: str, count: int) -> Any:
    """`column IN (:name_0, …, :name_<count-1>)`: an IN list a `DriverStatement` can run (built once per
    count), where SQLAlchemy's expanding IN needs its execution layer. Bind with `numbered`."""
    return column.in_([bindparam(f"{name}_{n}", type_=column.type) for n in range(count)])


def numbered(name: str, values: Iterable[Any]) -> dict[str, Any]:
    """The parameters of `in_numbered(column, name, len(values))`."""
    return {f"{name}_{n}": value for n, value in enumerate(values)}


@dataclass(frozen=True)
class _Plan:
    compiled: Any  # SQLAlchemy's compiled form: the SQL text, bind names and conversions
    positional: tuple[str, ...] | None  # bind names in order for qmark drivers (SQLite); None: named
    converters: dict[str, Callable[[Any], Any]]
    columns: tuple[str, ...]  # the result's column names
    results: tuple[Callable[[Any], Any] | None, ...]  # the result's conversions
    literal: dict[str, tuple[bytes, tuple[str, ...]]] = field(default_factory=dict)  # by encoding: `_literal_template`


# A named placeholder as SQLAlchemy writes it for psycopg (%(name)s), or an escaped percent sign.
_PLACEHOLDER = re.compile(rb"%\(([^)]+)\)s|%%")


def _literal_template(sql: str, encoding: str) -> tuple[bytes, tuple[str, ...]]:
    """`sql` with `%s` for each placeholder, and the parameter names in their order: what psycopg's
    client-side binding works out from the SQL text at every call (it caches only short statements, and
    a batch's multi-row INSERTs are long), worked out here once per statement."""
    order: list[str] = []

    def positional(match: re.Match[bytes]) -> bytes:
        if match.group(1) is None:
            return b"%%"  # stays escaped: the template is %-formatted
        order.append(match.group(1).decode())
        return b"%s"
    return _PLACEHOLDER.sub(positional, sql.encode(encoding)), tuple(order)


class DriverStatement:
    """One statement, run on the driver's cursor in the caller's transaction."""

    def __init__(self, statement: Executable):
        self.statement = statement
        self._plans: dict[tuple[str, frozenset[str]], _Plan | None] = {}

    def run(self, conn: Connection, params: dict[str, Any]) -> int:
        """Execute; the number of rows it changed."""
        plan = self._plan(conn, params)
        if plan is None:
            return int(conn.execute(self.statement, params).rowcount)
        cursor = self._execute(conn, plan, params)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def first(self, conn: Connection, params: dict[str, Any]) -> dict[str, Any] | None:
        """Execute; the first row it returns as a dict, or None."""
        rows = self._rows(conn, params, first=True)
        return rows[0] if rows else None

    def all(self, conn: Connection, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Execute; every row it returns, as dicts."""
        return self._rows(conn, params, first=False)

    def _rows(self, conn: Connection, params: dict[str, Any], first: bool) -> list[dict[str, Any]]:
        plan = self._plan(conn, params)
        if plan is None:
            result = conn.execute(self.statement, params).mappings()
            return [dict(row) for row in ([result.first()] if first else result.all()) if row is not None]
        cursor = self._execute(conn, plan, params)
        try:
            raw = [cursor.fetchone()] if first else cursor.fetchall()
        except conn.dialect.loaded_dbapi.Error as exc:
            self._raise(conn, exc, plan, params)
        finally:
            cursor.close()
        return [{name: convert(value) if convert is not None else value
                 for name, convert, value in zip(plan.columns, plan.results, row)} for row in raw if row is not None]

    def literal_sql(self, conn: Connection, params: dict[str, Any]) -> str:
        """The statement with its parameters rendered as SQL literals by the driver (psycopg's client-side
        binding, PostgreSQL only), to be sent with others in one round trip by `run_script`."""
        from psycopg.adapt import Transformer

        plan = self._plan(conn, params)
        if plan is None or plan.positional is not None:
            raise ValueError("literal SQL is for PostgreSQL statements without Python-side defaults")
        adapter = Transformer.from_context(conn.connection.driver_connection)  # type: ignore[arg-type]
        encoding = adapter.encoding
        if encoding not in plan.literal:
            plan.literal[encoding] = _literal_template(plan.compiled.string, encoding)
        template, order = plan.literal[encoding]
        values = self._arguments(plan, params)
        literals = tuple(b"NULL" if values[name] is None else adapter.as_literal(values[name]) for name in order)
        return (template % literals).decode(encoding)

    @staticmethod
    def _arguments(plan: _Plan, params: dict[str, Any]) -> Any:
        """The driver's parameters: SQLAlchemy's conversions applied, in order for qmark drivers."""
        values = plan.compiled.construct_params(params)  # adds the values the statement holds itself
        for name, convert in plan.converters.items():
            if name in values:
                values[name] = convert(values[name])
        return values if plan.positional is None else tuple(values[name] for name in plan.positional)

    def _execute(self, conn: Connection, plan: _Plan, params: dict[str, Any]) -> Any:
        arguments = self._arguments(plan, params)
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(plan.compiled.string, arguments)
        except conn.dialect.loaded_dbapi.Error as exc:
            cursor.close()
            self._raise(conn, exc, plan, arguments)
        return cursor

    @staticmethod
    def _raise(conn: Connection, exc: Exception, plan: _Plan, arguments: Any) -> NoReturn:
        """The driver's error as SQLAlchemy raises it (IntegrityError, OperationalError, ...), and a
        connection found dead is dropped from the pool, exactly as for SQLAlchemy's own statements."""
        conn._handle_dbapi_exception(exc, plan.compiled.string, arguments, None, None)

    def _plan(self, conn: Connection, params: dict[str, Any]) -> _Plan | None:
        key = (conn.dialect.name, frozenset(params))
        try:
            return self._plans[key]
        except KeyError:
            pass
        dialect = conn.dialect
        compiled = self.statement.compile(dialect=dialect, column_keys=list(params))  # type: ignore[attr-defined]
        plan: _Plan | None = None
        if not (compiled.insert_prefetch or compiled.update_prefetch):  # no Python-side defaults to run
            selected = getattr(compiled, "_result_columns", [])
            plan = _Plan(compiled, tuple(compiled.positiontup) if compiled.positional else None,
                         dict(compiled._bind_processors),
                         tuple(column.keyname for column in selected),
                         tuple(column.type._cached_result_processor(dialect, None) for column in selected))
        self._plans[key] = plan
        return plan
