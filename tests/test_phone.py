"""Phone normalization: every way people and CRMs write a number becomes one E.164 string, or an error."""
from __future__ import annotations

import pytest

from crmconnector.matching.phone import InvalidPhoneNumber, international, normalize, try_normalize


@pytest.mark.parametrize("raw", [
    "(415) 555-0132",            # national
    "415-555-0132",
    "415.555.0132",              # dotted
    "4155550132",
    "1-415-555-0132",            # national with trunk prefix
    "+1 415 555 0132",           # international
    "+1 (415) 555-0132",
    "+14155550132",              # E.164
    "001 415 555 0132",          # 00 international prefix
    "0014155550132",
    "011 1 415 555 0132",        # North American 011 prefix
    "01114155550132",
    "415-555-0132 ext. 44",      # extensions are dropped
    "415-555-0132 x44",
    "+1 415 555 0132 extension 7",
    "+1 (415) 555-0132 #123",
    "tel:+1-415-555-0132",       # RFC 3966
    "TEL:+14155550132",
    "tel:+1-415-555-0132;ext=12",
    "  (415) 555-0132  ",
])
def test_us_number_in_any_format_normalizes_to_e164(raw):
    assert normalize(raw, "US") == "+14155550132"


@pytest.mark.parametrize(("raw", "region", "expected"), [
    ("020 7946 0018", "GB", "+442079460018"),
    ("(0)20 7946 0018", "GB", "+442079460018"),
    ("+44 (0)20 7946 0018", "US", "+442079460018"),
    ("00 44 20 7946 0018", "US", "+442079460018"),
    ("0044 20 7946 0018", "DE", "+442079460018"),
    ("011 33 1 23 45 67 89", "US", "+33123456789"),
    ("07700 900123", "GB", "+447700900123"),
    ("030 123456", "DE", "+4930123456"),
])
def test_the_default_region_applies_only_to_numbers_without_a_country_code(raw, region, expected):
    assert normalize(raw, region) == expected


@pytest.mark.parametrize(("raw", "region", "expected"), [
    ("0011 1 415 555 0132", "AU", "+14155550132"),     # Australia's own international prefix
    ("0011 44 20 7946 0018", "AU", "+442079460018"),
    ("0021 1 415 555 0132", "BR", "+14155550132"),     # Brazil: 00 and a carrier code
    ("002 44 20 7946 0018", "KR", "+442079460018"),
    ("001 44 20 7946 0018", "SG", "+442079460018"),
    ("0044 20 7946 0018", "AU", "+442079460018"),      # a plain 00 still reads as international
    ("00 44 20 7946 0018", "KR", "+442079460018"),
])
def test_the_regions_own_international_prefix_is_read_as_phonenumbers_reads_it(raw, region, expected):
    assert normalize(raw, region) == expected


def test_a_national_number_means_a_different_number_in_another_region():
    assert normalize("020 7946 0018", "GB") != try_normalize("020 7946 0018", "US")


@pytest.mark.parametrize(("raw", "expected"), [
    ("1-800-FLOWERS", "+18003569377"),
    ("1 (800) GOT-JUNK", "+18004685865"),
    ("+1 800 CALL NOW", "+18002255669"),
])
def test_vanity_letters_spell_the_number(raw, expected):
    assert normalize(raw, "US") == expected


@pytest.mark.parametrize(("raw", "reason"), [
    ("", "empty"),
    ("   ", "empty"),
    ("abc", "not a phone number"),
    ("ABCDEFGHIJ", "not a phone number"),
    ("call me 4155550132", "starts with letters"),
    ("abc4155550132", "starts with letters"),
    ("4155550132abc", "not a possible phone number"),
    ("415555O132", "not a possible phone number"),    # a letter O where a zero belongs
    ("415555", "not a possible phone number"),
    ("+1 415 555 013", "not a possible phone number"),
    ("+1415555013299999", "not a possible phone number"),
    ("555-0132", "area code is missing"),
    ("+999 1234567", "not a phone number"),
    ("tel:", "not a phone number"),
    ("1" * 65, "too long"),
])
def test_invalid_strings_are_refused_with_a_reason(raw, reason):
    with pytest.raises(InvalidPhoneNumber, match=reason):
        normalize(raw, "US")


@pytest.mark.parametrize("raw", [None, "", "n/a", "555-0132", "see notes"])
def test_messy_crm_values_normalize_to_nothing(raw):
    assert try_normalize(raw, "US") is None


@pytest.mark.parametrize("raw", ["Mobile: +1 415 555 0132", "Cell - 415-555-0132", "Work: (415) 555-0132 x12",
                                 "M 415.555.0132", "tel:+1-415-555-0132"])
def test_a_label_before_a_crm_number_is_read_past_as_phonenumbers_does(raw):
    assert try_normalize(raw, "US") == "+14155550132"


def test_a_consumer_number_must_still_start_with_the_number():
    with pytest.raises(InvalidPhoneNumber, match="starts with letters"):
        normalize("Mobile: +1 415 555 0132", "US")


def test_non_strings_are_refused():
    with pytest.raises(InvalidPhoneNumber):
        normalize(4155550132, "US")  # type: ignore[arg-type]


def test_international_format_is_what_people_see():
    assert international("+14155550132") == "+1 415-555-0132"
    assert international("+442079460018") == "+44 20 7946 0018"
