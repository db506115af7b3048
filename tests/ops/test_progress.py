"""Long CLI runs show chunks done, messages per second and how many went (or would go)."""

from __future__ import annotations

import datetime as dt
import io
import re

import pytest
from rich.console import Console

from loyalflow.ops.progress import ChunkRate, chunk_bar
from loyalflow.settings import Settings
from tests.cli_helpers import invoke_run, outbox_lines
from tests.factories import Shop


def test_rate_counts_chunks_messages_and_sent() -> None:
    seen: list[int] = []
    rate = ChunkRate(listener=lambda r: seen.append(r.chunks))
    rate.add(1, 2, {"sent": 3, "no_consent": 1})
    rate.add(2, 2, {"sent": 1, "already_sent": 2})
    assert (rate.chunks, rate.total, rate.messages, rate.sent, seen) == (2, 2, 7, 4, [1, 2])
    assert rate.per_second > 0
    dry = ChunkRate()
    dry.add(1, 1, {"dry_run": 5})
    assert re.fullmatch(
        r"x: 1/1 chunk\(s\), 5 message\(s\) decided in [\d.]+ s \([\d,]+/s\), would send 5",
        dry.line("x", True),
    )


def test_the_bar_ends_with_one_summing_line() -> None:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=120)
    with chunk_bar(console, "thank_you") as rate:
        rate.add(1, 3, {"sent": 2})
        rate.add(2, 3, {"sent": 2})
        rate.add(3, 3, {"holdout": 1})
    text = out.getvalue()
    assert "thank_you: 3/3 chunk(s), 5 message(s) decided in" in text and "sent 4" in text


def test_loyalflow_run_reports_chunks_and_rate(
    settings: Settings, shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOYALFLOW_CHUNK_SIZE", "2")
    for _ in range(5):
        shop.order(shop.customer(), dt.datetime(2026, 11, 20, 10))
    result = invoke_run(settings, "thank_you", "--dry-run")
    assert result.exit_code == 0, result.output
    assert re.search(
        r"thank_you: 3/3 chunk\(s\), 5 message\(s\) decided in [\d.]+ s \([\d,]+/s\), would send 5",
        result.output,
    ), result.output
    assert "would send" in result.output and "5" in result.output


def test_loyalflow_run_spreads_chunks_over_workers(
    settings: Settings, shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOYALFLOW_CHUNK_SIZE", "2")
    for _ in range(5):
        shop.order(shop.customer(), dt.datetime(2026, 11, 20, 10))
    result = invoke_run(settings, "thank_you", "--workers", "2")
    assert result.exit_code == 0, result.output
    assert re.search(r"thank_you: 3/3 chunk\(s\), 5 message\(s\) decided in .*, sent 5", result.output)
    keys = [line["idempotency_key"] for line in outbox_lines(settings)]
    assert len(keys) == len(set(keys)) == 5
    again = invoke_run(settings, "thank_you", "--workers", "2")
    assert again.exit_code == 0 and "sent 0" in again.output, again.output
    assert len(outbox_lines(settings)) == 5
    assert invoke_run(settings, "thank_you", "--workers", "0").exit_code == 2  # at least one


def test_a_run_never_has_more_chunks_than_max_chunks(
    settings: Settings, shop: Shop, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOYALFLOW_CHUNK_SIZE", "2")
    monkeypatch.setenv("LOYALFLOW_MAX_CHUNKS", "3")  # as Airflow's [core] max_map_length would
    for _ in range(7):  # 4 frames of up to 2 customers: the second and third become one chunk
        shop.order(shop.customer(), dt.datetime(2026, 11, 20, 10))
    result = invoke_run(settings, "thank_you")
    assert result.exit_code == 0, result.output
    assert re.search(r"thank_you: 3/3 chunk\(s\), 7 message\(s\) decided in .*, sent 7", result.output)
    assert len({line["idempotency_key"] for line in outbox_lines(settings)}) == 7
