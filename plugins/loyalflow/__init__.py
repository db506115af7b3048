"""loyalflow: lifecycle marketing campaigns described in YAML, run by Airflow or the CLI."""

__version__ = "0.1.0"
