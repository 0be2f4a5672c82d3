"""The embedded CRM over HTTP: the read-only /api/crm API (admin token) and the /crm pages pops open."""
from __future__ import annotations

import pytest

from crmconnector.crm.base import FileUpload
from tests.conftest import admin_headers


@pytest.fixture
def contact(crm):
    account = crm.create("Account", {"Name": "Thatcher Fencing", "Phone": "415.555.0100"})
    return crm.create("Contact", {"FirstName": "Becky", "LastName": "Thatcher", "AccountId": account,
                                  "Phone": "(415) 555-0132"})


@pytest.mark.parametrize("path", ["/api/crm/Contact", "/api/crm/Contact/003000000000001AAA",
                                  "/api/crm/ContentVersion/068000000000001AAA/VersionData"])
def test_read_api_requires_the_admin_token(client, path):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic dGVzdA=="}):
        response = client.get(path, headers=headers)
        assert response.status_code == 401
        assert response.json["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_list_records_filtered_by_field(client, crm, contact):
    crm.create("Contact", {"LastName": "Finn", "Phone": "4155550199"})
    response = client.get("/api/crm/Contact?LastName=Thatcher", headers=admin_headers())
    assert response.status_code == 200
    records = response.json["records"]
    assert [r["Id"] for r in records] == [contact]
    assert records[0]["Phone"] == "(415) 555-0132"
    assert records[0]["Name"] == "Becky Thatcher"
    assert records[0]["attributes"] == {"type": "Contact", "url": f"/api/crm/Contact/{contact}"}
    everyone = client.get("/api/crm/Contact", headers=admin_headers()).json["records"]
    assert len(everyone) == 2


def test_list_by_reference_and_boolean(client, crm, contact):
    task = crm.create("Task", {"Subject": "SMS chat", "WhoId": contact, "Status": "Completed"})
    assert [r["Id"] for r in client.get(f"/api/crm/Task?WhoId={contact}", headers=admin_headers()).json[
        "records"]] == [task]
    assert [r["Id"] for r in client.get("/api/crm/Contact?DoNotCall=false", headers=admin_headers()).json[
        "records"]] == [contact]


def test_list_with_an_unknown_field_or_object(client):
    bad = client.get("/api/crm/Contact?Shoe=9", headers=admin_headers())
    assert bad.status_code == 400 and bad.json["error"]["field"] == "Shoe"
    assert client.get("/api/crm/Contact?limit=many", headers=admin_headers()).status_code == 400
    assert client.get("/api/crm/Opportunity", headers=admin_headers()).status_code == 404


def test_get_one_record(client, contact):
    response = client.get(f"/api/crm/Contact/{contact}", headers=admin_headers())
    assert response.status_code == 200
    assert response.json["Id"] == contact and response.json["LastName"] == "Thatcher"
    missing = client.get("/api/crm/Contact/003000000000001AAA", headers=admin_headers())
    assert missing.status_code == 404 and missing.json["error"]["code"] == "not_found"


def test_file_version_data_round_trip(client, crm, contact):
    payload = bytes(range(256)) * 40
    result = crm.upsert_with_files("Task", "CallObject", {"Subject": "s", "CallObject": "sms-chat-9",
                                                          "WhoId": contact},
                                   [FileUpload("k1", "picture.png", "image/png", payload)])
    cv_id = result.file_ids["k1"]
    response = client.get(f"/api/crm/ContentVersion/{cv_id}/VersionData", headers=admin_headers())
    assert response.status_code == 200
    assert response.data == payload
    assert response.headers["Content-Disposition"] == 'attachment; filename="picture.png"'
    listed = client.get(f"/api/crm/ContentVersion?FirstPublishLocationId={result.id}",
                        headers=admin_headers()).json["records"]
    assert [(r["Id"], r["ContentSize"]) for r in listed] == [(cv_id, len(payload))]
    assert client.get("/api/crm/ContentVersion/068000000000001AAA/VersionData",
                      headers=admin_headers()).status_code == 404


@pytest.mark.parametrize("name, disposition", [
    ("图片.jpg", "attachment; filename=\".jpg\"; filename*=UTF-8''%E5%9B%BE%E7%89%87.jpg"),
    ("café.png", "attachment; filename=\"cafe.png\"; filename*=UTF-8''caf%C3%A9.png"),
    ('say "hi".txt', "attachment; filename=\"say _hi_.txt\"; filename*=UTF-8''say%20%22hi%22.txt"),
])
def test_a_file_name_beyond_plain_ascii_is_sent_as_rfc_6266_says(client, crm, name, disposition):
    """Header values are Latin-1 bytes: other names go in filename* as UTF-8, and a quote cannot end the
    quoted name early."""
    result = crm.upsert_with_files("Task", "CallObject", {"Subject": "s", "CallObject": "sms-chat-9"},
                                   [FileUpload("k1", name, "image/png", b"x")])
    response = client.get(f"/api/crm/ContentVersion/{result.file_ids['k1']}/VersionData", headers=admin_headers())
    assert response.status_code == 200 and response.headers["Content-Disposition"] == disposition


def test_record_page_shows_fields_files_and_activity(client, crm, contact):
    task = crm.upsert_with_files("Task", "CallObject", {"Subject": "SMS chat with +1 415-555-0132",
                                                        "CallObject": "sms-chat-1", "WhoId": contact},
                                 [FileUpload("k", "photo.jpg", "image/jpeg", b"jpg")])
    crm.upsert_with_files("Contact", "LastName", {"LastName": "Thatcher"},
                          [FileUpload("c", "card.vcf", "text/vcard", b"vcard")])
    page = client.get(f"/crm/Contact/{contact}", headers=admin_headers())
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "Becky Thatcher" in html and "(415) 555-0132" in html
    assert f'href="/crm/Task/{task.id}"' in html and "SMS chat with +1 415-555-0132" in html
    assert "card.vcf" in html
    task_page = client.get(f"/crm/Task/{task.id}", headers=admin_headers()).get_data(as_text=True)
    assert f"/api/crm/ContentVersion/{task.file_ids['k']}/VersionData" in task_page
    assert f'href="/crm/Contact/{contact}"' in task_page


def test_a_signed_in_agent_downloads_the_files_a_task_page_links(app, runtime, contact):
    from tests.test_agent import sign_in_path

    task = runtime.crm.upsert_with_files("Task", "CallObject", {"Subject": "s", "CallObject": "sms-chat-9",
                                                                "WhoId": contact},
                                         [FileUpload("k", "fence.jpg", "image/jpeg", b"jpg bytes")])
    agent = app.test_client()
    assert agent.get(sign_in_path(runtime, "tom@example.com")).status_code == 302
    page = agent.get(f"/crm/Task/{task.id}").get_data(as_text=True)
    link = f"/api/crm/ContentVersion/{task.file_ids['k']}/VersionData"
    assert f'href="{link}"' in page
    response = agent.get(link)
    assert response.status_code == 200 and response.data == b"jpg bytes"
    assert response.headers["Content-Disposition"] == 'attachment; filename="fence.jpg"'
    assert agent.get("/api/crm/ContentVersion/068000000000001AAA/VersionData").status_code == 404
    assert agent.get(f"/api/crm/ContentVersion?FirstPublishLocationId={task.id}").status_code == 401  # API: admin only
    assert app.test_client().get(link).status_code == 401


def test_pages_need_a_signed_in_viewer(client, contact):
    response = client.get(f"/crm/Contact/{contact}")
    assert response.status_code == 302 and response.headers["Location"].endswith("/agent")
    assert client.get("/crm/Contact/new?Phone=%2B14155550132").status_code == 302
    assert client.post("/crm/Contact/new", data={"LastName": "X", "Phone": "4155550132"}).status_code == 403


def test_unknown_record_page_is_404(client):
    assert client.get("/crm/Contact/003000000000001AAA", headers=admin_headers()).status_code == 404
    assert client.get("/crm/Opportunity/006000000000001AAA", headers=admin_headers()).status_code == 404


def test_new_record_page_is_prefilled_and_creates_the_record(client, crm):
    form = client.get("/crm/Contact/new?Phone=%2B14155550132", headers=admin_headers())
    assert form.status_code == 200
    assert 'name="Phone" value="+14155550132"' in form.get_data(as_text=True)
    created = client.post("/crm/Contact/new", headers=admin_headers(),
                          data={"FirstName": "Huck", "LastName": "Finn", "Phone": "+14155550132"})
    assert created.status_code == 302
    record_id = created.headers["Location"].rsplit("/", 1)[1]
    record = crm.get("Contact", record_id)
    assert (record.name, record.fields["Phone"]) == ("Huck Finn", "+14155550132")


def test_new_record_form_errors_are_shown_and_nothing_is_created(client, crm):
    response = client.post("/crm/Lead/new", headers=admin_headers(), data={"LastName": "L" * 81,
                                                                           "Phone": "+14155550132"})
    assert response.status_code == 400
    assert "max length=80" in response.get_data(as_text=True)
    assert crm.query("Lead", {}) == []
    bad_phone = client.post("/crm/Contact/new", headers=admin_headers(), data={"LastName": "X", "Phone": "n/a"})
    assert bad_phone.status_code == 400 and crm.query("Contact", {}) == []


@pytest.mark.parametrize("limit", ["0", "-3", "2001", "100000"])
def test_a_limit_outside_1_to_2000_is_refused(client, contact, limit):
    response = client.get(f"/api/crm/Contact?limit={limit}", headers=admin_headers())
    assert response.status_code == 400
    assert response.json["error"]["code"] == "invalid_query" and response.json["error"]["field"] == "limit"
    assert "between 1 and 2000" in response.json["error"]["message"]


def test_total_size_counts_every_match_and_records_keep_to_the_limit(client, crm, contact):
    for name in ("Finn", "Sawyer", "Harper"):
        crm.create("Contact", {"LastName": name, "Phone": "4155550199"})
    page = client.get("/api/crm/Contact?Phone=4155550199&limit=2", headers=admin_headers()).json
    assert page["totalSize"] == 3 and len(page["records"]) == 2
    assert client.get("/api/crm/Contact?limit=2000", headers=admin_headers()).json["totalSize"] == 4
    none = client.get("/api/crm/Contact?LastName=Nobody", headers=admin_headers()).json
    assert none == {"records": [], "totalSize": 0}


def test_a_field_given_more_than_once_matches_any_of_its_values(client, crm, contact):
    finn = crm.create("Contact", {"LastName": "Finn", "Phone": "4155550199"})
    crm.create("Contact", {"LastName": "Sawyer", "Phone": "4155550199"})
    page = client.get("/api/crm/Contact?LastName=Thatcher&LastName=Finn", headers=admin_headers()).json
    assert sorted(r["Id"] for r in page["records"]) == sorted([contact, finn]) and page["totalSize"] == 2
    both = client.get("/api/crm/Contact?LastName=Thatcher&LastName=Finn&Phone=4155550199", headers=admin_headers())
    assert [r["Id"] for r in both.json["records"]] == [finn]


def test_the_field_at_fault_is_named_among_several(client, contact):
    bad = client.get("/api/crm/Contact?LastName=Thatcher&DoNotCall=perhaps", headers=admin_headers())
    assert bad.status_code == 400 and bad.json["error"]["field"] == "DoNotCall"


def test_15_character_ids_are_accepted_case_sensitively(client, crm, contact):
    task = crm.upsert_with_files("Task", "CallObject", {"Subject": "SMS chat", "CallObject": "sms-chat-1",
                                                        "WhoId": contact},
                                 [FileUpload("k", "photo.jpg", "image/jpeg", b"jpg")])
    short = contact[:15]
    record = client.get(f"/api/crm/Contact/{short}", headers=admin_headers())
    assert record.status_code == 200 and record.json["Id"] == contact
    assert [r["Id"] for r in client.get(f"/api/crm/Contact?Id={short}", headers=admin_headers()).json[
        "records"]] == [contact]
    assert [r["Id"] for r in client.get(f"/api/crm/Task?WhoId={short}", headers=admin_headers()).json[
        "records"]] == [task.id]
    file_id = task.file_ids["k"][:15]
    assert client.get(f"/api/crm/ContentVersion/{file_id}/VersionData", headers=admin_headers()).data == b"jpg"
    page = client.get(f"/crm/Contact/{short}", headers=admin_headers())
    assert page.status_code == 200 and f'href="/crm/Task/{task.id}"' in page.get_data(as_text=True)
    assert short.swapcase() != short
    assert client.get(f"/api/crm/Contact/{short.swapcase()}", headers=admin_headers()).status_code == 404
    assert client.get(f"/crm/Contact/{short.swapcase()}", headers=admin_headers()).status_code == 404
