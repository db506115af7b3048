"""Airflow DAG for campaigns/buying_cycle_nurture.yaml (the campaign file holds everything)."""

from loyalflow.airflow.dags import campaign_dag

dag = campaign_dag("buying_cycle_nurture")
