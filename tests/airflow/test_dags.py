"""Every DAG imports, is well-formed, and thank-you runs end to end through dag.test()."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from loyalflow.settings import Settings
from tests.conftest import ROOT
from tests.dagbag import load_dagbag
from tests.factories import Shop

CAMPAIGNS = ("buying_cycle_nurture", "thank_you", "remorse_reduction", "referral_ask", "dormant_reactivation")


def test_dagbag_has_no_import_errors_and_every_dag_is_well_formed(
    airflow_db: str, settings: Settings
) -> None:
    bag = load_dagbag(ROOT / "dags")
    assert bag.import_errors == {}
    assert set(CAMPAIGNS) <= set(bag.dag_ids)
    for dag_id in bag.dag_ids:
        dag = bag.get_dag(dag_id)
        assert dag.tags, dag_id
        assert dag.doc_md, dag_id
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", (dag_id, task.task_id)
            assert task.retries >= 1, (dag_id, task.task_id)
    thank_you = bag.get_dag("thank_you")
    assert {"as_of", "dry_run", "send_limit"} <= set(thank_you.params.keys())
    assert [t.task_id for t in thank_you.tasks] == ["plan", "send_chunk", "report"]


def test_broken_campaign_is_an_import_error_for_that_campaign_alone(airflow_db: str, project: Path) -> None:
    path = project / "campaigns" / "thank_you.yaml"
    path.write_text(path.read_text().replace("catch_up_days: 1", "catch_up_days: 1\ncatchup_dayz: 3"))
    bag = load_dagbag(project / "dags")
    assert list(bag.import_errors) and all("thank_you.py" in f for f in bag.import_errors)
    (error,) = bag.import_errors.values()
    last = error.strip().splitlines()[-1]
    assert "thank_you.yaml:" in last and "catchup_dayz: unknown field" in last
    assert "thank_you" not in bag.dag_ids
    assert set(CAMPAIGNS) - {"thank_you"} <= set(bag.dag_ids)


def _outbox(settings: Settings) -> list[dict]:
    return [json.loads(line) for f in Path(settings.outbox_dir).rglob("*.jsonl") for line in f.open()]


@pytest.mark.airflow
def test_thank_you_runs_through_dag_test_and_a_rerun_adds_nothing(
    airflow_db: str, settings: Settings, shop: Shop
) -> None:
    as_of = dt.date(2026, 11, 20)
    buyers = [shop.customer() for _ in range(3)]
    for cid in buyers:
        shop.order(cid, dt.datetime(2026, 11, 20, 9))
    dag = load_dagbag(ROOT / "dags").get_dag("thank_you")
    logical = dt.datetime(2026, 11, 21, tzinfo=dt.UTC)
    first = dag.test(logical_date=logical)  # as_of from the data interval: the day before the run
    assert str(first.state) == "success"
    assert sorted(m["customer_id"] for m in _outbox(settings)) == sorted(buyers)
    second = dag.test(logical_date=logical, run_conf={"as_of": as_of.isoformat()})
    assert str(second.state) == "success"
    assert len(_outbox(settings)) == 3
