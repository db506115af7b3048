"""The variables a template sees for one customer and step."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from loyalflow.compose.referral import code_for
from loyalflow.compose.render import greeting
from loyalflow.compose.tokens import LinkToken, sign, signer_for
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
REFERRAL = frozenset({"referral_code", "referral_url"})
COPY_LANGUAGE = "en"  # the language the shipped templates are written in


def copy_language(campaign: Campaign) -> str:
    """The language of the copy that is rendered (the email's ``lang``), not the customer's locale.

    Templates are chosen by campaign, step and persona, never by locale, so the copy is the campaign's
    language: English unless its templates are localised and ``params.language`` says so.
    """
    declared = campaign.params.get("language")
    return declared.strip().lower() if isinstance(declared, str) and declared.strip() else COPY_LANGUAGE


def _links(base: str, token: str) -> dict[str, Any]:
    """The links of one token (base64url characters and dots only: no URL quoting needed)."""
    return {
        "unsubscribe": f"{base}/unsubscribe/{token}",
        "preferences": f"{base}/preferences/{token}",
        "respond": {
            "positive": f"{base}/respond/{token}/positive",
            "negative": f"{base}/respond/{token}/negative",
            "later": f"{base}/respond/{token}/later",
        },
    }


class ContextBuilder:
    """Template contexts for one campaign on one day: what every message shares (brand, campaign,
    params, copy language, the link signer) is built once, :meth:`build` adds one customer's part.

    Build one per chunk (or per run); the shared dicts are never mutated (the sandbox is immutable).
    ``base`` (the renderer's globals) starts every context, under the segment columns.
    """

    def __init__(
        self,
        settings: Settings,
        brand: Brand,
        campaign: Campaign,
        as_of: dt.date,
        base: Mapping[str, Any] | None = None,
    ):
        self._secret = settings.secret_key
        self.codes: Mapping[str, str] = {}  # referral codes of the chunk (compose.referral.codes_for)
        self._signer = signer_for(settings.secret_key)
        self._url = settings.public_url.rstrip("/")
        self._website = brand.website.rstrip("/")
        self._campaign_id = campaign.id
        self._base = dict(base or {})
        self._plans: dict[frozenset[str], tuple[dict[str, Any], tuple[str, ...]]] = {}
        self.shared = {
            "brand": brand.model_dump(),
            "lang": copy_language(campaign),
            "campaign": {"id": campaign.id, "name": campaign.name, "category": campaign.category},
            "as_of": as_of,
            "params": campaign.params,
        }

    def links(self, customer_id: str, channel: str) -> dict[str, Any]:
        """Signed unsubscribe, preference and response links for one customer on one channel."""
        return _links(self._url, self._signer.sign_fields(customer_id, channel, self._campaign_id))

    def build(
        self,
        step: Step,
        customer: dict[str, Any],
        row: dict[str, Any],
        channel: str,
        needs: frozenset[str] | None = None,
    ) -> dict[str, Any]:
        """Segment columns at top level, plus customer, brand, links, greeting, params, referral code and
        ``lang`` (the language of the copy, for the HTML layout's ``lang`` attribute).

        With ``needs`` (the names the templates read), the context holds those names only: nothing
        else is looked up, so the output is the same, and links nobody reads are not signed.
        """
        if needs is not None:
            return self._needed(step, customer, row, channel, needs)
        first = customer.get("first_name")
        first = first.strip() if isinstance(first, str) and first.strip() else None
        customer_id = str(customer["customer_id"])
        context = self._base.copy()
        context.update({k: v for k, v in row.items() if k not in RESERVED})
        context.update(self.shared)
        context["customer"] = customer
        context["first_name"] = first
        context["greeting"] = greeting(first)
        context["step"] = step.id
        context["links"] = self.links(customer_id, channel)
        code = self.codes.get(customer_id) or code_for(self._secret, customer_id)
        context["referral_code"] = code
        context["referral_url"] = f"{self._website}/r/{code}"
        return context

    def _needed(
        self, step: Step, customer: dict[str, Any], row: dict[str, Any], channel: str, needs: frozenset[str]
    ) -> dict[str, Any]:
        """:meth:`build` restricted to ``needs``, with the same precedence (base < columns < the rest)."""
        plan = self._plans.get(needs)
        if plan is None:
            constant = {k: v for k, v in self._base.items() if k in needs}
            constant.update((k, v) for k, v in self.shared.items() if k in needs)
            plan = self._plans[needs] = (constant, tuple(sorted(needs - RESERVED)))
        constant, columns = plan
        context = constant.copy()
        for name in columns:
            if name in row:
                context[name] = row[name]
        if "customer" in needs:
            context["customer"] = customer
        if "first_name" in needs or "greeting" in needs:
            first = customer.get("first_name")
            first = first.strip() if isinstance(first, str) and first.strip() else None
            context["first_name"] = first
            context["greeting"] = greeting(first)
        if "step" in needs:
            context["step"] = step.id
        customer_id = str(customer["customer_id"])
        if "links" in needs:
            context["links"] = self.links(customer_id, channel)
        if not needs.isdisjoint(REFERRAL):
            code = self.codes.get(customer_id) or code_for(self._secret, customer_id)
            context["referral_code"] = code
            context["referral_url"] = f"{self._website}/r/{code}"
        return context


def links(settings: Settings, customer_id: str, channel: str, campaign: str) -> dict[str, Any]:
    """Signed unsubscribe, preference and response links for one customer on one channel."""
    return _links(
        settings.public_url.rstrip("/"), sign(settings.secret_key, LinkToken(customer_id, channel, campaign))
    )


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
    """One message's context (see :meth:`ContextBuilder.build`); a chunk builds one ContextBuilder."""
    return ContextBuilder(settings, brand, campaign, as_of).build(step, customer, row, channel)
