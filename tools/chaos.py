"""Chaos check of exactly-once delivery: kill ``loyalflow run`` at random points, rerun until all is sent.

``python -m tools.chaos`` seeds a warehouse with N buyers due for a thank-you on one day, starts the
SendGrid stand-in in its own process with injected faults (429, 503, drop-after-accept), then runs the
campaign in subprocesses, SIGKILLing them after random delays. Between runs it feeds the stand-in's
accepted messages back as provider events (the key travels in ``custom_args``) and reconciles, as the
webhook and the DAG would. The last line is ``chaos: kills=K messages=N duplicates=D lost=L unknown=U``;
the exit code is non-zero when D or L is.
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import random
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from loyalflow.deliver import ledger
from loyalflow.deliver.reconcile import reconcile, record_delivery_events
from loyalflow.state import ensure_schema

RUN = "from loyalflow.ops.cli import app; app()"
SETTLE_SECONDS = 0.5  # lets the stand-in finish requests a killed run left in flight


def seed(url: str, n: int, day: dt.date) -> None:
    """A contract-only warehouse with ``n`` email-consenting customers, each with an order on ``day``."""
    meta = sa.MetaData()
    text, ts = sa.String, sa.DateTime
    customers = sa.Table(
        "customers",
        meta,
        *(sa.Column(c, text) for c in ("customer_id", "email", "phone", "first_name", "last_name")),
        *(sa.Column(c, text) for c in ("locale", "timezone", "persona")),
        sa.Column("created_at", ts),
    )
    orders = sa.Table(
        "orders",
        meta,
        *(sa.Column(c, text) for c in ("order_id", "customer_id")),
        sa.Column("ordered_at", ts),
        sa.Column("total", sa.Float),
        *(sa.Column(c, text) for c in ("status", "product", "referred_by")),
    )
    prefs = sa.Table(
        "channel_preferences",
        meta,
        *(sa.Column(c, text) for c in ("customer_id", "channel")),
        sa.Column("opted_in", sa.Boolean),
        sa.Column("source", text),
        sa.Column("consented_at", ts),
    )
    sa.Table("events", meta, *(sa.Column(c, text) for c in ("customer_id", "event_type", "content_id")),
             sa.Column("occurred_at", ts))  # fmt: skip
    engine = sa.create_engine(url)
    meta.create_all(engine)
    at = dt.datetime.combine(day, dt.time(10))
    ids = [f"C{i:06d}" for i in range(n)]
    with engine.begin() as conn:
        conn.execute(customers.insert(), [
            {"customer_id": c, "email": f"{c.lower()}@example.com", "first_name": "Ana", "last_name": "Chaos",
             "locale": "en_US", "timezone": "UTC", "persona": "vacationing_family", "created_at": at}
            for c in ids
        ])  # fmt: skip
        conn.execute(orders.insert(), [
            {"order_id": f"O{c}", "customer_id": c, "ordered_at": at, "total": 120.0, "status": "completed",
             "product": "Harbor Suite, 2 nights"}
            for c in ids
        ])  # fmt: skip
        conn.execute(prefs.insert(), [
            {"customer_id": c, "channel": "email", "opted_in": True, "source": "chaos", "consented_at": at}
            for c in ids
        ])  # fmt: skip
    engine.dispose()


def start_standin(args: argparse.Namespace) -> tuple[subprocess.Popen[str], str]:
    """The SendGrid stand-in in a separate process; returns it with its URL."""
    cmd = [
        sys.executable, "-m", "tools.sendgrid_standin", "--port", "0", "--retry-after", "1",
        "--rate-limit-every", str(args.rate_limit_every), "--unavailable-every", str(args.unavailable_every),
        "--drop-after-accept-every", str(args.drop_every),
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


def accepted(url: str) -> list[dict[str, Any]]:
    """Every personalization the stand-in accepted."""
    with urllib.request.urlopen(f"{url}/standin/accepted", timeout=60) as resp:
        return list(json.load(resp))


def as_events(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Accepted messages as ``processed`` provider events, keyed by the custom_args idempotency key."""
    return [
        {
            "provider": "sendgrid",
            "event_id": f"{r['message_id']}:{r['personalization_index']}:processed",
            "event_type": "processed",
            "idempotency_key": r["custom_args"].get("idempotency_key"),
            "provider_message_id": r["message_id"],
            "customer_id": r["custom_args"].get("customer_id"),
            "occurred_at": dt.datetime.fromtimestamp(r["received_at"], dt.UTC).replace(tzinfo=None),
        }
        for r in records
    ]


def requests_seen(url: str) -> int:
    """Mail-send requests the stand-in has answered so far."""
    with urllib.request.urlopen(f"{url}/standin/stats", timeout=60) as resp:
        return int(json.load(resp)["requests"])


