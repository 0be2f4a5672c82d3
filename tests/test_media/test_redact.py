"""Logs never carry a full phone number or a secret, whatever shape they come in; and they stay readable
(timestamps, record ids and short numbers are left alone)."""
from __future__ import annotations

import io
import logging
import re

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from crmconnector.logs import RedactingFormatter, redact

NUMBER = "+14155550132"
DIGITS = "14155550132"


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


@pytest.mark.parametrize("line", [
    f"matched {NUMBER}",
    "matched +1 (415) 555-0132",
    "matched +1.415.555.0132",
    "matched +1-415-555-0132",
    "matched (415) 555-0132",
    "matched 415 555 0132",
    "tel:+14155550132",
    f"GET /api/crm/Contact?Phone={NUMBER}&x=1",
    f"GET /agent/chats/{DIGITS}",
    "q=FIND+%7B%2B14155550132%7D+IN+PHONE+FIELDS",
    f'{{"consumer_number": "{NUMBER}"}}',
    f"phone{DIGITS}",
    f"chat {DIGITS}.",
    "+44 20 7946 0958 called",
])
def test_no_full_phone_number_survives(line: str) -> None:
    redacted = redact(line)
    assert "4155550" not in _digits(redacted) and "2079460" not in _digits(redacted)
    assert re.search(r"\*{6,}(32|58)", redacted)  # masked, the last two digits kept for support


@given(st.sampled_from(["US", "GB", "DE", "FR", "AU", "IN", "BR", "JP"]),
       st.sampled_from([phonenumbers.PhoneNumberFormat.E164, phonenumbers.PhoneNumberFormat.INTERNATIONAL,
                        phonenumbers.PhoneNumberFormat.NATIONAL, phonenumbers.PhoneNumberFormat.RFC3966]),
       st.sampled_from(["", "number ", "from=", "/chats/", "%2B", "x"]))
@settings(max_examples=150, deadline=None)
def test_no_phone_number_in_any_format_survives(region: str, number_format: int, prefix: str) -> None:
    example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
    assert example is not None
    written = phonenumbers.format_number(example, number_format)
    national = str(example.national_number)
    redacted = redact(f"{prefix}{written} replied")
    assert national[:-2] not in _digits(redacted)


@pytest.mark.parametrize(("line", "secret"), [
    ("client_secret=s3cr3t-value", "s3cr3t-value"),
    ("SALESFORCE_CLIENT_SECRET=s3cr3t-value", "s3cr3t-value"),
    ("password: hunter2hunter2", "hunter2hunter2"),
    ('{"access_token": "00D5g000004ABCD!AQ4AQxyz"}', "AQ4AQxyz"),
    ("{'Authorization': 'Bearer 00D5g000004ABCD!AQ4AQxyz'}", "AQ4AQxyz"),
    ("Authorization: Bearer 00D5g000004ABCD!AQ4AQxyz", "AQ4AQxyz"),
    ("Authorization: Basic dXNlcjpwYXNzd29yZA==", "dXNlcjpwYXNzd29yZA"),
    ("sending with Bearer 00D5g000004ABCD!AQ4AQxyz", "AQ4AQxyz"),
    ("X-CRMConnector-Signature: t=1763740990,v1=9f86d081884c7d659a2feaa0c55ad015", "9f86d081884c"),
    ("https://media.example/a.jpg?token=abc123def&size=2", "abc123def"),
    ("api_key=k-abcdefghij", "abcdefghij"),
    ("X-Api-Key: k-abcdefghij", "abcdefghij"),
    ("sid=00D5g000004ABCD!AQ4AQxyz", "AQ4AQxyz"),
    ("<sessionId>00D5g000004ABCD!AQ4AQxyz</sessionId>", "AQ4AQxyz"),
    ("refresh_token=5Aep861abc", "5Aep861abc"),
    ("security_token=XyZ123abc", "XyZ123abc"),
    ("admin token: tok_abcdef123", "tok_abcdef123"),
])
def test_no_secret_survives(line: str, secret: str) -> None:
    assert secret not in redact(line)


@pytest.mark.parametrize("line", [
    "2026-11-22 03:23:58,123 INFO crmconnector.sync.worker: drained 12 items",
    "[2026-11-21 17:03:10Z] Consumer: hi",
    "posted Task 00T5g00000A1b2cDEF for chat 2415",
    "created Contact 0035g000004ABCDAA3",
    "outbox item 1234567 done after 3 attempts",
    "inside=5 considered",
])
def test_ordinary_lines_stay_readable(line: str) -> None:
    assert redact(line) == line


def test_the_formatter_redacts_messages_and_arguments() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(RedactingFormatter("%(levelname)s %(message)s"))
    logger = logging.getLogger("tests.redact")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("chat from %s with token=%s", NUMBER, "abcdefsecret")
    finally:
        logger.removeHandler(handler)
    assert stream.getvalue() == "WARNING chat from +*********32 with token=***\n"
