"""Airflow DAG: the daily proof-of-value report (out/report.json and out/report.html, docs/report.md)."""

from loyalflow.airflow.reporting import report_dag

dag = report_dag()
