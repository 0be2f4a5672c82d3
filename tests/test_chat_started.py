"""chat.started through the app on the embedded CRM: match outcomes and screen pops."""
from __future__ import annotations

from sqlalchemy import select

from crmconnector import preferences
from crmconnector.crm.errors import CRMRejected
from crmconnector.store import chats, reading
from tests.chat_support import make_worker, outbox_rows, use_crm


def _contact(crm, last, phone, **fields):
    return crm.create("Contact", {"LastName": last, "Phone": phone, **fields})


def test_single_match_pops_the_record(platform, crm):
    contact_id = crm.create("Contact", {"FirstName": "Becky", "LastName": "Thatcher", "Phone": "(415) 555-0132"})
    response = platform.start_chat()
    assert response.status_code == 200
    body = response.json
    url = f"http://connector.test/crm/Contact/{contact_id}"
    assert body["chat_id"] == "2415"
    assert body["match"] == {"outcome": "single", "consumer_number": "+14155550132", "records": [
        {"object": "Contact", "id": contact_id, "name": "Becky Thatcher", "phone": "(415) 555-0132", "url": url}]}
    assert body["screen_pop"] == {"action": "record", "url": url, "object": "Contact", "record_id": contact_id,
                                  "open_cti": {"type": "SOBJECT", "params": {"recordId": contact_id}}}
    assert body["linked_record"] == {"object": "Contact", "id": contact_id}


def test_no_match_pops_a_prefilled_new_contact(platform):
    body = platform.start_chat().json
    assert body["match"]["outcome"] == "none"
    assert body["match"]["records"] == []
    assert body["screen_pop"] == {
        "action": "new_record", "url": "http://connector.test/crm/Contact/new?Phone=%2B14155550132&chat_id=2415",
        "object": "Contact", "record_id": None,
        "open_cti": {"type": "NEW_RECORD_MODAL",
                     "params": {"entityName": "Contact", "defaultFieldValues": {"Phone": "+14155550132"}}}}
    assert body["linked_record"] is None


def test_multiple_matches_default_to_search_with_the_first_linked(platform, crm, runtime):
    lead = crm.create("Lead", {"LastName": "Finn", "Company": "Raft", "MobilePhone": "+1 415 555 0132"})
    account = crm.create("Account", {"Name": "Thatcher Fencing", "Phone": "415.555.0132"})
    contact = _contact(crm, "Thatcher", "4155550132")
    body = platform.start_chat().json
    assert body["match"]["outcome"] == "multiple"
    assert [(r["object"], r["id"]) for r in body["match"]["records"]] == [
        ("Contact", contact), ("Lead", lead), ("Account", account)]
    assert body["screen_pop"]["action"] == "search"
    assert body["screen_pop"]["url"] == "http://connector.test/agent/chats/2415"
    assert body["screen_pop"]["open_cti"] == {"type": "SEARCH", "params": {"searchString": "+14155550132"}}
    assert body["linked_record"] == {"object": "Contact", "id": contact}


def test_admin_object_order_and_recency_decide_the_first_match(platform, crm, runtime):
    preferences.save_pop_settings(runtime.engine, {"object_order": ["Lead", "Contact", "Account"],
                                                   "multiple": "record"})
    old = crm.create("Lead", {"LastName": "Old", "Company": "A", "Phone": "+14155550132"})
    new = crm.create("Lead", {"LastName": "New", "Company": "B", "Phone": "+14155550132"})
    crm.update("Lead", new, {"FirstName": "Newer"})  # most recently modified
    _contact(crm, "Contact", "+14155550132")
    body = platform.start_chat().json
    assert [r["id"] for r in body["match"]["records"]][:2] == [new, old]
    assert body["screen_pop"]["action"] == "record"
    assert body["screen_pop"]["record_id"] == new


def test_create_record_action_creates_and_pops_it(platform, crm, runtime):
    preferences.save_pop_settings(runtime.engine, {"none": "create_record", "new_record_object": "Lead"})
    body = platform.start_chat().json
    assert body["screen_pop"]["action"] == "record"
    lead = crm.get("Lead", body["screen_pop"]["record_id"])
    assert lead.fields["Phone"] == "+14155550132"
    assert body["linked_record"] == {"object": "Lead", "id": lead.id}


