"""``make bench``'s parts run on the shipped templates and a generated warehouse (smoke tests: no timing
is asserted)."""

from __future__ import annotations

import uuid
from pathlib import Path

from loyalflow.runtime import Runtime
from loyalflow.settings import Settings
from tests.conftest import PG_URL
from tools.bench_pipeline import bench_pipeline, bench_render


def test_bench_render_renders_every_kind(settings: Settings) -> None:
    rates = bench_render(Runtime(settings), 3)
    assert set(rates) == {
        "jinja_compiled_once_per_s",
        "jinja_from_string_each_per_s",
        "loyalflow_email_message_per_s",
        "loyalflow_sms_message_per_s",
    }
    assert all(rate > 0 for rate in rates.values())


def test_bench_pipeline_runs_every_customer_on_two_workers(tmp_path: Path) -> None:
    """The pipeline stage as ``make bench`` runs it (child processes, two chunk workers), on 2,000
    customers: everyone decided, most sent, a rerun sends nothing, CPU and memory summed over workers, the
    render measured around it."""
    rates = iter([100.0, 300.0])  # the render rate right before and right after the pipeline
    figures = bench_pipeline(2_000, tmp_path / "n2000", workers=2, rerun=True, render=lambda: next(rates))
    assert figures["audience"] == 2_000
    assert 1_000 < figures["sent"] <= 2_000
    assert figures["rerun_sent"] == 0
    assert figures["workers"] == 2 and figures["cpu_s"] > 0 and figures["peak_rss_mb"] > 0
    assert figures["msgs_per_s"] == figures["sent"] / figures["wall_s"]
    assert figures["render_per_s_around"] == 200.0  # their mean: what pipeline_vs_render divides by


def test_bench_pipeline_marketing_on_postgres(tmp_path: Path, pg_url: str) -> None:
    """``--category marketing --pg``: bigint ids, every message reserving a cap slot across two workers
    (PostgreSQL's advisory locks, staged ledger writes); a rerun sends nothing. ``pg_url`` only checks
    that PostgreSQL is there: the bench makes and drops its own schemas."""
    workdir = tmp_path / f"m{uuid.uuid4().hex[:8]}"
    figures = bench_pipeline(2_000, workdir, workers=2, rerun=True, pg=PG_URL, category="marketing")
    assert figures["audience"] == 2_000
    assert 1_000 < figures["sent"] <= 2_000
    assert figures["rerun_sent"] == 0
