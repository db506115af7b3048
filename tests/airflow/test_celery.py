"""A campaign run on Airflow's CeleryExecutor: chunks on two workers, exactly once, and a killed worker.

The cluster (tests/airflow_cluster.py) runs on loopback with a PostgreSQL metadata database, a Redis
broker and a PostgreSQL result backend; loyalflow's warehouse and state are PostgreSQL too. Each run
is compared with the same campaign run in this process by ``loyalflow.pipeline.run`` on a fresh
state: the outbox and the ledger must hold exactly the messages of that reference, each once.
"""

from __future__ import annotations

import json
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from loyalflow.deliver.ledger import BUNDLED
from loyalflow.pipeline import run
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.state import decisions, ledger
from tests.airflow_cluster import AS_OF, Cluster, services_reachable, start_cluster
from tests.conftest import IN_CI

pytestmark = pytest.mark.airflow
SPREAD, KILLED = "dormant_reactivation", "buying_cycle_nurture"
RUN_SECONDS = 150


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    missing = services_reachable()
    if missing:
        if IN_CI:
            pytest.fail(f"the Celery test needs PostgreSQL and Redis under CI=true: {missing}")
        pytest.skip(missing)
    with start_cluster(tmp_path_factory.mktemp("celery"), [SPREAD, KILLED]) as running:
        yield running


def reference_keys(cluster: Cluster, campaign_id: str, tmp: Path) -> set[str]:
    """The keys the campaign sends when run in one process on the same warehouse and a fresh state."""
    settings = cluster.settings.model_copy(
        update={"state_url": f"sqlite:///{tmp / 'state.db'}", "outbox_dir": tmp / "outbox"}
    )
    run(Runtime(settings), campaign_id, RunOptions(AS_OF, "reference"))
    return set(outbox_keys(tmp / "outbox", campaign_id))


def outbox_keys(outbox: Path, campaign_id: str) -> list[str]:
    """The idempotency key of every outbox record of the campaign, duplicates kept."""
    return [
        json.loads(line)["idempotency_key"]
        for path in sorted((outbox / campaign_id).glob("*.jsonl"))
        for line in path.read_text(encoding="utf-8").splitlines()
    ]


def assert_exactly_once(cluster: Cluster, campaign_id: str, run_id: str, expected: set[str]) -> None:
    """Outbox and ledger hold every expected message once, nothing else; the decisions agree."""
    sent = outbox_keys(cluster.settings.outbox_dir, campaign_id)
    doubled = sorted(k for k, n in Counter(sent).items() if n > 1)
    assert not doubled, f"{len(doubled)} messages in the outbox more than once, e.g. {doubled[:3]}"
    assert set(sent) == expected, (
        f"outbox vs reference: {len(expected - set(sent))} lost, {len(set(sent) - expected)} extra"
    )
    engine = sa.create_engine(cluster.settings.state_url or "")
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(ledger.c.idempotency_key, ledger.c.status).where(
                ledger.c.campaign == campaign_id, ledger.c.status != BUNDLED
            )
        ).all()
        decided = conn.execute(
            sa.select(decisions.c.idempotency_key).where(
                decisions.c.run_id == run_id, decisions.c.outcome == "sent"
            )
        ).scalars()
        decided_sent = list(decided)
    engine.dispose()
    assert Counter(status for _, status in rows) == {"sent": len(expected)}
    assert {key for key, _ in rows} == expected
    assert sorted(decided_sent) == sorted(expected), "each message has exactly one 'sent' decision"


def hostnames(cluster: Cluster, dag_id: str, run_id: str) -> Counter[str]:
    """How many mapped send_chunk task instances each worker ran to success."""
    tis = cluster.task_instances(dag_id, run_id, "send_chunk")
    assert tis and all(ti["state"] == "success" for ti in tis), [(ti["map_index"], ti["state"]) for ti in tis]
    return Counter(ti["hostname"] for ti in tis)


def test_one_run_spreads_its_chunks_over_both_workers(cluster: Cluster, tmp_path: Path) -> None:
    expected = reference_keys(cluster, SPREAD, tmp_path)
    assert len(expected) > 100
    started = time.monotonic()
    run_id = cluster.trigger(SPREAD, {"as_of": AS_OF.isoformat()})
    assert cluster.wait_run(SPREAD, run_id, RUN_SECONDS) == "success", cluster.logs()
    seconds, per_worker = time.monotonic() - started, hostnames(cluster, SPREAD, run_id)
    print(f"celery: {SPREAD} {sum(per_worker.values())} chunks in {seconds:.1f}s {per_worker}")
    assert set(per_worker) == set(cluster.workers), per_worker
    assert_exactly_once(cluster, SPREAD, run_id, expected)


def test_a_killed_worker_s_chunk_is_retried_on_the_other(cluster: Cluster, tmp_path: Path) -> None:
    expected = reference_keys(cluster, KILLED, tmp_path)
    run_id = cluster.trigger(KILLED, {"as_of": AS_OF.isoformat()})
    deadline = time.monotonic() + RUN_SECONDS
    while True:  # a send_chunk running on a worker: kill that worker, pool and tasks, at once
        running = [
            ti
            for ti in cluster.task_instances(KILLED, run_id, "send_chunk")
            if ti["state"] == "running" and ti["hostname"] in cluster.workers
        ]
        if running:
            break
        assert cluster.run_state(KILLED, run_id) in ("queued", "running"), cluster.logs()
        assert time.monotonic() < deadline, f"no send_chunk ever ran:\n{cluster.logs()}"
        time.sleep(0.2)
    victim = max(running, key=lambda ti: ti["start_date"])["hostname"]  # the chunk with most left to do
    cluster.procs[victim].kill(signal.SIGKILL)
    survivor = next(w for w in cluster.workers if w != victim)
    killed_at = time.monotonic()

    assert cluster.wait_run(KILLED, run_id, RUN_SECONDS) == "success", cluster.logs()
    retried = [ti for ti in cluster.task_instances(KILLED, run_id, "send_chunk") if ti["try_number"] > 1]
    assert retried, f"no chunk of {victim} was retried"
    for ti in retried:
        tries = cluster.tries(KILLED, run_id, "send_chunk", ti["map_index"])
        assert [(t["hostname"], t["state"]) for t in tries] == [(victim, "failed"), (survivor, "success")]
    per_worker = hostnames(cluster, KILLED, run_id)
    print(
        f"celery: {KILLED} {sum(per_worker.values())} chunks {per_worker}; chunks "
        f"{sorted(ti['map_index'] for ti in retried)} killed on {victim}, done on {survivor} "
        f"{time.monotonic() - killed_at:.1f}s after the kill; {already_sent(cluster, run_id)} messages "
        "the killed try had sent were skipped by the retry"
    )
    assert_exactly_once(cluster, KILLED, run_id, expected)


def already_sent(cluster: Cluster, run_id: str) -> int:
    """Decisions of the run skipped as ``already_sent``: what a killed try had sent before it died."""
    engine = sa.create_engine(cluster.settings.state_url or "")
    with engine.connect() as conn:
        count = conn.execute(
            sa.select(sa.func.count())
            .select_from(decisions)
            .where(decisions.c.run_id == run_id, decisions.c.reason == "already_sent")
        ).scalar_one()
    engine.dispose()
    return int(count)
