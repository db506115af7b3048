"""``loyalflow validate``: schema, SQL and templates of every campaign, checked before anything sends."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from loyalflow.audience.due import segment_params
from loyalflow.audience.segments import read_segment
from loyalflow.errors import LoyalflowError
from loyalflow.ops.doctor import check
from loyalflow.pipeline import check_sample
from loyalflow.runtime import Runtime
from loyalflow.settings import Settings
from loyalflow.spec import campaign_files, load_brand, load_campaign
from loyalflow.warehouse import engine_for

DAG_FILE = '''"""Airflow DAG for campaigns/{id}.yaml (the campaign file holds everything)."""

from loyalflow.airflow.dags import campaign_dag

dag = campaign_dag("{id}")
'''


def validate_all(
    settings: Settings, path: Path | None, as_of: dt.date, echo: Callable[[str], None]
) -> list[str]:
    """Validate the campaigns at ``path`` (default: the project's); return one line per problem."""
    target = path or settings.campaigns_dir
    files = [target] if target.is_file() else campaign_files(target)
    if not files:
        return [f"{target}: no campaign files (*.yaml) found"]
    rt = Runtime(settings)
    state = engine_for(settings.state_url) if settings.state_url else None
    findings = check(rt.warehouse, state, settings.campaigns_dir)  # `loyalflow doctor`, before the state
    problems = [f"{f.where}: {f.message}" for f in findings if f.level == "error"]
    if problems:
        return problems  # the segments cannot run against this warehouse (or state) yet
    rt.state  # noqa: B018 - loyalflow tables first: segments may read loyalflow_responses
    try:
        load_brand(settings.campaigns_dir)
    except LoyalflowError as exc:
        problems.append(str(exc))
    for file in files:
        try:
            campaign = load_campaign(file, settings.templates_dir)
            dag_file = settings.home / "dags" / f"{campaign.id}.py"
            if target == settings.campaigns_dir and f'campaign_dag("{campaign.id}")' not in _read(dag_file):
                raise LoyalflowError(
                    f"{file}: no DAG file {dag_file}; create it with:\n" + DAG_FILE.format(id=campaign.id)
                )
            sample = next(
                read_segment(rt.warehouse, campaign, as_of, 20, segment_params(rt, campaign)), pd.DataFrame()
            )
            rendered = check_sample(rt, campaign, sample, as_of)
            echo(
                f"ok {campaign.id}: {len(campaign.steps)} step(s), {', '.join(campaign.channels)}; "
                f"{rendered} sample row(s) rendered for {as_of}"
            )
        except LoyalflowError as exc:
            problems.append(str(exc))
    return problems


def _read(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.is_file() else ""
