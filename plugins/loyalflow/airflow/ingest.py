"""The event ingestion DAG: every few minutes, apply provider event files dropped in ``events_dir``."""

from __future__ import annotations

from airflow.sdk import DAG, task

from loyalflow.airflow.maintenance import maintenance_dag

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
    with maintenance_dag(
        dag_id,
        "Bounces, complaints, unsubscribes and engagement from providers into loyalflow",
        schedule,
        ["events", "compliance"],
        __doc__,
        retry_minutes=2,
    ) as dag:
        for provider in PROVIDERS:
            task(task_id=f"ingest_{provider}")(ingest_folder)(provider)
    return dag
