"""Audience chunking: ordered, nothing lost or repeated, a customer never split across chunks."""

from __future__ import annotations

import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from loyalflow.audience.segments import _whole_customers, within
from loyalflow.errors import SegmentError


@given(st.lists(st.integers(0, 6), max_size=40).map(sorted), st.integers(1, 7))
def test_chunks_keep_every_row_once_and_each_customer_whole(customers: list[int], size: int) -> None:
    frame = pd.DataFrame({"customer_id": customers, "row": range(len(customers))})
    chunks = list(_whole_customers(iter([frame[i : i + size] for i in range(0, len(frame), size)])))
    assert [r for c in chunks for r in c["row"]] == list(range(len(customers)))
    owners = [set(c["customer_id"]) for c in chunks]
    assert all(a.isdisjoint(b) for i, a in enumerate(owners) for b in owners[i + 1 :])
    assert all(not c.empty for c in chunks)


@given(st.integers(0, 60), st.integers(1, 12))
def test_an_audience_of_any_size_fits_in_max_chunks(frames: int, max_chunks: int) -> None:
    parts = [pd.DataFrame({"customer_id": [i], "row": [i]}) for i in range(frames)]
    try:
        chunks = list(within(iter(parts), max_chunks, "segment.sql"))
    except SegmentError as exc:  # more frames than max_chunks/2 * log2(max_chunks) or so can hold
        assert "segment.sql" in str(exc) and f"more than {max_chunks} chunks" in str(exc)
        assert frames > max_chunks
        return
    assert len(chunks) <= max_chunks
    assert [r for c in chunks for r in c["row"]] == list(range(frames))
    # the first half keeps the configured size; later chunks are never smaller than earlier ones
    assert all(len(c) == 1 for c in chunks[: max(1, max_chunks // 2)][:-1])
    assert all(len(a) <= len(b) for a, b in zip(chunks, chunks[1:-1], strict=False))


def test_a_thousand_chunk_cap_holds_five_thousand_frames() -> None:
    parts = (pd.DataFrame({"customer_id": [i]}) for i in range(5_000))  # 10M customers at 2,000 a chunk
    sizes = [len(c) for c in within(parts, 1024, "segment.sql")]
    assert sum(sizes) == 5_000 and len(sizes) <= 1024 and sizes[:512] == [1] * 512 and max(sizes) <= 1024
