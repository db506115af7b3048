"""The outbox channel: one JSONL line per message, and `.eml` files for all, none or the first N per step."""

from __future__ import annotations

import datetime as dt
import email
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loyalflow.deliver.channels.base import Message
from loyalflow.deliver.channels.outbox import OutboxChannel, jsonl


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


def _reference_line(msg: Message) -> str:
    """The line as the outbox has always written it (the contract fields, json.dumps, no ASCII escapes)."""
    record: dict[str, object] = {
        "campaign": msg.campaign,
        "step": msg.step,
        "customer_id": msg.customer_id,
        "channel": msg.channel,
        "to": msg.to,
        "text": msg.text,
        "send_at": msg.send_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "idempotency_key": msg.idempotency_key,
    }
    if msg.channel == "email":
        record.update(subject=msg.subject, html=msg.html, headers=msg.headers)
    if msg.test:
        record["test"] = True
    return json.dumps(record, ensure_ascii=False) + "\n"


def test_lines_are_byte_identical_to_the_reference_for_a_mixed_batch(tmp_path: Path) -> None:
    times = [
        dt.datetime(2026, 11, 20, 15),
        dt.datetime(2026, 11, 20, 15, 0, 0, 999999),
        dt.datetime(2027, 1, 2, 3, 4, 5),
    ]
    batch = [
        Message(
            idempotency_key=f"k{i}",
            campaign=("thank_you", "winback")[i % 2],
            step="thanks",
            customer_id=str(i),
            channel=("email", "sms", "email")[i % 3],
            to=f"guest{i}@example.com" if i % 3 != 1 else "+4915112345678",
            text=f'Hi "Zoë" 日本 ✓ \\ {i}\nline two\t</script>',
            send_at=times[i % 3],
            category="marketing",
            subject="Thank you, Zoë" if i % 3 != 1 else None,
            html=f"<p>Hi {i} &amp; ✓</p>" if i % 3 == 0 else None,
            sender="Harbor & Pine <hello@example.com>",
            headers={"List-Unsubscribe": f"<https://x.example/u/{i}>"} if i % 3 != 1 else {},
            test=i == 4,
        )
        for i in range(12)
    ]
    OutboxChannel(tmp_path, "none").send(batch[:7])
    OutboxChannel(tmp_path, "none").send(batch[7:])
    files = {p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jsonl")}
    assert files == {f"{c}/{k}.jsonl" for c in ("thank_you", "winback") for k in ("email", "sms")}
    for name in files:
        campaign, kind = name.removesuffix(".jsonl").split("/")
        expected = "".join(_reference_line(m) for m in batch if (m.campaign, m.channel) == (campaign, kind))
        assert (tmp_path / name).read_text(encoding="utf-8") == expected


_text = st.text(st.characters(exclude_categories=("Cs",)))  # any text a template renders (no lone surrogate)


@settings(max_examples=300, deadline=None)
@given(
    channel=st.sampled_from(["email", "sms"]),
    fields=st.lists(_text, min_size=8, max_size=8),
    subject=st.none() | _text,
    headers=st.dictionaries(_text, _text, max_size=3),
    test=st.booleans(),
)
def test_lines_are_the_bytes_json_dumps_writes(
    channel: str, fields: list[str], subject: str | None, headers: dict[str, str], test: bool
) -> None:
    key, campaign, step, customer, to, text, html, _ = fields
    msg = Message(
        key,
        campaign,
        step,
        customer,
        channel,
        to,
        text,
        dt.datetime(2026, 11, 20, 15, 30),
        "marketing",
        subject=subject,
        html=html,
        headers=headers,
        test=test,
    )
    expected = _reference_line(msg).encode()
    assert jsonl([msg, msg]) == expected + expected
