"""The one SOSL escaping function, the search terms of a number, and batching of phone searches."""
from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crmconnector.crm import sosl

RESERVED = '?&|!{}[]()^~*:\\"\'+-'


def unescaped(text: str, char: str) -> list[int]:
    """Positions of `char` not preceded by an escaping backslash."""
    positions, i = [], 0
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == char:
            positions.append(i)
        i += 1
    return positions


@pytest.mark.parametrize("char", list(RESERVED))
def test_every_reserved_character_is_escaped(char: str) -> None:
    assert sosl.escape_sosl(f"a{char}b") == f"a\\{char}b"


def test_plain_text_is_unchanged() -> None:
    assert sosl.escape_sosl("4155550132 abc") == "4155550132 abc"


def test_control_characters_become_spaces() -> None:
    assert sosl.escape_sosl("41\n55\t5\x00") == "41 55 5 "


@pytest.mark.parametrize("text, expected", [
    ("}", '"\\}"'),
    ("'", '"\\\'"'),
    ("\\", '"\\\\"'),
    ("*", '"\\*"'),
    ("OR", '"OR"'),
    ('x" OR "y', '"x\\" OR \\"y"'),
    ("a} RETURNING User(Id)", '"a\\} RETURNING User\\(Id\\)"'),
])
def test_phrase_cannot_break_out(text: str, expected: str) -> None:
    assert sosl.phrase(text) == expected


@given(st.text(max_size=60))
def test_any_input_stays_one_quoted_term(text: str) -> None:
    quoted = sosl.phrase(text)
    assert unescaped(quoted, '"') == [0, len(quoted) - 1]
    for char in "{}()*?":
        assert unescaped(quoted, char) == []
    # Undoing the escapes gives the input back (control characters aside): nothing was lost or added.
    assert re.sub(r"\\(.)", r"\1", quoted[1:-1]) == re.sub(r"[\x00-\x1f\x7f]", " ", text)


def test_number_terms_cover_e164_national_number_and_digit_groups() -> None:
    assert sosl.number_terms("+14155550132") == ["+14155550132", "4155550132", "415 555 0132"]
    assert sosl.number_terms("+442079460018") == ["+442079460018", "2079460018", "20 7946 0018"]


def test_text_that_is_no_number_is_searched_as_it_is() -> None:
    assert sosl.number_terms("} OR *") == ["} OR *"]


def test_phone_search_text() -> None:
    assert sosl.phone_search(["+14155550132"], ["Lead", "Contact"]) == (
        'FIND {"\\+14155550132" OR "4155550132" OR "415 555 0132"} IN PHONE FIELDS RETURNING '
        "Lead(Id, FirstName, LastName, Company, Phone, MobilePhone, LastModifiedDate), "
        "Contact(Id, FirstName, LastName, Phone, MobilePhone, HomePhone, OtherPhone, AccountId, LastModifiedDate)")


def test_returning_skips_unknown_objects_and_refuses_none() -> None:
    assert sosl.returning_clause(["Case", "Account"]) == "Account(Id, Name, Phone, LastModifiedDate)"
    with pytest.raises(ValueError):
        sosl.returning_clause(["Case"])


def test_batches_hold_at_most_fifty_numbers() -> None:
    numbers = [f"+1415555{i:04d}" for i in range(120)]
    assert [len(b) for b in sosl.batches(numbers)] == [50, 50, 20]


def test_batches_drop_repeated_numbers() -> None:
    assert list(sosl.batches(["+14155550132", "+14155550132"])) == [["+14155550132"]]


def test_batches_stay_under_the_query_length_limit() -> None:
    numbers = [f"+1415555{i:04d}" for i in range(50)]
    batches = list(sosl.batches(numbers, max_chars=1000))
    assert len(batches) > 1
    assert sum(len(b) for b in batches) == 50
    assert all(len(sosl.find_clause(b)) - 2 <= 1000 for b in batches)
    # A full batch of fifty long international numbers still fits under the default limit.
    long_numbers = [f"+49301234{i:04d}" for i in range(50)]
    assert len(list(sosl.batches(long_numbers))) == 1
