"""The DAG run's note, set from the ``report`` task through Airflow's public REST API v2.

Airflow 3 tasks have no database access and the Task SDK cannot write a note, so the task does what a
user would: ``PATCH /api/v2/dags/{dag_id}/dagRuns/{run_id}`` with ``{"note": ...}``, authenticated with
a token from ``POST /auth/token``. The API server and the user come from the Connection
``loyalflow_airflow_api`` (host: the API server's base URL, login and password: an Airflow user allowed
to edit DAG runs). ``make airflow`` sets it; without it the summary is only logged.
"""

from __future__ import annotations

import logging
from urllib.parse import quote

import httpx
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

CONN_ID = "loyalflow_airflow_api"
log = logging.getLogger(__name__)


def api_base(host: str, port: int | None) -> str:
    """The API server's base URL from a Connection's host (with or without a scheme) and port."""
    host = host.strip().rstrip("/")
    if "://" in host:
        return host
    return f"http://{host}:{port}" if port else f"http://{host}"


def set_note(dag_id: str, run_id: str, text: str, conn_id: str = CONN_ID) -> bool:
    """Set the DAG run's note; False (logged, never raised) when there is no Connection or it fails."""
    try:
        conn = BaseHook.get_connection(conn_id)
    except AirflowNotFoundException:
        log.info(
            "no Airflow Connection '%s': the run summary is in this log only, not the run's note", conn_id
        )
        return False
    base = api_base(conn.host or "", conn.port)
    try:
        with httpx.Client(base_url=base, timeout=30) as http:
            login = http.post("/auth/token", json={"username": conn.login, "password": conn.password})
            login.raise_for_status()
            token = login.json()["access_token"]
            response = http.patch(
                f"/api/v2/dags/{quote(dag_id, safe='')}/dagRuns/{quote(run_id, safe='')}",
                params={"update_mask": "note"},
                json={"note": text},
                headers={"Authorization": f"Bearer {token}"},
            )
            response.raise_for_status()
    except (httpx.HTTPError, KeyError, ValueError) as exc:
        log.warning(
            "could not set the note of %s %s through %s (Connection '%s'): %s",
            dag_id,
            run_id,
            base,
            conn_id,
            exc,
        )
        return False
    return True
