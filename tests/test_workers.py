"""``run(..., workers=N)``: chunks spread over worker processes decide and send exactly what one process does.

Each shape (SQLite with the state apart, and PostgreSQL with ``bigint`` ids and the state apart) is loaded
twice from one generated warehouse: one copy runs two marketing campaigns (which share the frequency caps)
in this process, the other with two worker processes. Both must record the same decision for every (customer,
step) and write the same outbox keys, none twice; a second parallel run sends nothing.
"""

from __future__ import annotations

import contextlib
import gc
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from loyalflow import pipeline
from loyalflow.pipeline import _chunk_counts, _chunk_pool, plan, run
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.settings import Settings
from loyalflow.state import decisions
from tests.conftest import IN_CI, PG_URL
from tests.shapes import AS_OF, NOW, Frames, Shape, build, warehouse

ROOT = Path(__file__).resolve().parents[1]
CAMPAIGNS = ("dormant_reactivation", "buying_cycle_nurture")  # marketing: they share the caps
SHAPES = (Shape("sqlite", "text", "apart"), Shape("postgresql", "integer", "apart"))


@pytest.fixture(scope="module")
def frames() -> Frames:
    """A small generated warehouse: 3,000 customers with 18 months of orders."""
    return build(customers=3_000, orders=9_000)


@contextlib.contextmanager
def runtime(shape: Shape, frames: Frames, workdir: Path) -> Iterator[Runtime]:
    """A fresh load of ``shape`` and a runtime on it with small chunks (many per campaign)."""
    try:
        with contextlib.chdir(workdir.parent), warehouse(shape, frames, workdir / "db") as loaded:
            rt = Runtime(
                Settings(
                    home=ROOT,
                    warehouse_url=loaded.warehouse_url,
                    state_url=loaded.state_url,
                    outbox_dir=workdir / "outbox",
                    work_url=str(workdir / "work"),
                    secret_key="workers-test-secret-key-0123456789-0123456789",
                    chunk_size=150,
                    outbox_eml="none",
                )
            )
            try:
                yield rt
            finally:
                rt.warehouse.dispose()
                rt.state.dispose()
    except sa.exc.OperationalError as exc:
        if shape.engine != "postgresql" or IN_CI:
            raise
        pytest.skip(f"PostgreSQL not reachable at {PG_URL}: {exc}")


def decided(rt: Runtime, campaign: str, run_id: str) -> dict[tuple[str, str], tuple[str, str]]:
    """(step, customer) -> (outcome, reason) of one run."""
    stmt = sa.select(
        decisions.c.step, decisions.c.customer_id, decisions.c.outcome, decisions.c.reason
    ).where(decisions.c.campaign == campaign, decisions.c.run_id == run_id)
    with rt.state.connect() as conn:
        return {(s, c): (o, r) for s, c, o, r in conn.execute(stmt)}


def outbox_keys(rt: Runtime) -> list[str]:
    """Every idempotency key in the outbox, in file order (duplicates kept)."""
    return [
        json.loads(line)["idempotency_key"]
        for path in sorted(rt.settings.outbox_dir.rglob("*.jsonl"))
        for line in path.read_text().splitlines()
    ]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_two_workers_send_what_one_process_sends(shape: Shape, frames: Frames, tmp_path: Path) -> None:
    one_dir, two_dir = tmp_path / "one", tmp_path / "two"
    for folder in (one_dir, two_dir):
        folder.mkdir()
    with runtime(shape, frames, one_dir) as one, runtime(shape, frames, two_dir) as two:
        for campaign in CAMPAIGNS:
            opts = RunOptions(AS_OF, f"run-{campaign}", now=NOW)
            alone = run(one, campaign, opts)
            chunks: list[int] = []
            spread = run(
                two, campaign, opts, progress=lambda _, total, __, seen=chunks: seen.append(total), workers=2
            )
            assert alone == spread, campaign
            assert alone.get("sent", 0) > 50, f"{campaign} sent too little: {alone}"
            assert chunks and chunks[0] >= 3, f"{campaign}: too few chunks to spread: {chunks}"
            assert decided(one, campaign, opts.run_id) == decided(two, campaign, opts.run_id)
        keys = outbox_keys(two)
        assert sorted(keys) == sorted(outbox_keys(one))
        assert len(keys) == len(set(keys)), "a key was written twice"
        for campaign in CAMPAIGNS:
            again = run(two, campaign, RunOptions(AS_OF, f"again-{campaign}", now=NOW), workers=2)
            assert again.get("sent", 0) == 0, again
        assert outbox_keys(two) == keys


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_a_marketing_chunk_with_nobody_due_runs_on_every_shape(
    shape: Shape, frames: Frames, tmp_path: Path
) -> None:
    """referral_ask's rules leave some chunks with segment rows but nobody due: such a chunk reserves no
    cap slot and takes no lock (on PostgreSQL an empty lock list was an error that stopped the run)."""
    with runtime(shape, frames, tmp_path) as rt:
        campaign = rt.campaign("referral_ask")
        assert campaign.category == "marketing"
        opts = RunOptions(AS_OF, "referral", now=NOW)
        per_chunk = [pipeline.process_chunk(rt, campaign, c, opts) for c in plan(rt, campaign, opts)]
        assert {} in per_chunk, f"no chunk without anybody due: {per_chunk}"
        assert sum(c.get("sent", 0) for c in per_chunk) > 0, per_chunk


