"""The golden render cases: every shipped campaign × step × channel × persona, for customers whose
fields exercise escaping, fallbacks, bundles and referrals. ``python -m tests.compose.golden_cases``
rewrites ``tests/compose/golden/*.json`` from the current code (do that only for an intended change).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import yaml

from loyalflow.compose.message import compose_all, render_parts
from loyalflow.decide.candidates import Candidate
from loyalflow.decide.eligibility import Decision
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.settings import Settings
from loyalflow.spec import Campaign, campaign_files

GOLDEN = Path(__file__).parent / "golden"
KEY = "golden-secret-key-for-render-identity-0123456789"
AS_OF = dt.date(2026, 11, 20)
UNKNOWN_PERSONA = "astronaut"  # no template variant: the default copy

CUSTOMERS: list[dict[str, Any]] = [
    {
        "customer_id": "C1",
        "first_name": "Ana",
        "last_name": "García",
        "locale": "en_US",
        "persona": "vacationing_family",
        "email": "ana@example.com",
        "phone": "+12075550101",
    },
    {
        "customer_id": "0b9c2f4e-7d1a-4c3b-9e8f-2a6d5c4b3a21",
        "first_name": "  Zoë-Léa  ",
        "last_name": "D'Arcy & Fils",
        "locale": "fr_FR",
        "persona": "wedding_couple",
        "email": "zoe@example.fr",
        "phone": None,
    },
    {
        "customer_id": "1042",
        "first_name": None,
        "last_name": "Nguyen",
        "locale": None,
        "persona": None,
        "email": "n@example.com",
        "phone": None,
    },
    {
        "customer_id": "C4",
        "first_name": "",
        "last_name": "Smith",
        "locale": "en_GB",
        "persona": "corporate_travel_manager",
        "email": "s@example.co.uk",
        "phone": "+447700900123",
    },
    {
        "customer_id": "C5",
        "first_name": 'O\'Brien <b>&amp; "Jr"</b>',
        "last_name": "Ó Súilleabháin",
        "locale": "en_IE",
        "persona": "event_planner",
        "email": "ob@example.ie",
        "phone": None,
    },
    {
        "customer_id": "C6",
        "first_name": "Jean\u00a0Paul\tÉmile",
        "last_name": "Lefèvre",
        "locale": "fr_FR",
        "persona": "independent_business_traveller",
        "email": "jp@example.fr",
        "phone": "+33612345678",
    },
]
PRODUCTS = [
    "Harbor Suite, 2 nights",
    'Family Room "Sea View" & breakfast',
    "Spa Day <Deluxe> — Honeymoon",
    "Conference Package\r\n(3 days)",
    "Wedding Weekend, Chapelle d'Été",
    "Café & Croissant\u00a0Escape",
]
FRIENDS = [None, "Lukáš", "Mia & Max", None, '"Bob"', "Renée"]
TIERS = ["vip", "core", "bottom"]
KINDS = ["stay", "spa", "family", "meeting", "event", "wedding", "sailing"]


def _content(home: Path) -> list[tuple[str, dict[str, Any]]]:
    """One real content item per stage and persona list of ``campaigns/content_map.yaml``."""
    cmap = yaml.safe_load((home / "campaigns" / "content_map.yaml").read_text(encoding="utf-8"))
    return [(stage, items[0]) for stage, by in cmap["content"].items() for items in by.values()]


def _row(i: int, customer: dict[str, Any], content: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    stage, item = content[i % len(content)]
    row = {
        "customer_id": customer["customer_id"],
        "anchor_id": f"O{i}",
        "anchor_at": dt.datetime(2026, 11, 20, 9, i),
        "product": PRODUCTS[i % len(PRODUCTS)],
        "order_total": 240.0 + i,
        "order_count": 1 + i,
        "orders_count": 1 + i * 3,
        "lifetime_value": 1234.5 * (i + 1),
        "friend_first_name": FRIENDS[i % len(FRIENDS)],
        "value_tier": TIERS[i % len(TIERS)],
        "last_order_product": PRODUCTS[(i + 2) % len(PRODUCTS)],
        "booking_kind": KINDS[i % len(KINDS)],
        "stage": stage,
        "content": dict(item),
        "persona": customer["persona"],
    }
    bundle = 3 if i % 2 else 1  # the anchors bundled into the message
    row["items"] = [
        {**row, "anchor_id": f"O{i}-{k}", "product": PRODUCTS[(i + k) % len(PRODUCTS)]} for k in range(bundle)
    ]
    return row


def runtime() -> Runtime:
    """The shipped campaigns and templates, with a fixed key and public URL."""
    return Runtime(Settings(secret_key=KEY, public_url="https://links.example.com/loyalflow/"))


def _personas(rt: Runtime, campaign: Campaign, step: str) -> list[str]:
    found = {p.name.split(".")[1] for p in (rt.settings.templates_dir / campaign.id).glob(f"{step}.*.*.j2")}
    return sorted(found)


def cases(rt: Runtime) -> list[tuple[str, Campaign, Any, dict[str, Any], dict[str, Any], str]]:
    """(case id, campaign, step, customer, row, channel) for every golden case."""
    content = _content(rt.settings.home)
    out = []
    for path in campaign_files(rt.settings.campaigns_dir):
        campaign = rt.campaign(path.stem)
        for step in campaign.steps:
            variants = _personas(rt, campaign, step.template_name)
            for channel in campaign.channels:
                for i, base in enumerate(CUSTOMERS):
                    personas = [base["persona"]] + [p for p in [*variants, UNKNOWN_PERSONA] if i < 2]
                    for persona in dict.fromkeys(personas):
                        customer = {**base, "persona": persona}
                        row = _row(i, customer, content)
                        case = f"{campaign.id}/{step.id}/{channel}/{base['customer_id']}/{persona}"
                        out.append((case, campaign, step, customer, row, channel))
    return out


def render_all(rt: Runtime) -> dict[str, dict[str, dict[str, str]]]:
    """Every case's rendered parts, by campaign and case id, through :func:`render_parts`."""
    out: dict[str, dict[str, dict[str, str]]] = {}
    for case, campaign, step, customer, row, channel in cases(rt):
        parts = render_parts(rt, campaign, step, customer, row, channel, AS_OF)[1]
        out.setdefault(campaign.id, {})[case] = parts
    return out


