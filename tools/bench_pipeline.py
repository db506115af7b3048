"""``make bench``: rendering and end-to-end pipeline throughput, against baselines measured in the same run.

Measures, in one run: one compiled bare Jinja template (the practical limit), loyalflow's full email
render, a naive baseline (a fresh Jinja environment and CSS inlining per message, row by row) on a
sample, and the whole pipeline (segment → chunks → eligibility → render → ledger → outbox JSONL, ``.eml``
off) for every customer of a generated warehouse at each size (default 100,000 and 1,000,000 customers,
about 3 orders each). Each pipeline size runs in its own process, with its chunks in ``--workers``
processes (default one per core, as ``loyalflow run --workers`` and Airflow's mapped tasks run them);
its peak RSS is that process's plus every worker's (an upper bound), and its CPU seconds are summed over
all of them. The render figures are per core, so ``pipeline_vs_render`` compares the whole machine's
pipeline with one core's rendering, measured right before and after that pipeline (the mean); the
per-core ratio, and the ratio against the render at the start of the run, are printed beside it.

Prints figures only; nothing here asserts a time. The last line is the summary:
``bench: customers=N wall_s=X msgs_per_s=Y pipeline_vs_render=R email_vs_jinja=E linear=L peak_rss_mb=M``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import css_inline
import jinja2
import sqlalchemy as sa

from loyalflow.compose.context import build_context
from loyalflow.pipeline import run
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.settings import Settings
from loyalflow.warehouse import engine_for
from tests.shapes import build, load_postgres, load_sqlite, sqlite_engine

AS_OF = dt.date(2026, 11, 20)
BENCH_CAMPAIGN = """id: bench_all
name: Benchmark (every customer)
category: {category}
schedule: null
channels: [email, sms]
segment: sql/bench_all.sql
steps:
  - id: thanks
"""
# Each chunk reads its customers' consent rows by customer_id. docs/warehouse.md recommends this index;
# without it every chunk scans the whole table (measured: per-message cost 1.33x at 1M vs 100k).
CONSENT_INDEX = "CREATE INDEX ix_channel_preferences_customer ON channel_preferences (customer_id)"
BENCH_SQL = """SELECT customer_id, 'bench' AS anchor_id, :as_of_start AS anchor_at, 1 AS order_count,
       'Harbor Suite, 2 nights' AS product, 240.0 AS order_total, NULL AS friend_first_name
