"""Airflow DAG for campaigns/remorse_reduction.yaml (the campaign file holds everything)."""

from loyalflow.airflow.dags import campaign_dag

dag = campaign_dag("remorse_reduction")
