"""`crmconnector import OBJECT FILE.csv`: load records into the local CRM, reporting bad rows."""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from crmconnector.crm.errors import CRMRejected
from crmconnector.crm.local import LocalCRM
from crmconnector.crm.objects import OBJECTS


@dataclass
class BadRow:
    line: int
    reason: str


@dataclass
class ImportReport:
    imported: int = 0
    problems: list[BadRow] = field(default_factory=list)
    fatal: str | None = None


def import_file(crm: Any, object_name: str, path: str, *, batch_size: int = 5000,
                progress: bool = True) -> ImportReport:
    """Validate every row like the CRM would; keep good rows, list bad ones by line number."""
    report = ImportReport()
    if not isinstance(crm, LocalCRM):
        report.fatal = "import loads the local CRM only (CRMCONNECTOR_CRM=local)"
        report.problems.append(BadRow(0, report.fatal))
        return report
    if object_name not in OBJECTS:
        report.fatal = f"unknown object {object_name!r}; one of {', '.join(OBJECTS)}"
        report.problems.append(BadRow(0, report.fatal))
        return report
    with open(path, newline="", encoding="utf-8-sig") as handle:
        total = sum(1 for _ in handle) - 1
        handle.seek(0)
        reader = csv.DictReader(handle)
        known = {s.name for s in OBJECTS[object_name]} | {"Id"}
        unknown = [h for h in reader.fieldnames or [] if h not in known]
        if unknown:
            report.fatal = f"unknown field(s) in the header: {', '.join(unknown)}"
            report.problems.append(BadRow(1, report.fatal))
            return report
        batch: list[dict[str, Any]] = []
        bar = tqdm(total=max(total, 0), unit="rows", desc=f"import {object_name}", disable=not progress)
        for row in reader:
            line = reader.line_num
            try:
                if None in row:
                    raise CRMRejected("more values than header fields")
                batch.append(crm.validate(object_name, {k: v for k, v in row.items() if k != "Id"}))
            except CRMRejected as exc:
                report.problems.append(BadRow(line, str(exc)))
            if len(batch) >= batch_size:
                crm.bulk_load(object_name, batch)
                report.imported += len(batch)
                bar.update(len(batch))
                batch = []
        if batch:
            crm.bulk_load(object_name, batch)
            report.imported += len(batch)
            bar.update(len(batch))
        bar.close()
    return report
