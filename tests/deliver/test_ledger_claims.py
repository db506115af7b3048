"""Ledger claims: released rows taken over once, stale claims expire, concurrent copies never resend."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from loyalflow.deliver import ledger
from loyalflow.pipeline import plan, process_chunk
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.settings import Settings
from tests.delivery_helpers import AS_OF, buyers, ledger_states, sendgrid_standin, use_provider
from tests.factories import Shop
from tools.sendgrid_standin import SendGridStandin


def row(key: str, run_id: str = "r1") -> dict:
    return {
        "idempotency_key": key,
        "campaign": "thank_you",
        "step": "thanks",
        "customer_id": key.upper(),
        "anchor_id": "O1",
        "channel": "email",
        "category": "relationship",
        "provider": "sendgrid",
        "run_id": run_id,
        "as_of": AS_OF,
        "send_at": None,
    }


def test_claim_takes_over_released_rows_only(state: sa.Engine) -> None:
    assert ledger.claim(state, [row("a"), row("b"), row("c")]) == {"a", "b", "c"}
    ledger.record(
        state, [("a", "sent", "m1", None), ("b", "released", None, None), ("c", "failed", None, "x")]
    )
    assert ledger.existing_keys(state, ["a", "b", "c", "d"]) == {"a", "c"}
    assert ledger.claim(state, [row(k, "r2") for k in "abcd"]) == {"b", "d"}
    assert ledger_states(state) == {"a": "sent", "b": "claimed", "c": "failed", "d": "claimed"}


def test_stale_claims_become_unknown(state: sa.Engine) -> None:
    ledger.claim(state, [row("a")])
    assert ledger.expire_stale_claims(state, lease_seconds=3600) == 0
    assert ledger.expire_stale_claims(state, lease_seconds=0) == 1
    assert ledger_states(state) == {"a": "unknown"}
    assert ledger.claim(state, [row("a", "r2")]) == set()  # in doubt: not claimable


def test_concurrent_claims_are_disjoint(state: sa.Engine) -> None:
    keys = [f"k{i:04d}" for i in range(600)]
    ledger.claim(state, [row(k) for k in keys[:100]])
    ledger.record(state, [(k, "released", None, None) for k in keys[:100]])
    won: list[set[str]] = []
    barrier = threading.Barrier(4)

    def contender() -> None:
        barrier.wait()
        won.append(ledger.claim(state, [row(k, threading.current_thread().name) for k in keys]))

    threads = [threading.Thread(target=contender) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(len(w) for w in won) == len(keys)
    assert set().union(*won) == set(keys)


@pytest.fixture
def sg(monkeypatch: pytest.MonkeyPatch) -> Iterator[SendGridStandin]:
    with sendgrid_standin(monkeypatch, latency=0.01) as standin:
        yield standin


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_copies_of_one_chunk_task_send_nothing_twice(
    backend: str,
    request: pytest.FixtureRequest,
    settings: Settings,
    shop: Shop,
    sg: SendGridStandin,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    state_url = request.getfixturevalue("pg_url") if backend == "postgresql" else settings.warehouse_url
    settings = use_provider(
        monkeypatch, email_provider="sendgrid", state_url=state_url, sendgrid_concurrency="4"
    )
    buyers(shop, 40)
    opts = RunOptions(AS_OF, "scheduled__2026-11-20", now=dt.datetime.now(dt.UTC).replace(tzinfo=None))
    first = Runtime(settings)
    campaign = first.campaign("thank_you")
    (chunk,) = plan(first, campaign, opts)
    totals: list[dict[str, int]] = []
    barrier = threading.Barrier(2)

    def task(rt: Runtime) -> None:
        barrier.wait()
        totals.append(process_chunk(rt, campaign, chunk, opts))

    threads = [threading.Thread(target=task, args=(rt,)) for rt in (first, Runtime(settings))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(t.get("sent", 0) for t in totals) == 40
    assert sg.duplicates() == 0 and len(sg.count_by_key()) == 40
    assert set(ledger_states(first.state).values()) == {"sent"}
