"""Airflow DAG: provider events (SendGrid, SES, inbound SMS) into suppressions, responses and events."""

from loyalflow.ingest_dag import build_ingest_dag

dag = build_ingest_dag()
