"""What loyalflow's own DAGs share: the start date, and the settings of its maintenance DAGs (dispatch,
event ingest, consent export, the report), each owned by marketing ops and never run twice at once."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG

START_DATE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def maintenance_dag(
    dag_id: str, description: str, schedule: str, tags: list[str], doc_md: str | None, retry_minutes: int
) -> DAG:
    """A maintenance DAG: no catch-up, one run at a time, two retries ``retry_minutes`` apart."""
    return DAG(
        dag_id=dag_id,
        description=description,
        schedule=schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        tags=["loyalflow", *tags],
        doc_md=doc_md,
        default_args={
            "owner": "marketing-ops",
            "retries": 2,
            "retry_delay": dt.timedelta(minutes=retry_minutes),
        },
    )
