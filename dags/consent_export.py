"""Airflow DAG: each day's consent changes as a file for the CRM (loyalflow never writes the warehouse)."""

from loyalflow.airflow.consent_export import consent_export_dag

dag = consent_export_dag()
