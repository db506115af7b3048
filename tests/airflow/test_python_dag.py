"""A campaign DAG written in Python: build_dag() runs the Campaign it is given, not the YAML file."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path

import pytest

from loyalflow.settings import Settings
from tests.dagbag import load_dagbag
from tests.factories import Shop

PYTHON_DAG = '''
"""Thank-you by SMS first: the YAML campaign, changed in Python (docs/airflow.md)."""
from loyalflow.airflow.dags import build_dag
from loyalflow.settings import get_settings
from loyalflow.spec import load_campaign

settings = get_settings()
yaml_campaign = load_campaign(settings.campaigns_dir / "thank_you.yaml", settings.templates_dir)
changes = {"channels": ["sms", "email"], "tags": ["python"], "source": yaml_campaign.source}
campaign = yaml_campaign.model_validate({**yaml_campaign.model_dump(), **changes})
dag = build_dag(campaign)
'''


@pytest.mark.airflow
def test_a_campaign_changed_in_python_runs_as_changed(
    airflow_db: str, settings: Settings, shop: Shop, project: Path
) -> None:
    (project / "dags" / "thank_you.py").write_text(textwrap.dedent(PYTHON_DAG))
    both = shop.customer(phone="+14155550123", channels=("email", "sms"), timezone="America/Los_Angeles")
    shop.order(both, dt.datetime(2026, 11, 20, 18))
    bag = load_dagbag(project / "dags")
    assert bag.import_errors == {}
    dag = bag.get_dag("thank_you")
    assert "python" in dag.tags
    run = dag.test(logical_date=dt.datetime(2026, 11, 21, tzinfo=dt.UTC))
    assert str(run.state) == "success"
    (message,) = [json.loads(line) for f in Path(settings.outbox_dir).rglob("*.jsonl") for line in f.open()]
    assert message["channel"] == "sms" and message["to"] == "+14155550123"  # the YAML says email first
