"""``make bench``: rendering and end-to-end pipeline throughput, against baselines measured in the same run.

Prints figures only; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import resource
import shutil
import tempfile
import time
from pathlib import Path

import jinja2
import pandas as pd
import sqlalchemy as sa

from loyalflow.compose.context import build_context
from loyalflow.demo.data import seed
from loyalflow.pipeline import run
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.settings import Settings

AS_OF = dt.date(2026, 11, 20)
BENCH_CAMPAIGN = """id: bench_all
name: Benchmark (every customer)
category: relationship
schedule: null
channels: [email, sms]
segment: sql/bench_all.sql
steps:
  - id: thanks
"""
BENCH_SQL = """SELECT customer_id, 'bench' AS anchor_id, :as_of_start AS anchor_at, 1 AS order_count,
       'Harbor Suite, 2 nights' AS product, 240.0 AS order_total, NULL AS friend_first_name
FROM customers"""


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds else float("inf")


def bench_render(rt: Runtime, n: int) -> dict[str, float]:
    """Messages rendered per second: loyalflow's full email and SMS vs plain Jinja baselines."""
    campaign = rt.campaign("thank_you")
    customer = {"customer_id": "C1", "first_name": "Ana", "persona": "vacationing_family", "locale": "en_US"}
    row = {
        "customer_id": "C1",
        "anchor_id": "2026-11-20",
        "anchor_at": dt.datetime(2026, 11, 20),
        "order_count": 1,
        "product": "Harbor Suite, 2 nights",
        "order_total": 240.0,
        "friend_first_name": None,
    }
    row["items"] = [dict(row)]  # the anchors bundled into the message: one here
    source = "Hi {{ name }}, thank you for booking {{ product }} with {{ brand }}."
    values = {"name": "Ana", "product": "Harbor Suite", "brand": "Harbor & Pine"}
    compiled = jinja2.Environment().from_string(source)
    started = time.perf_counter()
    for _ in range(n):
        compiled.render(values)
    baseline = _rate(n, time.perf_counter() - started)
    few = max(1, n // 20)
    started = time.perf_counter()
    for _ in range(few):
        jinja2.Environment().from_string(source).render(values)
    from_string = _rate(few, time.perf_counter() - started)
    out = {"jinja_compiled_once_per_s": baseline, "jinja_from_string_each_per_s": from_string}
    for channel in ("email", "sms"):
        started = time.perf_counter()
        for _ in range(n):
            context = build_context(
                rt.settings, rt.brand, campaign, campaign.steps[0], customer, row, channel, AS_OF
            )
            rt.renderer.render("thank_you", "thanks", channel, context)
        out[f"loyalflow_{channel}_message_per_s"] = _rate(n, time.perf_counter() - started)
    return out


def bench_pipeline(customers: int, workdir: Path) -> dict[str, float]:
    """End to end (segment → chunks → eligibility → render → ledger → outbox) for every customer."""
    home = workdir / "project"
    for folder in ("campaigns", "templates"):
        shutil.copytree(Settings().home / folder, home / folder)
    (home / "campaigns" / "bench_all.yaml").write_text(BENCH_CAMPAIGN)
    (home / "campaigns" / "sql" / "bench_all.sql").write_text(BENCH_SQL)
    shutil.copytree(home / "templates" / "thank_you", home / "templates" / "bench_all")
    settings = Settings(
        home=home,
        warehouse_url=f"sqlite:///{workdir / 'wh.db'}",
        outbox_dir=workdir / "outbox",
        work_url=str(workdir / "work"),
        secret_key="bench",
        outbox_eml="none",
    )
    rt = Runtime(settings)
    seed(rt.warehouse, AS_OF, customers=customers)
    started = time.perf_counter()
    with rt.warehouse.connect() as conn:
        whole = pd.read_sql_query(sa.text(BENCH_SQL), conn, params={"as_of_start": dt.datetime(2026, 11, 20)})
    read_s = time.perf_counter() - started
    started = time.perf_counter()
    totals = run(rt, "bench_all", RunOptions(AS_OF, "bench", now=dt.datetime(2026, 11, 20, 15)))
    seconds = time.perf_counter() - started
    sent = totals.get("sent", 0)
    started = time.perf_counter()
    rerun = run(rt, "bench_all", RunOptions(AS_OF, "bench-rerun", now=dt.datetime(2026, 11, 20, 15)))
    rerun_s = time.perf_counter() - started
    return {
        "customers": customers,
        "audience_rows": len(whole),
        "sent": sent,
        "segment_read_whole_s": read_s,
        "pipeline_s": seconds,
        "messages_per_s": _rate(sent, seconds),
        "rerun_s": rerun_s,
        "rerun_sent": rerun.get("sent", 0),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    """Run both benchmarks and print their figures and ratios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--customers", type=int, default=20_000)
    parser.add_argument("--renders", type=int, default=5_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="loyalflow-bench-") as tmp:
        render = bench_render(Runtime(Settings(secret_key="bench")), args.renders)
        pipe = bench_pipeline(args.customers, Path(tmp))
    print("render (messages/s, one core):")
    for name, value in render.items():
        print(f"  {name:34s} {value:12,.0f}")
    base = render["jinja_compiled_once_per_s"]
    email_rate = render["loyalflow_email_message_per_s"]
    print(
        f"  email vs one small compiled template:  {email_rate / base:.3f}x (subject + html and text layouts"
        " + CSS inlining + signed links)"
    )
    print(f"  compiled once vs from_string each:     {base / render['jinja_from_string_each_per_s']:.0f}x")
    print("pipeline (SQLite warehouse, outbox channel):")
    for name, value in pipe.items():
        print(f"  {name:34s} {value:12,.2f}")
    print(
        f"  pipeline rate vs bare email render rate:      "
        f"{pipe['messages_per_s'] / render['loyalflow_email_message_per_s']:.2f}x"
    )


if __name__ == "__main__":
    main()
