"""report.json from hand-made decisions and orders: attribution window, maturity, credit, figures, files."""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from loyalflow.deliver.ledger import idempotency_key
from loyalflow.ops.cli import app
from loyalflow.report.build import build_report, step_row, write_report
from loyalflow.report.html import render
from loyalflow.report.lift import newcombe
from loyalflow.settings import Settings, get_settings
from loyalflow.state import decisions, ensure_schema
from tests.conftest import ROOT
from tests.dagbag import load_dagbag
from tests.factories import Shop

AS_OF = dt.date(2026, 11, 20)
DAY = dt.date(2026, 10, 20)  # a mature exposure day: its 14 days end on 11-03
DOCS = Path(__file__).resolve().parents[2] / "docs" / "report.md"


def at(day: dt.date, days: int = 0) -> dt.datetime:
    return dt.datetime.combine(day + dt.timedelta(days=days), dt.time(12))


class World:
    """A warehouse (Shop) with loyalflow's state tables and decisions written as the pipeline writes them."""

    def __init__(self, shop: Shop) -> None:
        self.shop, self.rows = shop, []  # type: list[dict[str, Any]]
        ensure_schema(shop.engine)

    def exposed(
        self, campaign: str, step: str, arm: str, day: dt.date, cid: str | None = None, anchor: str = "a1"
    ) -> str:
        cid = cid or self.shop.customer()
        self.rows.append(
            {
                "run_id": f"r-{day}", "as_of": day, "campaign": campaign, "step": step, "customer_id": cid,
                "anchor_id": anchor, "channel": "email", "outcome": "sent" if arm == "sent" else "skipped",
                "reason": arm, "detail": None, "decided_at": at(day),
                "idempotency_key": idempotency_key(campaign, step, cid, anchor),
            }
        )  # fmt: skip
        return cid

    def save(self) -> sa.Engine:
        with self.shop.engine.begin() as conn:
            conn.execute(decisions.insert(), self.rows)
        return self.shop.engine


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A warehouse with state tables, decisions and orders (built once for the module)."""
    url = f"sqlite:///{tmp_path_factory.mktemp('build') / 'warehouse.db'}"
    shop = Shop(sa.create_engine(url))
    w = World(shop)
    sent = [w.exposed("remorse_reduction", "reassurance", "sent", DAY) for _ in range(40)]
    held = [w.exposed("remorse_reduction", "reassurance", "holdout", DAY) for _ in range(20)]
    for cid in sent[:12]:
        shop.order(cid, at(DAY, 5), total=200.0)
    shop.order(sent[12], at(DAY, 14), total=100.0)  # the window's last day counts
    shop.order(sent[13], at(DAY, 15))  # one day late: no conversion
    shop.order(sent[14], at(DAY, 0))  # the message's own day: no conversion
    shop.order(sent[15], at(DAY, 3), status="cancelled")  # not completed
    for cid in held[:2]:
        shop.order(cid, at(DAY, 2), total=150.0)
    w.exposed("remorse_reduction", "reassurance", "holdout", DAY + dt.timedelta(days=1), held[5])  # catch-up
    w.exposed("remorse_reduction", "reassurance", "sent", DAY + dt.timedelta(days=7), sent[30], anchor="a2")
    for _ in range(5):  # still inside their window on AS_OF
        shop.order(w.exposed("remorse_reduction", "reassurance", "sent", dt.date(2026, 11, 15)), at(AS_OF))
    askers = [w.exposed("referral_ask", "ask", "sent", DAY) for _ in range(10)]
    for asker in askers[:3]:
        shop.order(shop.customer(), at(DAY, 4), total=500.0, referred_by=asker)
    shop.order(askers[4], at(DAY, 4))  # the asker's own booking is not a referral
    for _ in range(10):
        w.exposed("thank_you", "thanks", "sent", DAY)
    dormant_sent = [
        w.exposed("dormant_reactivation", "reminder", "sent", dt.date(2026, 10, 1)) for _ in range(10)
    ]
    dormant_held = [
        w.exposed("dormant_reactivation", "reminder", "holdout", dt.date(2026, 10, 1)) for _ in range(10)
    ]
    for cid in dormant_sent[:4]:
        shop.order(cid, at(dt.date(2026, 10, 1), 25))  # reactivated within 30 days (but after 14)
    shop.order(dormant_held[0], at(dt.date(2026, 10, 1), 40))  # too late
    w.save()
    return url


@pytest.fixture(scope="module")
def report(url: str) -> dict[str, Any]:
    engine = sa.create_engine(url)
    return build_report(engine, engine, AS_OF, 14)


def step(report: dict[str, Any], campaign: str, name: str) -> dict[str, Any]:
    (row,) = [s for s in report["steps"] if (s["campaign"], s["step"]) == (campaign, name)]
    return row


def test_a_step_counts_matured_exposures_and_conversions_in_the_window(report: dict[str, Any]) -> None:
    row = step(report, "remorse_reduction", "reassurance")
    assert (row["sent"], row["holdout"], row["maturing"]) == (40, 20, 5)
    assert (row["conv_sent"], row["conv_holdout"]) == (13, 2)
    assert row["rate_sent"] == pytest.approx(13 / 40) and row["rate_holdout"] == pytest.approx(0.1)
    assert row["lift"] == pytest.approx(13 / 40 - 0.1, abs=1e-4)
    low, high = newcombe(13, 40, 2, 20)
    assert (row["lift_ci_low"], row["lift_ci_high"]) == (
        pytest.approx(low, abs=1e-4),
        pytest.approx(high, abs=1e-4),
    )
    assert row["rel_lift"] == pytest.approx(13 / 40 / 0.1 - 1, abs=1e-4)
    assert row["rev_per_sent"] == pytest.approx((12 * 200 + 100) / 40)
    assert row["rev_per_holdout"] == pytest.approx(2 * 150 / 20)
    assert row["rev_per_sent_ci_low"] < row["rev_per_sent"] < row["rev_per_sent_ci_high"]
    assert row["verdict_kind"] == ("helps" if low > 0 else "unclear")


def test_referral_asks_convert_by_their_friends_bookings(report: dict[str, Any]) -> None:
    row = step(report, "referral_ask", "ask")
    assert (row["sent"], row["conv_sent"], row["holdout"]) == (10, 3, 0)
    assert row["verdict"] == "not measured: no holdout"
    referral = report["referral"]
    assert referral["asks"] == 10 and referral["friends_converted"] == 3
    assert referral["referral_conversion_rate"] == pytest.approx(0.3)
    assert referral["referred_bookings"] == 3 and referral["referred_revenue"] == pytest.approx(1500.0)
    # every other message sent and matured: remorse 40 (13 converted) and thank-you 10 and dormant 10
    assert referral["overall_conversion_rate"] == pytest.approx(13 / 60, abs=1e-4)


def test_dormant_reactivation_against_the_holdout_in_30_days(report: dict[str, Any]) -> None:
    dormant = report["dormant"]
    assert dormant["window_days"] == 30
    assert (dormant["sent"], dormant["holdout"], dormant["conv_sent"], dormant["conv_holdout"]) == (
        10,
        10,
        4,
        0,
    )
    assert step(report, "dormant_reactivation", "reminder")["conv_sent"] == 0  # 25 days is outside 14


def test_tiers_churn_and_timeline(report: dict[str, Any]) -> None:
    tiers = {t["tier"]: t for t in report["tiers"]}
    buyers = sum(t["customers"] for t in tiers.values())
    assert (
        tiers["vip"]["customers"] == -(-buyers // 5)
        and tiers["vip"]["revenue_share"] > tiers["bottom"]["revenue_share"]
    )
    assert sum(t["revenue_share"] for t in tiers.values()) == pytest.approx(1.0, abs=1e-3)
    assert sum(report["churn"].values()) == buyers
    remorse = [t for t in report["timeline"] if t["campaign"] == "remorse_reduction"]
    assert {"day": "2026-10-25", "campaign": "remorse_reduction", "sent": 0, "conversions": 12} in remorse


def test_every_field_is_documented(report: dict[str, Any]) -> None:
    text = DOCS.read_text(encoding="utf-8")
    sections = {
        "": report,
        "method": report["method"],
        "steps": report["steps"][0],
        "referral": report["referral"],
        "dormant": report["dormant"],
        "tiers": report["tiers"][0],
        "funnels": report["funnels"][0],
        "timeline": report["timeline"][0],
    }
    missing = [f"{s}.{k}" for s, fields in sections.items() for k in fields if f"`{k}`" not in text]
    assert not missing, f"docs/report.md does not describe: {missing}"


def test_the_html_is_self_contained_with_one_chart_per_figure(report: dict[str, Any], tmp_path: Path) -> None:
    json_path, html_path = write_report(report, tmp_path / "out")
    assert json.loads(json_path.read_text()) == report
    page = html_path.read_text(encoding="utf-8")
    assert page == render(report)
    scripts = re.findall(r"<script[^>]*>", page)
    assert all("src=" not in s for s in scripts) and "<link" not in page and "@import" not in page
    # outside the inlined plotly.js bundle (its map-tile URLs are never requested) no URL at all
    own = page.replace(page[page.index("<script>") : page.index("</script>") + 9], "")
    assert not re.search(r"https?://|//cdn|url\(", own), re.search(r".{60}https?://.{60}", own)
    charts = own.count('<div class="chart">')
    assert charts == 1 + len(report["funnels"]) + 1 + 1 + 1  # lift, funnels, timeline, dormant, tiers


def test_the_cli_prints_and_writes_the_same_report(
    report: dict[str, Any], url: str, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOYALFLOW_REPORT_DIR", str(tmp_path / "cli"))
    result = CliRunner().invoke(app, ["report", "--as-of", str(AS_OF), "--warehouse", url, "--json"])
    assert result.exit_code == 0, result.output
    printed = json.loads(result.stdout)
    written = json.loads((tmp_path / "cli" / "report.json").read_text())
    assert (tmp_path / "cli" / "report.html").is_file()
    for found in (printed, written):
        found.pop("generated_at")
    expected = {k: v for k, v in report.items() if k != "generated_at"}
    assert printed == written == expected
    tables = CliRunner().invoke(app, ["report", "--as-of", str(AS_OF), "--warehouse", url])
    assert (
        tables.exit_code == 0 and "+22.5 pts" in tables.stdout and "not measured: no holdout" in tables.stdout
    )


def test_bad_input_is_one_clear_line(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = CliRunner().invoke(
        app, ["report", "--as-of", "20-11-2026", "--warehouse", settings.warehouse_url]
    )
    assert result.exit_code == 1 and "--as-of must be a date as YYYY-MM-DD" in result.output
    monkeypatch.setenv("LOYALFLOW_ATTRIBUTION_DAYS", "0")
    result = CliRunner().invoke(app, ["report", "--as-of", str(AS_OF), "--warehouse", settings.warehouse_url])
    assert result.exit_code == 1 and "attribution_days" in result.output.lower()


@pytest.mark.airflow
def test_the_reporting_dag_writes_the_report_of_the_day_before(
    airflow_db: str, url: str, report: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOYALFLOW_WAREHOUSE_URL", url)
    monkeypatch.setenv("LOYALFLOW_REPORT_DIR", str(tmp_path / "dag"))
    get_settings.cache_clear()
    bag = load_dagbag(ROOT / "dags")
    assert bag.import_errors == {}
    dag = bag.get_dag("loyalflow_report")
    assert [t.task_id for t in dag.tasks] == ["write_report"] and dag.schedule == "@daily"
    run = dag.test(logical_date=dt.datetime(2026, 11, 21, tzinfo=dt.UTC))  # the run after the day
    get_settings.cache_clear()
    assert str(run.state) == "success"
    written = json.loads((tmp_path / "dag" / "report.json").read_text())
    assert written["as_of"] == "2026-11-20" and (tmp_path / "dag" / "report.html").is_file()
    assert written["steps"] == report["steps"]


def test_a_report_before_any_run_says_so(shop: Shop) -> None:
    shop.order(shop.customer(), at(DAY))
    ensure_schema(shop.engine)
    empty = build_report(shop.engine, shop.engine, AS_OF, 14)
    assert empty["steps"] == [] and empty["funnels"] == [] and empty["timeline"] == []
    assert empty["dormant"]["verdict"] == "not measured: nothing sent" and empty["referral"]["asks"] == 0
    assert [t["customers"] for t in empty["tiers"]] == [1, 0, 0]
    assert "No data yet for lift" in render(empty)


def test_a_step_sent_too_recently_says_so_instead_of_nothing_sent() -> None:
    young = pd.DataFrame(
        {
            "arm": ["sent"] * 3 + ["holdout"],
            "mature": [False] * 4,
            "converted": [False] * 4,
            "revenue": [0.0] * 4,
        }
    )
    row = step_row("dormant_reactivation", "last_call", young)
    assert (row["verdict_kind"], row["verdict"]) == ("too_early", "too early: 4 still inside the window")
    assert step_row("dormant_reactivation", "last_call", young.iloc[:0])["verdict_kind"] == "not_sent"
