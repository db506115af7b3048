"""A warehouse factory for the shape matrix: the same customers in every engine, id type and state layout.

:func:`build` generates the contract tables (customers, orders, channel_preferences, events) and the
customers' answers once, as pandas DataFrames keyed by customer and order *numbers*; it is vectorised
numpy, deterministic for a seed, and sized by parameters (tests: 20,000 customers and 60,000 orders over
18 months; ``tools.bench_segments``: a million customers). :func:`warehouse` then loads those frames into
one :class:`Shape` (SQLite or PostgreSQL; BIGINT or text ids; loyalflow's state in the warehouse or in a
database of its own with the warehouse read-only; naive or ``timestamptz`` timestamps) and writes the
answers into loyalflow's state through :func:`loyalflow.decide.responses.record`, as loyalflow would.

Ids: customer number ``n`` is ``C{n:06d}`` in text shapes and ``5_000_000_000 + n`` in integer shapes
(beyond 32 bits on purpose); orders likewise ``O{n:07d}`` and ``7_000_000_000 + n``. Zero-padded text
ids sort like the numbers, so "ORDER BY customer_id" ties break the same way in every shape.
:meth:`Loaded.normalise` maps the customer id loyalflow recorded back to the text id.
"""

from __future__ import annotations

import datetime as dt
import io
import time
import unicodedata
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from faker import Faker

from loyalflow.decide.responses import record
from loyalflow.state import ensure_schema

AS_OF = dt.date(2026, 11, 20)
NOW = dt.datetime(2026, 11, 20, 15)  # the nominal send moment of the matrix runs (naive UTC)
PG_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"

CUSTOMER_BASE = 5_000_000_000  # integer shapes: customer number n has id CUSTOMER_BASE + n
ORDER_BASE = 7_000_000_000

PERSONAS = (
    "independent_business_traveller",
    "corporate_travel_manager",
    "event_planner",
    "vacationing_family",
    "wedding_couple",
)
PERSONA_SHARE = (0.28, 0.12, 0.10, 0.34, 0.16)
EVENT_TYPES = (
    "blog_view",
    "social_click",
    "ebook_download",
    "webinar_attend",
    "report_download",
    "case_study_view",
    "demo_request",
    "testimonial_view",
    "analyst_report_view",
    "product_detail_view",
)
EVENT_SHARE = (0.24, 0.14, 0.08, 0.06, 0.05, 0.08, 0.04, 0.09, 0.04, 0.18)
# locale, share, IANA time zones, E.164 pattern ("#" = a digit drawn per customer)
LOCALES: tuple[tuple[str, float, tuple[str, ...], str], ...] = (
    (
        "en_US",
        0.40,
        ("America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles"),
        "+1{area}55501##",
    ),
    ("en_GB", 0.22, ("Europe/London",), "+44740#######"),
    ("de_DE", 0.15, ("Europe/Berlin",), "+49151########"),
    ("fr_FR", 0.13, ("Europe/Paris",), "+3361#######"),
    ("es_ES", 0.10, ("Europe/Madrid",), "+3461#######"),
)
US_AREAS = (212, 312, 415, 617, 303, 206, 512, 213, 646, 720)
PRODUCTS: tuple[tuple[str, float, float], ...] = (  # name, lowest and highest price
    ("Executive King Room", 165, 295),
    ("Harbor View Double, 1 night", 129, 239),
    ("Harbor Suite, 2 nights", 540, 920),
    ("City Break, 3 nights", 460, 820),
    ("Weekend Escape package", 340, 640),
    ("Spa Day for Two", 180, 320),
    ("Boardroom Hire, full day", 450, 1250),
    ("Conference Day Delegate package", 1800, 9500),
    ("Gala Dinner Venue Hire", 4800, 16000),
    ("Family Summer Stay", 1150, 2600),
    ("Family Suite, 3 nights", 690, 1380),
    ("Wedding Reception Venue Hire", 8500, 28000),
    ("Honeymoon Suite, 3 nights", 980, 1850),
    ("Bridal Party Room Block", 1400, 3900),
)
PRODUCT_SHARE = (0.16, 0.16, 0.09, 0.08, 0.1, 0.07, 0.04, 0.03, 0.01, 0.08, 0.08, 0.02, 0.04, 0.04)
STATUSES = ("completed", "returned", "cancelled")
STATUS_SHARE = (0.85, 0.08, 0.07)
CONSENT_SOURCES = ("signup_form", "checkout", "preference_centre", "import")
ANSWERS = ("positive", "negative", "later")
ANSWER_CAMPAIGNS = ("referral_ask", "dormant_reactivation", "remorse_reduction", None)

