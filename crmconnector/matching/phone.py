"""Phone numbers become E.164 here, once, at the edge; everything inward takes E.164 strings."""
from __future__ import annotations

import re

import phonenumbers

MAX_INPUT_LENGTH = 64
_LETTERS = re.compile(r"[A-Za-z]")
_LABEL = re.compile(r"^[^\d+(]*")  # everything before the number's first digit, "+" or "("


class InvalidPhoneNumber(ValueError):
    """The text is not a phone number we can normalize."""


def _strip_uri(raw: str) -> str:
    text = raw.strip()
    if text[:4].lower() == "tel:":
        # RFC 3966: parameters (";ext=", ";phone-context=") follow the number.
        number, _, params = text[4:].partition(";")
        ext = re.search(r"(?:^|;)ext=([0-9]+)", params)
        text = number + (f" ext. {ext.group(1)}" if ext else "")
    return text


def _parse_text(text: str, region: str) -> phonenumbers.PhoneNumber:
    """phonenumbers' reading, where "00" also starts an international number (it does nearly
    everywhere, and no national number starts with it) unless the region's own international prefix
    (Australia's 0011, Korea's 002) already made a valid number of the text."""
    digits_start = text.lstrip(" (")
    if not digits_start.startswith("00"):
        return phonenumbers.parse(text, region)
    try:
        native = phonenumbers.parse(text, region)
        if phonenumbers.is_valid_number(native):
            return native
    except phonenumbers.NumberParseException:
        pass
    return phonenumbers.parse("+" + digits_start[2:], region)


def parse(raw: str, region: str) -> phonenumbers.PhoneNumber:
    """Parse with the default region; raise InvalidPhoneNumber with a reason a person understands."""
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidPhoneNumber("empty phone number")
    if len(raw) > MAX_INPUT_LENGTH:
        raise InvalidPhoneNumber("phone number is too long")
    text = _strip_uri(raw)
    if text.lstrip()[:1].isalpha():
        # phonenumbers would skip leading words ("call me 415..."); a vanity number starts with digits.
        raise InvalidPhoneNumber("not a phone number: it starts with letters")
    try:
        number = _parse_text(text, region)
    except phonenumbers.NumberParseException as exc:
        raise InvalidPhoneNumber(f"not a phone number: {exc.args[0] if exc.args else exc}") from None
    possible = phonenumbers.is_possible_number_with_reason(number)
    if possible == phonenumbers.ValidationResult.IS_POSSIBLE_LOCAL_ONLY:
        # "555-0132" needs an area code before it is one subscriber's number.
        raise InvalidPhoneNumber("not a full phone number (the area code is missing)")
    if possible != phonenumbers.ValidationResult.IS_POSSIBLE:
        raise InvalidPhoneNumber("not a possible phone number (wrong length for its country)")
    # Letters are only a vanity spelling when they spell a real, valid number.
    if _LETTERS.search(text.lower().replace("ext", "").replace("x", "")) and not phonenumbers.is_valid_number(number):
        raise InvalidPhoneNumber("letters in a phone number that does not spell a valid number")
    return number


def normalize(raw: str, region: str = "US") -> str:
    """The E.164 form of `raw` (extensions dropped); InvalidPhoneNumber if it cannot be one."""
    return phonenumbers.format_number(parse(raw, region), phonenumbers.PhoneNumberFormat.E164)


def try_normalize(raw: str | None, region: str = "US") -> str | None:
    """E.164 or None: for CRM data, where a messy field simply matches nothing."""
    if not raw:
        return None
    try:
        return normalize(_unlabelled(raw), region)
    except InvalidPhoneNumber:
        return None


def _unlabelled(raw: str) -> str:
    """A CRM field's text from its number on: people label numbers ("Cell: 415-555-0132"), and
    phonenumbers reads past such a label as it does past any leading text."""
    text = raw.strip() if isinstance(raw, str) else raw
    if not isinstance(text, str) or not text[:1].isalpha() or text[:4].lower() == "tel:":
        return raw
    return _LABEL.sub("", text)


def international(e164: str) -> str:
    """`+1 415-555-0132`: how the number is shown to people and in Task subjects."""
    number = phonenumbers.parse(e164, None)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
