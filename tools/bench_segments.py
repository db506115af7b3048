"""``make bench-segments``: every shipped segment's SQL against a plain full scan of orders, measured in the
same run, on a SQLite warehouse of a million customers and three million orders; without and with a few
indexes.

The warehouse comes from the shape-matrix factory (:func:`tests.shapes.build`, vectorised numpy). Each
segment runs through loyalflow's own :func:`~loyalflow.audience.segments.read_segment` (its bound
parameters, its ordering wrapper, chunked reads into pandas); the baseline reads ``SELECT * FROM orders``
into pandas in chunks of the same size. A segment slower than ``--timeout`` seconds is interrupted and
shown as a lower bound (``>``); the final line's worst ratios then are lower bounds too (``interrupted=``
counts them).

Prints figures only; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import math
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa

from loyalflow.audience.due import segment_params
from loyalflow.audience.segments import read_segment
from loyalflow.errors import SegmentError
from loyalflow.runtime import Runtime
from loyalflow.settings import Settings
from loyalflow.spec import campaign_files
from tests.shapes import AS_OF, build, load_sqlite

INDEXES = (
    ("ix_orders_customer_ordered", "orders (customer_id, ordered_at)"),
    ("ix_orders_ordered", "orders (ordered_at)"),
    ("ix_orders_referred_by", "orders (referred_by)"),
    ("ix_channel_preferences_customer", "channel_preferences (customer_id)"),
    ("ix_events_customer_occurred", "events (customer_id, occurred_at)"),
)


class Deadline:
    """Interrupts a SQLite statement running past the deadline (a progress handler on every connection)."""

    def __init__(self) -> None:
        self.at = math.inf

    def install(self, engine: sa.Engine) -> None:
        """Watch every connection ``engine`` opens."""

        @sa.event.listens_for(engine, "connect")
        def _watch(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.set_progress_handler(lambda: int(time.monotonic() > self.at), 10_000)


def full_scan(engine: sa.Engine, chunk_size: int) -> tuple[int, float]:
    """Rows and seconds to read every order into pandas, ``chunk_size`` rows at a time."""
    started = time.perf_counter()
    rows = 0
    with engine.connect() as conn:
        for frame in pd.read_sql_query(sa.text("SELECT * FROM orders"), conn, chunksize=chunk_size):
            rows += len(frame)
    return rows, time.perf_counter() - started


def time_segments(
    rt: Runtime, campaigns: list[str], chunk_size: int, deadline: Deadline, timeout: float
) -> dict[str, tuple[int | None, float, str | None]]:
    """Per campaign: audience rows (None when it failed), seconds, and the error if any."""
    out: dict[str, tuple[int | None, float, str | None]] = {}
    for campaign_id in campaigns:
        campaign = rt.campaign(campaign_id)
        extra = segment_params(rt, campaign)
        started = time.perf_counter()
        deadline.at = time.monotonic() + timeout
        try:
            rows = sum(len(f) for f in read_segment(rt.warehouse, campaign, AS_OF, chunk_size, extra))
            out[campaign_id] = (rows, time.perf_counter() - started, None)
        except SegmentError as exc:
            seconds = time.perf_counter() - started
            error = "interrupted" if "interrupted" in str(exc) else str(exc).splitlines()[0]
            out[campaign_id] = (None, seconds, error)
        finally:
            deadline.at = math.inf
    return out


def report(
    title: str, scan: tuple[int, float], results: dict[str, tuple[int | None, float, str | None]]
) -> float:
    """Print one line per segment; return the worst ratio to the full scan (a lower bound if interrupted)."""
    scan_rows, scan_s = scan
    print(f"{title}:")
    print(f"  {'full scan of orders':24s} {scan_rows:>10,} rows {scan_s:9.2f} s   1.00x")
    worst = 0.0
    for campaign, (rows, seconds, error) in results.items():
        ratio = seconds / scan_s if scan_s else math.inf
        worst = max(worst, ratio)
        if error == "interrupted":
            print(f"  {campaign:24s} {'-':>10s}      >{seconds:8.2f} s  >{ratio:5.2f}x  (interrupted)")
        elif error:
            print(f"  {campaign:24s} {'-':>10s}      {seconds:9.2f} s      -   ERROR {error}")
        else:
            print(f"  {campaign:24s} {rows:>10,} rows {seconds:9.2f} s {ratio:6.2f}x")
    return worst


def main() -> None:
    """Build the warehouse, time the segments without and with indexes, print the figures."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--orders", type=int, default=3_000_000)
    parser.add_argument("--ids", choices=("text", "integer"), default="text")
    parser.add_argument("--chunk-size", type=int, default=Settings().chunk_size)
    parser.add_argument(
        "--timeout", type=float, default=120.0, help="seconds before a segment is interrupted"
    )
    parser.add_argument(
        "--keep", type=Path, help="write the warehouse here (and keep it) instead of a temp dir"
    )
    args = parser.parse_args()

    started = time.perf_counter()
    frames = build(customers=args.customers, orders=args.orders)
    generate_s = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="loyalflow-bench-segments-") as tmp:
        path = args.keep or Path(tmp) / "warehouse.db"
        path.unlink(missing_ok=True)
        loader = sa.create_engine(f"sqlite:///{path}")
        started = time.perf_counter()
        load_sqlite(loader, frames.tables(args.ids), args.ids)
        load_s = time.perf_counter() - started
        rt = Runtime(Settings(warehouse_url=f"sqlite:///{path}", secret_key="bench"))
        deadline = Deadline()
        deadline.install(rt.warehouse)
        campaigns = [p.stem for p in campaign_files(rt.settings.campaigns_dir)]
        print(
            f"warehouse: {len(frames.customers):,} customers, {len(frames.orders):,} orders, "
            f"{len(frames.channel_preferences):,} consent rows, {len(frames.events):,} events "
            f"({args.ids} ids, SQLite {_sqlite_version(rt.warehouse)}); generated in {generate_s:.1f} s, "
            f"loaded in {load_s:.1f} s; as of {AS_OF}, chunks of {args.chunk_size}"
        )
        plain_scan = full_scan(rt.warehouse, args.chunk_size)
        plain = time_segments(rt, campaigns, args.chunk_size, deadline, args.timeout)
        worst_plain = report("without indexes (primary keys only)", plain_scan, plain)

        started = time.perf_counter()
        with loader.begin() as conn:
            for name, target in INDEXES:
                conn.execute(sa.text(f"CREATE INDEX {name} ON {target}"))
            conn.execute(sa.text("ANALYZE"))
        index_s = time.perf_counter() - started
        rt.warehouse.dispose()  # new connections see the indexes and the statistics
        indexed_scan = full_scan(rt.warehouse, args.chunk_size)
        indexed = time_segments(rt, campaigns, args.chunk_size, deadline, args.timeout)
        names = ", ".join(target for _, target in INDEXES)
        worst_indexed = report(f"with indexes on {names} (built in {index_s:.1f} s)", indexed_scan, indexed)
        rt.warehouse.dispose()
        loader.dispose()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {rss:,.0f} MiB")
    interrupted = sum(error == "interrupted" for r in (plain, indexed) for _, _, error in r.values())
    print(
        f"bench-segments: customers={len(frames.customers)} orders={len(frames.orders)} "
        f"worst_ratio={worst_plain:.2f} worst_ratio_indexed={worst_indexed:.2f} interrupted={interrupted}"
    )


def _sqlite_version(engine: sa.Engine) -> str:
    with engine.connect() as conn:
        return str(conn.execute(sa.text("SELECT sqlite_version()")).scalar())


if __name__ == "__main__":
    main()
