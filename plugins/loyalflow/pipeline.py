"""The campaign pipeline shared by the CLI and the DAG tasks: plan → process_chunk → summarise.

Composed from the stages: :mod:`loyalflow.audience` (who is due), :mod:`loyalflow.decide` (who may get
what), :mod:`loyalflow.compose` (the message) and :mod:`loyalflow.deliver` (exactly-once delivery).
"""

from __future__ import annotations

import datetime as dt
import gc
import logging
import multiprocessing
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from loyalflow.audience.due import prepare, segment_params
from loyalflow.audience.entries import Admission, activation_day, earliest_step_day
from loyalflow.audience.segments import discard, materialise, read_chunk
from loyalflow.compose.message import compose_all, render_parts
from loyalflow.decide.candidates import Candidate, candidates, load_customers
from loyalflow.deliver import ledger
from loyalflow.deliver.reconcile import reconcile
from loyalflow.deliver.send import deliver
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.settings import Settings
from loyalflow.spec import Campaign
from loyalflow.state import bulk, decisions
from loyalflow.warehouse import records

log = logging.getLogger(__name__)
SAMPLE_ROWS = 5


def record_decisions(rt: Runtime, campaign: Campaign, cands: list[Candidate], opts: RunOptions) -> None:
    """Store every decision with its reason (what ``explain`` and the summary read): one COPY on
    PostgreSQL, one executemany elsewhere."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    rows = [
        {
            "run_id": opts.run_id,
            "as_of": opts.as_of,
            "campaign": campaign.id,
            "step": c.step.id,
            "customer_id": str(c.row["customer_id"]),
            "anchor_id": str(c.row["anchor_id"]),
            "channel": c.decision.channel,
            "outcome": c.outcome,
            "reason": c.outcome if c.outcome in ("sent", "dry_run") else c.decision.reason,
            "detail": c.decision.detail or None,
            "idempotency_key": c.key,
            "decided_at": now,
        }
        for c in cands
    ]
    with rt.state.begin() as conn:
        bulk.insert_many(conn, decisions, rows)


def check_sample(rt: Runtime, campaign: Campaign, sample: pd.DataFrame, as_of: dt.date) -> int:
    """Compile every template and render each step and channel on sample rows; return rows rendered.

    Any failure raises, so a campaign whose sample render fails sends nothing.
    """
    for step in campaign.steps:
        for channel in campaign.channels:
            rt.renderer.compile_all(campaign.id, step.template_name, channel)
    rows = [{**r, "items": [r]} for r in records(prepare(rt, campaign, sample.head(SAMPLE_ROWS), as_of))]
    customers = load_customers(rt.warehouse, sorted({str(r["customer_id"]) for r in rows}))
    rendered = 0
    for row in rows:
        customer = customers.get(str(row["customer_id"]))
        if customer is None or row.get("exit_reason"):
            continue
        for step in campaign.steps:
            if row.get("step") not in (None, step.id):
                continue
            for channel in campaign.channels:
                render_parts(rt, campaign, step, customer, row, channel, as_of)
        rendered += 1
    return rendered


def open_channels(rt: Runtime, campaign: Campaign, opts: RunOptions) -> None:
    """Set up the campaign's providers first, so a Connection or settings error stops the run before any
    decision, cap reservation or claim (a dry run sends nothing and needs none)."""
    if not opts.dry_run:
        for kind in campaign.channels:
            rt.channel(kind)


def settle(rt: Runtime, campaign: Campaign) -> None:
    """Settle what earlier runs left in doubt, before deciding anything.

    Stale claims (a crashed process) become ``unknown``, provider events resolve them, and messages
    that were certainly not delivered are released, so this run sends them again.
    """
    ledger.expire_stale_claims(rt.state, rt.settings.claim_lease_seconds, campaign.id)
    reconcile(rt.state, rt.settings.event_window_seconds, campaign.id)


def plan(rt: Runtime, campaign: Campaign, opts: RunOptions, max_chunks: int | None = None) -> list[str]:
    """Materialise the audience into chunk files and check the templates against sample rows.

    A real run records the campaign's activation; a state-entry campaign admits its entries here.
    ``max_chunks`` (default: the ``max_chunks`` setting) bounds the number of chunks.
    """
    open_channels(rt, campaign, opts)
    settle(rt, campaign)
    activation_day(rt.state, campaign, opts)
    chunks = materialise(
        rt.warehouse,
        campaign,
        opts.as_of,
        opts.run_id,
        rt.settings.work_url,
        rt.settings.chunk_size,
        segment_params(rt, campaign),
        admit=Admission(rt.state, campaign, opts) if campaign.entry == "state" else None,
        max_chunks=max_chunks or rt.settings.max_chunks,
    )
    check_sample(rt, campaign, read_chunk(chunks[0]) if chunks else pd.DataFrame(), opts.as_of)
    if not chunks:
        log.info(
            "campaign %s: segment %s returned no rows for %s; nothing to send",
            campaign.id,
            campaign.segment,
            opts.as_of,
        )
    return chunks


class _CollectorOff:
    """Keep Python's cyclic garbage collector off while chunks run (see :func:`process_chunk`).

    A chunk makes millions of objects; reference counting frees them, and the few it leaves in reference
    cycles are a few dozen whatever the chunk's size (tests/test_workers.py checks that they do not grow
    with it). A collector pass during a chunk only rescans the chunk's live objects again: young
    collections alone took 6% of a chunk's CPU, full ones 14%. Chunks may overlap in threads of one
    process: the first to start turns the collector off, the last to end turns it back on (if it was on),
    and the cycles left are collected from then on.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._was_on = True

    @contextmanager
    def __call__(self) -> Iterator[None]:
        with self._lock:
            if not self._running:
                self._was_on = gc.isenabled()
                gc.disable()
            self._running += 1
        try:
            yield
        finally:
            with self._lock:
                self._running -= 1
                if not self._running and self._was_on:
                    gc.enable()


