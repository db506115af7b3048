"""The event ingestion DAG: every few minutes, apply provider event files dropped in ``events_dir``."""

from __future__ import annotations

import datetime as dt

from airflow.sdk import DAG, task

PROVIDERS = ("sendgrid", "ses", "sms")  # loyalflow.web.events.PROVIDERS (not imported at parse time)


def ingest_folder(provider: str) -> dict[str, int]:
    """Apply every ``<events_dir>/<provider>/*.json`` file once, then move it to ``done/``."""
    from collections import Counter

    from loyalflow.settings import get_settings
    from loyalflow.web.events import ingest

    settings = get_settings()
    folder = settings.events_dir / provider
    totals: Counter[str] = Counter()
    for path in sorted(folder.glob("*.json*")):
        totals.update(ingest(settings, provider, path.read_bytes()))
        done = folder / "done"
        done.mkdir(exist_ok=True)
        path.replace(done / path.name)
    return dict(totals)


def build_ingest_dag(dag_id: str = "ingest_events", schedule: str = "*/15 * * * *") -> DAG:
    """One task per provider (SendGrid, SES, inbound SMS); duplicates are harmless (event-id dedupe)."""
    with DAG(
        dag_id=dag_id,
        description="Bounces, complaints, unsubscribes and engagement from providers into loyalflow",
        schedule=schedule,
        start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
        catchup=False,
        max_active_runs=1,
        tags=["loyalflow", "events", "compliance"],
        doc_md=__doc__,
        default_args={"owner": "marketing-ops", "retries": 2, "retry_delay": dt.timedelta(minutes=2)},
    ) as dag:
        for provider in PROVIDERS:
            task(task_id=f"ingest_{provider}")(ingest_folder)(provider)
    return dag
