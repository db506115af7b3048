"""The Celery settings of loyalflow's distributed run, in one place.

tests/airflow/test_celery.py starts its cluster with :func:`celery_env`; tests/test_compose.py checks
that docker-compose.yml sets the same executor, broker scheme, result-backend scheme and concurrency.
"""

from __future__ import annotations

EXECUTOR = "CeleryExecutor"
BROKER_SCHEME = "redis"  # redis://HOST:6379/DB
# the metadata database through psycopg2, named: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3
RESULT_BACKEND_SCHEME = "db+postgresql+psycopg2"  # db+postgresql+psycopg2://USER:PASSWORD@HOST/DB
# Task slots per worker. A campaign runs at most 4 chunks at once (send_chunk's max_active_tis_per_dagrun
# in plugins/loyalflow/airflow/dags.py), so two workers of 2 slots each run a campaign at full width.
WORKER_CONCURRENCY = 2


def celery_env(broker_url: str, result_backend: str) -> dict[str, str]:
    """The ``AIRFLOW__*`` variables of a CeleryExecutor deployment on this broker and result backend."""
    for name, url, scheme in (
        ("broker_url", broker_url, BROKER_SCHEME),
        ("result_backend", result_backend, RESULT_BACKEND_SCHEME),
    ):
        if not url.startswith(f"{scheme}://"):
            raise ValueError(f"celery {name} {url!r} must start with {scheme}://")
    return {
        "AIRFLOW__CORE__EXECUTOR": EXECUTOR,
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": result_backend,
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(WORKER_CONCURRENCY),
    }
