"""What the admin sees of the outbox and how they retry: /api/admin/outbox* and `crmconnector outbox`."""
from __future__ import annotations

from click.testing import CliRunner

from crmconnector.cli import main
from crmconnector.crm.errors import CRMRejected
from tests.chat_support import FlakyCRM, ended, make_worker, outbox_rows, started, tasks, use_crm
from tests.conftest import ADMIN_TOKEN, admin_headers


class RejectsEverything(FlakyCRM):
    def upsert_with_files(self, *args, **kwargs):
        raise CRMRejected("Subject: bad value", code="FIELD_CUSTOM_VALIDATION_EXCEPTION")


def _two_chats_one_failed(platform, runtime, crm):
    """Chat 1 fails (the CRM rejects it), chat 2 is posted."""
    platform.post("chat.started", started("1"))
    platform.post("chat.ended", ended(60, "1"))
    use_crm(runtime, RejectsEverything(crm, RuntimeError, failures=0))
    make_worker(runtime).run_once()
    use_crm(runtime, crm)
    platform.post("chat.started", started("2"))
    platform.post("chat.ended", ended(60, "2"))
    make_worker(runtime).run_once()


def test_outbox_endpoints_require_the_admin_token(client):
    for method, path in (("get", "/api/admin/outbox"), ("get", "/api/admin/outbox/items"),
                         ("post", "/api/admin/outbox/retry"), ("post", "/api/admin/outbox/1/retry")):
        response = getattr(client, method)(path, headers={"Authorization": "Bearer wrong"})
        assert response.status_code == 401, path
        assert response.json["error"]["code"] == "unauthorized"


def test_outbox_counts_and_failed_items_with_the_crms_error(client, platform, runtime, crm):
    _two_chats_one_failed(platform, runtime, crm)
    platform.post("chat.started", started("3"))
    platform.post("chat.ended", ended(60, "3"))
    assert client.get("/api/admin/outbox", headers=admin_headers()).json == {"pending": 1, "failed": 1, "done": 1}
    items = client.get("/api/admin/outbox/items?status=failed", headers=admin_headers()).json["items"]
    assert [(i["kind"], i["key"], i["status"], i["attempts"], i["last_error"]) for i in items] == [
        ("chat_log", "1", "failed", 1, "FIELD_CUSTOM_VALIDATION_EXCEPTION: Subject: bad value")]
    bad = client.get("/api/admin/outbox/items?status=lost", headers=admin_headers())
    assert bad.status_code == 400 and bad.json["error"]["field"] == "status"


def test_retrying_one_failed_item_posts_it(client, platform, runtime, crm):
    _two_chats_one_failed(platform, runtime, crm)
    failed_id = next(r["id"] for r in outbox_rows(runtime) if r["status"] == "failed")
    done_id = next(r["id"] for r in outbox_rows(runtime) if r["status"] == "done")
    assert client.post(f"/api/admin/outbox/{done_id}/retry", headers=admin_headers()).status_code == 409
    assert client.post("/api/admin/outbox/999/retry", headers=admin_headers()).status_code == 404
    # an id past what the database can hold is an item that does not exist either (SQLite would overflow)
    assert client.post(f"/api/admin/outbox/{2 ** 64}/retry", headers=admin_headers()).status_code == 404
    response = client.post(f"/api/admin/outbox/{failed_id}/retry", headers=admin_headers())
    assert response.status_code == 200 and response.json == {"retried": 1, "id": failed_id}
    assert client.get("/api/admin/outbox", headers=admin_headers()).json == {"pending": 1, "failed": 0, "done": 1}
    make_worker(runtime).run_once()
    assert len(tasks(crm, "1")) == 1


def test_retrying_all_failed_items(client, platform, runtime, crm):
    _two_chats_one_failed(platform, runtime, crm)
    assert client.post("/api/admin/outbox/retry", headers=admin_headers()).json == {"retried": 1}
    assert client.post("/api/admin/outbox/retry", headers=admin_headers()).json == {"retried": 0}


def test_outbox_command_prints_counts_and_retries(platform, runtime, crm, settings, monkeypatch, tmp_path):
    _two_chats_one_failed(platform, runtime, crm)
    monkeypatch.chdir(tmp_path)
    env = {"CRMCONNECTOR_DATABASE_URL": settings.database_url, "CRMCONNECTOR_ADMIN_TOKEN": ADMIN_TOKEN,
           "CRMCONNECTOR_CALLBACK_SECRETS": "s"}
    result = CliRunner().invoke(main, ["outbox"], env=env)
    assert result.exit_code == 0, result.output
    assert "pending: 0  failed: 1  done: 1" in result.output
    result = CliRunner().invoke(main, ["outbox", "retry"], env=env)
    assert result.exit_code == 0, result.output
    assert "re-queued 1 failed item(s)" in result.output
    assert "pending: 1  failed: 0  done: 1" in CliRunner().invoke(main, ["outbox"], env=env).output


def test_every_outbox_endpoint_is_in_the_openapi_document(client):
    paths = client.get("/openapi.json").json["paths"]
    assert {"/api/admin/outbox", "/api/admin/outbox/items", "/api/admin/outbox/retry",
            "/api/admin/outbox/{item_id}/retry"} <= set(paths)


def test_a_failed_chat_log_that_a_later_render_posts_no_longer_counts_as_failed(client, platform, runtime, crm):
    """A late message after the admin fixed the cause posts the chat's Task: its earlier failure is
    settled, so the outbox no longer reports a failure that the CRM no longer has."""
    _two_chats_one_failed(platform, runtime, crm)
    platform.post("chat.message", {"chat": {"id": "1"}, "message": {
        "id": "late", "sender": "consumer", "text": "one more thing", "sent_at": "2026-11-21T17:03:40Z"}})
    make_worker(runtime).run_once()
    assert len(tasks(crm, "1")) == 1
    assert client.get("/api/admin/outbox", headers=admin_headers()).json == {"pending": 0, "failed": 0, "done": 3}
    assert client.get("/api/admin/outbox/items?status=failed", headers=admin_headers()).json["items"] == []
