"""Address checks: email-validator for email, phonenumbers for E.164 phone numbers."""

from __future__ import annotations

import re
from functools import lru_cache

import phonenumbers
from email_validator import SPECIAL_USE_DOMAIN_NAMES, EmailNotValidError, validate_email

_ATOM = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
# Plain ASCII addresses whose normal form is simply their lower case: most of a customer base.
_PLAIN = re.compile(rf"(?P<local>{_ATOM}(?:\.{_ATOM})*)@(?P<domain>(?:{_LABEL}\.)+[a-z]{{1,63}})")
_RESERVED = tuple(f".{name}" for name in SPECIAL_USE_DOMAIN_NAMES)


def _plain(value: str) -> str | None:
    """``value`` lower-cased when email-validator would accept it unchanged but for case, else None."""
    lower = value.lower()
    match = _PLAIN.fullmatch(lower)
    if match is None or len(match["local"]) > 64 or len(lower) > 254:
        return None
    domain = match["domain"]
    if f".{domain}".endswith(_RESERVED) or any(label[2:4] == "--" for label in domain.split(".")):
        return None  # special-use names and IDNA (xn--) labels take the library's path
    return lower


@lru_cache(maxsize=65536)
def normalise_email(value: str | None) -> str | None:
    """The normalised address when ``value`` is a valid email address, else ``None``.

    Plain ASCII addresses take a fast path that gives the same answer as email-validator (a property
    test checks the two agree); everything else goes through email-validator.
    """
    if not value:
        return None
    text = str(value).strip()
    plain = _plain(text)
    if plain is not None:
        return plain
    try:
        return validate_email(text, check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        return None


@lru_cache(maxsize=65536)
def normalise_phone(value: str | None) -> str | None:
    """The number in E.164 when ``value`` is a valid E.164 phone number, else ``None``."""
    if not value or not str(value).startswith("+"):
        return None
    try:
        number = phonenumbers.parse(str(value).strip(), None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise(channel: str, value: str | None) -> str | None:
    """The deliverable address of a customer on ``channel``, or ``None``."""
    return normalise_email(value) if channel == "email" else normalise_phone(value)
