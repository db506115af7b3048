"""Sending throughput: the SendGrid channel against the stand-in (50 ms latency) at a configured rate.

``python -m tools.bench_send`` claims, sends and records N messages in chunks, as the pipeline does,
and prints the sustained rate, the configured rate and their ratio (target ≥ 0.8), next to a baseline
measured in the same run: one worker thread, no rate limit.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

from loyalflow.deliver import ledger
from loyalflow.deliver.channels.base import Message
from loyalflow.deliver.channels.sendgrid import SendGridChannel
from loyalflow.state import ensure_schema

CHUNK = 2000


def messages(n: int, prefix: str) -> list[Message]:
    """``n`` small personalised emails."""
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return [
        Message(
            idempotency_key=f"{prefix}-{i:06d}",
            campaign="bench",
            step="send",
            customer_id=f"C{i:06d}",
            channel="email",
            to=f"guest{i}@example.com",
            text=f"Hello guest {i}, thank you for your booking.",
            send_at=now,
            category="relationship",
            subject="Thank you",
            html=f"<p>Hello guest {i}, thank you for your booking.</p>",
            sender="Harbor & Pine Hotels <hello@harborandpine.example.com>",
            headers={
                "List-Unsubscribe": "<https://example.com/u/x>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
        )
        for i in range(n)
    ]


def deliver(engine: sa.Engine, channel: SendGridChannel, batch: list[Message], run_id: str) -> int:
    """Claim, send and record one chunk; returns messages sent."""
    rows = [
        {"idempotency_key": m.idempotency_key, "campaign": m.campaign, "step": m.step,
         "customer_id": m.customer_id, "anchor_id": "bench", "channel": "email", "category": m.category,
         "provider": channel.provider, "run_id": run_id, "as_of": m.send_at.date(), "send_at": m.send_at}
        for m in batch
    ]  # fmt: skip
    won = ledger.claim(engine, rows)
    results = channel.send([m for m in batch if m.idempotency_key in won])
    ledger.record(engine, [(r.idempotency_key, r.status, r.provider_message_id, r.error) for r in results])
    return sum(r.status == "sent" for r in results)


def measure(
    engine: sa.Engine, channel: SendGridChannel, batch: list[Message], run_id: str
) -> tuple[int, float]:
    """Messages sent and seconds taken, chunk by chunk."""
    start, sent = time.perf_counter(), 0
    for i in range(0, len(batch), CHUNK):
        sent += deliver(engine, channel, batch[i : i + CHUNK], run_id)
    return sent, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(prog="python -m tools.bench_send")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--rate", type=float, default=500.0, help="sendgrid_rate_per_sec")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--baseline-messages", type=int, default=200)
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="loyalflow-bench-"))
    engine = sa.create_engine(f"sqlite:///{work / 'state.db'}", connect_args={"timeout": 60})
    ensure_schema(engine)
    cmd = [sys.executable, "-m", "tools.sendgrid_standin", "--port", "0", "--latency", str(args.latency)]
    standin = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert standin.stdout is not None
    url = standin.stdout.readline().strip()
    os.environ["AIRFLOW_CONN_SENDGRID_BENCH"] = json.dumps(
        {"conn_type": "http", "password": "SG.test", "host": url}
    )
    try:
        single = SendGridChannel("sendgrid_bench", rate_per_sec=0, concurrency=1)
        base_sent, base_s = measure(engine, single, messages(args.baseline_messages, "base"), "baseline")
        pooled = SendGridChannel("sendgrid_bench", rate_per_sec=args.rate, concurrency=args.concurrency)
        sent, seconds = measure(engine, pooled, messages(args.messages, "bench"), "bench")
    finally:
        standin.send_signal(signal.SIGTERM)
        standin.wait(30)
    rate, baseline = sent / seconds, base_sent / base_s
    print(f"latency {args.latency * 1000:.0f} ms, {args.concurrency} workers, {sent}/{args.messages} sent")
    print(f"baseline (1 thread, no limit): {baseline:.1f} msg/s")
    print(f"sustained {rate:.1f} msg/s, configured {args.rate:.0f} msg/s, ratio {rate / args.rate:.2f}, "
          f"{rate / baseline:.1f}x baseline")  # fmt: skip
    return 0 if sent == args.messages and rate / args.rate >= 0.8 else 1


if __name__ == "__main__":
    sys.exit(main())
