"""Audience chunking: ordered, nothing lost or repeated, a customer never split across chunks."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from loyalflow.audience.segments import _whole_customers, read_segment, within
from loyalflow.errors import SegmentError
from loyalflow.spec import Campaign


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


def _segment(tmp_path: Path, sql: str) -> Campaign:
    (tmp_path / "segment.sql").write_text(sql, encoding="utf-8")
    return Campaign(
        id="c",
        name="C",
        channels=["email"],
        segment="segment.sql",
        steps=[{"id": "s"}],
        source=tmp_path / "c.yml",
    )


MIXED = """SELECT printf('%03d', n) AS customer_id, 'a' || n AS anchor_id, '2026-11-20 10:00:00' AS anchor_at,
       n AS whole, CASE WHEN n % 3 THEN n END AS gappy, n * 1.5 AS real, CASE WHEN n % 2 THEN 'x' END AS text,
       '' AS blank, NULL AS unknown, x'00ff' AS raw
FROM (WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < 25) SELECT n FROM c)"""


def test_sqlite_segments_read_from_the_cursor_are_typed_as_pandas_types_them(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    read = pd.concat(read_segment(engine, _segment(tmp_path, MIXED), dt.date(2026, 11, 20), 7))
    with engine.connect() as conn:
        expected = pd.read_sql_query(sa.text(MIXED), conn)
    expected["anchor_at"] = pd.to_datetime(expected["anchor_at"], utc=True).dt.tz_localize(None)
    pd.testing.assert_frame_equal(read.reset_index(drop=True), expected)


def test_an_error_in_a_later_row_of_a_sqlite_segment_names_the_segment(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'w.db'}")
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE docs (id INTEGER PRIMARY KEY, doc TEXT)")
        conn.exec_driver_sql(
            "INSERT INTO docs (doc) VALUES " + ", ".join(["('{\"a\": 1}')"] * 5000 + ["('{')"])
        )
    sql = "SELECT id AS customer_id, 'a' AS anchor_id, '2026-11-20' AS anchor_at, json_extract(doc, '$.a') a"
    sql += " FROM docs"  # row 5,001 is not JSON: the error comes with the sixth fetch, not the query
    with pytest.raises(SegmentError, match=r"segment\.sql: SQL error: malformed JSON"):
        list(read_segment(engine, _segment(tmp_path, sql), dt.date(2026, 11, 20), 1000))
