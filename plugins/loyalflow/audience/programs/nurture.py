"""Buying-cycle nurture: classify each contact's stage from events and pick the next unseen content item."""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from loyalflow.deliver.ledger import COUNTED
from loyalflow.errors import CampaignError
from loyalflow.state import ledger
from loyalflow.warehouse import ID_BATCH

STAGES = ("awareness", "research", "comparison", "purchase")


class Item(BaseModel):
    """One piece of content."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    title: str
    summary: str
    url: str
    format: str


class Stage(BaseModel):
    """The events that put a contact in a stage."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    events: list[str] = Field(min_length=1)


class ContentMap(BaseModel):
    """``campaigns/content_map.yaml``: stages with their events, and content per stage and persona."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    stages: dict[str, Stage]
    content: dict[str, dict[str, list[Item]]]

    def stage_of(self, event_type: str) -> str | None:
        """The stage an event type signals."""
        return next((name for name, st in self.stages.items() if event_type in st.events), None)

    def items(self, stage: str, persona: str | None) -> list[Item]:
        """The persona's items of a stage first, then the default ones (each once)."""
        by_persona = self.content.get(stage, {})
        seen: dict[str, Item] = {}
        for item in [*by_persona.get(persona or "", []), *by_persona.get("default", [])]:
            seen.setdefault(item.id, item)
        return list(seen.values())


@lru_cache(maxsize=4)
def load_content_map(path: Path, mtime: float) -> ContentMap:
    """Parse and validate the content map (cached per file version)."""
    try:
        return ContentMap.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise CampaignError(str(path), f"invalid content map: {str(exc).splitlines()[0]}") from exc


def content_map(campaigns_dir: Path) -> ContentMap:
    """The project's content map."""
    path = campaigns_dir / "content_map.yaml"
    return load_content_map(path, path.stat().st_mtime if path.exists() else 0.0)


def params(campaigns_dir: Path) -> dict[str, Any]:
    """Extra bound parameters for the segment: ``:stage_events`` lists every stage-bearing event type."""
    cmap = content_map(campaigns_dir)
    return {"stage_events": sorted({e for st in cmap.stages.values() for e in st.events})}


def _received(engine: sa.Engine, campaign: str, ids: list[str]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    with engine.connect() as conn:
        for start in range(0, len(ids), ID_BATCH):
            rows = conn.execute(
                sa.select(ledger.c.customer_id, ledger.c.anchor_id).where(
                    ledger.c.campaign == campaign,
                    ledger.c.status.in_(COUNTED),
                    ledger.c.customer_id.in_(ids[start : start + ID_BATCH]),
                )
            )
            for customer_id, anchor_id in rows:
                out.setdefault(customer_id, set()).add(anchor_id)
    return out


def prepare(
    state: sa.Engine, campaigns_dir: Path, campaign: str, frame: pd.DataFrame, as_of: dt.date
) -> pd.DataFrame:
    """Turn rows (customer_id, last_event_type, persona) into due rows anchored on the next content item."""
    if frame.empty:
        return frame.assign(stage=[], content=[])
    cmap = content_map(campaigns_dir)
    received = _received(state, campaign, sorted(frame["customer_id"].astype(str).unique()))
    today = dt.datetime.combine(as_of, dt.time())
    rows = []
    for row in frame.to_dict("records"):
        stage = cmap.stage_of(str(row["last_event_type"]))
        persona = row.get("persona") if isinstance(row.get("persona"), str) else None
        seen = received.get(str(row["customer_id"]), set())
        nxt = next((i for i in cmap.items(stage, persona) if i.id not in seen), None) if stage else None
        if nxt is None:
            rows.append(
                {
                    **row,
                    "stage": stage,
                    "content": None,
                    "anchor_id": f"{stage}-complete",
                    "anchor_at": today,
                    "exit_reason": f"no unseen {stage} content left",
                }
            )
        else:
            rows.append(
                {
                    **row,
                    "stage": stage,
                    "content": nxt.model_dump(),
                    "anchor_id": nxt.id,
                    "anchor_at": today,
                    "exit_reason": None,
                }
            )
    return pd.DataFrame(rows)
