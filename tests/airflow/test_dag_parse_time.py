"""DAG files stay cheap to parse: each costs at most twice a trivial one-task DAG.

Measured the way Airflow's DAG processor parses: in a child forked from one process that has already
imported ``airflow.sdk`` (so each file pays its own imports, loyalflow's included, and nothing else).
Every file is timed in fresh children, best of seven interleaved rounds, against the trivial DAG timed
the same way.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.conftest import ROOT

TRIVIAL = """
import datetime as dt
from airflow.sdk import DAG, task

with DAG(dag_id="trivial", schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC)) as dag:
    @task
    def hello() -> None:
        print("hello")

    hello()
"""

MEASURE = textwrap.dedent(
    """
    import json, os, runpy, sys, time
    import airflow.sdk  # noqa: F401  (the DAG processor has Airflow loaded before it forks)

    def parse(path):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(read)
            started = time.perf_counter()
            runpy.run_path(path, run_name="dag_file")
            os.write(write, repr(time.perf_counter() - started).encode())
            os._exit(0)
        os.close(write)
        with os.fdopen(read) as fh:
            seconds = float(fh.read() or "nan")
        os.waitpid(pid, 0)
        return seconds

    paths = sys.argv[1:]
    best = {p: float("inf") for p in paths}
    for _ in range(7):  # rounds over every file, so a busy moment touches all of them alike
        for p in paths:
            best[p] = min(best[p], parse(p))
    print(json.dumps(best))
    """
)


def test_every_dag_file_parses_within_twice_a_trivial_dag(tmp_path: Path) -> None:
    trivial = tmp_path / "trivial_dag.py"
    trivial.write_text(TRIVIAL)
    files = sorted(str(p) for p in (ROOT / "dags").glob("*.py"))
    env = {**os.environ, "LOYALFLOW_HOME": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(trivial), *files],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    times = json.loads(done.stdout.strip().splitlines()[-1])
    base = times.pop(str(trivial))
    ratios = {Path(path).name: seconds / base for path, seconds in times.items()}
    print({name: f"{ratio:.2f}x" for name, ratio in ratios.items()}, f"trivial {base * 1000:.1f} ms")
    assert len(ratios) == len(files) >= 8
    slow = {name: round(ratio, 2) for name, ratio in ratios.items() if ratio > 2.0}
    assert not slow, f"DAG files over 2x a trivial DAG's parse time: {slow} (trivial: {base * 1000:.1f} ms)"


def test_the_measure_sees_a_heavy_dag_file(tmp_path: Path) -> None:
    """The harness is not blind: a DAG file that imports pandas at the top is far over the limit."""
    trivial, heavy = tmp_path / "trivial_dag.py", tmp_path / "heavy_dag.py"
    trivial.write_text(TRIVIAL)
    heavy.write_text("import pandas\nimport sqlalchemy\n" + TRIVIAL)
    done = subprocess.run(
        [sys.executable, "-c", MEASURE, str(trivial), str(heavy)], capture_output=True, text=True, check=True
    )
    times = json.loads(done.stdout.strip().splitlines()[-1])
    assert times[str(heavy)] > 2.0 * times[str(trivial)]
