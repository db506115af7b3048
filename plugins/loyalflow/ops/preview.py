"""``loyalflow preview``: render a campaign for one customer, exactly as the run would, without sending."""

from __future__ import annotations

import datetime as dt

import pandas as pd

from loyalflow.audience.due import due_steps, prepare, segment_params
from loyalflow.audience.entries import Admission
from loyalflow.audience.segments import read_segment
from loyalflow.compose.message import render_parts
from loyalflow.decide.candidates import load_customers
from loyalflow.errors import LoyalflowError
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.settings import Settings
from loyalflow.spec import Campaign
from loyalflow.warehouse import records


def preview(
    settings: Settings,
    campaign_id: str,
    customer_id: str,
    step_id: str | None,
    as_of: dt.date,
    channel: str | None = None,
) -> dict[str, dict[str, str]]:
    """Rendered parts per channel for the customer's row in the campaign's audience on ``as_of``."""
    rt = Runtime(settings)
    rt.state  # noqa: B018 - loyalflow tables first: segments may read loyalflow_responses
    campaign = rt.campaign(campaign_id)
    admission = Admission(rt.state, campaign, RunOptions(as_of, "preview", dry_run=True))
    rows = [
        r
        for frame in read_segment(
            rt.warehouse, campaign, as_of, settings.chunk_size, segment_params(rt, campaign)
        )
        for r in records(prepare(rt, campaign, _entered(campaign, admission, frame, customer_id), as_of))
    ]
    if step_id and step_id not in {s.id for s in campaign.steps}:
        raise LoyalflowError(
            f"campaign {campaign_id} has no step '{step_id}'; steps: "
            + ", ".join(s.id for s in campaign.steps)
        )
    for row in rows:
        due = [s for s, _ in due_steps(campaign, row["anchor_at"], as_of, row.get("step"))]
        steps = [
            s for s in (due or campaign.steps) if step_id in (None, s.id) and row.get("step") in (None, s.id)
        ]
        if steps:
            break
    else:
        raise LoyalflowError(
            f"customer {customer_id} is not in the audience of {campaign_id} on {as_of}"
            f"{f' for step {step_id}' if step_id else ''}; try another --as-of"
        )
    customer = load_customers(rt.warehouse, [customer_id]).get(customer_id)
    if customer is None:
        raise LoyalflowError(f"customer {customer_id} is not in the customers table")
    out: dict[str, dict[str, str]] = {}
    for kind in campaign.channels:
        if channel in (None, kind):
            out[f"{steps[0].id} ({kind})"] = render_parts(rt, campaign, steps[0], customer, row, kind, as_of)[
                1
            ]
    return out


def _entered(campaign: Campaign, admission: Admission, frame: pd.DataFrame, customer_id: str) -> pd.DataFrame:
    """The customer's segment rows, anchored on their entry day for a state-entry campaign."""
    mine = frame[frame["customer_id"] == customer_id]
    return admission(mine) if campaign.entry == "state" and not mine.empty else mine
