"""LocalCRM: the embedded CRM in the connector's own database, with Salesforce's rules.

It keeps the same semantics as Salesforce where the connector relies on them: 18-character ids with
key prefixes, required fields, text limits, picklists, and the Task WhoId/WhatId rules, so that most
tests can run against a real database instead of a fake.
"""
from __future__ import annotations

import base64
import functools
from datetime import date, datetime
from typing import Any, Iterable, Mapping, Sequence
from urllib.parse import urlencode

from sqlalchemy import Engine, bindparam, exists, func, insert, select, union_all, update
from sqlalchemy.exc import OperationalError

from crmconnector.crm import ids
from crmconnector.crm.base import CheckLine, CreateResult, FileUpload, Record, UpsertResult
from crmconnector.crm.errors import CRMError, CRMNotFound, CRMRejected, RetryableCRMError
from crmconnector.crm.local_schema import TABLES, phone_index
from crmconnector.crm.objects import OBJECTS, OPT_OUT_OBJECTS, PHONE_FIELDS, FieldSpec, display_name, field_spec
from crmconnector.matching.phone import try_normalize
from crmconnector.driver_sql import DriverStatement, in_numbered, numbered
from crmconnector.store import crm_blobs, reading, single_statement_write, utcnow

FILE_KEY_PREFIX = "crmconnector-key:"
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f", ""}


class InvalidQueryField(CRMRejected):
    """A query names a field the object lacks, or gives it a value the field cannot hold."""

    def __init__(self, field: str, message: str, *, code: str):
        super().__init__(message, code=code)
        self.field = field


