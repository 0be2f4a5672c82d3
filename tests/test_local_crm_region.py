"""The local CRM reads stored numbers with the default region in force: when the admin changes
CRMCONNECTOR_DEFAULT_REGION, numbers stored without a country code are matched as that region's."""
from __future__ import annotations

from dataclasses import replace

import pytest
from sqlalchemy import select

from crmconnector.crm import phone_region
from crmconnector.crm.local_schema import phone_index
from crmconnector.matching.matcher import match_number
from crmconnector.runtime import Runtime
from crmconnector.store import reading


def _indexed(runtime):
    with reading(runtime.engine) as conn:
        return sorted(conn.execute(select(phone_index.c.field, phone_index.c.e164)).all())


@pytest.mark.both_databases
def test_a_new_default_region_re_reads_the_numbers_stored_without_a_country_code(settings):
    first = Runtime(settings)
    try:
        first.crm.create("Contact", {"LastName": "Local", "Phone": "020 7946 0958", "MobilePhone": "+1 415 555 0132"})
        assert match_number(first.crm, "+442079460958", region="US").outcome == "none"
    finally:
        first.close()
    british = Runtime(replace(settings, default_region="GB"))
    try:
        assert _indexed(british) == [("MobilePhone", "+14155550132"), ("Phone", "+442079460958")]
        for number in ("+442079460958", "+14155550132"):
            found = match_number(british.crm, number, region="GB")
            assert found.outcome == "single" and found.records[0].fields["LastName"] == "Local"
        assert not phone_region.follow_region(british.engine, "GB")  # done once
    finally:
        british.close()


def test_the_first_start_records_the_region_without_re_reading(settings, monkeypatch):
    calls = []
    monkeypatch.setattr(phone_region, "_reindex", lambda *args: calls.append(args) or 0)
    runtime = Runtime(settings)
    try:
        runtime.crm.create("Contact", {"LastName": "Local", "Phone": "(415) 555-0132"})
        assert not phone_region.follow_region(runtime.engine, "US") and calls == []
        assert phone_region.follow_region(runtime.engine, "GB") and len(calls) == len(phone_region.PHONE_FIELDS)
    finally:
        runtime.close()


def test_the_index_is_rebuilt_page_by_page(settings, monkeypatch):
    monkeypatch.setattr(phone_region, "CHUNK", 2)
    runtime = Runtime(settings)
    try:
        for n in range(5):
            runtime.crm.create("Contact", {"LastName": f"C{n}", "Phone": f"020 7946 09{n:02d}"})
        assert phone_region.follow_region(runtime.engine, "GB")
        assert [e164 for _, e164 in _indexed(runtime)] == [f"+4420794609{n:02d}" for n in range(5)]
    finally:
        runtime.close()
