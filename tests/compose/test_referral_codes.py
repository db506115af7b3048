"""Referral codes: unique across customers (40-bit codes collide a few times per million), and the
stored code keeps being used (also after a key rotation), so every code in a message attributes."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa

from loyalflow.compose import referral
from loyalflow.state import ensure_schema, referral_codes

KEY, NEW_KEY = "k" * 40, "n" * 40


def _engine(url: str) -> sa.Engine:
    engine = sa.create_engine(url)
    ensure_schema(engine)
    return engine


def test_a_derived_code_someone_else_holds_takes_the_next_variant(sqlite_url: str) -> None:
    engine = _engine(sqlite_url)
    taken = referral.code_for(KEY, "C2")
    with engine.begin() as conn:  # C1 holds the code C2 would derive (as a 40-bit collision would)
        conn.execute(
            sa.insert(referral_codes).values(customer_id="C1", code=taken, created_at=dt.datetime.now())
        )
    codes = referral.codes_for(engine, KEY, ["C1", "C2", "C3"])
    assert codes["C1"] == taken and codes["C3"] == referral.code_for(KEY, "C3")
    assert codes["C2"] == referral.code_for(KEY, "C2|1") != taken
    referral.remember(engine, KEY, ["C2", "C3"])  # stores what the messages carried; no IntegrityError
    assert referral.customer_for(engine, codes["C2"]) == "C2"
    assert referral.customer_for(engine, taken) == "C1"


def test_the_stored_code_wins_after_a_key_rotation(sqlite_url: str) -> None:
    engine = _engine(sqlite_url)
    referral.remember(engine, KEY, ["C1"])
    old = referral.code_for(KEY, "C1")
    assert referral.codes_for(engine, NEW_KEY, ["C1", "C9"]) == {
        "C1": old,
        "C9": referral.code_for(NEW_KEY, "C9"),
    }


def test_two_new_customers_with_the_same_derived_code_get_different_codes(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = _engine(sqlite_url)
    real = referral.code_for
    same = real(KEY, "A")

    def colliding(secret: str, customer_id: str) -> str:  # A and B collide; their variants do not
        return same if customer_id in ("A", "B") else real(secret, customer_id)

    monkeypatch.setattr(referral, "code_for", colliding)
    codes = referral.codes_for(engine, KEY, ["A", "B"])
    assert codes["A"] == same and codes["B"] == real(KEY, "B|1")
    referral.remember(engine, KEY, ["A", "B"])
    with engine.connect() as conn:
        assert (
            dict(conn.execute(sa.select(referral_codes.c.customer_id, referral_codes.c.code)).all()) == codes
        )
