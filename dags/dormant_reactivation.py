"""Airflow DAG for campaigns/dormant_reactivation.yaml (the campaign file holds everything)."""

from loyalflow.airflow.dags import campaign_dag

dag = campaign_dag("dormant_reactivation")