class LocalCRM:
    """The embedded CRM (Account, Contact, Lead, Case, Task, ContentVersion) on SQLAlchemy."""

    name = "local"
    remote = False  # in the connector's own database: its calls answer without the network

    def __init__(self, engine: Engine, *, base_url: str = "", region: str = "US"):
        self.engine = engine
        self.base_url = base_url.rstrip("/")
        self.region = region

    # -- reading ---------------------------------------------------------------------------------

    def find_by_phone(self, numbers: Sequence[str], objects: Sequence[str]) -> list[Record]:
        if not numbers:
            return []
        with self._read() as conn:
            params = {**numbered("number", numbers), **numbered("object", objects)}
            by_object: dict[str, set[str]] = {}
            for hit in _phone_hits(len(numbers), len(objects)).all(conn, params):
                by_object.setdefault(hit["object"], set()).add(hit["record_id"])
            records: list[Record] = []
            for obj, rids in by_object.items():
                rows = conn.execute(_statement("by_ids", obj), {"ids": sorted(rids)}).mappings().all()
                records.extend(self._record(obj, row) for row in rows)
        return records

    def get(self, object_name: str, record_id: str) -> Record | None:
        """The record by its 18-character id, or by the 15-character one (case-sensitive), as Salesforce."""
        table = self._table(object_name)
        with self._read() as conn:
            row = conn.execute(select(table).where(table.c.Id == ids.to_18(record_id))).mappings().first()
        return self._record(object_name, row) if row else None

    def find(self, object_name: str, field_name: str, values: Iterable[str]) -> list[Record]:
        table = self._table(object_name)
        if field_name != "Id" and field_name not in table.c:
            raise CRMRejected(f"No such column '{field_name}' on entity '{object_name}'", code="INVALID_FIELD")
        wanted = [ids.to_18(v) for v in values] if _holds_ids(object_name, field_name) else list(values)
        if not wanted:
            return []
        with self._read() as conn:
            rows = conn.execute(select(table).where(table.c[field_name].in_(wanted))
                                .order_by(table.c.CreatedDate, table.c.Id)).mappings().all()
        return [self._record(object_name, row) for row in rows]

    def query(self, object_name: str, equals: Mapping[str, str | Sequence[str]], limit: int = 200) -> list[Record]:
        """Records whose fields equal the given values (any of them, for a list), newest first."""
        return self.query_page(object_name, equals, limit)[0]

    def query_page(self, object_name: str, equals: Mapping[str, str | Sequence[str]],
                   limit: int = 200) -> tuple[list[Record], int]:
        """The first `limit` records of `query` and how many match in all (Salesforce's totalSize),
        counted by the same statement so the two always agree."""
        table = self._table(object_name)
        total = func.count().over().label("_matching")
        stmt = select(table, total).where(*self._conditions(object_name, equals))
        stmt = stmt.order_by(table.c.LastModifiedDate.desc(), table.c.Id).limit(limit)
        with self._read() as conn:
            rows = conn.execute(stmt).mappings().all()
        records = [self._record(object_name, {k: v for k, v in row.items() if k != "_matching"}) for row in rows]
        return records, (rows[0]["_matching"] if rows else 0)

    def _conditions(self, object_name: str, equals: Mapping[str, str | Sequence[str]]) -> list[Any]:
        table = self._table(object_name)
        conditions = []
        for name, given in equals.items():
            if name not in table.c:
                raise InvalidQueryField(name, f"No such column '{name}' on entity '{object_name}'",
                                        code="INVALID_FIELD")
            spec = _spec_or_string(object_name, name)
            try:
                values = [self._coerce(object_name, spec, v) for v in ([given] if isinstance(given, str) else given)]
            except CRMRejected as exc:
                raise InvalidQueryField(name, exc.message, code=exc.code) from None
            if name == "Id":
                values = [ids.to_18(v) for v in values]
            conditions.append(table.c[name].in_(values) if len(values) > 1 else table.c[name] == values[0])
        return conditions

    def file_data(self, content_version_id: str) -> bytes | None:
        blob_id = ids.to_18(content_version_id)
        with self._read() as conn:
            return conn.execute(select(crm_blobs.c.data).where(crm_blobs.c.id == blob_id)).scalar()

    # -- writing ---------------------------------------------------------------------------------

    def create(self, object_name: str, fields: Mapping[str, Any]) -> str:
        with self._write() as conn:
            return self._insert(conn, object_name, fields)

    def create_many(self, object_name: str, rows: Sequence[Mapping[str, Any]]) -> list[CreateResult]:
        results = []
        for fields in rows:
            try:
                results.append(CreateResult(id=self.create(object_name, fields)))
            except CRMRejected as exc:
                results.append(CreateResult(error=str(exc)))
        return results

    def update(self, object_name: str, record_id: str, fields: Mapping[str, Any]) -> None:
        table = self._table(object_name)
        with self._write() as conn:
            current = conn.execute(select(table).where(table.c.Id == record_id)).mappings().first()
            if current is None:
                raise CRMNotFound(f"{object_name} {record_id} does not exist", code="ENTITY_IS_DELETED")
            values = self._validated(conn, object_name, fields, partial=True, current=dict(current))
            values["LastModifiedDate"] = utcnow()
            conn.execute(update(table).where(table.c.Id == record_id).values(**values))
            self._index_phones(conn, object_name, record_id, {**dict(current), **values})

    def upsert_with_files(self, object_name: str, key_field: str, fields: Mapping[str, Any],
                          files: Sequence[FileUpload] = ()) -> UpsertResult:
        table = self._table(object_name)
        if not files and object_name not in PHONE_FIELDS:  # nearly every chat log: one statement
            created_id = self._create_unless_keyed(object_name, key_field, fields)
            if created_id is not None:
                return UpsertResult(id=created_id, created=True, file_ids={})
        with self._write() as conn:
            existing = conn.execute(_statement("by_key", object_name, key_field),
                                    {"key": fields[key_field]}).scalar()
            if existing is None:
                record_id, created = self._insert(conn, object_name, fields), True
            else:
                record_id, created = existing, False
                values = self._validated(conn, object_name, fields, partial=True)
                values["LastModifiedDate"] = utcnow()
                conn.execute(update(table).where(table.c.Id == record_id).values(**values))
            file_ids = self._attach(conn, record_id, files, new_record=created)
        return UpsertResult(id=record_id, created=created, file_ids=file_ids)

    def upsert_many(self, object_name: str, key_field: str,
                    rows: Sequence[tuple[Mapping[str, Any], Sequence[FileUpload]]]) -> list[UpsertResult | CRMError]:
        """`upsert_with_files` for several records: those new and without files are created in one
        `INSERT … SELECT … WHERE NOT EXISTS` for all; the others (a key that exists or comes again,
        files, fields not valid for a new record) one by one. Each row's result, or its error."""
        results: list[UpsertResult | CRMError | None] = [None] * len(rows)
        first_of_key = {fields.get(key_field): n for n, (fields, _) in reversed(list(enumerate(rows)))}
        plain = [n for n, (fields, files) in enumerate(rows) if not files and first_of_key[fields.get(key_field)] == n]
        if len(plain) > 1 and object_name not in PHONE_FIELDS:
            created = self._create_many_unless_keyed(object_name, key_field, [rows[n][0] for n in plain])
            for n, record_id in zip(plain, created):
                if record_id is not None:
                    results[n] = UpsertResult(id=record_id, created=True, file_ids={})
        for n, (fields, files) in enumerate(rows):
            if results[n] is None:
                try:
                    results[n] = self.upsert_with_files(object_name, key_field, fields, files)
                except CRMError as exc:
                    results[n] = exc
        return [result for result in results if result is not None]

    def _create_many_unless_keyed(self, object_name: str, key_field: str,
                                  rows: Sequence[Mapping[str, Any]]) -> list[str | None]:
        """`_create_unless_keyed` for several records in one statement (one per set of columns)."""
        ids_of: list[str | None] = [None] * len(rows)
        by_columns: dict[tuple[str, ...], list[tuple[int, dict[str, Any]]]] = {}
        with _Guard(single_statement_write(self.engine), write=True) as conn:
            now = utcnow()
            for n, fields in enumerate(rows):
                try:
                    values = self._validated(conn, object_name, fields, partial=False)
                except CRMRejected:
                    continue  # an update of an existing record may still be valid: the general path decides
                row = {"Id": ids.new_id(object_name), "CreatedDate": now, "LastModifiedDate": now, **values}
                by_columns.setdefault(tuple(sorted(row)), []).append((n, row))
            for columns, group in by_columns.items():
                params = {f"{name}_{k}": row[name] for k, (_, row) in enumerate(group) for name in columns}
                inserted = {r["Id"] for r in _insert_many_unless_keyed(object_name, key_field, columns,
                                                                       len(group)).all(conn, params)}
                for n, row in group:
                    ids_of[n] = row["Id"] if row["Id"] in inserted else None
        return ids_of

    def _create_unless_keyed(self, object_name: str, key_field: str, fields: Mapping[str, Any]) -> str | None:
        """Create the record unless one with its key exists, in one `INSERT … SELECT … WHERE NOT EXISTS`
        (on PostgreSQL in autocommit: no BEGIN and COMMIT round trips either); its id, or None when the
        key exists or the fields are not valid for a new record. The outbox never writes one chat's Task
        from two places at once."""
        with _Guard(single_statement_write(self.engine), write=True) as conn:
            try:
                values = self._validated(conn, object_name, fields, partial=False)
            except CRMRejected:
                return None  # an update of an existing record may still be valid: the general path decides
            record_id, now = ids.new_id(object_name), utcnow()
            row = {"Id": record_id, "CreatedDate": now, "LastModifiedDate": now, **values}
            inserted = _insert_unless_keyed(object_name, key_field, tuple(sorted(row))).first(
                conn, {**row, "upsert_key": fields[key_field]})
        return record_id if inserted is not None else None

    def _attach(self, conn: Any, parent_id: str, files: Sequence[FileUpload], new_record: bool
                ) -> dict[str, str]:
        if not files:
            return {}
        have = {} if new_record else {  # a record created just now has no files to look up
            row.Description[len(FILE_KEY_PREFIX):]: row.Id
            for row in conn.execute(_statement("files_of", "ContentVersion"), {"parent": parent_id})
            if (row.Description or "").startswith(FILE_KEY_PREFIX)}
        for upload in files:
            if upload.key not in have:
                have[upload.key] = self._insert(conn, "ContentVersion", {
                    "Title": upload.filename, "PathOnClient": upload.filename,
                    "VersionData": base64.b64encode(upload.data).decode(),
                    "FirstPublishLocationId": parent_id,
                    "Description": FILE_KEY_PREFIX + upload.key,
                })
        return {f.key: have[f.key] for f in files}

    def _insert(self, conn: Any, object_name: str, fields: Mapping[str, Any]) -> str:
        self._table(object_name)  # an unknown object is rejected as Salesforce does
        values = self._validated(conn, object_name, fields, partial=False)
        record_id = ids.new_id(object_name)
        now = utcnow()
        if object_name == "ContentVersion":
            data = base64.b64decode(values.pop("VersionData"))
            values["ContentDocumentId"] = ids.new_id("ContentDocument")
            values["ContentSize"] = len(data)
            values["FileExtension"] = (values["PathOnClient"].rpartition(".")[2].lower()
                                       if "." in values["PathOnClient"] else None)
            conn.execute(insert(crm_blobs).values(id=record_id, data=data))
        conn.execute(_statement("insert", object_name),
                     {"Id": record_id, "CreatedDate": now, "LastModifiedDate": now, **values})
        self._index_phones(conn, object_name, record_id, values)
        return record_id

    def bulk_load(self, object_name: str, rows: Sequence[Mapping[str, Any]]) -> None:
        """Insert many already-validated rows at once (CSV import, benchmarks)."""
        table = self._table(object_name)
        now = utcnow()
        records, phones = [], []
        defaults = {s.name: s.default for s in OBJECTS[object_name] if s.default is not None}
        for fields in rows:
            record_id = fields.get("Id") or ids.new_id(object_name)
            record = {**defaults, "Id": record_id, "CreatedDate": now,
                      "LastModifiedDate": fields.get("LastModifiedDate", now),
                      **{k: v for k, v in fields.items() if k not in ("Id", "LastModifiedDate")}}
            records.append(record)
            phones.extend(self._phone_rows(object_name, record_id, record))
        # One multi-row INSERT needs the same columns in every row: absent fields are NULL.
        columns = {name for record in records for name in record}
        records = [{name: record.get(name) for name in columns} for record in records]
        with self._write() as conn:
            if records:
                conn.execute(insert(table), records)
            if phones:
                conn.execute(insert(phone_index), phones)

    def validate(self, object_name: str, fields: Mapping[str, Any]) -> dict[str, Any]:
        """The row as it would be stored, or CRMRejected with Salesforce's error code."""
        result = self.validate_many(object_name, [fields])[0]
        if isinstance(result, CRMRejected):
            raise result
        return result

    def validate_many(self, object_name: str,
                      rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any] | CRMRejected]:
        """Each row as it would be stored, or its CRMRejected; one connection for the lot (imports)."""
        self._table(object_name)
        results: list[dict[str, Any] | CRMRejected] = []
        with self._read() as conn:
            for fields in rows:
                try:
                    results.append(self._validated(conn, object_name, fields, partial=False))
                except CRMRejected as exc:
                    results.append(exc)
        return results

    # -- links, health ---------------------------------------------------------------------------

    def record_url(self, object_name: str, record_id: str) -> str:
        return f"{self.base_url}/crm/{object_name}/{record_id}"

    def new_record_url(self, object_name: str, defaults: Mapping[str, str], chat_id: str | None = None) -> str:
        """The page links the record it saves to `chat_id`, as the agent console's new-record form does."""
        params = dict(defaults) | ({"chat_id": chat_id} if chat_id else {})
        query = f"?{urlencode(params)}" if params else ""
        return f"{self.base_url}/crm/{object_name}/new{query}"

    def ping(self) -> None:
        with self._read() as conn:
            conn.execute(select(TABLES["Account"].c.Id).limit(1)).all()

    def check(self, opt_out_field: str = "DoNotCall") -> list[CheckLine]:
        try:
            self.ping()
        except RetryableCRMError as exc:
            return [CheckLine(False, "local CRM database", str(exc))]
        lines = [CheckLine(True, "local CRM database", str(self.engine.url.render_as_string(hide_password=True)))]
        for name in OBJECTS:
            written = [s.name for s in OBJECTS[name] if s.writes]
            lines.append(CheckLine(True, f"{name}: create and read", ", ".join(written)))
        problems = self.opt_out_field_problems(opt_out_field)
        return lines + (problems or [CheckLine(True, f"opt-out field {opt_out_field}", "on Contact and Lead")])

    def opt_out_field_problems(self, field_name: str) -> list[CheckLine]:
        """The local CRM has exactly the fields of `OBJECTS`."""
        problems = []
        for name in OPT_OUT_OBJECTS:
            spec = field_spec(name, field_name)
            if spec is None:
                problems.append(CheckLine(False, f"{name}.{field_name}", "no such field in the local CRM"))
            elif spec.type != "boolean":
                problems.append(CheckLine(False, f"{name}.{field_name}", f"its type is {spec.type}, not checkbox "
                                          "(boolean); STOP and START set it to true and false"))
        return problems

    # -- helpers ---------------------------------------------------------------------------------

    def _table(self, object_name: str) -> Any:
        try:
            return TABLES[object_name]
        except KeyError:
            raise CRMRejected(f"sObject type '{object_name}' is not supported", code="INVALID_TYPE") from None

    def _read(self) -> Any:
        try:
            return _Guard(reading(self.engine), write=False)
        except OperationalError as exc:  # pragma: no cover - connection refused at checkout
            raise RetryableCRMError(f"local CRM database unavailable: {exc.orig}") from exc

    def _write(self) -> Any:
        return _Guard(self.engine.begin(), write=True)

    def _record(self, object_name: str, row: Mapping[str, Any]) -> Record:
        fields = {k: (v.isoformat() if isinstance(v, (date, datetime)) else v) for k, v in row.items()}
        fields["Name"] = display_name(object_name, fields)
        return Record(object=object_name, id=row["Id"], name=fields["Name"], fields=fields,
                      last_modified=row["LastModifiedDate"])

    def _index_phones(self, conn: Any, object_name: str, record_id: str, values: Mapping[str, Any]) -> None:
        if object_name not in PHONE_FIELDS:
            return
        conn.execute(phone_index.delete().where(phone_index.c.object == object_name,
                                                phone_index.c.record_id == record_id))
        rows = self._phone_rows(object_name, record_id, values)
        if rows:
            conn.execute(insert(phone_index), rows)

    def _phone_rows(self, object_name: str, record_id: str, values: Mapping[str, Any]) -> list[dict[str, str]]:
        rows = []
        for field_name in PHONE_FIELDS.get(object_name, ()):
            e164 = try_normalize(values.get(field_name), self.region)
            if e164:
                rows.append({"object": object_name, "record_id": record_id, "field": field_name, "e164": e164})
        return rows

    def _validated(self, conn: Any, object_name: str, fields: Mapping[str, Any], *, partial: bool,
                   current: Mapping[str, Any] | None = None) -> dict[str, Any]:
        specs = {s.name: s for s in OBJECTS[object_name]}
        values: dict[str, Any] = {}
        for name, raw in fields.items():
            if name in ("Id", "CreatedDate", "LastModifiedDate") or (name == "Name" and name not in specs):
                continue  # system fields, and the Name that Contact and Lead compose
            spec = specs.get(name)
            if spec is None:
                raise CRMRejected(f"No such column '{name}' on sobject of type {object_name}", code="INVALID_FIELD")
            values[name] = self._coerce(object_name, spec, raw)
        if not partial:
            for spec in specs.values():
                if values.get(spec.name) in (None, "") and spec.default is not None:
                    values[spec.name] = spec.default
        merged = {**(current or {}), **values}
        for spec in specs.values():
            if spec.required and (not partial or spec.name in values) and merged.get(spec.name) in (None, ""):
                raise CRMRejected(f"Required fields are missing: [{spec.name}]", code="REQUIRED_FIELD_MISSING")
        for name, value in values.items():
            spec = specs[name]
            if spec.type == "reference" and value:
                self._check_reference(conn, object_name, spec, value)
        if object_name == "Task":
            who, what = merged.get("WhoId"), merged.get("WhatId")
            if who and what and ids.object_for_id(who) == "Lead":
                raise CRMRejected("A task linked to a lead cannot also be linked to a related record",
                                  code="FIELD_INTEGRITY_EXCEPTION")
        return values

    def _coerce(self, object_name: str, spec: FieldSpec, raw: Any) -> Any:
        if raw is None or (isinstance(raw, str) and raw == "" and spec.type not in ("string", "textarea")):
            return None
        if spec.type == "boolean":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE or text in _FALSE:
                return text in _TRUE
            raise CRMRejected(f"{spec.name}: value not of required type: {raw}", code="INVALID_TYPE_ON_FIELD_IN_RECORD")
        if spec.type == "int":
            try:
                return int(raw)
            except (TypeError, ValueError):
                raise CRMRejected(f"{spec.name}: value not of required type: {raw}",
                                  code="INVALID_TYPE_ON_FIELD_IN_RECORD") from None
        if spec.type == "date":
            if isinstance(raw, date):
                return raw
            try:
                return date.fromisoformat(str(raw)[:10])
            except ValueError:
                raise CRMRejected(f"{spec.name}: value not of required type: {raw}",
                                  code="INVALID_TYPE_ON_FIELD_IN_RECORD") from None
        if spec.type == "base64":
            return raw
        text = str(raw)
        if "\x00" in text:  # PostgreSQL text cannot hold it: refused alike on every database
            raise CRMRejected(f"{spec.name}: a NUL character (\\u0000) is not allowed",
                              code="INVALID_TYPE_ON_FIELD_IN_RECORD")
        if spec.length and len(text) > spec.length:
            raise CRMRejected(f"{spec.name}: data value too large: {text[:40]}... (max length={spec.length})",
                              code="STRING_TOO_LONG")
        if spec.values and text not in spec.values:
            raise CRMRejected(f"{spec.name}: bad value for restricted picklist field: {text}",
                              code="INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST")
        if spec.type == "reference":
            text = ids.to_18(text)
        return text

    def _check_reference(self, conn: Any, object_name: str, spec: FieldSpec, value: str) -> None:
        target = ids.object_for_id(value)
        if not ids.is_valid_id(value) or target not in spec.references:
            raise CRMRejected(f"{spec.name}: id value of incorrect type: {value}", code="FIELD_INTEGRITY_EXCEPTION")
        if conn.execute(_statement("exists", target), {"id": value}).first() is None:
            raise CRMRejected(f"{spec.name}: invalid cross reference id", code="INVALID_CROSS_REFERENCE_KEY")


