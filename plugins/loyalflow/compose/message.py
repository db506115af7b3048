"""The message of an eligible candidate: context, rendered parts, sender and unsubscribe headers."""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from loyalflow.compose import referral
from loyalflow.compose.context import REFERRAL, ContextBuilder, build_context
from loyalflow.decide.eligibility import Decision
from loyalflow.deliver.channels import Message
from loyalflow.errors import RenderError
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.spec import Campaign, Step

if TYPE_CHECKING:
    from loyalflow.decide.candidates import Candidate

log = logging.getLogger(__name__)
LINKS = frozenset({"links"})  # an email's List-Unsubscribe header needs its links
ALWAYS = frozenset({"customer"})  # the renderer picks the persona's variant from it


def render_parts(
    rt: Runtime,
    campaign: Campaign,
    step: Step,
    customer: dict[str, Any],
    row: dict[str, Any],
    channel: str,
    as_of: dt.date,
) -> tuple[dict[str, Any], dict[str, str]]:
    """The template context and the rendered parts (subject, html, txt or sms) of one message."""
    context = build_context(rt.settings, rt.brand, campaign, step, customer, row, channel, as_of)
    return context, rt.renderer.render(campaign.id, step.template_name, channel, context)


class Composer:
    """Renders the messages of one campaign run: the context builder, sender lines and templates are
    set up once (per chunk), each :meth:`message` adds one customer."""

    def __init__(self, rt: Runtime, campaign: Campaign, opts: RunOptions):
        self.rt, self.campaign, self.opts = rt, campaign, opts
        self.contexts = ContextBuilder(rt.settings, rt.brand, campaign, opts.as_of, base=rt.renderer.globals)
        self.templates = rt.renderer.bind(self.contexts.shared)
        self.email_sender = f"{rt.brand.from_name} <{rt.brand.from_email}>"
        self._needs: dict[tuple[str, str, str | None], frozenset[str] | None] = {}

    def needs(self, step: Step, channel: str, persona: str | None) -> frozenset[str] | None:
        """The context names a message needs: what its templates read, the customer (for the persona)
        and the links of an email; ``None`` when the templates' reads are not known."""
        key = (step.template_name, channel, persona)
        if key not in self._needs:
            reads = self.templates.reads(self.campaign.id, step.template_name, channel, persona)
            if reads is not None:
                reads |= ALWAYS | (LINKS if channel == "email" else frozenset())
            self._needs[key] = reads
        return self._needs[key]

    def carries_code(self, cand: Candidate) -> bool:
        """Whether the candidate's message shows a referral code (its templates read ``referral_code`` or
        ``referral_url``, or what they read is not known): only such codes are looked up and stored."""
        if cand.customer is None or not cand.decision.channel:
            return False
        needs = self.needs(cand.step, cand.decision.channel, cand.customer.get("persona"))
        return needs is None or not needs.isdisjoint(REFERRAL)

    def message(self, cand: Candidate) -> Message:
        """Render the candidate's message on its decided channel."""
        if cand.customer is None or not cand.decision.channel or not cand.decision.address:
            raise ValueError(f"candidate {cand.key} is not eligible: nothing to render")
        channel = cand.decision.channel
        campaign, step = self.campaign, cand.step
        needs = self.needs(step, channel, cand.customer.get("persona"))
        context = self.contexts.build(step, cand.customer, cand.row, channel, needs)
        parts = self.templates.render(campaign.id, step.template_name, channel, context, scoped=True)
        headers = {}
        if channel == "email":
            headers = {
                "List-Unsubscribe": f"<{context['links']['unsubscribe']}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            }
        return Message(
            idempotency_key=cand.key,
            campaign=campaign.id,
            step=step.id,
            customer_id=str(cand.row["customer_id"]),
            channel=channel,
            to=cand.decision.address,
            text=parts.get("txt") or parts["sms"],
            send_at=cand.decision.send_at or self.opts.send_time,
            category=campaign.category,
            subject=parts.get("subject"),
            html=parts.get("html"),
            sender=self.email_sender if channel == "email" else self.rt.brand.sms_sender,
            reply_to=self.rt.brand.reply_to,
            headers=headers,
        )


def message(rt: Runtime, campaign: Campaign, cand: Candidate, opts: RunOptions) -> Message:
    """Render the candidate's message on its decided channel (one message; a chunk uses a Composer)."""
    return Composer(rt, campaign, opts).message(cand)


def compose_all(rt: Runtime, campaign: Campaign, cands: list[Candidate], opts: RunOptions) -> None:
    """Render every eligible candidate before anything is sent; a template error fails that recipient."""
    composer = Composer(rt, campaign, opts)
    carrying = [str(c.row["customer_id"]) for c in cands if c.decision.eligible and composer.carries_code(c)]
    composer.contexts.codes = referral.codes_for(rt.state, rt.settings.secret_key, carrying)
    for cand in cands:
        if not cand.decision.eligible:
            continue
        cand.referral_code = composer.contexts.codes.get(str(cand.row["customer_id"]))
        try:
            cand.message = composer.message(cand)
        except RenderError as exc:
            cand.decision = Decision("render_error", cand.decision.channel, detail=str(exc))
            cand.outcome = "failed"
            log.warning(
                "render failed for customer %s step %s: %s", cand.row["customer_id"], cand.step.id, exc
            )