def kill_at_random(proc: subprocess.Popen[bytes], url: str, rng: random.Random, max_delay: float) -> bool:
    """SIGKILL ``proc`` at a random point: mostly while it sends, sometimes during start-up or planning.

    Returns whether it was killed (it may finish first).
    """
    if rng.random() < 0.25:
        deadline = time.monotonic() + rng.uniform(0.5, max_delay)
    else:  # wait for this run's first request, then a random share of its sending
        before = requests_seen(url)
        while proc.poll() is None and requests_seen(url) == before:
            time.sleep(0.05)
        deadline = time.monotonic() + rng.uniform(0.0, max_delay)
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    if proc.poll() is not None:
        return False
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return True


def statuses(engine: sa.Engine) -> collections.Counter[str]:
    """Ledger rows by status."""
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(ledger.ledger.c.status, sa.func.count()).group_by(ledger.ledger.c.status)
        )
        return collections.Counter({s: int(n) for s, n in rows})


def main(argv: list[str] | None = None) -> int:
    """Run the chaos loop; print the summary line last."""
    parser = argparse.ArgumentParser(prog="python -m tools.chaos", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--max-delay", type=float, default=4.0, help="longest wait before a kill (s)")
    parser.add_argument("--rate", type=float, default=150.0, help="sendgrid_rate_per_sec of the runs")
    parser.add_argument("--rate-limit-every", type=int, default=499)
    parser.add_argument("--unavailable-every", type=int, default=307)
    parser.add_argument("--drop-every", type=int, default=211)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--max-runs", type=int, default=200)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    day = dt.datetime.now(dt.UTC).date()
    work = Path(tempfile.mkdtemp(prefix="loyalflow-chaos-"))
    url = f"sqlite:///{work / 'warehouse.db'}"
    seed(url, args.messages, day)
    engine = sa.create_engine(url, connect_args={"timeout": 60})
    ensure_schema(engine)
    standin, sg_url = start_standin(args)
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(work / "airflow"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "ERROR",
        "AIRFLOW_CONN_SENDGRID_DEFAULT": json.dumps(
            {"conn_type": "http", "password": "SG.test", "host": sg_url}
        ),
        "LOYALFLOW_WAREHOUSE_URL": url,
        "LOYALFLOW_WORK_URL": str(work / "work"),
        "LOYALFLOW_OUTBOX_DIR": str(work / "outbox"),
        "LOYALFLOW_EMAIL_PROVIDER": "sendgrid",
        "LOYALFLOW_SECRET_KEY": secrets.token_urlsafe(48),  # a real provider refuses a weak signing key
        "LOYALFLOW_SENDGRID_RATE_PER_SEC": str(args.rate),
        "LOYALFLOW_SENDGRID_CONCURRENCY": "8",
        "LOYALFLOW_CHUNK_SIZE": "500",  # small chunks: sending starts soon after each start
        "LOYALFLOW_SEND_MAX_WAIT_SECONDS": "5",
    }
    cmd = [sys.executable, "-c", RUN, "run", "thank_you", "--as-of", str(day)]
    kills = runs = settled = 0
    log = (work / "runs.log").open("w")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # clean up the stand-in on SIGTERM too
    proc: subprocess.Popen[bytes] | None = None
    try:
        while runs < args.max_runs:
            runs += 1
            proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
            if kills < args.kills and kill_at_random(proc, sg_url, rng, args.max_delay):
                kills += 1
            proc.wait(600)
            time.sleep(SETTLE_SECONDS)
            ledger.expire_stale_claims(engine, lease_seconds=0)  # runs are sequential: any claim is stale
            record_delivery_events(engine, as_events(accepted(sg_url)))
            counts = reconcile(engine, event_window_seconds=0)
            settled += counts["sent"] + counts["failed"]
            done = statuses(engine)
            print(f"run {runs}: rc={proc.returncode} kills={kills} ledger={dict(done)}", flush=True)
            if kills >= args.kills and done.get("sent", 0) >= args.messages:
                break
        per_recipient = collections.Counter(to for r in accepted(sg_url) for to in r["to"])
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
        standin.send_signal(signal.SIGTERM)
        standin.wait(30)
        log.close()
    expected = {f"c{i:06d}@example.com" for i in range(args.messages)}
    duplicates = sum(c - 1 for c in per_recipient.values() if c > 1)
    lost = len(expected - set(per_recipient))
    print(
        f"chaos: kills={kills} messages={args.messages} duplicates={duplicates} lost={lost} unknown={settled}"
    )
    return 1 if duplicates or lost else 0


if __name__ == "__main__":
    sys.exit(main())
