"""Segment queries: a campaign's SQL, run with bound parameters, read into pandas in chunks."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Iterator
from typing import Any, Protocol

import fsspec
import pandas as pd
import sqlalchemy as sa

from loyalflow.errors import SegmentError
from loyalflow.spec import Campaign

REQUIRED_COLUMNS = ("customer_id", "anchor_id", "anchor_at")


class Admit(Protocol):
    """Rewrites audience chunks while they are materialised, then settles what the run did not see."""

    def __call__(self, frame: pd.DataFrame) -> pd.DataFrame: ...

    def finish(self) -> dict[str, int]: ...


def query_params(campaign: Campaign, as_of: dt.date) -> dict[str, Any]:
    """Bound parameters every segment query may use, plus the campaign's own scalar ``params``.

    Each integer param named ``<x>_days`` also yields ``<x>_start`` (as_of's midnight minus that many
    days) and ``<x>_since`` (the start of the last ``<x>_days`` days, as_of included).
    """
    start = dt.datetime.combine(as_of, dt.time())
    end = start + dt.timedelta(days=1)
    scalars = {k: v for k, v in campaign.params.items() if isinstance(v, str | int | float | bool)}
    days = {k[:-5]: v for k, v in scalars.items() if k.endswith("_days") and type(v) is int}
    since = {
        **{f"{name}_start": start - dt.timedelta(days=v) for name, v in days.items()},
        **{f"{name}_since": end - dt.timedelta(days=v) for name, v in days.items()},
    }
    return {
        **scalars,
        **since,
        "as_of": as_of.isoformat(),
        "as_of_start": start,
        "as_of_end": end,
        "window_start": start - dt.timedelta(days=campaign.lookback_days),
        "anchor_end": end - dt.timedelta(days=campaign.anchor_offset_days),
    }


def read_segment(
    engine: sa.Engine,
    campaign: Campaign,
    as_of: dt.date,
    chunk_size: int,
    extra: dict[str, Any] | None = None,
) -> Iterator[pd.DataFrame]:
    """Yield the audience in chunks of about ``chunk_size`` rows, checked for the required columns.

    Rows come ordered by customer, anchor time and anchor id, and a customer's rows are never split
    across chunks: when two anchors compete (re-entry), the earlier one wins, whatever the table order.
    ``extra`` adds bound parameters; list values bind as expanding ``IN :name`` lists.
    """
    path = campaign.segment_path
    sql = path.read_text(encoding="utf-8").strip().rstrip(";")
    if not sql:
        raise SegmentError(f"{path}: the segment query is empty")
    params = {**query_params(campaign, as_of), **(extra or {})}
    expanding: list[sa.BindParameter[Any]] = [
        sa.bindparam(k, expanding=True) for k, v in params.items() if isinstance(v, list) and f":{k}" in sql
    ]

    def statement(wrapper: str) -> sa.TextClause:
        return sa.text(wrapper.format(sql=sql)).bindparams(*expanding)

    try:
        with engine.connect() as conn:
            columns = list(conn.execute(statement("SELECT * FROM ({sql}\n) seg WHERE 1 = 0"), params).keys())
            missing = [c for c in REQUIRED_COLUMNS if c not in columns]
            if missing:
                raise SegmentError(
                    f"{path}: segment is missing column(s) {', '.join(missing)}; "
                    f"it returned {', '.join(columns)}"
                )
            ordered = statement("SELECT * FROM ({sql}\n) seg ORDER BY customer_id, anchor_at, anchor_id")
            for frame in _whole_customers(_frames(conn, ordered, params, chunk_size)):
                frame["customer_id"] = frame["customer_id"].astype(str)
                frame["anchor_id"] = frame["anchor_id"].astype(str)
                frame["anchor_at"] = pd.to_datetime(frame["anchor_at"], utc=True).dt.tz_localize(None)
                yield frame
    except (sa.exc.SQLAlchemyError, pd.errors.DatabaseError) as exc:
        cause = exc.__cause__ if isinstance(exc, pd.errors.DatabaseError) and exc.__cause__ else exc
        detail = str(getattr(cause, "orig", None) or cause).splitlines()[0]
        raise SegmentError(f"{path}: SQL error: {detail}") from exc


def _frames(
    conn: sa.Connection, query: sa.TextClause, params: dict[str, Any], chunk_size: int
) -> Iterator[pd.DataFrame]:
    """The query's rows in frames of ``chunk_size``, typed as ``pd.read_sql_query`` types them.

    PostgreSQL reads through a server-side cursor: the client holds one chunk, not the whole segment.
    SQLite (no server-side cursors, so SQLAlchemy buffers nothing) is read from the driver's cursor:
    SQLAlchemy's row objects, which ``read_sql_query`` would build, cost as much as the query
    (1M rows: 2.3 s -> 1.4 s); the frames are built from the same tuples the same way.
    """
    stream = conn.execution_options(stream_results=True, max_row_buffer=chunk_size)
    if conn.dialect.name != "sqlite":
        yield from pd.read_sql_query(query, stream, params=params, chunksize=chunk_size)
        return
    result = stream.execute(query, params)
    columns, cursor = list(result.keys()), result.cursor
    try:
        while True:
            try:
                rows = cursor.fetchmany(chunk_size)
            except conn.dialect.loaded_dbapi.Error as exc:  # as SQLAlchemy raises it
                raise sa.exc.DBAPIError.instance(
                    str(query), params, exc, conn.dialect.loaded_dbapi.Error
                ) from exc
            if not rows:
                return
            yield pd.DataFrame.from_records(rows, columns=columns, coerce_float=True)
    finally:
        result.close()


def _whole_customers(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Re-cut customer-ordered chunks so that no customer's rows straddle two chunks."""
    pending: pd.DataFrame | None = None
    for frame in frames:
        if frame.empty:
            continue
        if pending is not None:
            last = pending["customer_id"].iloc[-1]
            if frame["customer_id"].iloc[0] == last:  # the customer continues: move their rows forward
                tail = pending["customer_id"] == last
                frame = pd.concat([pending[tail], frame], ignore_index=True)
                pending = pending[~tail]
            if not pending.empty:
                yield pending.reset_index(drop=True)
        pending = frame
    if pending is not None:
        yield pending.reset_index(drop=True)


