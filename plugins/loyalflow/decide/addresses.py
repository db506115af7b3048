"""Address checks: email-validator for email, phonenumbers for E.164 phone numbers."""

from __future__ import annotations

from functools import lru_cache

import phonenumbers
from email_validator import EmailNotValidError, validate_email


@lru_cache(maxsize=65536)
def normalise_email(value: str | None) -> str | None:
    """The normalised address when ``value`` is a valid email address, else ``None``."""
    if not value:
        return None
    try:
        return validate_email(str(value).strip(), check_deliverability=False).normalized.lower()
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
