"""Airflow DAG for campaigns/referral_ask.yaml (the campaign file holds everything)."""
from loyalflow.dag_factory import campaign_dag

dag = campaign_dag("referral_ask")