def compose_each(rt: Runtime) -> dict[str, dict[str, dict[str, str]]]:
    """Every case's parts through :func:`compose_all`, one "chunk" per campaign (the pipeline's path)."""
    by_campaign: dict[str, list[tuple[str, Candidate]]] = {}
    for case, campaign, step, customer, row, channel in cases(rt):
        address = customer["email"] if channel == "email" else "+12075550100"
        cand = Candidate(step, row, customer, case, Decision("eligible", channel, address))
        by_campaign.setdefault(campaign.id, []).append((case, cand))
    out: dict[str, dict[str, dict[str, str]]] = {}
    for campaign_id, pairs in by_campaign.items():
        compose_all(rt, rt.campaign(campaign_id), [c for _, c in pairs], RunOptions(AS_OF, "golden"))
        for case, cand in pairs:
            msg = cand.message
            assert msg is not None, f"{case}: {cand.decision}"
            parts = (
                {"subject": msg.subject, "html": msg.html, "txt": msg.text}
                if msg.channel == "email"
                else {"sms": msg.text}
            )
            out.setdefault(campaign_id, {})[case] = parts
    return out


def write() -> None:
    """Regenerate the golden files from the current code."""
    GOLDEN.mkdir(exist_ok=True)
    for campaign_id, rendered in render_all(runtime()).items():
        text = json.dumps(rendered, indent=1, ensure_ascii=False, sort_keys=True) + "\n"
        (GOLDEN / f"{campaign_id}.json").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    write()
