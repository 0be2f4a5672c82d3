"""GET /openapi.json: the OpenAPI 3 description of every HTTP endpoint.

Each blueprint's endpoints are described here; a test fails when a route is missing from it.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request

from crmconnector import __version__

bp = Blueprint("openapi", __name__)

ERROR = {"$ref": "#/components/schemas/Error"}


def _json(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema or {"type": "object"}}}}


def _errors(*codes: int) -> dict[str, Any]:
    names = {400: "Invalid request", 401: "Not authorized", 404: "Not found", 409: "Event id reused",
             413: "Payload too large", 415: "Unsupported media type", 503: "Unavailable"}
    return {str(c): _json(names[c], ERROR) for c in codes}


ADMIN: list[dict[str, list[str]]] = [{"adminToken": []}]
AGENT: list[dict[str, list[str]]] = [{"agentSession": []}]
_OBJECT = {"name": "object_name", "in": "path", "required": True,
           "schema": {"type": "string", "enum": ["Account", "Contact", "Lead", "Case", "Task", "ContentVersion"]}}
_RECORD = {"name": "record_id", "in": "path", "required": True,
           "description": "the 18-character id, or its first 15 characters (case-sensitive), as in Salesforce",
           "schema": {"type": "string", "minLength": 15, "maxLength": 18}}
PATHS: dict[str, dict[str, Any]] = {
    "/callbacks/events": {"post": {
        "summary": "Receive an SMS platform event (signed with HMAC-SHA256)",
        "parameters": [{"name": "X-CRMConnector-Signature", "in": "header", "required": True,
                        "schema": {"type": "string"}, "example": "t=1763744591,v1=5f2b..."}],
        "requestBody": {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Envelope"}}}},
        "responses": {"200": _json("Event applied (chat.started: match and screen pop)"),
                      "202": _json("Accepted (chat.ended; call.abandoned, recorded for the ticket job) "
                                   "or ignored (unknown type)"),
                      **_errors(400, 401, 409, 413, 415, 503)}}},
    "/healthz": {"get": {"summary": "The process is alive", "responses": {"200": _json("alive")}}},
    "/readyz": {"get": {"summary": "Database and CRM reachable",
                        "responses": {"200": _json("ready"), "503": _json("not ready")}}},
    "/metrics": {"get": {"summary": "Prometheus metrics", "responses": {
        "200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
    "/openapi.json": {"get": {"summary": "This document", "responses": {"200": _json("OpenAPI 3 document")}}},
    "/static/{filename}": {"get": {
        "summary": "The pages' own scripts, styles and vendored libraries (webapp/static; no sign-in needed)",
        "parameters": [{"name": "filename", "in": "path", "required": True, "schema": {"type": "string"},
                        "description": "path under webapp/static; may contain `/`", "example": "vendor/chart.umd.js"}],
        "responses": {"200": {"description": "the file, with ETag and Last-Modified", "content": {
                          "text/css": {}, "text/javascript": {}, "application/octet-stream": {}}},
                      "304": {"description": "not modified since the client's copy"},
                      "404": {"description": "no such file"}}}},
    "/api/crm/{object_name}": {"get": {
        "summary": "Local CRM: records whose fields equal the query parameters, newest first",
        "description": "Every other query parameter names a field (`?LastName=Finn`); a field given more than "
                       "once matches any of its values (`?LastName=Finn&LastName=Sawyer`). Ids and references "
                       "may be 15 or 18 characters. `totalSize` is the number of matching records, `records` "
                       "the first `limit` of them.",
        "security": ADMIN,
        "parameters": [_OBJECT, {"name": "limit", "in": "query", "schema": {
                           "type": "integer", "minimum": 1, "maximum": 2000, "default": 200}}],
        "responses": {"200": _json("{\"records\": [...], \"totalSize\": n}", {
            "type": "object", "properties": {"records": {"type": "array", "items": {"type": "object"}},
                                             "totalSize": {"type": "integer", "description": "matching records"}}}),
                      **_errors(400, 401, 404)}}},
    "/api/crm/{object_name}/{record_id}": {"get": {
        "summary": "Local CRM: one record", "security": ADMIN, "parameters": [_OBJECT, _RECORD],
        "responses": {"200": _json("the record"), **_errors(401, 404)}}},
    "/api/crm/ContentVersion/{record_id}/VersionData": {"get": {
        "summary": "Local CRM: a file's bytes (the record pages link here)", "security": ADMIN + AGENT,
        "parameters": [_RECORD],
        "responses": {"200": {"description": "the file", "content": {"application/octet-stream": {}}},
                      **_errors(401, 404)}}},
    "/crm/{object_name}/{record_id}": {"get": {
        "summary": "Local CRM: a record page (screen-pop target; admin or agent session)",
        "parameters": [_OBJECT, _RECORD],
        "responses": {"200": {"description": "HTML page"}, "302": {"description": "to sign-in"},
                      "404": {"description": "no such record"}}}},
    "/crm/{object_name}/new": {
        "get": {"summary": "Local CRM: new-record form, prefilled from the query", "parameters": [_OBJECT],
                "responses": {"200": {"description": "HTML page"}, "302": {"description": "to sign-in"}}},
        "post": {"summary": "Local CRM: create the record from the form; with `chat_id` (the new-record pop "
                            "carries it), link that chat to it (the chat's agent, or the admin)",
                 "parameters": [_OBJECT],
                 "responses": {"302": {"description": "to the new record's page"},
                               "400": {"description": "form errors, or the form token missing"},
                               "403": {"description": "not signed in"},
                               "404": {"description": "no such chat assigned to the agent; nothing created"}}}},
}

# The outbox of CRM writes (webapp/admin_api.py).
_ITEM_ID = [{"name": "item_id", "in": "path", "required": True, "schema": {"type": "integer"}}]
PATHS.update({
    "/api/admin/outbox": {"get": {
        "summary": "Outbox counts", "security": ADMIN,
        "responses": {"200": _json("{\"pending\": n, \"failed\": n, \"done\": n}", {
            "type": "object", "properties": {k: {"type": "integer"} for k in ("pending", "failed", "done")}}),
            **_errors(401)}}},
    "/api/admin/outbox/items": {"get": {
        "summary": "Outbox items, newest first, with the CRM's error for failed ones", "security": ADMIN,
        "parameters": [{"name": "status", "in": "query", "schema": {
                            "type": "string", "enum": ["pending", "running", "failed", "done"]}},
                       {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                                   "maximum": 1000, "default": 100}}],
        "responses": {"200": _json("{\"items\": [{\"id\", \"kind\", \"key\", \"status\", \"attempts\", "
                                   "\"due_at\", \"last_error\", \"updated_at\"}]}"), **_errors(400, 401)}}},
    "/api/admin/outbox/retry": {"post": {
        "summary": "Re-queue every failed item now", "security": ADMIN,
        "responses": {"200": _json("{\"retried\": n}"), **_errors(401)}}},
    "/api/admin/outbox/{item_id}/retry": {"post": {
        "summary": "Re-queue one failed item now", "security": ADMIN, "parameters": _ITEM_ID,
        "responses": {"200": _json("{\"retried\": 1, \"id\": n}"), **_errors(401, 404),
                      "409": _json("The item has not failed", ERROR)}}},
})

# The agent console and the admin pages (webapp/agent.py, webapp/admin.py).
_CHAT_ID = [{"name": "chat_id", "in": "path", "required": True, "schema": {"type": "string"}}]
_HTML = {"description": "HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}


def _form(*fields: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": {
        "type": "object", "required": ["csrf"],
        "properties": {"csrf": {"type": "string", "description": "the page's per-session form token"},
                       **{f: {"type": "string"} for f in fields}}}}}}


_SEE_OTHER = {"302": {"description": "back to the admin page (the result is shown there)"}}
PATHS.update({
    "/agent/sign-in": {"get": {
        "summary": "Redeem a one-time sign-in link (from `crmconnector agents add`) and open the console",
        "parameters": [{"name": "token", "in": "query", "required": True, "schema": {"type": "string"}}],
        "responses": {"302": {"description": "signed in: to /agent"},
                      "400": {"description": "no token (HTML page)"},
                      "401": {"description": "expired, used or unknown token (HTML page); nothing changes"}}}},
    "/agent/sign-out": {"post": {"summary": "Sign the agent out of every browser (their session cookies stop "
                                            "working)", "security": AGENT, "requestBody": _form(),
                                 "responses": {"200": _HTML, "400": {"description": "form token missing"}}}},
    "/agent": {"get": {"summary": "The agent console (live screen pops)", "security": AGENT,
                       "responses": {"200": _HTML, "401": {"description": "not signed in (HTML page)"}}}},
    "/agent/chats/{chat_id}": {"get": {
        "summary": "The agent console showing one chat (the `search` screen-pop URL)", "security": AGENT,
        "parameters": _CHAT_ID,
        "responses": {"200": _HTML, "401": {"description": "not signed in"},
                      "404": {"description": "no such chat assigned to this agent"}}}},
    "/agent/stream": {"get": {
        "summary": "Server-sent events: a `chat` event with the chat's snapshot (null once it is no longer "
                   "the agent's) for every console update; `id` is the update's id",
        "security": AGENT,
        "parameters": [{"name": "Last-Event-ID", "in": "header", "schema": {"type": "integer"},
                        "description": "catch up on every update after this id (sent by EventSource itself)"},
                       {"name": "after", "in": "query", "schema": {"type": "integer"},
                        "description": "the same, for a new connection"}],
        "responses": {"200": {"description": "event stream",
                              "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                      **_errors(401)}}},
    "/api/agent/chats": {"get": {
        "summary": "The signed-in agent's chats, oldest accepted first", "security": AGENT,
        "responses": {"200": _json("{\"chats\": [chat snapshot], \"last_event_id\": n}"), **_errors(401)}}},
    "/api/agent/chats/{chat_id}": {"get": {
        "summary": "One of the agent's chats: number, match, pop, linked record, messages, CRM status",
        "security": AGENT, "parameters": _CHAT_ID,
        "responses": {"200": _json("chat snapshot"), **_errors(401, 404)}}},
    "/api/agent/chats/{chat_id}/link": {"post": {
        "summary": "Link the agent's chat to another record (the console's pick)", "security": AGENT,
        "parameters": _CHAT_ID,
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["object", "id"],
            "properties": {"object": {"type": "string", "enum": ["Contact", "Lead", "Account", "Case"]},
                           "id": {"type": "string"}}}}}},
        "responses": {"200": _json("{\"chat_id\", \"linked_record\": {\"object\", \"id\", \"name\"}, \"chat\"}"),
                      **_errors(400, 401, 404), "403": _json("cross-site request", ERROR),
                      "415": _json("not JSON", ERROR)}}},
    "/api/agent/chats/{chat_id}/records": {"post": {
        "summary": "Create a record for the chat's consumer (phone prefilled) and link the chat to it",
        "security": AGENT, "parameters": _CHAT_ID,
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "required": ["object"],
            "properties": {"object": {"type": "string", "enum": ["Contact", "Lead", "Account", "Case"]},
                           "fields": {"type": "object", "additionalProperties": {"type": "string"}}}}}}},
        "responses": {"201": _json("{\"record\": {\"object\", \"id\", \"url\"}, \"linked\": true, \"chat\"}"),
                      **_errors(400, 401, 404), "403": _json("cross-site request", ERROR),
                      "415": _json("not JSON", ERROR)}}},
    "/": {"get": {"summary": "Where the agent console and admin pages are; a signed-in agent or admin goes to theirs",
                  "responses": {"200": _HTML, "302": {"description": "signed in: to /agent or /admin"}}}},
    "/favicon.ico": {"get": {"summary": "The site's icon",
                             "responses": {"301": {"description": "to /static/favicon.svg"}}}},
    "/admin/sign-in": {
        "get": {"summary": "Admin sign-in page", "responses": {"200": _HTML, "302": {"description": "signed in"}}},
        "post": {"summary": "Sign in with the admin token", "requestBody": _form("token"),
                 "responses": {"302": {"description": "to /admin"}, "400": {"description": "form token missing"},
                               "401": {"description": "wrong token"}}}},
    "/admin/sign-out": {"post": {"summary": "Sign the admin out", "requestBody": _form(),
                                 "responses": {"302": {"description": "to /admin/sign-in"}}}},
    "/admin": {"get": {
        "summary": "Admin page: settings, CRM status, outbox, recent chats and abandoned calls, charts",
        "security": ADMIN, "responses": {"200": _HTML, "302": {"description": "not signed in: to /admin/sign-in"}}}},
    "/admin/settings": {"post": {
        "summary": "Save screen-pop settings, object order, opt-out field and abandoned-ticket mode (all or nothing)",
        "description": "`abandoned_tickets` is off, all, with_sms or environment. A mode is stored only when it "
                       "differs from the one in effect; `environment` forgets a stored mode, so "
                       "CRMCONNECTOR_ABANDONED_TICKETS applies again.",
        "security": ADMIN,
        "requestBody": _form("none", "single", "multiple", "new_record_object", "object_order_1", "object_order_2",
                             "object_order_3", "opt_out_field", "abandoned_tickets"),
        "responses": {**_SEE_OTHER, "400": {"description": "a value outside the allowed ones: nothing saved"}}}},
    "/admin/outbox/retry": {"post": {"summary": "Re-queue every failed outbox item (page form)",
                                     "security": ADMIN, "requestBody": _form(),
                                     "responses": {**_SEE_OTHER, "400": {"description": "form token missing"}}}},
    "/admin/outbox/{item_id}/retry": {"post": {
        "summary": "Re-queue one failed outbox item (page form)", "security": ADMIN, "parameters": _ITEM_ID,
        "requestBody": _form(), "responses": {**_SEE_OTHER, "400": {"description": "form token missing"}}}},
    "/admin/status.json": {"get": {
        "summary": "CRM connection check report and outbox counts", "security": ADMIN,
        "responses": {"200": _json("{\"crm\": {\"name\", \"ok\", \"lines\": [{\"ok\", \"what\", \"detail\"}]}, "
                                   "\"outbox\": {\"pending\", \"failed\", \"done\"}}"), **_errors(401)}}},
})

SCHEMAS: dict[str, Any] = {
    "Error": {"type": "object", "required": ["error"], "properties": {"error": {
        "type": "object", "required": ["code", "message", "field"],
        "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                       "field": {"type": "string", "nullable": True,
                                 "description": "the request field at fault, e.g. data.chat.consumer_number; "
                                                "null when no single field is"}}}}},
    "Envelope": {"type": "object", "required": ["id", "type", "data"], "properties": {
        "id": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        "type": {"type": "string", "enum": ["chat.started", "chat.assigned", "chat.message", "chat.transferred",
                                            "chat.ended", "call.abandoned"]},
        "occurred_at": {"type": "string", "format": "date-time"},
        "data": {"type": "object"}}},
}


def document() -> dict[str, Any]:
    return {
        "openapi": "3.0.3",
        "info": {"title": "crmconnector", "version": __version__,
                 "description": "SMS platform callbacks, agent console, admin and local-CRM APIs."},
        "paths": PATHS,
        "components": {"schemas": SCHEMAS, "securitySchemes": {
            "adminToken": {"type": "http", "scheme": "bearer"},
            "agentSession": {"type": "apiKey", "in": "cookie", "name": "session"}}},
    }


@bp.get("/openapi.json")
def openapi_json() -> Any:
    described = document()
    if request.script_root:  # served below a proxy's path: the paths above are relative to it
        described["servers"] = [{"url": request.script_root}]
    return jsonify(described)