DAY = 86_400
IdKind = Literal["integer", "text"]


@dataclass(frozen=True)
class Shape:
    """One way a customer's warehouse can look to loyalflow."""

    engine: Literal["sqlite", "postgresql"]
    ids: IdKind
    state: Literal["warehouse", "apart"]  # apart: a state database of its own, the warehouse read-only
    timestamps: Literal["naive", "timestamptz"] = "naive"

    @property
    def name(self) -> str:
        """``sqlite-text-warehouse``, ``postgresql-integer-apart-timestamptz`` ..."""
        tail = "-timestamptz" if self.timestamps == "timestamptz" else ""
        return f"{self.engine}-{self.ids}-{self.state}{tail}"

    @property
    def read_only(self) -> bool:
        """With the state apart, loyalflow reads the warehouse through a read-only connection."""
        return self.state == "apart"


SHAPES: tuple[Shape, ...] = (
    *(
        Shape(engine, ids, state)
        for engine in ("sqlite", "postgresql")
        for ids in ("text", "integer")
        for state in ("warehouse", "apart")
    ),
    Shape("postgresql", "integer", "apart", "timestamptz"),
)
REFERENCE = Shape("sqlite", "text", "warehouse")


@dataclass(frozen=True)
class Frames:
    """The generated warehouse, keyed by customer number (``customer``) and order number (``order``)."""

    customers: pd.DataFrame  # customer, email, phone, first_name, last_name, locale, timezone, persona,
    #                          created_at
    orders: pd.DataFrame  # order, customer, ordered_at, total, status, product, referrer (0 = none)
    channel_preferences: pd.DataFrame  # customer, channel, opted_in, source, consented_at
    events: pd.DataFrame  # customer, event_type, occurred_at, content_id
    answers: pd.DataFrame  # customer, answer, at, source, campaign, channel
    as_of: dt.date

    @property
    def width(self) -> int:
        """Digits of a text customer id (6, or more for a bigger warehouse)."""
        return max(6, len(str(len(self.customers))))

    def text_id(self, number: int) -> str:
        """The text id of customer ``number``."""
        return f"C{number:0{self.width}d}"

    def customer_id(self, number: int, ids: IdKind) -> str:
        """Customer ``number``'s id as loyalflow writes it in its state (always a string)."""
        return str(CUSTOMER_BASE + number) if ids == "integer" else self.text_id(number)

    def tables(self, ids: IdKind) -> dict[str, pd.DataFrame]:
        """The four contract tables with ``ids`` and naive UTC ``datetime64`` timestamps."""
        cust = self.customers.rename(columns={"customer": "customer_id"})
        cust["customer_id"] = self._ids(cust["customer_id"], ids, "C", CUSTOMER_BASE, self.width)
        orders = self.orders.rename(
            columns={"order": "order_id", "customer": "customer_id", "referrer": "referred_by"}
        )
        orders["order_id"] = self._ids(orders["order_id"], ids, "O", ORDER_BASE, self.width + 1)
        orders["customer_id"] = self._ids(orders["customer_id"], ids, "C", CUSTOMER_BASE, self.width)
        referred = orders["referred_by"].where(orders["referred_by"] > 0)
        orders["referred_by"] = self._ids(referred, ids, "C", CUSTOMER_BASE, self.width)
        orders = orders[
            ["order_id", "customer_id", "ordered_at", "total", "status", "product", "referred_by"]
        ]
        prefs = self.channel_preferences.rename(columns={"customer": "customer_id"})
        prefs["customer_id"] = self._ids(prefs["customer_id"], ids, "C", CUSTOMER_BASE, self.width)
        events = self.events.rename(columns={"customer": "customer_id"})
        events["customer_id"] = self._ids(events["customer_id"], ids, "C", CUSTOMER_BASE, self.width)
        return {"customers": cust, "orders": orders, "channel_preferences": prefs, "events": events}

    @staticmethod
    def _ids(numbers: pd.Series, ids: IdKind, prefix: str, base: int, width: int) -> pd.Series:
        """Numbers as BIGINT ids (nullable ``Int64``) or zero-padded text ids (``None`` for missing)."""
        if ids == "integer":
            return (numbers + base).astype("Int64")
        present = numbers.notna()
        text = pd.Series(None, index=numbers.index, dtype=object)
        text[present] = prefix + numbers[present].astype("int64").astype(str).str.zfill(width)
        return text


