"""Airflow DAG for campaigns/referral_ask.yaml (the campaign file holds everything)."""

from loyalflow.airflow.dags import campaign_dag

dag = campaign_dag("referral_ask")
