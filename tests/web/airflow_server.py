"""A real ``airflow api-server`` on loopback, with this project's plugins and DAGs, for the web tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.conftest import ROOT

AIRFLOW = Path(sys.executable).parent / "airflow"


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group (it forks workers), SIGKILL if it lingers."""
    if proc.poll() is not None:
        return
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@contextmanager
def api_server(folder: Path, port: int, env: dict[str, str]) -> Iterator[tuple[str, Path, Path]]:
    """Migrate a fresh metadata database under ``folder``, start the API server with ``env`` (loyalflow's
    settings and any Airflow overrides) and yield (base URL, AIRFLOW_HOME, log file) once it is healthy."""
    home = folder / "airflow"
    home.mkdir()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "LOYALFLOW_"))},
        "LOYALFLOW_HOME": str(ROOT),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        **env,
    }
    migrate = subprocess.run([str(AIRFLOW), "db", "migrate"], env=env, capture_output=True, timeout=300)
    assert migrate.returncode == 0, migrate.stderr.decode()[-2000:]
    log = folder / "api-server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(AIRFLOW), "api-server", "--port", str(port), "--host", "127.0.0.1", "--workers", "1"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped whole
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, f"api-server exited: {log.read_text()[-3000:]}"
            try:
                if httpx.get(f"{base}/api/v2/monitor/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, f"api-server not healthy: {log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield base, home, log
    finally:
        stop(proc)
