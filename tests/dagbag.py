"""The one place tests load DAG files through Airflow's DagBag."""

from __future__ import annotations

from pathlib import Path

from airflow.dag_processing.dagbag import DagBag


def load_dagbag(dags_folder: Path) -> DagBag:
    """Parse every DAG file in ``dags_folder`` fresh (the loyalflow caches are cleared first)."""
    from loyalflow.airflow.dags import _runtime
    from loyalflow.settings import get_settings

    get_settings.cache_clear()
    _runtime.cache_clear()
    return DagBag(dag_folder=str(dags_folder))
