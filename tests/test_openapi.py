"""/openapi.json describes every HTTP endpoint the app serves, and only those, as valid OpenAPI 3."""
from __future__ import annotations

import re

from openapi_spec_validator import validate

IGNORED_METHODS = {"HEAD", "OPTIONS"}
HTTP_METHODS = {"get", "put", "post", "delete", "patch", "options", "head", "trace"}


def openapi_path(rule: str) -> str:
    """Flask's `/api/crm/<object_name>` (or `<int:item_id>`) as OpenAPI's `/api/crm/{object_name}`."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule)


def served(app) -> dict[str, set[str]]:
    routes: dict[str, set[str]] = {}
    for rule in app.url_map.iter_rules():
        routes.setdefault(openapi_path(rule.rule), set()).update(
            m.lower() for m in (rule.methods or set()) - IGNORED_METHODS)
    return routes


def test_openapi_path_conversion():
    assert openapi_path("/api/crm/<object_name>/<record_id>") == "/api/crm/{object_name}/{record_id}"
    assert openapi_path("/static/<path:filename>") == "/static/{filename}"
    assert openapi_path("/api/admin/outbox/<int:item_id>/retry") == "/api/admin/outbox/{item_id}/retry"


def test_every_route_is_documented_with_its_methods(client, app):
    paths = client.get("/openapi.json").json["paths"]
    undocumented = sorted(f"{method.upper()} {path}" for path, methods in served(app).items()
                          for method in methods if method not in paths.get(path, {}))
    assert undocumented == [], "add these endpoints to webapp/openapi.py PATHS"


def test_every_documented_operation_is_served(client, app):
    paths = client.get("/openapi.json").json["paths"]
    routes = served(app)
    stale = sorted(f"{method.upper()} {path}" for path, item in paths.items()
                   for method in set(item) & HTTP_METHODS if method not in routes.get(path, set()))
    assert stale == [], "these documented endpoints do not exist"


def test_path_parameters_match_the_placeholders(client):
    problems = []
    for path, item in client.get("/openapi.json").json["paths"].items():
        placeholders = set(re.findall(r"{([^}]+)}", path))
        for method in set(item) & HTTP_METHODS:
            params = item.get("parameters", []) + item[method].get("parameters", [])
            declared = {p["name"] for p in params if p.get("in") == "path"}
            if declared != placeholders:
                problems.append(f"{method.upper()} {path}: declares {sorted(declared)}")
    assert problems == []


def test_the_document_is_valid_openapi_3(client):
    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.mimetype == "application/json"
    document = response.json
    assert document["openapi"].startswith("3.")
    validate(document)  # raises on any deviation from the OpenAPI 3 schema


def test_admin_endpoints_declare_the_admin_token(client):
    paths = client.get("/openapi.json").json["paths"]
    unsecured = sorted(f"{method.upper()} {path}" for path, item in paths.items() if path.startswith(
        ("/api/admin/", "/api/crm/")) for method in set(item) & HTTP_METHODS
        if {"adminToken": []} not in item[method].get("security", []))
    assert unsecured == []


def test_static_assets_are_described_and_served_as_documented(client):
    operation = client.get("/openapi.json").json["paths"]["/static/{filename}"]["get"]
    example = operation["parameters"][0]["example"]
    with client.get(f"/static/{example}") as response:
        assert response.status_code == 200 and response.mimetype in operation["responses"]["200"]["content"]
    assert "security" not in operation
    assert client.get("/static/no-such-file.js").status_code == 404
