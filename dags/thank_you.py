"""Airflow DAG for campaigns/thank_you.yaml (the campaign file holds everything)."""

from loyalflow.airflow.dags import campaign_dag

dag = campaign_dag("thank_you")