# The statements of the chat-log path and of matching, built once per table (building them per call
# cost more than running them).
@functools.cache
def _phone_hits(numbers: int, objects: int) -> DriverStatement:
    """The index rows of `numbers` numbers in `objects` objects (bound with `numbered`): on the driver's
    cursor, as every chat.started's match runs it."""
    return DriverStatement(select(phone_index.c.object, phone_index.c.record_id).where(
        in_numbered(phone_index.c.e164, "number", numbers), in_numbered(phone_index.c.object, "object", objects)))
_STATEMENTS: dict[tuple[str, ...], Any] = {}


def _statement(kind: str, object_name: str, field: str = "") -> Any:
    key = (kind, object_name, field)
    statement = _STATEMENTS.get(key)
    if statement is None:
        table = TABLES[object_name]
        if kind == "by_ids":
            statement = select(table).where(table.c.Id.in_(bindparam("ids", expanding=True)))
        elif kind == "by_key":
            statement = (select(table.c.Id).where(table.c[field] == bindparam("key"))
                         .order_by(table.c.CreatedDate, table.c.Id))
        elif kind == "files_of":
            statement = select(table.c.Id, table.c.Description).where(
                table.c.FirstPublishLocationId == bindparam("parent"))
        elif kind == "insert":
            statement = table.insert()  # the columns are those the parameters name
        elif kind == "exists":
            statement = select(table.c.Id).where(table.c.Id == bindparam("id"))
        else:
            raise ValueError(f"no statement {kind!r}")
        _STATEMENTS[key] = statement
    return statement


