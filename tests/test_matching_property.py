"""Property: however phonenumbers writes a CRM phone, the match outcome on LocalCRM is the same.

Numbers are generated across every supported region from phonenumbers' own examples (with their last
digits varied); the CRM and the default region are the number's region, as in a real installation.
"""
from __future__ import annotations

from typing import Any, Iterator

import phonenumbers
import pytest
from hypothesis import HealthCheck, assume, given, settings, strategies as st
from phonenumbers import PhoneNumberFormat, PhoneNumberType
from sqlalchemy import delete

from crmconnector.crm.local import LocalCRM
from crmconnector.crm.local_schema import TABLES, phone_index
from crmconnector.matching import match_number
from crmconnector.store import make_engine, migrate

REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
TYPES = (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE, PhoneNumberType.TOLL_FREE,
         PhoneNumberType.FIXED_LINE_OR_MOBILE, PhoneNumberType.VOIP)
FORMATS = (PhoneNumberFormat.E164, PhoneNumberFormat.INTERNATIONAL, PhoneNumberFormat.NATIONAL,
           PhoneNumberFormat.RFC3966)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: Any) -> Iterator[Any]:
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('prop') / 'state.db'}")
    migrate(engine)
    yield engine
    engine.dispose()


@st.composite
def region_numbers(draw: Any) -> tuple[str, phonenumbers.PhoneNumber]:
    """(region, a valid number of that region) near one of phonenumbers' example numbers."""
    region = draw(st.sampled_from(REGIONS))
    example = phonenumbers.example_number_for_type(region, draw(st.sampled_from(TYPES)))
    assume(example is not None)
    nsn = phonenumbers.national_significant_number(example)
    k = draw(st.integers(1, min(4, len(nsn) - 2)))
    tail = draw(st.text("0123456789", min_size=k, max_size=k))
    number = phonenumbers.parse(f"+{example.country_code}{nsn[:-k]}{tail}", None)
    assume(phonenumbers.is_valid_number(number))
    assume(phonenumbers.region_code_for_number(number) == region)
    return region, number


def written(number: phonenumbers.PhoneNumber, fmt: int, extension: str | None) -> str:
    copy = phonenumbers.PhoneNumber()
    copy.merge_from(number)
    copy.extension = extension
    return phonenumbers.format_number(copy, fmt)


def _clear(engine: Any) -> None:
    with engine.begin() as conn:
        conn.execute(delete(phone_index))
        conn.execute(delete(TABLES["Contact"]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(pair=region_numbers(), fmt=st.sampled_from(FORMATS), other_fmt=st.sampled_from(FORMATS),
       extension=st.one_of(st.none(), st.text("0123456789", min_size=1, max_size=5)))
def test_crm_phone_format_never_changes_the_match(engine, pair, fmt, other_fmt, extension):
    region, number = pair
    e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
    crm = LocalCRM(engine, region=region)
    _clear(engine)
    try:
        target = crm.create("Contact", {"LastName": "Target", "Phone": written(number, fmt, extension)})
        # A neighbour one digit away, written another way, must never be confused with it.
        nsn = phonenumbers.national_significant_number(number)
        neighbour_nsn = nsn[:-1] + str((int(nsn[-1]) + 1) % 10)
        neighbour = phonenumbers.parse(f"+{number.country_code}{neighbour_nsn}", None)
        other = None
        if phonenumbers.is_valid_number(neighbour) and phonenumbers.region_code_for_number(neighbour) == region:
            other = crm.create("Contact", {"LastName": "Neighbour", "MobilePhone": written(neighbour, other_fmt, None)})
        result = match_number(crm, e164, region=region)
        assert (result.outcome, [r.id for r in result.records]) == ("single", [target])
        if other is not None:
            neighbour_e164 = phonenumbers.format_number(neighbour, PhoneNumberFormat.E164)
            assert [r.id for r in match_number(crm, neighbour_e164, region=region).records] == [other]
    finally:
        _clear(engine)
