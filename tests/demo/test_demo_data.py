"""Tests for the Harbor & Pine Hotels demo warehouse seeder."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from loyalflow.demo.data import EMAIL_DOMAINS, EVENT_TYPES, PERSONAS, has_warehouse, seed

AS_OF = date(2026, 11, 20)
AS_OF_TS = pd.Timestamp(AS_OF)
TABLES = ("customers", "orders", "channel_preferences", "events")
Warehouse = tuple[dict[str, int], dict[str, pd.DataFrame]]
PG_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
SORT_KEYS = {
    "customers": ["customer_id"],
    "orders": ["order_id"],
    "channel_preferences": ["customer_id", "channel"],
    "events": ["occurred_at", "customer_id", "event_type", "content_id"],
}


def _sqlite(path: Path) -> sa.Engine:
    return sa.create_engine(f"sqlite:///{path}")


def _read(engine: sa.Engine) -> dict[str, pd.DataFrame]:
    with engine.connect() as conn:
        frames = {t: pd.read_sql_table(t, conn) for t in TABLES}
    return {
        t: df.sort_values(SORT_KEYS[t], kind="stable", na_position="first").reset_index(drop=True)
        for t, df in frames.items()
    }


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Warehouse]:
    engine = _sqlite(tmp_path_factory.mktemp("demo") / "wh.db")
    assert not has_warehouse(engine)
    started = time.perf_counter()
    counts = seed(engine, AS_OF)
    elapsed = time.perf_counter() - started
    assert elapsed < 30, f"seeding 5,000 customers took {elapsed:.1f}s"
    assert has_warehouse(engine)
    yield counts, _read(engine)
    engine.dispose()


def test_counts_match_tables_and_expected_volumes(warehouse: Warehouse) -> None:
    counts, t = warehouse
    assert counts == {name: len(t[name]) for name in TABLES}
    assert counts["customers"] == 5000
    assert 15_000 <= counts["orders"] <= 30_000
    assert 40_000 <= counts["events"] <= 65_000
    assert t["customers"].customer_id.is_unique and t["orders"].order_id.is_unique
    assert t["customers"].customer_id.str.fullmatch(r"C\d{6}").all()
    assert t["orders"].order_id.str.fullmatch(r"O\d{7}").all()


def test_determinism_and_seed_sensitivity(tmp_path: Path) -> None:
    runs = []
    for name, s in (("a", 7), ("b", 7), ("c", 8)):
        engine = _sqlite(tmp_path / f"{name}.db")
        seed(engine, AS_OF, customers=400, seed=s, years=1.0)
        runs.append(_read(engine))
        engine.dispose()
    for table in TABLES:
        pd.testing.assert_frame_equal(runs[0][table], runs[1][table])
    assert not runs[0]["orders"].equals(runs[2]["orders"])
    assert not runs[0]["customers"].equals(runs[2]["customers"])


def test_reseeding_replaces_rows(tmp_path: Path) -> None:
    engine = _sqlite(tmp_path / "re.db")
    first = seed(engine, AS_OF, customers=300, seed=1, years=1.0)
    again = seed(engine, AS_OF, customers=300, seed=1, years=1.0)
    assert first == again
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT COUNT(*) FROM orders")).scalar_one() == first["orders"]


def test_invalid_arguments(tmp_path: Path) -> None:
    engine = _sqlite(tmp_path / "bad.db")
    with pytest.raises(ValueError):
        seed(engine, AS_OF, customers=0)
    with pytest.raises(ValueError):
        seed(engine, AS_OF, years=0)


def test_order_statuses_and_totals(warehouse: Warehouse) -> None:
    orders = warehouse[1]["orders"]
    share = orders.status.value_counts(normalize=True)
    assert set(share.index) == {"completed", "returned", "cancelled"}
    assert 0.06 <= share["returned"] <= 0.10
    assert 0.025 <= share["cancelled"] <= 0.055
    assert (orders.total > 0).all()
    assert (orders.total - orders.total.round(2)).abs().max() < 1e-9
    assert orders.ordered_at.max() < AS_OF_TS + pd.Timedelta(days=1)


def test_every_recent_day_has_completed_orders(warehouse: Warehouse) -> None:
    orders = warehouse[1]["orders"]
    done = orders[orders.status == "completed"]
    per_day = done.ordered_at.dt.normalize().value_counts()
    days = pd.date_range(AS_OF_TS - pd.Timedelta(days=89), AS_OF_TS, freq="D")
    assert per_day.reindex(days, fill_value=0).min() >= 10


def test_every_recent_day_covered_for_small_populations(tmp_path: Path) -> None:
    engine = _sqlite(tmp_path / "small.db")
    seed(engine, AS_OF, customers=150, seed=3)
    orders = _read(engine)["orders"]
    done = orders[orders.status == "completed"]
    days = pd.date_range(AS_OF_TS - pd.Timedelta(days=89), AS_OF_TS, freq="D")
    assert done.ordered_at.dt.normalize().value_counts().reindex(days, fill_value=0).min() >= 10


def test_dormant_share(warehouse: Warehouse) -> None:
    orders = warehouse[1]["orders"]
    last = orders.groupby("customer_id").ordered_at.max()
    dormant = (last < AS_OF_TS - pd.Timedelta(days=180)).mean()
    assert 0.25 <= dormant <= 0.35


def test_customers_created_before_first_order(warehouse: Warehouse) -> None:
    t = warehouse[1]
    first = t["orders"].groupby("customer_id").ordered_at.min()
    created = t["customers"].set_index("customer_id").created_at.reindex(first.index)
    assert (created < first).all()
    assert t["customers"].created_at.max() < AS_OF_TS


def test_personas_differ(warehouse: Warehouse) -> None:
    t = warehouse[1]
    assert set(t["customers"].persona) == set(PERSONAS) and len(PERSONAS) == 5
    persona = t["customers"].set_index("customer_id").persona
    orders = t["orders"].assign(persona=lambda d: d.customer_id.map(persona))
    per_customer = orders.groupby("persona").size() / t["customers"].persona.value_counts()
    basket = orders.groupby("persona").total.median()
    assert per_customer["corporate_travel_manager"] > per_customer["wedding_couple"]
    assert basket["wedding_couple"] > basket["independent_business_traveller"]
    top = orders.groupby("persona")["product"].agg(lambda s: s.value_counts().index[0])
    assert top.nunique() >= 4


def test_referrals_point_to_earlier_customers(warehouse: Warehouse) -> None:
    t = warehouse[1]
    orders = t["orders"]
    referred = orders[orders.referred_by.notna()]
    assert 0.04 <= len(referred) / len(orders) <= 0.06
    assert referred.referred_by.isin(t["customers"].customer_id).all()
    assert (referred.referred_by != referred.customer_id).all()
    first_order = orders.groupby("customer_id").ordered_at.min()
    assert (referred.referred_by.map(first_order) < referred.ordered_at).all()


def test_contact_data_messiness(warehouse: Warehouse) -> None:
    c = warehouse[1]["customers"]
    n = len(c)
    blank = c.first_name.isna() | (c.first_name.fillna("").str.strip() == "")
    assert 0.02 <= blank.mean() <= 0.04
    assert c.first_name.isna().any() and (c.first_name == "").any()
    names = (c.first_name.fillna("") + " " + c.last_name.fillna("")).tolist()
    assert any(ch in name for name in names for ch in "ëŁé")
    html = [name for name in names if any(ch in name for ch in "<>&")]
    assert 2 <= len(html) <= 3
    assert 0.20 <= c.phone.isna().mean() <= 0.30
    assert 0.03 <= c.timezone.isna().mean() <= 0.07
    phones = c.phone.dropna()
    bad_phones = phones[~phones.str.fullmatch(r"\+[1-9]\d{7,14}")]
    assert 1 <= len(bad_phones) <= 5
    valid_email = c.email.str.fullmatch(r"[a-z0-9._]+@example\.(com|org|net)")
    assert 0.005 <= 1 - valid_email.mean() <= 0.02
    assert set(c.locale) <= {"en_US", "en_GB", "de_DE", "fr_FR"}
    assert c.city.notna().all() and c.loyalty_number.notna().any() and c.loyalty_number.isna().any()
    assert len(c) == n


def test_emails_only_use_reserved_domains(warehouse: Warehouse) -> None:
    emails = warehouse[1]["customers"].email
    assert emails.notna().all()
    domains = {e.rsplit("@", 1)[1] for e in emails if "@" in e}
    assert domains <= set(EMAIL_DOMAINS) | {""}


def test_channel_preferences(warehouse: Warehouse) -> None:
    t = warehouse[1]
    c, p = t["customers"], t["channel_preferences"]
    assert set(p.channel) == {"email", "sms", "push"}
    assert p.opted_in.isin([True, False]).all()
    without = ~c.customer_id.isin(p.customer_id)
    assert 0.03 <= without.mean() <= 0.07
    email = p[p.channel == "email"]
    assert set(email.customer_id) == set(c.customer_id[~without])
    assert 0.80 <= email.opted_in.mean() <= 0.90
    with_phone = c[c.phone.notna() & ~without]
    sms = p[p.channel == "sms"]
    assert sms.customer_id.isin(with_phone.customer_id).all()
    assert 0.5 <= len(sms) / len(with_phone) <= 0.7
    assert 0.6 <= sms.opted_in.mean() <= 0.8
    assert (p.consented_at < AS_OF_TS).all()
    created = p.customer_id.map(c.set_index("customer_id").created_at)
    assert (p.consented_at >= created).all()
    assert not p.duplicated(["customer_id", "channel"]).any()


def test_events(warehouse: Warehouse) -> None:
    t = warehouse[1]
    ev = t["events"]
    assert set(ev.event_type) == set(EVENT_TYPES)
    assert ev.customer_id.isin(t["customers"].customer_id).all()
    assert ev.occurred_at.min() >= AS_OF_TS - pd.Timedelta(days=120)
    assert ev.occurred_at.max() < AS_OF_TS + pd.Timedelta(days=1)
    assert ev[ev.event_type == "blog_view"].content_id.str.startswith("blog-").all()
    assert ev.content_id.isna().any()
    created = ev.customer_id.map(t["customers"].set_index("customer_id").created_at)
    assert (ev.occurred_at >= created).all()


def test_postgres_matches_sqlite(tmp_path: Path) -> None:
    admin = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
    try:
        with admin.connect():
            pass
    except sa.exc.OperationalError as exc:
        admin.dispose()
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL unreachable in CI: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    schema = f"lf_demo_{uuid.uuid4().hex[:12]}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    engine = sa.create_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}"})
    try:
        assert not has_warehouse(engine)
        counts = seed(engine, AS_OF, customers=600, seed=11)
        assert has_warehouse(engine)
        with engine.connect() as conn:
            for table, n in counts.items():
                assert conn.execute(sa.text(f"SELECT COUNT(*) FROM {schema}.{table}")).scalar_one() == n
        lite = _sqlite(tmp_path / "pg_twin.db")
        seed(lite, AS_OF, customers=600, seed=11)
        pg_frames, lite_frames = _read(engine), _read(lite)
        lite.dispose()
        for table in TABLES:
            pd.testing.assert_frame_equal(pg_frames[table], lite_frames[table], check_dtype=False)
    finally:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()