FROM customers"""


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds else float("inf")


def _best(repeat: int, runs: int, items: int, work: Callable[[], object]) -> float:
    """Items per CPU second of ``work`` (``runs`` calls of ``items`` each): the best of ``repeat`` tries."""
    seconds = []
    for _ in range(repeat):
        started = time.process_time()
        for _ in range(runs):
            work()
        seconds.append(time.process_time() - started)
    return _rate(runs * items, min(seconds))


def message_rate(rt: Runtime, channel: str, n: int, repeat: int = 3) -> float:
    """Full ``channel`` messages rendered per CPU second, the per-message path of ``compose_all``: one
    Composer per chunk (shared context, link signer, compiled templates), then context, subject, HTML
    with inlined CSS and text per message, each for a different customer."""
    from loyalflow.compose.message import Composer
    from loyalflow.decide.candidates import Candidate
    from loyalflow.decide.eligibility import Decision

    campaign = rt.campaign("thank_you")
    cands = []
    for i in range(n):
        customer = {
            "customer_id": f"C{i}",
            "first_name": "Ana",
            "persona": "vacationing_family",
            "locale": "en_US",
        }
        row = {
            "customer_id": f"C{i}",
            "anchor_id": "2026-11-20",
            "anchor_at": dt.datetime(2026, 11, 20),
            "order_count": 1,
            "product": "Harbor Suite, 2 nights",
            "order_total": 240.0,
            "friend_first_name": None,
        }
        row["items"] = [dict(row)]  # the anchors bundled into the message: one here
        address = "ana@example.com" if channel == "email" else "+12075550100"
        cands.append(
            Candidate(campaign.steps[0], row, customer, f"k{i}", Decision("eligible", channel, address))
        )

    def chunk() -> None:
        composer = Composer(rt, campaign, RunOptions(AS_OF, "bench", now=dt.datetime(2026, 11, 20, 15)))
        for cand in cands:
            composer.message(cand)

    return _best(repeat, 1, n, chunk)


def bench_render(rt: Runtime, n: int, repeat: int = 3) -> dict[str, float]:
    """Messages rendered per second of one core: loyalflow's full email and SMS (:func:`message_rate`) vs
    plain Jinja baselines. Every figure is the best of ``repeat`` runs of CPU time
    (``time.process_time``), so other processes on a busy machine count against none of them."""
    source = "Hi {{ name }}, thank you for booking {{ product }} with {{ brand }}."
    values = {"name": "Ana", "product": "Harbor Suite", "brand": "Harbor & Pine"}
    compiled = jinja2.Environment().from_string(source)
    out = {"jinja_compiled_once_per_s": _best(repeat, n, 1, lambda: compiled.render(values))}
    few = max(1, n // 20)
    out["jinja_from_string_each_per_s"] = _best(
        repeat, few, 1, lambda: jinja2.Environment().from_string(source).render(values)
    )
    for channel in ("email", "sms"):
        out[f"loyalflow_{channel}_message_per_s"] = message_rate(rt, channel, n, repeat)
    return out


def bench_naive(rt: Runtime, n: int) -> float:
    """Messages/s of the naive way: row by row, a new Jinja environment compiles subject, HTML and text
    again for each message, renders them and inlines the CSS (what a first prototype does)."""
    loader = jinja2.FileSystemLoader(rt.settings.templates_dir)
    campaign = rt.campaign("thank_you")
    step = campaign.steps[0]
    started = time.perf_counter()
    for i in range(n):
        customer = {"customer_id": f"C{i}", "first_name": f"Guest {i}", "locale": "en_US"}
        row = {"customer_id": f"C{i}", "anchor_id": "2026-11-20", "anchor_at": dt.datetime(2026, 11, 20)}
        row["items"] = [dict(row)]
        context = build_context(rt.settings, rt.brand, campaign, step, customer, row, "email", AS_OF)
        env = jinja2.Environment(loader=loader, autoescape=True)
        env.get_template("thank_you/thanks.subject.j2").render(context)
        css_inline.inline(env.get_template("thank_you/thanks.html.j2").render(context))
        env.get_template("thank_you/thanks.txt.j2").render(context)
    return _rate(n, time.perf_counter() - started)


def _databases(workdir: Path, pg: str | None) -> tuple[str, str]:
    """Warehouse and state URLs: SQLite files in ``workdir``, or two schemas of the PostgreSQL at ``pg``."""
    if not pg:
        return f"sqlite:///{workdir / 'warehouse.db'}", f"sqlite:///{workdir / 'state.db'}"
    schema = f"{pg}?options=-csearch_path%3Dlf_bench_{{}}_{workdir.name}"
    return schema.format("wh"), schema.format("state")


def _project(workdir: Path, pg: str | None = None, category: str = "relationship") -> Settings:
    """A copy of the shipped campaigns and templates plus the benchmark campaign (of ``category``)."""
    home = workdir / "project"
    if not home.exists():
        for folder in ("campaigns", "templates"):
            shutil.copytree(Settings().home / folder, home / folder)
        (home / "campaigns" / "bench_all.yaml").write_text(BENCH_CAMPAIGN.format(category=category))
        (home / "campaigns" / "sql" / "bench_all.sql").write_text(BENCH_SQL)
        shutil.copytree(home / "templates" / "thank_you", home / "templates" / "bench_all")
    return Settings(
        home=home,
        warehouse_url=_databases(workdir, pg)[0],
        state_url=_databases(workdir, pg)[1],
        outbox_dir=workdir / "outbox",
        work_url=str(workdir / "work"),
        secret_key="bench-key-0123456789-0123456789-0123456789",
        outbox_eml="none",
    )


def seed_stage(customers: int, workdir: Path, pg: str | None) -> dict[str, float]:
    """Generate and load the warehouse (its own process: generation memory is not the pipeline's).

    SQLite gets text ids; PostgreSQL gets ``bigint`` ids, loaded with COPY, into fresh schemas. Both get
    the consent index docs/warehouse.md recommends (primary keys otherwise)."""
    started = time.perf_counter()
    frames = build(customers=customers, orders=3 * customers)
    if pg:
        admin = engine_for(pg)
        with admin.begin() as conn:
            for part in ("wh", "state"):
                conn.execute(sa.text(f"DROP SCHEMA IF EXISTS lf_bench_{part}_{workdir.name} CASCADE"))
                conn.execute(sa.text(f"CREATE SCHEMA lf_bench_{part}_{workdir.name}"))
        load_postgres(engine_for(_databases(workdir, pg)[0]), frames.tables("integer"), "integer", False)
    else:
        load_sqlite(sqlite_engine(workdir / "warehouse.db"), frames.tables("text"), "text")
    with engine_for(_databases(workdir, pg)[0]).begin() as conn:
        conn.execute(sa.text(CONSENT_INDEX))
    return {"seed_s": time.perf_counter() - started, "orders": float(len(frames.orders))}


def _peak_rss_mb(workers: int) -> float:
    """Memory the run may hold at once: this process's peak resident set plus, when chunks ran in worker
    processes, ``workers`` times the largest worker's peak (an upper bound)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss if workers > 1 else 0
    return (own + workers * child) / 1024


def _cpu_seconds() -> float:
    """User and system CPU time of this process and its finished children (the chunk workers)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system


def pipeline_stage(
    workdir: Path, rerun: bool, pg: str | None, workers: int, category: str = "relationship"
) -> dict[str, float]:
    """Run the benchmark campaign for every customer with ``workers`` chunk processes (and optionally
    again: it must send nothing)."""
    rt = Runtime(_project(workdir, pg, category))
    now = dt.datetime(2026, 11, 20, 15)
    started, cpu = time.perf_counter(), _cpu_seconds()
    totals = run(rt, "bench_all", RunOptions(AS_OF, "bench", now=now), workers=workers)
    wall = time.perf_counter() - started
    out = {
        "workers": float(workers),
        "audience": float(sum(totals.values())),
        "sent": float(totals.get("sent", 0)),
        "wall_s": wall,
        "cpu_s": _cpu_seconds() - cpu,
        "peak_rss_mb": _peak_rss_mb(workers),
    }
    if rerun:
        started = time.perf_counter()
        again = run(rt, "bench_all", RunOptions(AS_OF, "bench-rerun", now=now), workers=workers)
        out.update(rerun_s=time.perf_counter() - started, rerun_sent=float(again.get("sent", 0)))
    return out


def _stage(*args: str) -> dict[str, float]:
    """Run a stage of this module in a child process and return the figures it prints as JSON."""
    command = [sys.executable, "-m", "tools.bench_pipeline", *args]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"bench stage {' '.join(args)} failed:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_pipeline(
    customers: int,
    workdir: Path,
    workers: int,
    rerun: bool = False,
    pg: str | None = None,
    render: Callable[[], float] | None = None,
    category: str = "relationship",
) -> dict[str, float]:
    """Seed ``customers`` (about 3 orders each) and run the pipeline over all of them, each in a child.

    ``render`` (a render rate) is measured right before and right after the pipeline, and their mean is
    ``render_per_s_around``: on a shared machine whose speed drifts over minutes, the pipeline is
    compared with the render of its own moment, not of the run's first seconds."""
    workdir.mkdir(parents=True, exist_ok=True)
    where = ["--workdir", str(workdir), *(["--pg", pg] if pg else [])]
    seeded = _stage("--stage", "seed", "--customers", str(customers), *where)
    before = render() if render else 0.0
    figures = _stage(
        "--stage",
        "pipeline",
        "--workers",
        str(workers),
        "--category",
        category,
        *where,
        *(["--rerun"] if rerun else []),
    )
    if render:
        figures["render_per_s_around"] = (before + render()) / 2
    if pg:
        with engine_for(pg).begin() as conn:
            for part in ("wh", "state"):
                conn.execute(sa.text(f"DROP SCHEMA IF EXISTS lf_bench_{part}_{workdir.name} CASCADE"))
    return {
        "customers": float(customers),
        **seeded,
        **figures,
        "msgs_per_s": _rate(int(figures["sent"]), figures["wall_s"]),
    }


def main() -> None:
    """Run the benchmarks, print their figures and ratios, and end with the one-line summary."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", default="100000,1000000", help="customer counts, smallest first")
    parser.add_argument("--renders", type=int, default=5_000)
    parser.add_argument("--naive", type=int, default=300, help="messages in the naive baseline's sample")
    parser.add_argument("--stage", choices=("seed", "pipeline"), help=argparse.SUPPRESS)
    parser.add_argument("--customers", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rerun", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="chunk processes (default: one per core)"
    )
    parser.add_argument("--pg", help="PostgreSQL URL: warehouse (bigint ids) and state there, not SQLite")
    parser.add_argument(
        "--category",
        choices=("relationship", "marketing"),
        default="relationship",
        help="the benchmark campaign's category (marketing: every message reserves and settles a cap slot)",
    )
    args = parser.parse_args()
    if args.stage == "seed":
        print(json.dumps(seed_stage(args.customers, args.workdir, args.pg)))
        return
    if args.stage == "pipeline":
        print(json.dumps(pipeline_stage(args.workdir, args.rerun, args.pg, args.workers, args.category)))
        return
    sizes = sorted(int(size) for size in args.sizes.split(","))
    with tempfile.TemporaryDirectory(prefix="loyalflow-bench-") as tmp:
        rt = Runtime(_project(Path(tmp) / "render"))
        render = bench_render(rt, args.renders)
        naive = bench_naive(rt, args.naive)

        def email() -> float:
            return message_rate(rt, "email", args.renders)

        runs = [
            bench_pipeline(n, Path(tmp) / f"n{n}", args.workers, n == sizes[0], args.pg, email, args.category)
            for n in sizes
        ]
    jinja, email_rate = render["jinja_compiled_once_per_s"], render["loyalflow_email_message_per_s"]
    print("render (messages/s, one core):")
    for name, value in {**render, "naive_per_message_env_and_css_per_s": naive}.items():
        print(f"  {name:38s} {value:12,.0f}")
    print(f"  full email vs one compiled bare template: {email_rate / jinja:.3f}x")
    print(f"  full email vs the naive baseline:         {email_rate / naive:.1f}x")
    for figures in runs:
        where = "PostgreSQL, bigint ids" if args.pg else "SQLite"
        around = figures["render_per_s_around"]
        what = f"{args.category} campaign, {where} warehouse and state, outbox"
        print(f"pipeline, {int(figures['customers']):,} customers ({what}):")
        for name, value in figures.items():
            print(f"  {name:38s} {value:14,.2f}")
        print(f"  pipeline vs full email render around it: {figures['msgs_per_s'] / around:.2f}x")
        print(f"  (vs the render at the start of the run:  {figures['msgs_per_s'] / email_rate:.2f}x)")
        per_core = _rate(int(figures["sent"]), figures["cpu_s"])
        print(f"  per core (messages per CPU second):      {per_core:,.0f}/s, {per_core / around:.2f}x")
        print(f"  pipeline vs the naive baseline:          {figures['msgs_per_s'] / naive:.1f}x")
    small, big = runs[0], runs[-1]
    per_message = [r["wall_s"] / max(r["sent"], 1) for r in (small, big)]
    print(
        f"bench: customers={int(big['customers'])} wall_s={big['wall_s']:.1f}"
        f" msgs_per_s={big['msgs_per_s']:.0f}"
        f" pipeline_vs_render={big['msgs_per_s'] / big['render_per_s_around']:.2f}"
        f" email_vs_jinja={email_rate / jinja:.3f}"
        f" linear={per_message[1] / per_message[0]:.2f} peak_rss_mb={big['peak_rss_mb']:.0f}"
    )


if __name__ == "__main__":
    main()