def test_none_actions_return_no_pop(platform, crm, runtime):
    preferences.save_pop_settings(runtime.engine, {"single": "none"})
    _contact(crm, "Thatcher", "+14155550132")
    body = platform.start_chat().json
    assert body["screen_pop"] == {"action": "none", "url": None, "object": None, "record_id": None,
                                  "open_cti": None}
    assert body["linked_record"]["object"] == "Contact"


def test_a_different_number_with_the_same_last_digits_does_not_match(platform, crm):
    _contact(crm, "Other", "+1 212 555 0132")
    _contact(crm, "Intl", "+44 4155 550132")
    assert platform.start_chat().json["match"]["outcome"] == "none"


def test_extensions_in_crm_phone_fields_are_ignored(platform, crm):
    cid = _contact(crm, "Ext", "415-555-0132 ext. 44")
    assert platform.start_chat().json["match"]["records"][0]["id"] == cid


def test_a_new_chat_is_one_insert_without_a_look_first(platform, runtime, monkeypatch):
    """chat.started is nearly always the chat's first event: its row is inserted at once, and the row is
    read (to complete a placeholder) only when that insert finds it there."""
    from tests.conftest import sent_statements

    sent = sent_statements(runtime.engine, monkeypatch)
    assert platform.start_chat().status_code == 200
    assert [sql.split(" (")[0] for sql, _ in sent if sql.startswith("INSERT INTO chats ")] == ["INSERT INTO chats"]
    assert not any(sql.startswith("SELECT chats.linked_id") for sql, _ in sent)
    assert platform.start_chat(lang="es").status_code == 200  # the same chat again, under another event id
    assert any(sql.startswith("SELECT chats.linked_id") for sql, _ in sent)


def test_create_record_refused_by_the_crm_pops_the_prefilled_new_record_page(platform, crm, runtime):
    """An org's validation rule may refuse the record: the chat is still taken (not a 500 the platform
    retries for ever), and the agent gets the new-record page to fill in what the CRM wants."""
    from crmconnector.crm.errors import CRMRejected
    from tests.chat_support import use_crm

    class Refusing:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def create(self, object_name, fields):
            raise CRMRejected("Email: required by a validation rule", code="FIELD_CUSTOM_VALIDATION_EXCEPTION")

    use_crm(runtime, Refusing(crm))
    preferences.save_pop_settings(runtime.engine, {"none": "create_record"})
    response = platform.start_chat()
    assert response.status_code == 200
    assert response.json["match"]["outcome"] == "none"
    assert response.json["screen_pop"]["action"] == "new_record"
    assert response.json["screen_pop"]["url"] == "http://connector.test/crm/Contact/new?Phone=%2B14155550132&chat_id=2415"
    assert response.json["linked_record"] is None


def test_a_business_texting_from_a_short_code_is_taken(platform, crm, runtime):
    """Businesses text from short codes (five or six digits in the US) as much as from phone numbers:
    the chat is matched and recorded with the short code as it is."""
    from sqlalchemy import select

    from crmconnector.store import chats

    contact = _contact(crm, "Thatcher", "+14155550132")
    response = platform.start_chat(business_number="87878")
    assert response.status_code == 200
    assert response.json["linked_record"] == {"object": "Contact", "id": contact}
    with runtime.engine.connect() as conn:
        assert conn.execute(select(chats.c.business_number)).scalar() == "87878"
    assert platform.start_chat("2416", business_number="not a number").json["error"]["code"] == "invalid_phone_number"


class _RefusesSearches:
    """The CRM refuses the match's search (an object or field the org does not let us search)."""

    def __init__(self, inner):
        self.inner = inner

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def find_by_phone(self, numbers, objects):
        raise CRMRejected("sObject type 'Lead' is not supported", code="INVALID_TYPE", status=400)


def test_a_crm_refusing_the_search_still_stores_the_chat_and_shows_the_admin_why(platform, crm, runtime):
    """A 500 would leave the chat unstored while the platform retried, and each retry would be refused alike."""
    use_crm(runtime, _RefusesSearches(crm))
    response = platform.start_chat()
    assert response.status_code == 200
    assert (response.json["chat_id"], response.json["match"], response.json["linked_record"]) == ("2415", None, None)
    with reading(runtime.engine) as conn:
        assert conn.execute(select(chats.c.match_outcome)).scalar_one() == "pending"
    make_worker(runtime).run_once()
    [item] = outbox_rows(runtime)
    assert (item["kind"], item["status"]) == ("match", "failed")
    assert "INVALID_TYPE" in item["last_error"]
