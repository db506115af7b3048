"""The reporting DAG: each day, report.json and report.html as of the day before the run.

Writes ``LOYALFLOW_REPORT_DIR`` (default ``out/``), which the plugin's "Campaign report" view serves
in the Airflow UI. The as-of day is the end of the run's data interval minus one day (the last whole
day), or the day before the run for a trigger without an interval. A rerun rewrites the same files.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import DAG, get_current_context, task

from loyalflow.airflow.maintenance import maintenance_dag


def report_day(as_of: dt.date) -> dict[str, Any]:
    """Build and write the report as of ``as_of``; the files written and the steps that help."""
    from loyalflow.report.build import build_report, write_report
    from loyalflow.runtime import Runtime
    from loyalflow.settings import get_settings

    rt = Runtime(get_settings())
    found = build_report(rt.state, rt.warehouse, as_of, rt.settings.attribution_days)
    paths = write_report(found, rt.settings.report_dir)
    helps = [f"{s['campaign']}.{s['step']}" for s in found["steps"] if s["verdict_kind"] == "helps"]
    return {"as_of": as_of.isoformat(), "files": [str(p) for p in paths], "helps": helps}


def report_dag(dag_id: str = "loyalflow_report", schedule: str = "@daily") -> DAG:
    """One task: the report as of the last whole day."""
    with maintenance_dag(
        dag_id,
        "Lift with confidence intervals per campaign step: report.json and report.html",
        schedule,
        ["report"],
        __doc__,
        retry_minutes=5,
    ) as dag:

        @task
        def write_report() -> dict[str, Any]:
            """Write the day's report (a LoyalflowError fails the task with its one line)."""
            from loyalflow.airflow.dags import one_line_errors

            context = get_current_context()
            end = context.get("data_interval_end") or context["dag_run"].run_after
            with one_line_errors():
                return report_day(end.date() - dt.timedelta(days=1))

        write_report()
    return dag
