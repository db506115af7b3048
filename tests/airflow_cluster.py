"""A real Airflow 3 CeleryExecutor cluster on loopback, for tests/airflow/test_celery.py.

:func:`start_cluster` creates fresh PostgreSQL databases (Airflow metadata and Celery results,
warehouse, loyalflow state), seeds the demo warehouse, migrates Airflow, then starts an API server,
a scheduler, a DAG processor and Celery workers, each in its own process group. The workers have their
own ``AIRFLOW_HOME``, log-server port and hostname. Everything is stopped and the databases and the
Redis database are dropped on exit.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
import sqlalchemy as sa
import yaml
from celery import Celery

from loyalflow.demo.data import seed
from loyalflow.settings import Settings
from loyalflow.state import ensure_schema
from tests.celery_config.airflow_local_settings import HOSTNAME_VARIABLE
from tests.celery_settings import BROKER_SCHEME, RESULT_BACKEND_SCHEME, celery_env
from tests.conftest import ROOT, TEST_KEY
from tests.web.conftest import free_port

AIRFLOW = Path(sys.executable).parent / "airflow"
PG_SERVER = "postgres@127.0.0.1:5432"
REDIS_HOST, REDIS_PORT, REDIS_DB = "127.0.0.1", 6379, 13  # a database of its own on the local Redis
AS_OF = dt.date(2026, 11, 20)
CUSTOMERS = 2000
CHUNK_SIZE = 120  # several chunks per run from a 2,000-customer demo warehouse
ADMIN, PASSWORD = "admin", secrets.token_urlsafe(12)
STARTUP_SECONDS = 150
CONFIG = ROOT / "tests" / "celery_config"  # airflow_local_settings.py of every cluster process


@dataclass
class Proc:
    """One started process (the leader of its own process group) and its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def tail(self, chars: int = 3000) -> str:
        return f"--- {self.name} ---\n{self.log.read_text(errors='replace')[-chars:]}"

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (a worker's pool processes and the tasks they supervise)."""
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, sig)
        self.popen.wait(30)


