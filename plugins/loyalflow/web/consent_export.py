"""The consent export: the changes loyalflow received, as a file the CRM syncs back into its warehouse.

loyalflow never writes the customer's warehouse (docs/architecture.md §2). What the preference centre,
one-click unsubscribe, STOP/START replies and complaints recorded in ``loyalflow_consent`` leaves as
CSV or Parquet through fsspec: a local folder by default (``<LOYALFLOW_HOME>/out/consent``) or any
fsspec URL in ``LOYALFLOW_CONSENT_EXPORT_URL``. ``loyalflow consent export`` and the daily
``consent_export`` DAG both call :func:`export`. Rows carry customer ids, never addresses.
"""

from __future__ import annotations

import datetime as dt
import io
from typing import Literal

import fsspec
import pandas as pd
import sqlalchemy as sa

from loyalflow.decide.consent import changes_since
from loyalflow.errors import LoyalflowError
from loyalflow.settings import Settings

Format = Literal["csv", "parquet"]
FORMATS: tuple[Format, ...] = ("csv", "parquet")
COLUMNS = ["customer_id", "channel", "scope", "opted_in", "source", "until", "recorded_at"]


def parse_format(value: str) -> Format:
    """``csv`` or ``parquet``; anything else is a one-line error."""
    if value == "csv":
        return "csv"
    if value == "parquet":
        return "parquet"
    raise LoyalflowError(f"--format must be csv or parquet, got '{value}'")


def changes(state: sa.Engine, since: dt.datetime, before: dt.datetime | None = None) -> pd.DataFrame:
    """Consent changes recorded in ``[since, before)`` (naive UTC), oldest first, in export columns."""
    frame = changes_since(state, since)
    for column in ("until", "recorded_at"):
        frame[column] = pd.to_datetime(frame[column])
    if before is not None:
        frame = frame[frame["recorded_at"] < pd.Timestamp(before)]
    frame["opted_in"] = frame["opted_in"].astype(bool)
    return frame.reindex(columns=COLUMNS).reset_index(drop=True)


def to_bytes(frame: pd.DataFrame, fmt: Format) -> bytes:
    """The frame as CSV (ISO 8601 UTC times, ``true``/``false``) or Parquet."""
    if fmt == "parquet":
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        return buffer.getvalue()
    text = frame.assign(opted_in=frame["opted_in"].map({True: "true", False: "false"}))
    return text.to_csv(index=False, date_format="%Y-%m-%dT%H:%M:%S.%fZ").encode("utf-8")


def default_url(settings: Settings, day: dt.date, fmt: Format = "csv") -> str:
    """``<consent_export_url or home/out/consent>/consent-<day>.<fmt>``."""
    base = settings.consent_export_url or str(settings.home / "out" / "consent")
    return f"{base.rstrip('/')}/consent-{day:%Y-%m-%d}.{fmt}"


def write(url: str, data: bytes) -> None:
    """Write ``data`` to ``url`` whole: a temporary file first, then renamed (folders are created)."""
    try:
        fs, path = fsspec.core.url_to_fs(url)
        parent = path.rsplit("/", 1)[0] if "/" in path else ""
        if parent:
            fs.makedirs(parent, exist_ok=True)
        part = f"{path}.part"
        with fs.open(part, "wb") as fh:
            fh.write(data)
        fs.mv(part, path)
    except (OSError, ValueError, ImportError) as exc:
        raise LoyalflowError(f"cannot write the consent export to {url}: {exc}") from None


def export(
    state: sa.Engine,
    since: dt.datetime,
    url: str,
    fmt: Format = "csv",
    before: dt.datetime | None = None,
) -> int:
    """Write the changes recorded in ``[since, before)`` to ``url``; the number of rows written."""
    fmt = parse_format(fmt)
    frame = changes(state, since, before)
    write(url, to_bytes(frame, fmt))
    return len(frame)
