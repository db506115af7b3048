"""Stateful property test: random consent, suppression, order, clock and rerun sequences through the real
pipeline never produce a message on a non-consented channel, to a suppressed address, inside SMS quiet
hours, over a marketing cap, or twice for one key."""

from __future__ import annotations

import datetime as dt
import tempfile
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from zoneinfo import ZoneInfo

import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from loyalflow.decide import suppressions
from loyalflow.pipeline import run
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.settings import Settings
from tests.compliance_helpers import outbox, promo_project
from tests.factories import Shop

PROJECT = promo_project(Path(tempfile.mkdtemp(prefix="lf-stateful-")), {"promo_hi": 80, "promo_lo": 20})
CUSTOMERS = {  # id: (email, phone, time zone)
    "C1": ("c1@example.com", "+14155550101", "America/Los_Angeles"),
    "C2": ("c2@example.com", "+819012345678", "Asia/Tokyo"),
    "C3": (None, "+442071838750", None),
}
CAMPAIGNS = ("promo_hi", "promo_lo", "thank_you")
SCOPES = {
    "promo_hi": ("all", "marketing", "promo_hi"),
    "promo_lo": ("all", "marketing", "promo_lo"),
    "thank_you": ("all", "relationship", "thank_you"),
}
ADDRESS = {"email": 0, "sms": 1}


class Compliance(RuleBasedStateMachine):
    """The model: consent and suppressions as the rules set them; the real pipeline decides."""

    def __init__(self) -> None:
        super().__init__()
        folder = Path(tempfile.mkdtemp(prefix="lf-case-"))
        self.settings = Settings(
            home=PROJECT,
            warehouse_url=f"sqlite:///{folder / 'w.db'}",
            outbox_dir=folder / "outbox",
            work_url=str(folder / "work"),
            secret_key="s",
        )
        self.rt = Runtime(self.settings)
        self.shop = Shop(sa.create_engine(self.settings.warehouse_url))
        for cid, (email, phone, tz) in CUSTOMERS.items():
            self.shop.customer(customer_id=cid, email=email, phone=phone, timezone=tz, channels=())
        self.now = dt.datetime(2026, 11, 20, 3, 0)
        self.stamp = dt.datetime(2025, 1, 1)
        self.consent: dict[tuple[str, str], bool] = {}
        self.suppressed: set[tuple[str, str, str]] = set()
        self.seen: set[str] = set()

    @initialize(opted=st.lists(st.booleans(), min_size=6, max_size=6))
    def start(self, opted: list[bool]) -> None:
        pairs = [(cid, ch) for cid in sorted(CUSTOMERS) for ch in ("email", "sms")]
        for (cid, channel), on in zip(pairs, opted, strict=True):
            self.set_consent(cid, channel, on)
        for cid in CUSTOMERS:
            self.order(cid)

    @rule(cid=st.sampled_from(sorted(CUSTOMERS)), channel=st.sampled_from(("email", "sms")), on=st.booleans())
    def set_consent(self, cid: str, channel: str, on: bool) -> None:
        self.stamp += dt.timedelta(minutes=1)
        self.shop.consent(cid, channel, on, at=self.stamp)
        self.consent[(cid, channel)] = on

    @rule(
        cid=st.sampled_from(sorted(CUSTOMERS)),
        channel=st.sampled_from(("email", "sms")),
        scope=st.sampled_from(("all", "marketing", "promo_lo", "relationship")),
    )
    def suppress(self, cid: str, channel: str, scope: str) -> None:
        address = CUSTOMERS[cid][ADDRESS[channel]]
        if address:
            suppressions.add(self.rt.state, channel, address, "unsubscribed", scope=scope)
            self.suppressed.add((cid, channel, scope))

    @rule(cid=st.sampled_from(sorted(CUSTOMERS)), channel=st.sampled_from(("email", "sms")))
    def unsuppress(self, cid: str, channel: str) -> None:
        address = CUSTOMERS[cid][ADDRESS[channel]]
        if address:
            suppressions.remove(self.rt.state, channel, address)
            self.suppressed -= {s for s in self.suppressed if s[:2] == (cid, channel)}

    @rule(cid=st.sampled_from(sorted(CUSTOMERS)))
    def order(self, cid: str) -> None:
        self.shop.order(cid, self.now)

    @rule(hours=st.sampled_from((1, 5, 11, 24, 49)))
    def advance(self, hours: int) -> None:
        self.now += dt.timedelta(hours=hours)

    @rule(campaign=st.sampled_from(CAMPAIGNS), dry_run=st.booleans())
    def run_campaign(self, campaign: str, dry_run: bool) -> None:
        opts = RunOptions(self.now.date(), f"r-{uuid.uuid4().hex[:8]}", dry_run=dry_run, now=self.now)
        run(self.rt, campaign, opts)
        for msg in outbox(self.settings.outbox_dir):
            if msg["idempotency_key"] in self.seen:
                continue
            self.seen.add(msg["idempotency_key"])
            cid, channel = msg["customer_id"], msg["channel"]
            assert not dry_run, "a dry run sent a message"
            assert msg["campaign"] == campaign
            assert self.consent.get((cid, channel)), f"{cid} not opted in to {channel}"
            hit = {s for s in SCOPES[campaign] if (cid, channel, s) in self.suppressed}
            assert not hit, f"{cid} {channel} suppressed for {hit}"
            send_at = dt.datetime.fromisoformat(msg["send_at"].rstrip("Z"))
            assert send_at >= self.now.replace(microsecond=0)
            if channel == "sms":
                assert 9 <= self._local(cid, send_at).hour < 20, f"sms at {send_at} for {cid}"

    @rule(order=st.permutations(CAMPAIGNS), hours=st.sampled_from((0, 3, 13, 24)))
    def run_all(self, order: list[str], hours: int) -> None:
        """Every campaign, in a random order (the DAGs are independent), then maybe later the same day."""
        for campaign in order:
            self.run_campaign(campaign, False)
        self.now += dt.timedelta(hours=hours)

    def _local(self, cid: str, when: dt.datetime) -> dt.datetime:
        return when.replace(tzinfo=dt.UTC).astimezone(ZoneInfo(CUSTOMERS[cid][2] or "UTC"))

    @invariant()
    def one_per_key_and_within_caps(self) -> None:
        messages = outbox(self.settings.outbox_dir)
        keys = Counter(m["idempotency_key"] for m in messages)
        assert max(keys.values(), default=0) <= 1, "a key was sent twice"
        days: dict[str, list[dt.date]] = defaultdict(list)
        for m in messages:
            if m["campaign"] != "thank_you":
                send_at = dt.datetime.fromisoformat(m["send_at"].rstrip("Z"))
                days[m["customer_id"]].append(self._local(m["customer_id"], send_at).date())
        for cid, sent in days.items():
            assert max(Counter(sent).values()) <= 1, f"{cid}: over 1 marketing message a day: {sorted(sent)}"
            for start in sent:
                window = [d for d in sent if start <= d < start + dt.timedelta(days=7)]
                assert len(window) <= 2, f"{cid}: over 2 marketing messages in 7 days: {sorted(sent)}"


Compliance.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestCompliance = Compliance.TestCase