# --------------------------------------------------------------------------- generation


def build(
    customers: int = 20_000,
    orders: int = 60_000,
    *,
    seed: int = 20261120,
    as_of: dt.date = AS_OF,
    months: int = 18,
    events_per_customer: float = 1.5,
    answer_share: float = 0.06,
) -> Frames:
    """Generate a warehouse of ``customers`` and exactly ``orders`` orders over ``months`` before ``as_of``.

    Deterministic for the arguments. Orders carry returns and cancellations, referrals (``referrer``: an
    earlier customer) and same-day repeat orders (some on the as-of day and the day before); consent has
    one row per customer and channel (email, sms, some push), opted in or out; events feed the nurture
    campaign; answers are positive / negative / later responses received before ``as_of``.
    """
    if customers < 10 or orders < customers:
        raise ValueError("need at least 10 customers and as many orders as customers")
    rng = np.random.default_rng(seed)
    t0 = _epoch(as_of)  # as_of midnight, epoch seconds (naive UTC)
    start = t0 - round(months * 30.44) * DAY
    cust = _customers(rng, customers, seed, t0, start)
    created = cust["created_at"].to_numpy().astype("datetime64[s]").astype("int64")
    order_frame = _orders(rng, created, orders, t0, start)
    prefs = _preferences(rng, created, t0)
    events = _events(rng, created, round(events_per_customer * customers), t0, start)
    answers = _answers(rng, created, order_frame, answer_share, t0)
    return Frames(cust, order_frame, prefs, events, answers, as_of)


