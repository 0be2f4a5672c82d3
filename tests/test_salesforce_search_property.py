"""Whatever format a CRM phone was typed in, the SOSL terms find it (on the fake's model of the
search index, which splits stored text into digit groups) and exact filtering keeps only the number."""
from __future__ import annotations

import re

import phonenumbers
import responses
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crmconnector.crm import sosl
from crmconnector.matching import match_number
from tests.fake_salesforce import FakeSalesforce, make_crm

REGIONS = ["US", "GB", "DE", "FR", "AU", "BR", "IN", "JP"]
FORMATS = [phonenumbers.PhoneNumberFormat.E164, phonenumbers.PhoneNumberFormat.INTERNATIONAL,
           phonenumbers.PhoneNumberFormat.NATIONAL, phonenumbers.PhoneNumberFormat.RFC3966]


@st.composite
def numbers(draw: st.DrawFn) -> tuple[str, str]:
    """(E.164, the same number as a person might have stored it in a US org)."""
    region = draw(st.sampled_from(REGIONS))
    example = phonenumbers.example_number(region)
    national = str(example.national_number)
    tail = draw(st.integers(0, 10 ** min(4, len(national) - 2) - 1))
    candidate = national[: len(national) - len(str(tail))] + str(tail)
    number = phonenumbers.parse(f"+{example.country_code}{candidate}", None)
    if not phonenumbers.is_valid_number(number):
        number = example
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    style = draw(st.sampled_from(FORMATS))
    stored = phonenumbers.format_number(number, style)
    if style == phonenumbers.PhoneNumberFormat.NATIONAL and region != "US":
        stored = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    separator = draw(st.sampled_from(["", ".", "-"]))
    if separator:
        stored = stored.replace(" ", separator) if not stored.startswith("tel:") else stored
    return e164, stored


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(numbers())
def test_a_number_stored_in_any_format_is_found_and_matched(pair: tuple[str, str]) -> None:
    e164, stored = pair
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeSalesforce().install(rsps)
        crm = make_crm()
        contact = crm.create("Contact", {"LastName": "Stored", "Phone": stored})
        result = match_number(crm, e164)
        assert [r.id for r in result.records] == [contact], (e164, stored)
        assert fake.requests == 3  # token, create, one search


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=40))
def test_any_text_is_searched_as_one_literal_term(text: str) -> None:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as rsps:
        fake = FakeSalesforce().install(rsps)
        make_crm().find_by_phone([text], ["Contact", "Lead", "Account"])
        # The org accepted it (every reserved character escaped) and read back exactly the terms sent:
        # the input itself, or for text that parses as a number, that number's search forms.
        assert fake.searched == [[re.sub(r"[\x00-\x1f\x7f]", " ", term) for term in sosl.number_terms(text)]]
