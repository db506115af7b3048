"""HMAC-signed tokens for unsubscribe, preference and response links (itsdangerous)."""

from __future__ import annotations

from dataclasses import dataclass

from itsdangerous import BadSignature, URLSafeSerializer

SALT = "loyalflow.link.v1"


@dataclass(frozen=True)
class LinkToken:
    """Who a link is for: a customer on one channel, optionally about one campaign."""

    customer_id: str
    channel: str
    campaign: str | None = None


def sign(secret: str, token: LinkToken) -> str:
    """A URL-safe signed token for ``token``."""
    return URLSafeSerializer(secret, salt=SALT).dumps([token.customer_id, token.channel, token.campaign])


def verify(secret: str, value: str) -> LinkToken | None:
    """The token's content when its signature is valid (constant-time compare), else ``None``."""
    try:
        customer_id, channel, campaign = URLSafeSerializer(secret, salt=SALT).loads(value)
    except (BadSignature, ValueError, TypeError):
        return None
    return LinkToken(str(customer_id), str(channel), campaign)
