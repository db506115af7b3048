"""The variables a template sees for one customer and step."""

from __future__ import annotations

import datetime as dt
from typing import Any
from urllib.parse import quote

from loyalflow.compose.referral import code_for
from loyalflow.compose.render import greeting
from loyalflow.compose.tokens import LinkToken, sign
from loyalflow.settings import Settings
from loyalflow.spec import Brand, Campaign, Step

RESERVED = frozenset(
    {
        "customer",
        "brand",
        "campaign",
        "step",
        "links",
        "greeting",
        "first_name",
        "as_of",
        "params",
        "referral_code",
        "referral_url",
        "lang",
    }
)
COPY_LANGUAGE = "en"  # the language the shipped templates are written in


def copy_language(campaign: Campaign) -> str:
    """The language of the copy that is rendered (the email's ``lang``), not the customer's locale.

    Templates are chosen by campaign, step and persona, never by locale, so the copy is the campaign's
    language: English unless its templates are localised and ``params.language`` says so.
    """
    declared = campaign.params.get("language")
    return declared.strip().lower() if isinstance(declared, str) and declared.strip() else COPY_LANGUAGE


def links(settings: Settings, customer_id: str, channel: str, campaign: str) -> dict[str, Any]:
    """Signed unsubscribe, preference and response links for one customer on one channel."""
    base = settings.public_url.rstrip("/")
    token = quote(sign(settings.secret_key, LinkToken(customer_id, channel, campaign)))
    return {
        "unsubscribe": f"{base}/unsubscribe/{token}",
        "preferences": f"{base}/preferences/{token}",
        "respond": {
            answer: f"{base}/respond/{token}/{answer}" for answer in ("positive", "negative", "later")
        },
    }


def build_context(
    settings: Settings,
    brand: Brand,
    campaign: Campaign,
    step: Step,
    customer: dict[str, Any],
    row: dict[str, Any],
    channel: str,
    as_of: dt.date,
) -> dict[str, Any]:
    """Segment columns at top level, plus customer, brand, links, greeting, params, referral code and
    ``lang`` (the language of the copy, for the HTML layout's ``lang`` attribute)."""
    first = customer.get("first_name")
    first = first.strip() if isinstance(first, str) and first.strip() else None
    extras = {k: v for k, v in row.items() if k not in RESERVED}
    code = code_for(settings.secret_key, str(customer["customer_id"]))
    return {
        **extras,
        "customer": customer,
        "first_name": first,
        "greeting": greeting(first),
        "brand": brand.model_dump(),
        "lang": copy_language(campaign),
        "campaign": {"id": campaign.id, "name": campaign.name, "category": campaign.category},
        "step": step.id,
        "links": links(settings, str(customer["customer_id"]), channel, campaign.id),
        "as_of": as_of,
        "params": campaign.params,
        "referral_code": code,
        "referral_url": f"{brand.website.rstrip('/')}/r/{code}",
    }