@dataclass
class Cluster:
    """The running cluster: its REST API client, the workers, and the loyalflow settings the tasks use."""

    base: str
    api: httpx.Client
    settings: Settings  # what every task's loyalflow reads (PostgreSQL warehouse and state)
    procs: dict[str, Proc] = field(default_factory=dict)
    workers: list[str] = field(default_factory=list)

    def logs(self) -> str:
        """The end of every process's log, for assertion messages."""
        return "\n".join(p.tail() for p in self.procs.values())

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> str:
        """Unpause ``dag_id`` and trigger a run with ``conf`` through the REST API v2; returns its run id."""
        self.api.patch(f"/api/v2/dags/{dag_id}", json={"is_paused": False}).raise_for_status()
        response = self.api.post(f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf})
        assert response.status_code == 200, response.text
        return str(response.json()["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        response = self.api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        response.raise_for_status()
        return str(response.json()["state"])

    def wait_run(self, dag_id: str, run_id: str, timeout: float) -> str:
        """Poll until the run is finished; returns its final state."""
        deadline = time.monotonic() + timeout
        while (state := self.run_state(dag_id, run_id)) not in ("success", "failed"):
            assert time.monotonic() < deadline, f"run {run_id} still {state}:\n{self.logs()}"
            time.sleep(1)
        return state

    def task_instances(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        """The run's task instances of ``task_id`` (one per map index)."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
        response = self.api.get(path, params={"limit": 500})
        response.raise_for_status()
        return [ti for ti in response.json()["task_instances"] if ti["task_id"] == task_id]

    def tries(self, dag_id: str, run_id: str, task_id: str, map_index: int) -> list[dict[str, Any]]:
        """Every try of one mapped task instance, oldest first."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/{map_index}/tries"
        response = self.api.get(path)
        response.raise_for_status()
        return sorted(response.json()["task_instances"], key=lambda ti: ti["try_number"])


def services_reachable() -> str | None:
    """Why PostgreSQL or Redis cannot be used, or None when both answer."""
    try:
        engine = sa.create_engine(f"postgresql+psycopg2://{PG_SERVER}/test")
        with engine.connect():
            pass
        engine.dispose()
    except sa.exc.OperationalError as exc:
        return f"PostgreSQL on 127.0.0.1:5432: {exc}"
    try:
        redis.Redis(REDIS_HOST, REDIS_PORT, socket_timeout=2).ping()
    except redis.RedisError as exc:
        return f"Redis on 127.0.0.1:6379: {exc}"
    return None


@contextmanager
def databases(*names: str) -> Iterator[list[str]]:
    """Fresh PostgreSQL databases with these names (SQLAlchemy URLs), dropped afterwards."""
    admin = sa.create_engine(f"postgresql+psycopg2://{PG_SERVER}/test", isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in names:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield [f"postgresql+psycopg2://{PG_SERVER}/{name}" for name in names]
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def project(home: Path, campaign_ids: list[str]) -> Path:
    """A LOYALFLOW_HOME with the shipped campaigns and templates, the chosen campaigns unscheduled
    (runs only when triggered, retried once), and a dags/ folder with only their DAG files."""
    shutil.copytree(ROOT / "campaigns", home / "campaigns")
    shutil.copytree(ROOT / "templates", home / "templates")
    (home / "dags").mkdir()
    for campaign_id in campaign_ids:
        path = home / "campaigns" / f"{campaign_id}.yaml"
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        path.write_text(yaml.safe_dump({**spec, "schedule": None, "retries": 1}), encoding="utf-8")
        shutil.copy(ROOT / "dags" / f"{campaign_id}.py", home / "dags")
    return home


def _start(procs: dict[str, Proc], name: str, args: list[str], env: dict[str, str], logs: Path) -> None:
    log = logs / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            [str(AIRFLOW), *args], env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    procs[name] = Proc(name, popen, log)


def _stop(proc: Proc) -> None:
    """SIGTERM to the process group, SIGKILL if it lingers."""
    if proc.popen.poll() is not None:
        return
    os.killpg(proc.popen.pid, signal.SIGTERM)
    try:
        proc.popen.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()


def _wait_ready(cluster: Cluster, dag_ids: list[str], broker_url: str) -> None:
    """Until the API and scheduler are healthy, the DAGs are parsed and every worker answers a ping."""
    app = Celery(broker=broker_url)
    deadline = time.monotonic() + STARTUP_SECONDS
    pending = ["health", *dag_ids, "workers"]
    while pending:
        for proc in cluster.procs.values():
            assert proc.popen.poll() is None, f"{proc.name} exited:\n{cluster.logs()}"
        assert time.monotonic() < deadline, f"cluster not ready ({pending[0]}):\n{cluster.logs()}"
        step = pending[0]
        try:
            if step == "health":
                health = httpx.get(f"{cluster.base}/api/v2/monitor/health", timeout=5).json()
                ready = health["scheduler"]["status"] == "healthy"
                ready = ready and (health.get("dag_processor") or {}).get("status") == "healthy"
            elif step == "workers":
                answered = {name for reply in app.control.ping(timeout=2) for name in reply}
                ready = {f"celery@{w}" for w in cluster.workers} <= answered
            else:
                ready = cluster.api.get(f"/api/v2/dags/{step}").status_code == 200
        except (httpx.HTTPError, KeyError, ValueError):
            ready = False
        if ready:
            pending.pop(0)
        else:
            time.sleep(1)


@contextmanager
def start_cluster(tmp: Path, campaign_ids: list[str], workers: tuple[str, ...] = ("worker-a", "worker-b")):
    """Start the cluster (see the module docstring) and yield a :class:`Cluster`; stop everything after."""
    tag = f"lf_celery_{uuid.uuid4().hex[:8]}"
    broker_url = f"{BROKER_SCHEME}://{REDIS_HOST}:{REDIS_PORT}/{REDIS_DB}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    logs = tmp / "logs"
    logs.mkdir()
    with ExitStack() as stack:
        meta_url, warehouse_url, state_url = stack.enter_context(
            databases(tag, f"{tag}_warehouse", f"{tag}_state")
        )
        flush = redis.Redis(REDIS_HOST, REDIS_PORT, REDIS_DB)
        flush.flushdb()
        stack.callback(flush.flushdb)
        home = project(tmp / "project", campaign_ids)
        settings = Settings(
            home=home,
            warehouse_url=warehouse_url,
            state_url=state_url,
            outbox_dir=tmp / "outbox",
            work_url=str(tmp / "work"),
            secret_key=TEST_KEY,
            chunk_size=CHUNK_SIZE,
            outbox_eml="none",
            # the two test runs are independent: neither campaign's sends take the other's cap slots
            cap_marketing_per_day=10,
            cap_marketing_per_week=20,
        )
        seed(sa.create_engine(warehouse_url), AS_OF, customers=CUSTOMERS)
        ensure_schema(sa.create_engine(state_url))  # once, before tasks race to create it
        passwords = tmp / "passwords.json"
        passwords.write_text(json.dumps({ADMIN: PASSWORD}))
        core = tmp / "airflow"
        core.mkdir()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "LOYALFLOW_"))},
            **{f"LOYALFLOW_{k.upper()}": str(v) for k, v in settings.model_dump(exclude_none=True).items()},
            **celery_env(broker_url, result_backend=f"{RESULT_BACKEND_SCHEME}://{PG_SERVER}/{tag}"),
            # first on the path, before whatever the caller's PYTHONPATH holds
            "PYTHONPATH": os.pathsep.join(filter(None, [str(CONFIG), os.environ.get("PYTHONPATH")])),
            "AIRFLOW_HOME": str(core),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": meta_url,
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__FERNET_KEY": "",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
            # where the report task sets the run's note (plugins/loyalflow/airflow/note.py)
            "AIRFLOW_CONN_LOYALFLOW_AIRFLOW_API": json.dumps(
                {"conn_type": "http", "host": base, "login": ADMIN, "password": PASSWORD}
            ),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__API__BASE_URL": base,
            "AIRFLOW__API__SECRET_KEY": secrets.token_hex(16),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            # a task whose worker died is failed (and retried) after 20 s without a heartbeat
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "2",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",  # parse once, spare the CPU
            "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        }
        migrate = subprocess.run([str(AIRFLOW), "db", "migrate"], env=env, capture_output=True, timeout=300)
        assert migrate.returncode == 0, migrate.stdout.decode()[-2000:] + migrate.stderr.decode()[-2000:]
        cluster = Cluster(base, httpx.Client(base_url=base, timeout=30), settings, workers=list(workers))
        stack.callback(cluster.api.close)
        for proc_name, args in (
            ("api-server", ["api-server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]),
            ("scheduler", ["scheduler"]),
            ("dag-processor", ["dag-processor"]),
        ):
            _start(cluster.procs, proc_name, args, env, logs)
            stack.callback(_stop, cluster.procs[proc_name])
        for worker in workers:
            worker_home = tmp / worker
            worker_home.mkdir()
            worker_env = {
                **env,
                "AIRFLOW_HOME": str(worker_home),
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                "AIRFLOW__CORE__HOSTNAME_CALLABLE": "airflow_local_settings.worker_hostname",
                HOSTNAME_VARIABLE: worker,
            }
            args = ["celery", "worker", "--celery-hostname", worker, "--without-mingle", "--without-gossip"]
            _start(cluster.procs, worker, args, worker_env, logs)
            stack.callback(_stop, cluster.procs[worker])
        token = _token(base, cluster)
        cluster.api.headers["Authorization"] = f"Bearer {token}"
        _wait_ready(cluster, campaign_ids, broker_url)
        yield cluster


def _token(base: str, cluster: Cluster) -> str:
    """A JWT from the simple auth manager's /auth/token, once the API server answers."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while True:
        api = cluster.procs["api-server"]
        assert api.popen.poll() is None, f"api-server exited:\n{api.tail()}"
        try:
            response = httpx.post(
                f"{base}/auth/token", json={"username": ADMIN, "password": PASSWORD}, timeout=5
            )
            if response.status_code in (200, 201):
                return str(response.json()["access_token"])
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"no token from the API server:\n{cluster.logs()}"
        time.sleep(1)
