"""`crmconnector check` on Salesforce: login, API version, and access to every object and field we use.

The describes of all objects travel in one Composite Batch request. Task, Case and ContentVersion are
written (their written fields must be createable; Task's also updateable, since a late event updates
the chat log); Contact, Lead and Account are read (queryable, their phone fields visible) and the
opt-out field the admin chose (on Contact and Lead) updated, so it must be an updateable checkbox.
"""
from __future__ import annotations

from typing import Any, Mapping

from crmconnector.crm.base import CheckLine
from crmconnector.crm.errors import CRMAuthError, CRMError
from crmconnector.crm.objects import OBJECTS, OPT_OUT_OBJECTS, PHONE_FIELDS
from crmconnector.crm.sf_http import SalesforceHTTP, translate

WRITTEN = ("Task", "Case", "ContentVersion")
UPDATED = ("Task",)
OPT_OUT_FIELD = "DoNotCall"


def _describe_all(http: SalesforceHTTP, names: list[str]) -> list[Mapping[str, Any]]:
    """The describes of `names`, in one Composite Batch request."""
    answer = http.request("POST", "data:/composite/batch", "describe", json={"batchRequests": [
        {"method": "GET", "url": f"v{http.api_version}/sobjects/{name}/describe"} for name in names]})
    return list(answer.get("results", []))


def check_opt_out_field(http: SalesforceHTTP, field_name: str) -> list[CheckLine]:
    """The problems of `field_name` as the opt-out field of Contact and Lead (one request); raises CRMError
    when Salesforce does not answer."""
    names = list(OPT_OUT_OBJECTS)
    problems: list[CheckLine] = []
    for name, result in zip(names, _describe_all(http, names)):
        if int(result.get("statusCode", 500)) != 200:
            problems.append(CheckLine(False, f"{name}: describe", str(translate(int(result.get("statusCode", 500)),
                                                                                result.get("result")))))
            continue
        fields = {f.get("name"): f for f in (result.get("result") or {}).get("fields", []) if isinstance(f, Mapping)}
        problems.extend(opt_out_problems(name, field_name, fields.get(field_name)))
    return problems


def opt_out_problems(object_name: str, field_name: str, describe: Mapping[str, Any] | None) -> list[CheckLine]:
    """STOP and START set the field to true and false: it must exist, be a checkbox and be updateable."""
    problems = field_problems(object_name, field_name, describe, ["updateable"])
    if describe is not None and describe.get("type") != "boolean":
        problems.insert(0, CheckLine(False, f"{object_name}.{field_name}",
                                     f"its type is {describe.get('type') or 'unknown'}, not checkbox (boolean); "
                                     "STOP and START set it to true and false"))
    return problems


def check_org(http: SalesforceHTTP, opt_out_field: str = OPT_OUT_FIELD) -> list[CheckLine]:
    """One line per thing verified; a failing line for each problem found."""
    try:
        versions = http.request("GET", "/services/data/", "versions")
    except CRMAuthError as exc:
        return [CheckLine(False, "Salesforce login", str(exc))]
    except CRMError as exc:
        return [CheckLine(False, "Salesforce connection", str(exc))]
    lines = [CheckLine(True, "Salesforce login", http.instance_url)]
    offered = [str(v.get("version")) for v in versions or [] if isinstance(v, Mapping)]
    if http.api_version in offered:
        lines.append(CheckLine(True, f"API version {http.api_version}", "available"))
    else:
        newest = max(offered, key=lambda v: float(v) if v.replace(".", "").isdigit() else 0.0, default="none")
        lines.append(CheckLine(False, f"API version {http.api_version}",
                               f"not offered by this org (newest: {newest}); set SALESFORCE_API_VERSION"))
        return lines
    names = list(OBJECTS)
    try:
        results = _describe_all(http, names)
    except CRMError as exc:
        return [*lines, CheckLine(False, "object access", str(exc))]
    for name, result in zip(names, results):
        lines.extend(object_lines(name, result, opt_out_field))
    return lines


def object_lines(name: str, result: Mapping[str, Any], opt_out_field: str = OPT_OUT_FIELD) -> list[CheckLine]:
    """The check lines of one object from its describe subresult."""
    status = int(result.get("statusCode", 500))
    if status != 200:
        return [CheckLine(False, f"{name}: describe", str(translate(status, result.get("result"))))]
    describe = result.get("result") or {}
    fields = {f.get("name"): f for f in describe.get("fields", []) if isinstance(f, Mapping)}
    problems: list[CheckLine] = []
    if not describe.get("queryable"):
        problems.append(CheckLine(False, f"{name}: read", "the integration user cannot query this object"))
    if name in WRITTEN:
        needed = ["createable"] + (["updateable"] if name in UPDATED else [])
        if not describe.get("createable"):
            problems.append(CheckLine(False, f"{name}: create", "the integration user cannot create records"))
        checked = [s.name for s in OBJECTS[name] if s.writes]
        for field_name in checked:
            problems.extend(field_problems(name, field_name, fields.get(field_name), needed))
        access = "create, update and read" if name in UPDATED else "create and read"
    else:
        checked = list(PHONE_FIELDS.get(name, ()))
        for field_name in checked:
            problems.extend(field_problems(name, field_name, fields.get(field_name), []))
        if name in OPT_OUT_OBJECTS:
            checked.append(opt_out_field)
            problems.extend(opt_out_problems(name, opt_out_field, fields.get(opt_out_field)))
        access = "read" + (f", update {opt_out_field}" if name in OPT_OUT_OBJECTS else "")
    return problems or [CheckLine(True, f"{name}: {access}", ", ".join(checked))]


def field_problems(object_name: str, field_name: str, describe: Mapping[str, Any] | None,
                   needed: list[str]) -> list[CheckLine]:
    what = f"{object_name}.{field_name}"
    if describe is None:
        return [CheckLine(False, what, "missing or not visible to the integration user (field-level security)")]
    return [CheckLine(False, what, f"not {flag} for the integration user")
            for flag in needed if not describe.get(flag)]
