"""`crmconnector import OBJECT FILE.csv`: load records into the local CRM, reporting bad rows.

Every row is validated as the CRM would validate it; good rows are kept, bad ones are listed with
the line they start on and the CRM's reason, so a person can fix the file and import just those.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from typing import IO, Any, Iterator

from tqdm import tqdm  # type: ignore[import-untyped]

from crmconnector.crm.errors import CRMRejected
from crmconnector.crm.local import LocalCRM
from crmconnector.crm.objects import OBJECTS

SYSTEM_FIELDS = ("Id", "CreatedDate", "LastModifiedDate")


@dataclass
class BadRow:
    line: int
    reason: str


@dataclass
class ImportReport:
    imported: int = 0
    problems: list[BadRow] = field(default_factory=list)
    fatal: str | None = None

    def fail(self, line: int, reason: str) -> "ImportReport":
        self.fatal = reason
        self.problems.append(BadRow(line, reason))
        return self


def import_file(crm: Any, object_name: str, path: str, *, batch_size: int = 5000,
                progress: bool = True) -> ImportReport:
    """Validate every row like the CRM would; keep good rows, list bad ones by line number."""
    report = ImportReport()
    if not isinstance(crm, LocalCRM):
        return report.fail(0, "import loads the local CRM only (CRMCONNECTOR_CRM=local)")
    if object_name not in OBJECTS:
        return report.fail(0, f"unknown object {object_name!r}; one of {', '.join(OBJECTS)}")
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            total = _count_rows(handle, report)
            if total is None:
                return report
            handle.seek(0)
            _load(crm, object_name, handle, total, report, batch_size, progress)
            report.problems.sort(key=lambda problem: problem.line)
    except UnicodeDecodeError as exc:
        report.fail(0, f"the file is not UTF-8 text (byte {exc.start}); save it as CSV UTF-8")
    except csv.Error as exc:
        report.fail(0, f"not a readable CSV file: {exc}")
    return report


def _count_rows(handle: IO[str], report: ImportReport) -> int | None:
    """The rows after the header (for the progress bar), read strictly: a quote that is never closed
    would otherwise take every later row into one value, and those rows would be lost without a word.
    None, with the row named in `report`, when the file is no well-formed CSV."""
    reader = csv.reader(handle, strict=True)
    rows, start = 0, 1
    try:
        for values in reader:
            rows += bool(values)
            start = reader.line_num + 1
    except csv.Error as exc:
        report.fail(start, f"not a readable CSV file: {exc} in the row that starts here "
                           '(a quote " never closed, or text after a closing one)')
        return None
    return rows - 1


def _load(crm: LocalCRM, object_name: str, handle: IO[str], total: int, report: ImportReport,
          batch_size: int, progress: bool) -> None:
    reader = csv.reader(handle)
    header = [h.strip() for h in next(reader, [])]
    problem = _header_problem(object_name, header)
    if problem:
        report.fail(1, problem)
        return
    with tqdm(total=max(total, 0), unit="rows", desc=f"import {object_name}", disable=not progress) as bar:
        for batch in _batches(reader, header, batch_size, report, bar):
            lines = [line for line, _ in batch]
            results = crm.validate_many(object_name, [row for _, row in batch])
            good = []
            for line, result in zip(lines, results):
                if isinstance(result, CRMRejected):
                    report.problems.append(BadRow(line, str(result)))
                else:
                    good.append(result)
            if good:
                crm.bulk_load(object_name, good)
                report.imported += len(good)
            bar.update(len(batch))


def _header_problem(object_name: str, header: list[str]) -> str | None:
    if not any(header):
        return "the file is empty: the first line must name the fields (like LastName,Phone)"
    known = {s.name for s in OBJECTS[object_name] if s.name not in ("ContentDocumentId", "ContentSize")}
    unknown = [h or "(a column without a name)" for h in header if h not in known and h not in SYSTEM_FIELDS]
    if unknown:
        return f"unknown field(s) in the header: {', '.join(unknown)} (fields of {object_name}: {', '.join(sorted(known))})"
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        return f"field(s) named twice in the header: {', '.join(repeated)}"
    return None


def _batches(reader: Any, header: list[str], size: int, report: ImportReport,
             bar: Any) -> Iterator[list[tuple[int, dict[str, str]]]]:
    """(starting line, fields) of well-shaped rows in batches; rows of the wrong width are bad rows."""
    batch: list[tuple[int, dict[str, str]]] = []
    line = reader.line_num + 1
    for values in reader:
        if values:  # blank lines are skipped, as spreadsheet exports have them
            if len(values) > len(header):
                report.problems.append(BadRow(line, f"{len(values)} values but the header names {len(header)} fields"))
                bar.update(1)
            else:
                row = {name: value for name, value in zip(header, values) if name not in SYSTEM_FIELDS}
                batch.append((line, row))
        line = reader.line_num + 1
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
