"""Run a campaign's DAG in this process with ``dag.test()`` (the demo's final day, and tests)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from airflow.dag_processing.dagbag import DagBag

from loyalflow.errors import LoyalflowError


def run_dag_test(dags_dir: Path, campaign_id: str, as_of: dt.date) -> str:
    """Run the campaign's DAG with ``dag.test()`` for ``as_of``; return the DAG run id."""
    bag = DagBag(dag_folder=str(dags_dir / f"{campaign_id}.py"))
    if bag.import_errors:
        raise LoyalflowError(
            "; ".join(f"{f}: {e.strip().splitlines()[-1]}" for f, e in bag.import_errors.items())
        )
    dag = bag.get_dag(campaign_id)
    if dag is None:
        raise LoyalflowError(f"dags/{campaign_id}.py defines no DAG '{campaign_id}'")
    logical = dt.datetime.combine(as_of + dt.timedelta(days=1), dt.time(), tzinfo=dt.UTC)
    dag_run = dag.test(logical_date=logical, run_conf={"as_of": as_of.isoformat()})
    if str(dag_run.state) != "success":
        raise LoyalflowError(
            f"DAG {campaign_id} finished {dag_run.state} for {as_of}; see the task logs above"
        )
    return str(dag_run.run_id)
