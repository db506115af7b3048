"""`loyalflow consent export` and the daily consent_export DAG: the ledger's changes as a file for the CRM."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from loyalflow.decide import consent
from loyalflow.ops.cli import app as cli
from loyalflow.runtime import Runtime
from loyalflow.settings import Settings, get_settings
from loyalflow.web.consent_export import default_url, export
from tests.conftest import ROOT
from tests.dagbag import load_dagbag

DAY = dt.datetime(2026, 11, 20)


@pytest.fixture
def recorded(settings: Settings) -> Settings:
    """Four ledger rows over three days."""
    with Runtime(settings).state.begin() as conn:
        consent.record(conn, "C1", "email", False, "one_click", at=DAY - dt.timedelta(days=1, hours=-9))
        consent.record(conn, "C2", "sms", False, "sms_keyword", at=DAY + dt.timedelta(hours=8))
        consent.record(
            conn, "C3", "email", False, "pause", scope="marketing", until=DAY + dt.timedelta(days=30),
            at=DAY + dt.timedelta(hours=10),
        )  # fmt: skip
        consent.record(conn, "C3", "email", True, "preference_centre", at=DAY + dt.timedelta(days=1, hours=2))
    return settings


def test_cli_exports_csv_since_a_day(recorded: Settings, tmp_path: Path) -> None:
    out = tmp_path / "deep" / "consent.csv"
    result = CliRunner().invoke(cli, ["consent", "export", "--since", "2026-11-20", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "exported 3 consent change(s) since 2026-11-20" in result.output
    rows = list(csv.DictReader(out.open()))
    assert [(r["customer_id"], r["source"]) for r in rows] == [
        ("C2", "sms_keyword"),
        ("C3", "pause"),
        ("C3", "preference_centre"),
    ]
    assert list(rows[0]) == ["customer_id", "channel", "scope", "opted_in", "source", "until", "recorded_at"]
    assert rows[1]["scope"] == "marketing" and rows[1]["until"] == "2026-12-20T00:00:00.000000Z"
    assert rows[0]["opted_in"] == "false" and rows[2]["opted_in"] == "true"
    assert rows[0]["recorded_at"] == "2026-11-20T08:00:00.000000Z" and rows[0]["until"] == ""
    assert not list(out.parent.glob("*.part"))
    assert "@" not in out.read_text()  # customer ids, never addresses


def test_cli_exports_parquet_and_prints_csv(recorded: Settings, tmp_path: Path) -> None:
    out = tmp_path / "consent.parquet"
    args = ["consent", "export", "--since", "2026-11-19", "--format", "parquet", "--out", str(out)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    frame = pd.read_parquet(out)
    assert len(frame) == 4 and frame["opted_in"].tolist() == [False, False, False, True]
    printed = CliRunner().invoke(cli, ["consent", "export", "--since", "2026-11-21", "--out", "-"])
    assert printed.exit_code == 0
    assert list(csv.DictReader(io.StringIO(printed.output)))[0]["source"] == "preference_centre"


def test_cli_default_file_and_bad_options(
    recorded: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOYALFLOW_CONSENT_EXPORT_URL", str(tmp_path / "exports"))
    get_settings.cache_clear()
    result = CliRunner().invoke(cli, ["consent", "export", "--since", "2026-01-01"])
    assert result.exit_code == 0, result.output
    (written,) = (tmp_path / "exports").glob("consent-*.csv")
    assert written.name == f"consent-{dt.datetime.now(dt.UTC).date()}.csv"
    assert len(written.read_text().splitlines()) == 5
    for args, message in (
        (["--since", "20-11-2026"], "--since must be a date as YYYY-MM-DD, got '20-11-2026'"),
        (["--since", "2026-11-20", "--format", "xlsx"], "--format must be csv or parquet, got 'xlsx'"),
        (["--since", "2026-11-20", "--format", "parquet", "--out", "-"], "prints CSV only"),
    ):
        bad = CliRunner().invoke(cli, ["consent", "export", *args])
        assert bad.exit_code == 1 and message in bad.output and "Traceback" not in bad.output


def test_default_url_is_under_home_unless_a_url_is_set(settings: Settings) -> None:
    assert default_url(settings, DAY.date()) == f"{ROOT}/out/consent/consent-2026-11-20.csv"
    moved = Settings(consent_export_url="s3://bucket/consent/")
    assert default_url(moved, DAY.date(), "parquet") == "s3://bucket/consent/consent-2026-11-20.parquet"


def test_export_to_an_fsspec_url(recorded: Settings) -> None:
    import fsspec

    state = Runtime(recorded).state
    assert export(state, DAY, "memory://lf/consent/day.csv", before=DAY + dt.timedelta(days=1)) == 2
    with fsspec.open("memory://lf/consent/day.csv", "r") as fh:
        assert [r["customer_id"] for r in csv.DictReader(fh)] == ["C2", "C3"]


@pytest.mark.airflow
def test_consent_export_dag_writes_the_day_file(
    airflow_db: str, recorded: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOYALFLOW_CONSENT_EXPORT_URL", str(tmp_path / "consent"))
    bag = load_dagbag(ROOT / "dags")
    assert bag.import_errors == {}
    dag = bag.get_dag("consent_export")
    assert [t.task_id for t in dag.tasks] == ["export_consent"] and "consent" in dag.tags
    run = dag.test(logical_date=dt.datetime(2026, 11, 21, tzinfo=dt.UTC))  # the run after the day
    assert str(run.state) == "success"
    rows = list(csv.DictReader((tmp_path / "consent" / "consent-2026-11-20.csv").open()))
    assert [(r["customer_id"], r["source"]) for r in rows] == [("C2", "sms_keyword"), ("C3", "pause")]
