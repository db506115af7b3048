"""The consent export DAG: each day, the consent changes loyalflow recorded that day, as one file.

Writes ``<LOYALFLOW_CONSENT_EXPORT_URL or LOYALFLOW_HOME/out/consent>/consent-<day>.csv`` with the rows
of ``loyalflow_consent`` recorded on the run's day (its data interval, else the day before the run),
for the CRM to sync back: loyalflow never writes the warehouse. A rerun rewrites the same file.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import DAG, get_current_context, task

from loyalflow.airflow.maintenance import maintenance_dag


def _naive_utc(value: Any) -> dt.datetime:
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    return moment.astimezone(dt.UTC).replace(tzinfo=None) if moment.tzinfo else moment


def export_day(start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
    """Export the changes recorded in ``[start, end)`` to the day's file; its URL and row count."""
    from loyalflow.runtime import Runtime
    from loyalflow.settings import get_settings
    from loyalflow.web.consent_export import default_url, export

    rt = Runtime(get_settings())
    url = default_url(rt.settings, start.date())
    rows = export(rt.state, start, url, "csv", before=end)
    return {"url": url, "rows": rows}


def consent_export_dag(dag_id: str = "consent_export", schedule: str = "@daily") -> DAG:
    """One task: the data interval's consent changes into ``consent-<day>.csv``."""
    with maintenance_dag(
        dag_id,
        "Consent changes loyalflow received (preference centre, one-click, STOP, complaints)",
        schedule,
        ["consent", "compliance"],
        __doc__,
        retry_minutes=5,
    ) as dag:

        @task
        def export_consent() -> dict[str, Any]:
            """Write the day's consent changes (a LoyalflowError fails the task with its one line)."""
            from loyalflow.airflow.dags import one_line_errors

            context = get_current_context()
            end = _naive_utc(context.get("data_interval_end") or context["dag_run"].run_after)
            start = _naive_utc(context.get("data_interval_start") or end)
            if start >= end:  # a cron trigger (Airflow 3's default) has no interval: the day before
                start = end - dt.timedelta(days=1)
            with one_line_errors():
                return export_day(start, end)

        export_consent()
    return dag
