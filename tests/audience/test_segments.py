"""Audience chunking: ordered, nothing lost or repeated, a customer never split across chunks."""

from __future__ import annotations

import pandas as pd
from hypothesis import given
from hypothesis import strategies as st

from loyalflow.audience.segments import _whole_customers


@given(st.lists(st.integers(0, 6), max_size=40).map(sorted), st.integers(1, 7))
def test_chunks_keep_every_row_once_and_each_customer_whole(customers: list[int], size: int) -> None:
    frame = pd.DataFrame({"customer_id": customers, "row": range(len(customers))})
    chunks = list(_whole_customers(iter([frame[i : i + size] for i in range(0, len(frame), size)])))
    assert [r for c in chunks for r in c["row"]] == list(range(len(customers)))
    owners = [set(c["customer_id"]) for c in chunks]
    assert all(a.isdisjoint(b) for i, a in enumerate(owners) for b in owners[i + 1 :])
    assert all(not c.empty for c in chunks)