_collector_off = _CollectorOff()


def process_chunk(rt: Runtime, campaign: Campaign, chunk_url: str, opts: RunOptions) -> dict[str, int]:
    """Decide, render, send and record one audience chunk; returns counts by reason."""
    with _collector_off():
        return _process_chunk(rt, campaign, chunk_url, opts)


def _process_chunk(rt: Runtime, campaign: Campaign, chunk_url: str, opts: RunOptions) -> dict[str, int]:
    open_channels(rt, campaign, opts)
    not_before = None
    if campaign.entry == "event":
        not_before = earliest_step_day(campaign, activation_day(rt.state, campaign, opts))
    cands = candidates(rt, campaign, read_chunk(chunk_url), opts, not_before)
    compose_all(rt, campaign, cands, opts)
    deliver(rt, campaign, cands, opts)
    record_decisions(rt, campaign, cands, opts)
    counts = Counter(c.outcome if c.outcome in ("sent", "dry_run") else c.decision.reason for c in cands)
    log.info("campaign %s chunk %s: %s", campaign.id, Path(chunk_url).name, dict(counts))
    return dict(counts)


Progress = Callable[[int, int, dict[str, int]], None]
"""Called after each chunk with (chunks done, chunks in all, that chunk's counts by reason)."""

_worker: Runtime | None = None  # a worker process's own runtime (engines cannot cross processes)


def _start_worker(settings: Settings) -> None:
    global _worker
    _worker = Runtime(settings)


def _chunk_in_worker(campaign_id: str, chunk_url: str, opts: RunOptions) -> dict[str, int]:
    if _worker is None:
        raise RuntimeError("a chunk worker process was started without its runtime (_start_worker)")
    return process_chunk(_worker, _worker.campaign(campaign_id), chunk_url, opts)


def _warm() -> None:
    """Nothing: submitting it starts a worker process (its imports and runtime) ahead of the chunks."""


@contextmanager
def _chunk_pool(rt: Runtime, workers: int) -> Iterator[ProcessPoolExecutor | None]:
    """``workers`` chunk processes, started at once so they import while ``plan`` reads the segment
    (None for one worker: the chunks then run in this process)."""
    if workers <= 1:
        yield None
        return
    spawn = multiprocessing.get_context("spawn")  # a fresh interpreter: no engine or lock is inherited
    with ProcessPoolExecutor(
        workers, mp_context=spawn, initializer=_start_worker, initargs=(rt.settings,)
    ) as pool:
        for _ in range(workers):  # the pool starts one process per task submitted while none is idle
            pool.submit(_warm)
        try:
            yield pool
        except BaseException:  # a failed plan or chunk stops the run: start no other chunk
            pool.shutdown(cancel_futures=True)
            raise


def _chunk_counts(
    rt: Runtime, campaign: Campaign, chunks: list[str], opts: RunOptions, pool: ProcessPoolExecutor | None
) -> Iterator[dict[str, int]]:
    """Each chunk's counts as it finishes: in this process, or spread over the pool's processes (as
    Airflow spreads the mapped ``send_chunk`` tasks over its workers; the ledger keeps it exactly once)."""
    if pool is None or len(chunks) <= 1:
        for chunk in chunks:
            yield process_chunk(rt, campaign, chunk, opts)
        return
    futures = [pool.submit(_chunk_in_worker, campaign.id, c, opts) for c in chunks]
    for done in as_completed(futures):
        yield done.result()


def run(
    rt: Runtime,
    campaign_id: str,
    opts: RunOptions,
    progress: Progress | None = None,
    workers: int = 1,
) -> dict[str, int]:
    """The whole pipeline (the CLI path): plan, every chunk (in ``workers`` processes), totals."""
    campaign = rt.campaign(campaign_id)
    totals: Counter[str] = Counter()
    with _chunk_pool(rt, workers) as pool:
        chunks = plan(rt, campaign, opts)
        for done, counts in enumerate(_chunk_counts(rt, campaign, chunks, opts, pool), start=1):
            totals.update(counts)
            if progress is not None:
                progress(done, len(chunks), counts)
    discard(rt.settings.work_url, campaign.id, opts.run_id)
    return dict(totals)
