"""Idempotency keys: ordered by customer within a step, safe in headers, and never changed once used."""

from __future__ import annotations

import datetime as dt
import email.policy
import re

import sqlalchemy as sa
from alembic import command
from hypothesis import given
from hypothesis import strategies as st

from loyalflow.deliver import ledger
from loyalflow.settings import Settings
from loyalflow.state import key_formats, migrate
from loyalflow.state import ledger as table
from tests.cli_helpers import AS_OF, invoke_run, outbox_lines
from tests.factories import Shop

SAFE = re.compile(r"[A-Za-z0-9_-]{1,64}")
IDS = st.one_of(
    st.integers(min_value=0, max_value=2**63 - 1).map(str),
    st.from_regex(r"0[0-9]{1,5}", fullmatch=True),  # leading zeros: not the integer they look like
    st.from_regex(r"[A-Za-z0-9_-]{1,40}", fullmatch=True),
    st.text(min_size=1, max_size=120),
)
DAY = dt.datetime(2026, 11, 20, 14, 30)


@given(IDS, st.text(max_size=30))
def test_a_key_is_short_and_safe_in_a_message_id(customer_id: str, anchor_id: str) -> None:
    key = ledger.idempotency_key("thank_you", "thanks", customer_id, anchor_id)
    assert SAFE.fullmatch(key), key
    assert key == ledger.idempotency_key("thank_you", "thanks", customer_id, anchor_id)
    header = email.policy.default.header_factory("Message-ID", f"<{key}@loyalflow>")
    assert str(header) == f"<{key}@loyalflow>" and not header.defects


@given(st.lists(st.tuples(IDS, st.sampled_from(["O1", "O2"])), min_size=2, max_size=30, unique=True))
def test_distinct_messages_get_distinct_keys(messages: list[tuple[str, str]]) -> None:
    keys = {ledger.idempotency_key("thank_you", "thanks", c, a) for c, a in messages}
    assert len(keys) == len(messages)  # "0123" and "123", "7" and "s7": never the same key


@given(st.lists(st.integers(min_value=0, max_value=2**63 - 1), min_size=2, max_size=50, unique=True))
def test_integer_customers_keep_their_order_within_a_step(ids: list[int]) -> None:
    keys = {ledger.idempotency_key("winback", "reactivate", str(i), f"cycle-{i % 3}"): i for i in ids}
    assert [keys[k] for k in sorted(keys)] == sorted(ids)


def test_steps_and_campaigns_are_apart_in_key_order() -> None:
    def keys(campaign: str, step: str) -> list[str]:
        return sorted(ledger.idempotency_key(campaign, step, str(i), "a") for i in range(100))

    a, b, c = keys("thank_you", "thanks"), keys("thank_you", "referrer_thanks"), keys("remorse", "thanks")
    assert len({k[:8] for k in a + b + c}) == 3  # one prefix per campaign and step
    assert all(k.startswith(a[0][:8]) for k in a)


def test_a_campaign_that_sent_before_the_upgrade_keeps_its_keys(settings: Settings, shop: Shop) -> None:
    """A database at the release before ordered keys (0002) that thanked a buyer: after the upgrade the
    rerun finds that message under its hashed key and sends nothing; a new buyer gets a hashed key too."""
    buyer = shop.customer()
    order = shop.order(buyer, DAY)
    state = sa.create_engine(settings.warehouse_url)
    with state.begin() as conn:
        command.upgrade(migrate.config(conn), "0002")
    sent = ledger.hashed_key("thank_you", "thanks", buyer, order)
    now = dt.datetime(2026, 11, 20, 16, 0)
    with state.begin() as conn:
        conn.execute(
            table.insert().values(
                idempotency_key=sent, campaign="thank_you", step="thanks", customer_id=buyer, anchor_id=order,
                channel="email", category="relationship", status="sent", provider="outbox", run_id="before",
                as_of=AS_OF, claimed_at=now, updated_at=now,
            )
        )  # fmt: skip

    result = invoke_run(settings, "thank_you")
    assert result.exit_code == 0, result.output
    assert outbox_lines(settings) == []  # the thank-you went out before the upgrade
    with state.connect() as conn:
        assert conn.execute(sa.select(key_formats.c.campaign, key_formats.c.format)).all() == [
            ("thank_you", "hashed")
        ]

    newcomer = shop.customer()
    shop.order(newcomer, DAY)
    assert invoke_run(settings, "thank_you").exit_code == 0
    (line,) = outbox_lines(settings)
    assert line["customer_id"] == newcomer and re.fullmatch(r"[0-9a-f]{40}", line["idempotency_key"])


def test_a_new_campaign_gets_ordered_keys(settings: Settings, shop: Shop) -> None:
    buyer = shop.customer()
    order = shop.order(buyer, DAY)
    assert invoke_run(settings, "thank_you").exit_code == 0
    (line,) = outbox_lines(settings)
    assert line["idempotency_key"] == ledger.idempotency_key("thank_you", "thanks", buyer, order)
    state = sa.create_engine(settings.warehouse_url)
    assert ledger.keys_for(state, "thank_you")("thanks", buyer, order) == line["idempotency_key"]