@functools.cache
def _insert_unless_keyed(object_name: str, key_field: str, columns: tuple[str, ...]) -> DriverStatement:
    table = TABLES[object_name]
    absent = ~exists().where(table.c[key_field] == bindparam("upsert_key", type_=table.c[key_field].type))
    row = select(*(bindparam(name, type_=table.c[name].type) for name in columns)).where(absent)
    return DriverStatement(insert(table).from_select(list(columns), row).returning(table.c.Id))


@functools.cache
def _insert_many_unless_keyed(object_name: str, key_field: str, columns: tuple[str, ...], count: int
                              ) -> DriverStatement:
    """`_insert_unless_keyed` for `count` rows (bound as `<column>_<n>`), each row checked on its own key."""
    table = TABLES[object_name]

    def row(n: int) -> Any:
        absent = ~exists().where(table.c[key_field] == bindparam(f"{key_field}_{n}", type_=table.c[key_field].type))
        return select(*(bindparam(f"{name}_{n}", type_=table.c[name].type).label(name) for name in columns)).where(absent)
    return DriverStatement(insert(table).from_select(list(columns), union_all(*(row(n) for n in range(count))))
                           .returning(table.c.Id))


def _holds_ids(object_name: str, field_name: str) -> bool:
    return field_name == "Id" or _spec_or_string(object_name, field_name).type == "reference"


def _spec_or_string(object_name: str, name: str) -> FieldSpec:
    for spec in OBJECTS[object_name]:
        if spec.name == name:
            return spec
    return FieldSpec(name)


class _Guard:
    """A connection context that turns database outages into RetryableCRMError."""

    def __init__(self, context: Any, *, write: bool):
        self._context = context
        self._write = write

    def __enter__(self) -> Any:
        try:
            return self._context.__enter__()
        except OperationalError as exc:
            raise RetryableCRMError(f"local CRM database unavailable: {exc.orig}") from exc

    def __exit__(self, *exc_info: Any) -> Any:
        try:
            result = self._context.__exit__(*exc_info)
        except OperationalError as exc:
            raise RetryableCRMError(f"local CRM database unavailable: {exc.orig}") from exc
        if exc_info[0] is not None and issubclass(exc_info[0], OperationalError):
            raise RetryableCRMError(f"local CRM database unavailable: {exc_info[1]}") from exc_info[1]
        return result
