"""Airflow local settings of the Celery test cluster (tests/airflow_cluster.py puts this folder first
on every process's PYTHONPATH; Airflow imports ``airflow_local_settings`` from the path).

- ``task_policy`` is an Airflow cluster policy: it shortens the retry delay (5 minutes in
  plugins/loyalflow/airflow/dags.py) so a task lost with a killed worker is retried within the test.
- ``worker_hostname`` is ``[core] hostname_callable`` for the workers: both run on one machine, so the
  task instances' ``hostname`` tells them apart only by the name each worker is given.
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from typing import Any

RETRY_DELAY = dt.timedelta(seconds=2)
HOSTNAME_VARIABLE = "LOYALFLOW_TEST_WORKER_HOSTNAME"


def task_policy(task: Any) -> None:
    """Retry a failed task after :data:`RETRY_DELAY`."""
    task.retry_delay = RETRY_DELAY


def worker_hostname() -> str:
    """The name this worker was started with, else the machine's name."""
    return os.environ.get(HOSTNAME_VARIABLE) or socket.getfqdn()