def run_folder(work_url: str, campaign_id: str, run_id: str) -> str:
    """The object-storage folder holding one run's audience chunks."""
    return f"{work_url.rstrip('/')}/{campaign_id}/{re.sub(r'[^A-Za-z0-9_.-]+', '_', run_id)}"


def materialise(
    engine: sa.Engine,
    campaign: Campaign,
    as_of: dt.date,
    run_id: str,
    work_url: str,
    chunk_size: int,
    extra: dict[str, Any] | None = None,
    admit: Admit | None = None,
    max_chunks: int = 1024,
) -> list[str]:
    """Write the audience once per run as Parquet chunks and return their URLs (reused on retry).

    A run has at most ``max_chunks`` chunks (Airflow maps one task per chunk, up to its
    ``[core] max_map_length``): see :func:`within`.
    ``admit`` rewrites each chunk before it is written (state entry: anchors on the entry day) and
    finishes before the manifest is written, so a retry that reuses the chunks does not admit again.
    """
    folder = run_folder(work_url, campaign.id, run_id)
    fs, root = fsspec.core.url_to_fs(folder)
    manifest = f"{root}/manifest.json"
    if fs.exists(manifest):
        with fs.open(manifest, "r") as fh:
            return list(json.load(fh)["chunks"])
    fs.makedirs(root, exist_ok=True)
    chunks: list[str] = []
    frames = read_segment(engine, campaign, as_of, chunk_size, extra)
    for frame in within(frames, max_chunks, f"{campaign.segment_path} at {chunk_size:,} rows per chunk"):
        if admit is not None and (frame := admit(frame)).empty:
            continue
        path = f"{root}/chunk-{len(chunks):05d}.parquet"
        with fs.open(path, "wb") as fh:
            frame.to_parquet(fh, index=False)
        chunks.append(fs.unstrip_protocol(path))
    if admit is not None:
        admit.finish()
    with fs.open(manifest, "w") as fh:
        json.dump(
            {"campaign": campaign.id, "as_of": as_of.isoformat(), "run_id": run_id, "chunks": chunks}, fh
        )
    return chunks


def within(frames: Iterator[pd.DataFrame], max_chunks: int, what: str) -> Iterator[pd.DataFrame]:
    """Join consecutive frames so that an audience of any size fits in ``max_chunks`` chunks.

    The first half of the chunks hold one frame each, the next quarter two, the next eighth four, and so
    on: a small audience keeps the configured chunk size, a large one gets fewer, larger chunks instead
    of a failing run. Frames hold whole customers, so joined chunks do too. An audience that needs more
    (about ``max_chunks / 2 * log2(max_chunks)`` frames) raises :class:`SegmentError` naming ``what``.
    """
    if max_chunks < 1:
        raise ValueError(f"max_chunks must be at least 1, got {max_chunks}")
    room, per, left = max_chunks, 1, max(1, max_chunks // 2)  # chunks still allowed; frames per chunk
    batch: list[pd.DataFrame] = []
    for frame in frames:
        if room == 0:
            raise SegmentError(
                f"{what}: the audience needs more than {max_chunks} chunks; raise LOYALFLOW_CHUNK_SIZE "
                "(or LOYALFLOW_MAX_CHUNKS with Airflow's [core] max_map_length)"
            )
        batch.append(frame)
        if len(batch) < per:
            continue
        yield batch[0] if per == 1 else pd.concat(batch, ignore_index=True)
        batch, room, left = [], room - 1, left - 1
        if left == 0:
            per, left = per * 2, max(1, room // 2)
    if batch:
        yield pd.concat(batch, ignore_index=True)


def discard(work_url: str, campaign_id: str, run_id: str) -> None:
    """Delete a finished run's audience files."""
    fs, root = fsspec.core.url_to_fs(run_folder(work_url, campaign_id, run_id))
    if fs.exists(root):
        fs.rm(root, recursive=True)


def read_chunk(url: str) -> pd.DataFrame:
    """Load one audience chunk written by :func:`materialise`."""
    with fsspec.open(url, "rb") as fh:
        return pd.read_parquet(fh)
