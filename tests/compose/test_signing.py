"""The per-chunk link signer and referral codes give exactly what itsdangerous and base32 give."""

from __future__ import annotations

import base64
import hashlib
import hmac
from urllib.parse import quote

from hypothesis import given, settings
from hypothesis import strategies as st
from itsdangerous import URLSafeSerializer

from loyalflow.compose.referral import code_for
from loyalflow.compose.tokens import SALT, LinkSigner, LinkToken, verify

IDS = st.one_of(
    st.text(max_size=90),
    st.text(alphabet="ab", max_size=200),  # repetitive: the serializer compresses these
    st.uuids().map(str),
    st.integers(min_value=0).map(str),
)
KEYS = st.sampled_from(["bench", "k" * 48, "dev-only-change-me", "clé-secrète-🙂" * 3])


@settings(max_examples=400, deadline=None)
@given(
    customer_id=IDS, channel=st.sampled_from(["email", "sms"]), campaign=st.one_of(st.none(), IDS), key=KEYS
)
def test_signer_matches_itsdangerous(customer_id: str, channel: str, campaign: str | None, key: str) -> None:
    token = LinkToken(customer_id, channel, campaign)
    signed = LinkSigner(key).sign(token)
    assert signed == URLSafeSerializer(key, salt=SALT).dumps([customer_id, channel, campaign])
    assert quote(signed) == signed  # links carry it unquoted
    assert verify(key, signed) == token


def test_compressed_payloads_match_too() -> None:
    token = LinkToken("a" * 60, "email", "thank_you")
    signed = LinkSigner("bench").sign(token)
    assert signed.startswith(".")  # the serializer chose the compressed form
    assert signed == URLSafeSerializer("bench", salt=SALT).dumps([token.customer_id, "email", "thank_you"])


@settings(max_examples=300, deadline=None)
@given(customer_id=IDS, key=KEYS)
def test_referral_code_is_base32_of_the_hmac(customer_id: str, key: str) -> None:
    digest = hmac.new(key.encode(), f"referral|{customer_id}".encode(), hashlib.sha256).digest()
    assert code_for(key, customer_id) == "HP-" + base64.b32encode(digest)[:8].decode()
