"""A campaign DAG written in Python: build_dag() runs the Campaign it is given, not the YAML file."""

from __future__ import annotations

import datetime as dt
import json
import textwrap
from pathlib import Path

import pytest

from loyalflow.errors import CampaignError
from loyalflow.settings import Settings
from loyalflow.spec import Step, define_campaign
from tests.conftest import ROOT
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


@pytest.mark.airflow
def test_the_shipped_python_campaign_runs_like_a_yaml_one(
    airflow_db: str, settings: Settings, shop: Shop
) -> None:
    """dags/stay_anniversary.py: a year after a completed stay, once; a guest who booked again since left."""
    stayed, returned = shop.customer(), shop.customer()
    shop.order(stayed, dt.datetime(2025, 11, 20, 10))
    shop.order(returned, dt.datetime(2025, 11, 20, 11))
    shop.order(returned, dt.datetime(2026, 6, 1, 9))
    bag = load_dagbag(ROOT / "dags")
    assert bag.import_errors == {}
    dag = bag.get_dag("stay_anniversary")
    assert "python" in dag.tags and "dags/stay_anniversary.py" in (dag.doc_md or "")
    for day in (21, 22):  # the second run (a rerun of the catch-up window) adds nothing
        run = dag.test(logical_date=dt.datetime(2026, 11, day, tzinfo=dt.UTC))
        assert str(run.state) == "success"
    sent = [json.loads(line) for f in Path(settings.outbox_dir).rglob("*.jsonl") for line in f.open()]
    assert [(m["customer_id"], m["step"]) for m in sent] == [(stayed, "anniversary")]
    assert "a year ago you stayed" in sent[0]["subject"].lower()


def test_a_python_campaign_is_checked_like_a_yaml_file(tmp_path: Path) -> None:
    fields = {
        "id": "stay_anniversary",
        "name": "x",
        "channels": ["email"],
        "segment": "sql/stay_anniversary.sql",
    }
    source = ROOT / "campaigns" / "stay_anniversary.py"
    steps = [Step(id="no_such_step")]
    with pytest.raises(CampaignError, match=r"stay_anniversary\.py: steps\.0\.template: missing template"):
        define_campaign(source, ROOT / "templates", steps=steps, **fields)
    with pytest.raises(CampaignError, match=r"stay_anniversary\.py: channels\.0"):
        define_campaign(source, ROOT / "templates", steps=steps, **{**fields, "channels": ["fax"]})
