"""The outbox channel: one JSONL line per message, and `.eml` files for all, none or the first N per step."""

from __future__ import annotations

import datetime as dt
import email
import json
from pathlib import Path

import pytest

from loyalflow.deliver.channels.base import Message
from loyalflow.deliver.channels.outbox import OutboxChannel


def _emails(step: str, start: int, count: int) -> list[Message]:
    return [
        Message(
            idempotency_key=f"{step}-{i}",
            campaign="thank_you",
            step=step,
            customer_id=str(i),
            channel="email",
            to=f"guest{i}@example.com",
            text=f"Hi guest {i}",
            send_at=dt.datetime(2026, 11, 20, 15),
            category="transactional",
            subject="Thank you, Zoë",
            html=f"<p>Hi guest {i}</p>",
            sender="Harbor & Pine <hello@example.com>",
        )
        for i in range(start, start + count)
    ]


def _eml_keys(folder: Path) -> set[str]:
    return {p.stem for p in (folder / "thank_you" / "eml").glob("*.eml")}


def test_all_writes_every_email_as_a_readable_eml(tmp_path: Path) -> None:
    results = OutboxChannel(tmp_path, "all").send(_emails("thanks", 0, 3))
    assert [r.status for r in results] == ["sent"] * 3
    assert _eml_keys(tmp_path) == {"thanks-0", "thanks-1", "thanks-2"}
    parsed = email.message_from_bytes((tmp_path / "thank_you" / "eml" / "thanks-1.eml").read_bytes())
    assert parsed["To"] == "guest1@example.com"
    lines = (tmp_path / "thank_you" / "email.jsonl").read_text().splitlines()
    assert [json.loads(line)["idempotency_key"] for line in lines] == ["thanks-0", "thanks-1", "thanks-2"]
    assert not any("test" in json.loads(line) for line in lines)  # only test sends carry "test": true


def test_none_writes_only_the_jsonl(tmp_path: Path) -> None:
    OutboxChannel(tmp_path, "none").send(_emails("thanks", 0, 5))
    assert not (tmp_path / "thank_you" / "eml").exists()
    assert len((tmp_path / "thank_you" / "email.jsonl").read_text().splitlines()) == 5


@pytest.mark.parametrize("batches", [[7], [2, 2, 3], [1] * 7])
def test_a_number_keeps_the_first_n_per_step_across_sends(tmp_path: Path, batches: list[int]) -> None:
    """The count holds across calls (chunks, runs, processes), per step."""
    start = 0
    for size in batches:
        channel = OutboxChannel(tmp_path, "3")  # a new channel per chunk, as in separate tasks
        channel.send(_emails("thanks", start, size) + _emails("referrer", start, size))
        start += size
    assert _eml_keys(tmp_path) == {f"{step}-{i}" for step in ("thanks", "referrer") for i in range(3)}
    assert len((tmp_path / "thank_you" / "email.jsonl").read_text().splitlines()) == 14