def test_a_failing_chunk_fails_the_run_with_its_own_error(frames: Frames, tmp_path: Path) -> None:
    """A chunk that fails in a worker raises its own error in the caller, as it does in one process."""
    with runtime(SHAPES[0], frames, tmp_path) as rt:
        campaign = rt.campaign("thank_you")
        opts = RunOptions(AS_OF, "broken", now=NOW)
        chunks = [*plan(rt, campaign, opts), str(tmp_path / "work" / "gone.parquet")]
        for workers in (1, 2):
            with pytest.raises(FileNotFoundError, match="gone.parquet"), _chunk_pool(rt, workers) as pool:
                list(_chunk_counts(rt, campaign, chunks, opts, pool))


def test_a_chunk_leaves_the_collector_as_it_found_it(
    frames: Frames, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """process_chunk turns the cyclic collector off while it runs and back on after, also when the chunk
    fails (else nothing would be collected again)."""
    with runtime(SHAPES[0], frames, tmp_path) as rt:
        campaign = rt.campaign("dormant_reactivation")
        opts = RunOptions(AS_OF, "gc", now=NOW)
        chunks = plan(rt, campaign, opts)
        assert gc.isenabled()
        during: list[bool] = []
        real_candidates = pipeline.candidates

        def spy(*args: Any, **kwargs: Any) -> Any:
            during.append(gc.isenabled())
            return real_candidates(*args, **kwargs)

        monkeypatch.setattr(pipeline, "candidates", spy)
        assert sum(pipeline.process_chunk(rt, campaign, chunks[0], opts).values()) > 0
        assert gc.isenabled()
        with pytest.raises(FileNotFoundError):
            pipeline.process_chunk(rt, campaign, str(tmp_path / "gone.parquet"), opts)
        assert during == [False] and gc.isenabled()


def _cyclic_garbage(rt: Runtime, campaign: str) -> tuple[int, int]:
    """(objects a chunk left in reference cycles, messages it sent): its first chunk, collector off."""
    opts = RunOptions(AS_OF, f"cycles-{rt.settings.chunk_size}", now=NOW)
    chunk = plan(rt, rt.campaign(campaign), opts)[0]
    gc.collect()
    with pipeline._collector_off():  # collected while still off: once on, the next allocation collects
        counts = pipeline.process_chunk(rt, rt.campaign(campaign), chunk, opts)
        return gc.collect(), counts.get("sent", 0)


@pytest.mark.parametrize("campaign", CAMPAIGNS)
def test_a_chunk_leaves_no_more_cycles_for_more_customers(
    campaign: str, frames: Frames, tmp_path: Path
) -> None:
    """What keeps the collector off during a chunk safe: the cycles a chunk leaves do not grow with its
    size. A cycle per message (a context, a template object, a closure kept by a row) would leave ten
    times as many objects behind after a chunk ten times as large."""
    with runtime(SHAPES[0], frames, tmp_path / "small") as rt:
        few, sent_few = _cyclic_garbage(Runtime(rt.settings.model_copy(update={"chunk_size": 30})), campaign)
    with runtime(SHAPES[0], frames, tmp_path / "large") as rt:
        many, sent_many = _cyclic_garbage(
            Runtime(rt.settings.model_copy(update={"chunk_size": 3_000})), campaign
        )
    assert sent_many >= 5 * max(sent_few, 1), (sent_few, sent_many)
    assert many <= 2 * few + 100, (
        f"{campaign}: {few} objects in cycles after {sent_few} messages, {many} after {sent_many}"
    )


def test_overlapping_chunks_restore_the_collector_when_the_last_one_ends() -> None:
    """Airflow or a test may run two chunks in threads of one process: the first to end must not turn the
    collector back on under the one still running, and the last must not leave it off."""
    first, second = pipeline._collector_off(), pipeline._collector_off()
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not gc.isenabled()  # the second still runs
    second.__exit__(None, None, None)
    assert gc.isenabled()
    gc.disable()  # a host that keeps the collector off finds it off after a chunk
    try:
        with pipeline._collector_off():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
