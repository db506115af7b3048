"""The Airflow corner: DAGs built from the library (the only package that imports Airflow)."""
