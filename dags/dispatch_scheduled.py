"""Airflow DAG sending messages held for quiet hours or send windows once they are due."""

from loyalflow.airflow.dags import dispatch_dag

dag = dispatch_dag()