def _epoch(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days * DAY


def _times(seconds: np.ndarray) -> np.ndarray:
    return np.asarray(seconds, dtype="int64").astype("datetime64[s]").astype("datetime64[ns]")


def _slug(text: str) -> str:
    table = str.maketrans({"ß": "ss", "ø": "o", "æ": "ae", "ł": "l", "đ": "d"})
    plain = unicodedata.normalize("NFKD", text.lower().translate(table)).encode("ascii", "ignore").decode()
    return "".join(c for c in plain if c.isalnum()) or "guest"


def _labels(values: Sequence[str], codes: np.ndarray) -> pd.Series:
    """``values[codes]`` as a string Series (an Arrow take: no Python object per row)."""
    return pd.Series(pd.array(list(values), dtype="str").take(np.asarray(codes, dtype="int64")))


def _digits(rng: np.random.Generator, k: int, width: int) -> pd.Series:
    """``k`` random strings of ``width`` decimal digits."""
    return pd.Series(rng.integers(0, 10**width, k)).astype(str).str.zfill(width)


def _customers(rng: np.random.Generator, n: int, seed: int, t0: int, start: int) -> pd.DataFrame:
    number = np.arange(1, n + 1)
    # customers are numbered in sign-up order: the earliest ones predate the order window
    created = np.sort(rng.integers(start - 120 * DAY, t0 - DAY, n))
    persona = rng.choice(len(PERSONAS), size=n, p=PERSONA_SHARE)
    loc = rng.choice(len(LOCALES), size=n, p=[x[1] for x in LOCALES])
    pool = 400  # names per locale, drawn once from a seeded Faker
    firsts: list[str] = []
    lasts: list[str] = []
    zones: list[str] = []
    zone_start, zone_count = np.zeros(len(LOCALES), dtype="int64"), np.zeros(len(LOCALES), dtype="int64")
    for li, (locale, _, tzs, _) in enumerate(LOCALES):
        fake = Faker(locale)
        fake.seed_instance(seed + li)
        firsts += [fake.first_name() for _ in range(pool)]
        lasts += [fake.last_name() for _ in range(pool)]
        zone_start[li], zone_count[li] = len(zones), len(tzs)
        zones += tzs
    first_i = loc * pool + rng.integers(0, pool, n)
    last_i = loc * pool + rng.integers(0, pool, n)
    tz_i = zone_start[loc] + (rng.random(n) * zone_count[loc]).astype("int64")
    phone = pd.Series(pd.array([None] * n, dtype="str"))
    for li, (_, _, _, pattern) in enumerate(LOCALES):
        rows = np.flatnonzero(loc == li)
        head, _, tail = pattern.partition("#")
        digits = _digits(rng, len(rows), tail.count("#") + 1)
        if "{area}" in head:
            area = _labels([str(a) for a in US_AREAS], rng.integers(0, len(US_AREAS), len(rows)))
            before, _, after = head.partition("{area}")
            numbers = before + area + after + digits
        else:
            numbers = head + digits
        phone.iloc[rows] = numbers.to_numpy()
    phone[rng.random(n) < 0.08] = None  # some customers never gave a number
    first, last = _labels(firsts, first_i), _labels(lasts, last_i)
    local = (
        _labels([_slug(x) for x in firsts], first_i)
        + "."
        + _labels([_slug(x) for x in lasts], last_i)
        + "."
        + pd.Series(number).astype(str)
    )
    domain = _labels(("example.com", "example.org", "example.net"), rng.integers(0, 3, n))
    return pd.DataFrame(
        {
            "customer": number,
            "email": local + "@" + domain,
            "phone": phone,
            "first_name": first,
            "last_name": last,
            "locale": _labels([x[0] for x in LOCALES], loc),
            "timezone": _labels(zones, tz_i),
            "persona": _labels(PERSONAS, persona),
            "created_at": _times(created),
        }
    )


def _orders(rng: np.random.Generator, created: np.ndarray, total: int, t0: int, start: int) -> pd.DataFrame:
    n = len(created)
    end = t0 + DAY  # orders up to the end of the as-of day
    repeats = max(1, total // 50)  # same-day second orders, 2% of all orders
    base = total - repeats
    # order times spread evenly over the window; each order goes to a customer who had signed up by
    # then, weighted by appetite (12% of customers never order)
    at = np.sort(rng.integers(start, end, base))
    appetite = np.where(rng.random(n) < 0.88, rng.lognormal(0.0, 0.8, n), 0.0)
    cum = np.cumsum(appetite)
    signed_up = np.searchsorted(created, at, side="right")  # customers 0 .. signed_up-1 exist
    ok = signed_up > 0
    at = at[ok]
    cust = np.searchsorted(cum, rng.random(len(at)) * cum[signed_up[ok] - 1], side="right")
    cust = np.minimum(cust, signed_up[ok] - 1)
    base = len(at)
    repeats = total - base
    # same-day repeats: some on the as-of day and the day before (thank-you counts them once), the
    # rest anywhere; each a second order of the same customer on the same day
    recent = np.flatnonzero(at >= t0 - DAY)
    forced = rng.choice(recent, size=min(len(recent), repeats // 10, 40), replace=False)
    others = rng.choice(base, size=repeats - len(forced), replace=True)
    src = np.concatenate([forced, others])
    rep_at = (at[src] // DAY) * DAY + rng.integers(0, DAY, len(src))
    rep_at = np.maximum(rep_at, created[cust[src]])  # not before the customer signed up
    cust = np.concatenate([cust, cust[src]])
    at = np.concatenate([at, rep_at])
    order = np.argsort(at * n + cust)  # order numbers follow time (then customer), like an identity column
    cust, at = cust[order], at[order]
    status = rng.choice(len(STATUSES), size=total, p=STATUS_SHARE)
    product = rng.choice(len(PRODUCTS), size=total, p=PRODUCT_SHARE)
    low = np.array([p[1] for p in PRODUCTS])[product]
    high = np.array([p[2] for p in PRODUCTS])[product]
    # whole half-units: sums are exact in binary floating point, so value ranks tie the same everywhere
    price = np.round((low + (high - low) * rng.beta(2.0, 2.5, total)) * 2) / 2
    referrer = _referrers(rng, created, cust, at)
    return pd.DataFrame(
        {
            "order": np.arange(1, total + 1),
            "customer": cust + 1,
            "ordered_at": _times(at),
            "total": price,
            "status": _labels(STATUSES, status),
            "product": _labels([p[0] for p in PRODUCTS], product),
            "referrer": referrer,
        }
    )


def _referrers(rng: np.random.Generator, created: np.ndarray, cust: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Customer number of the referrer (0 = none) for ~6% of orders: someone who signed up earlier."""
    referrer = np.zeros(len(at), dtype="int64")
    chosen = np.flatnonzero(rng.random(len(at)) < 0.06)
    earlier = np.searchsorted(created, at[chosen], side="left")  # customers signed up before the order
    pick = (rng.random(len(chosen)) * earlier).astype("int64")
    pick = np.where(pick == cust[chosen], pick + 1, pick)  # never oneself
    ok = (earlier > 1) & (pick < earlier)
    referrer[chosen[ok]] = pick[ok] + 1
    return referrer


def _preferences(rng: np.random.Generator, created: np.ndarray, t0: int) -> pd.DataFrame:
    """One row per customer and channel: email for most, sms for many, push for some; in or out."""
    n = len(created)
    parts = []
    for channel, share, opt_in in (("email", 0.93, 0.82), ("sms", 0.62, 0.70), ("push", 0.25, 0.60)):
        rows = np.flatnonzero(rng.random(n) < share)
        k = len(rows)
        span = np.maximum(t0 - DAY - created[rows], 1)
        at = created[rows] + (rng.random(k) ** 3 * span).astype("int64")  # mostly soon after sign-up
        late = rng.random(k) < 0.01  # recorded later on the as-of day: not yet valid at 15:00 UTC
        at = np.where(late, t0 + 16 * 3600 + rng.integers(0, 7 * 3600, k), at)
        parts.append(
            pd.DataFrame(
                {
                    "customer": rows + 1,
                    "channel": channel,
                    "opted_in": rng.random(k) < opt_in,
                    "source": np.array(CONSENT_SOURCES, dtype=object)[
                        rng.integers(0, len(CONSENT_SOURCES), k)
                    ],
                    "consented_at": _times(at),
                }
            )
        )
    return pd.concat(parts, ignore_index=True).sort_values(["customer", "channel"], ignore_index=True)


def _events(rng: np.random.Generator, created: np.ndarray, k: int, t0: int, start: int) -> pd.DataFrame:
    """Behavioural events over the window, some in the last 30 days (the nurture audience)."""
    n = len(created)
    engaged = np.flatnonzero(rng.random(n) < 0.35)
    cust = engaged[rng.integers(0, len(engaged), k)]
    lo = np.maximum(created[cust], start)
    recent = rng.random(k) < 0.06
    lo = np.where(recent, np.maximum(lo, t0 - 29 * DAY), lo)
    at = lo + (rng.random(k) * (t0 + DAY - lo)).astype("int64")
    kind = rng.choice(len(EVENT_TYPES), size=k, p=EVENT_SHARE)
    content_number = rng.integers(1, 9, k)
    no_content = rng.random(k) < 0.1
    order = np.lexsort((kind, cust, at))
    kind, content_number, no_content = kind[order], content_number[order], no_content[order]
    slugs = [t.replace("_", "-") + "-" for t in EVENT_TYPES]
    content = _labels(slugs, kind) + pd.Series(content_number).astype(str)
    content[no_content] = None
    return pd.DataFrame(
        {
            "customer": cust[order] + 1,
            "event_type": _labels(EVENT_TYPES, kind),
            "occurred_at": _times(at[order]),
            "content_id": content,
        }
    )


def _answers(
    rng: np.random.Generator, created: np.ndarray, orders: pd.DataFrame, share: float, t0: int
) -> pd.DataFrame:
    """Responses received before as_of: a random share of customers, plus guests the referral ask and the
    win-back are about to meet (a positive answer makes a non-VIP due; a negative or later one exits)."""
    n = len(created)
    at_s = orders["ordered_at"].to_numpy().astype("datetime64[s]").astype("int64")
    completed = (orders["status"] == "completed").to_numpy()
    cust = orders["customer"].to_numpy() - 1
    referral = np.unique(cust[completed & (at_s >= t0 - 24 * DAY) & (at_s < t0 - 20 * DAY)])
    last = pd.Series(at_s[completed]).groupby(cust[completed]).max()
    dormant = last.index[(last >= t0 - 215 * DAY) & (last < t0 - 178 * DAY)].to_numpy()
    picks = [
        (rng.permutation(n)[: round(share * n)], None),
        (rng.permutation(referral)[: len(referral) // 4], "positive"),
        (rng.permutation(referral)[: len(referral) // 12], "negative"),
        (rng.permutation(dormant)[: len(dormant) // 10], "negative"),
        (rng.permutation(dormant)[: len(dormant) // 10], "later"),
    ]
    who = np.concatenate([p for p, _ in picks])
    forced = np.concatenate([np.full(len(p), a or "", dtype=object) for p, a in picks])
    k = len(who)
    random_answer = np.array(ANSWERS, dtype=object)[rng.choice(3, size=k, p=[0.5, 0.3, 0.2])]
    answer = np.where(forced == "", random_answer, forced)
    lo = np.maximum(created[who], t0 - 200 * DAY)
    at = lo + (rng.random(k) * (t0 - 3600 - lo)).astype("int64")
    channel = np.array(["email", "sms", None], dtype=object)[rng.choice(3, size=k, p=[0.6, 0.3, 0.1])]
    source = np.where(channel == "email", "link", np.where(channel == "sms", "sms", "import"))
    campaign = np.array(ANSWER_CAMPAIGNS, dtype=object)[rng.integers(0, len(ANSWER_CAMPAIGNS), k)]
    frame = pd.DataFrame(
        {
            "customer": who + 1,
            "answer": answer,
            "at": _times(at),
            "source": source.astype(object),
            "campaign": campaign,
            "channel": channel,
        }
    )
    return frame.sort_values(["at", "customer"], ignore_index=True)


# --------------------------------------------------------------------------- loading


def metadata(engine: Literal["sqlite", "postgresql"], ids: IdKind, timestamptz: bool = False) -> sa.MetaData:
    """The contract tables: BIGINT or TEXT ids, timestamps with or without time zone.

    PostgreSQL gets a primary key on channel_preferences(customer_id, channel); SQLite has none.
    """
    meta = sa.MetaData()
    key: Any = sa.BigInteger if ids == "integer" else sa.Text
    stamp = sa.DateTime(timezone=timestamptz)
    pg = engine == "postgresql"
    sa.Table(
        "customers",
        meta,
        sa.Column("customer_id", key, primary_key=True),
        *(sa.Column(c, sa.Text) for c in ("email", "phone", "first_name", "last_name", "locale", "timezone")),
        sa.Column("persona", sa.Text),
        sa.Column("created_at", stamp),
    )
    sa.Table(
        "orders",
        meta,
        sa.Column("order_id", key, primary_key=True),
        sa.Column("customer_id", key, nullable=False),
        sa.Column("ordered_at", stamp, nullable=False),
        sa.Column("total", sa.Numeric(12, 2)),
        sa.Column("status", sa.Text, nullable=False),
        sa.Column("product", sa.Text),
        sa.Column("referred_by", key),
    )
    sa.Table(
        "channel_preferences",
        meta,
        sa.Column("customer_id", key, primary_key=pg, nullable=False),
        sa.Column("channel", sa.Text, primary_key=pg, nullable=False),
        sa.Column("opted_in", sa.Boolean, nullable=False),
        sa.Column("source", sa.Text),
        sa.Column("consented_at", stamp),
    )
    sa.Table(
        "events",
        meta,
        sa.Column("customer_id", key, nullable=False),
        sa.Column("event_type", sa.Text, nullable=False),
        sa.Column("occurred_at", stamp, nullable=False),
        sa.Column("content_id", sa.Text),
    )
    return meta


def iso_text(frame: pd.DataFrame, suffix: str = "") -> pd.DataFrame:
    """A copy with every datetime column as ISO text ``YYYY-MM-DD HH:MM:SS`` (plus ``suffix``)."""
    out = frame.copy()
    for name in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[name]):
            values = out[name].to_numpy().astype("datetime64[s]")
            text = pd.Series(pa.array(_iso_bytes(values)).cast(pa.string()), index=out.index) + suffix
            out[name] = text.where(out[name].notna(), None)
    return out


def _iso_bytes(values: np.ndarray) -> np.ndarray:
    """``datetime64[s]`` as ``S19`` byte strings ``YYYY-MM-DD HH:MM:SS``, digit by digit (years 1000-9999;
    NaT comes out as garbage for the caller to mask)."""
    valid = ~np.isnat(values)
    seconds = np.where(valid, values.astype("int64"), 0)
    days, clock = np.divmod(seconds, DAY)
    day = np.datetime64("1970-01-01", "D") + days.astype("timedelta64[D]")
    year = day.astype("datetime64[Y]").astype("int64") + 1970
    month = day.astype("datetime64[M]").astype("int64") % 12 + 1
    dom = (day - day.astype("datetime64[M]")).astype("int64") + 1
    parts = (
        (year, 4), (b"-", 0), (month, 2), (b"-", 0), (dom, 2), (b" ", 0),
        (clock // 3600, 2), (b":", 0), (clock // 60 % 60, 2), (b":", 0), (clock % 60, 2),
    )  # fmt: skip
    out = np.empty((len(values), 19), dtype=np.uint8)
    col = 0
    for part, width in parts:
        if isinstance(part, bytes):
            out[:, col] = part[0]
            col += 1
            continue
        for i in range(width):
            out[:, col + i] = ord("0") + part // 10 ** (width - 1 - i) % 10
        col += width
    return out.view("S19").ravel()


def load_sqlite(engine: sa.Engine, tables: dict[str, pd.DataFrame], ids: IdKind) -> None:
    """Create the contract tables and append the frames (ISO text timestamps, executemany in chunks)."""
    metadata("sqlite", ids).create_all(engine)
    with engine.begin() as conn:
        for name, frame in tables.items():
            iso_text(frame).to_sql(name, conn, if_exists="append", index=False, chunksize=50_000)


def load_postgres(engine: sa.Engine, tables: dict[str, pd.DataFrame], ids: IdKind, timestamptz: bool) -> None:
    """Create the contract tables and COPY the frames in (psycopg2 ``copy_expert``, CSV)."""
    metadata("postgresql", ids, timestamptz).create_all(engine)
    raw = engine.raw_connection()
    try:
        cur: Any = raw.cursor()
        for name, frame in tables.items():
            buf = io.StringIO()
            iso_text(frame, "+00" if timestamptz else "").to_csv(buf, index=False, header=False)
            buf.seek(0)
            cur.copy_expert(f"COPY {name} ({', '.join(frame.columns)}) FROM STDIN WITH (FORMAT csv)", buf)
        for name in tables:
            cur.execute(f"ANALYZE {name}")
        cur.close()
        raw.commit()
    finally:
        raw.close()


def sqlite_engine(path: Path) -> sa.Engine:
    """A writable SQLite engine for loading (no fsync per commit: the data is rebuilt anyway)."""
    engine = sa.create_engine(f"sqlite:///{path}")

    @sa.event.listens_for(engine, "connect")
    def _fast(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.execute("PRAGMA synchronous = OFF")

    return engine


def write_answers(state: sa.Engine, frames: Frames, ids: IdKind) -> int:
    """Record every answer in loyalflow's state (``loyalflow_responses``), one ``record()`` call each."""
    ensure_schema(state)
    written = 0
    rows = frames.answers.astype(object).to_dict("records")
    for row in rows:
        written += record(
            state,
            frames.customer_id(int(row["customer"]), ids),
            str(row["answer"]),
            at=pd.Timestamp(row["at"]).to_pydatetime(),
            source=str(row["source"]),
            campaign=_text(row["campaign"]),
            channel=_text(row["channel"]),
            snooze_days=30,
        )
    return written


def _text(value: Any) -> str | None:
    return None if value is None or pd.isna(value) else str(value)


@dataclass(frozen=True)
class Loaded:
    """A loaded shape: the URLs loyalflow gets, and how to read its ids back."""

    shape: Shape
    frames: Frames
    warehouse_url: str  # what loyalflow reads (read-only when the state is apart)
    state_url: str | None  # None: loyalflow's state lives in the warehouse
    seconds: float  # time to load the warehouse and the answers

    @property
    def state_engine_url(self) -> str:
        """Where loyalflow's tables are (the warehouse's writable URL when they share it)."""
        return self.state_url or self.warehouse_url

    def native_id(self, text_id: str) -> str:
        """The id loyalflow writes for the customer whose text id is ``text_id``."""
        return self.frames.customer_id(int(text_id[1:]), self.shape.ids)

    def normalise(self, customer_id: str) -> str:
        """The text id of the customer loyalflow recorded as ``customer_id``."""
        if self.shape.ids == "integer":
            return self.frames.text_id(int(customer_id) - CUSTOMER_BASE)
        return customer_id


@contextmanager
def warehouse(
    shape: Shape, frames: Frames, workdir: Path, pg_admin_url: str = PG_ADMIN_URL
) -> Iterator[Loaded]:
    """Load ``frames`` as ``shape`` (answers into loyalflow's state), yield it, then drop what was made.

    SQLite: files under ``workdir``; read-only = ``sqlite:///file:PATH?mode=ro&uri=true``.
    PostgreSQL: a fresh schema per shape (and one for the state when apart); read-only = a role that may
    only SELECT, reaching its schema through ``options=-csearch_path``. Raises
    :class:`sqlalchemy.exc.OperationalError` when PostgreSQL cannot be reached.
    """
    started = time.perf_counter()
    tables = frames.tables(shape.ids)
    if shape.engine == "sqlite":
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / f"{shape.name}.db"
        owner = sqlite_engine(path)
        load_sqlite(owner, tables, shape.ids)
        if shape.state == "apart":
            state_path = workdir / f"{shape.name}-state.db"
            state = sqlite_engine(state_path)
            write_answers(state, frames, shape.ids)
            state.dispose()
            loaded = Loaded(
                shape,
                frames,
                f"sqlite:///file:{path}?mode=ro&uri=true",
                f"sqlite:///{state_path}",
                time.perf_counter() - started,
            )
        else:
            write_answers(owner, frames, shape.ids)
            loaded = Loaded(shape, frames, f"sqlite:///{path}", None, time.perf_counter() - started)
        owner.dispose()
        yield loaded
        return

    tag = uuid.uuid4().hex[:10]
    schema, state_schema, role = f"lf_shape_{tag}", f"lf_state_{tag}", f"lf_ro_{tag}"
    admin = sa.create_engine(pg_admin_url)
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    except sa.exc.OperationalError:
        admin.dispose()
        raise
    made: list[str] = [schema]
    try:
        owner_url = f"{pg_admin_url}?options=-csearch_path%3D{schema}"
        owner = sa.create_engine(owner_url)
        load_postgres(owner, tables, shape.ids, shape.timestamps == "timestamptz")
        if shape.state == "apart":
            with admin.begin() as conn:
                conn.execute(sa.text(f"CREATE SCHEMA {state_schema}"))
                made.append(state_schema)
                conn.execute(sa.text(f"CREATE ROLE {role} LOGIN"))
                conn.execute(sa.text(f"GRANT USAGE ON SCHEMA {schema} TO {role}"))
                conn.execute(sa.text(f"GRANT SELECT ON ALL TABLES IN SCHEMA {schema} TO {role}"))
            url = sa.engine.make_url(pg_admin_url).set(username=role)
            warehouse_url = f"{url.render_as_string(hide_password=False)}?options=-csearch_path%3D{schema}"
            state_url = f"{pg_admin_url}?options=-csearch_path%3D{state_schema}"
            state = sa.create_engine(state_url)
            write_answers(state, frames, shape.ids)
            state.dispose()
            loaded = Loaded(shape, frames, warehouse_url, state_url, time.perf_counter() - started)
        else:
            write_answers(owner, frames, shape.ids)
            loaded = Loaded(shape, frames, owner_url, None, time.perf_counter() - started)
        owner.dispose()
        yield loaded
    finally:
        with admin.begin() as conn:
            for name in made:
                conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {name} CASCADE"))
            exists = conn.execute(sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first()
            if exists:
                conn.execute(sa.text(f"DROP OWNED BY {role}"))
                conn.execute(sa.text(f"DROP ROLE {role}"))
        admin.dispose()
