"""Address normalisation: the plain-address fast path agrees with email-validator on every input."""

from __future__ import annotations

from email_validator import EmailNotValidError, validate_email
from hypothesis import example, given, settings
from hypothesis import strategies as st

from loyalflow.decide.addresses import _plain, normalise_email, normalise_phone


def _library(value: str) -> str | None:
    try:
        return validate_email(value.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError:
        return None


# near-plain addresses: the shapes a customer base holds, and the edges of the fast path
_CHARS = st.sampled_from(list("abcXYZ019.-_+'&@") + ["--", "xn--", "..", "é", " "])
_PART = st.lists(_CHARS, min_size=1, max_size=12).map("".join)
_TLD = st.sampled_from(["com", "co", "c", "test", "local", "onion", "arpa", "example", "x1", "123", "COM"])
_ADDRESS = st.builds(lambda a, b, c, t: f"{a}@{b}.{c}.{t}", _PART, _PART, _PART, _TLD) | st.builds(
    lambda a, b, t: f"{a}@{b}.{t}", _PART, _PART, _TLD
)


@settings(max_examples=3000, deadline=None)
@given(st.one_of(_ADDRESS, st.text(max_size=40)))
@example("Ana.Smith@Example.COM")
@example("a@xn--bcher-kva.com")
@example("a@foo.test")
@example("a..b@x.com")
@example("a@-x.com")
@example("a@x-.com")
@example(("x" * 65) + "@example.com")
@example("a@" + "b" * 64 + ".com")
def test_fast_path_agrees_with_email_validator(value: str) -> None:
    fast = _plain(value.strip())
    if fast is not None:
        assert fast == _library(value)
    assert normalise_email(value) == _library(value)


def test_the_fast_path_takes_ordinary_addresses() -> None:
    assert _plain("Ana.Smith+promo@Harbor-Pine.example.com") == "ana.smith+promo@harbor-pine.example.com"
    assert _plain("zoë@example.com") is None  # not ASCII: the library decides


def test_phone_numbers_must_be_valid_e164() -> None:
    assert normalise_phone("+1 415 555 2671") == "+14155552671"
    assert normalise_phone("415 555 2671") is None
    assert normalise_phone("+1 000") is None
