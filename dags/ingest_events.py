"""Airflow DAG: provider events (SendGrid, SES, inbound SMS) into suppressions, responses and events."""

from loyalflow.airflow.ingest import build_ingest_dag

dag = build_ingest_dag()
