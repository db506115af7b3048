"""Deterministic demo warehouse for "Harbor & Pine Hotels", a boutique hotel group.

``seed()`` creates the contract tables (customers, orders, channel_preferences, events) with
SQLAlchemy Core and fills them with believable, deliberately messy data. All randomness comes
from one seeded ``numpy.random.Generator`` plus locale-specific, seeded Faker instances, so the
same ``seed``/``as_of``/``customers``/``years`` always yields identical tables.

Timestamps are naive UTC. ``as_of`` is the business date of the run: orders and events may occur
up to the end of that day; customers are created and consents given strictly before it.
"""

from __future__ import annotations

import io
import unicodedata
from collections.abc import Sequence
from datetime import date
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from faker import Faker

from loyalflow.state.bulk import copy_csv

PERSONAS: tuple[str, ...] = (
    "independent_business_traveller",
    "corporate_travel_manager",
    "event_planner",
    "vacationing_family",
    "wedding_couple",
)
LOCALES: tuple[str, ...] = ("en_US", "en_GB", "de_DE", "fr_FR")
EMAIL_DOMAINS: tuple[str, ...] = ("example.com", "example.org", "example.net")
ORDER_STATUSES: tuple[str, ...] = ("completed", "returned", "cancelled")
CHANNELS: tuple[str, ...] = ("email", "sms", "push")
CONSENT_SOURCES: tuple[str, ...] = ("checkout", "signup_form", "preference_centre", "import")
EVENT_TYPES: tuple[str, ...] = (
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
    "email_open",
    "email_click",
)
#: Funnel stage implied by each engagement event (email events carry no stage).
EVENT_STAGES: dict[str, str] = {
    "blog_view": "awareness",
    "social_click": "awareness",
    "ebook_download": "research",
    "webinar_attend": "research",
    "report_download": "research",
    "case_study_view": "comparison",
    "demo_request": "comparison",
    "testimonial_view": "comparison",
    "analyst_report_view": "purchase",
    "product_detail_view": "purchase",
}
#: (product, min price, max price, priced per room so party size multiplies it)
PRODUCTS: tuple[tuple[str, float, float, bool], ...] = (
    ("Executive King Room", 165.0, 295.0, True),
    ("Harbor View Double, 1 night", 129.0, 239.0, True),
    ("Harbor Suite, 2 nights", 540.0, 920.0, False),
    ("City Break, 3 nights", 460.0, 820.0, False),
    ("Weekend Escape package", 340.0, 640.0, False),
    ("Spa Day for Two", 180.0, 320.0, False),
    ("Boardroom Hire, full day", 450.0, 1250.0, False),
    ("Conference Day Delegate package", 1800.0, 9500.0, False),
    ("Corporate Block Booking, 10 rooms", 1900.0, 4200.0, False),
    ("Gala Dinner Venue Hire", 4800.0, 16000.0, False),
    ("Family Summer Stay", 1150.0, 2600.0, False),
    ("Family Suite, 3 nights", 690.0, 1380.0, False),
    ("Wedding Reception Venue Hire", 8500.0, 28000.0, False),
    ("Honeymoon Suite, 3 nights", 980.0, 1850.0, False),
    ("Bridal Party Room Block", 1400.0, 3900.0, False),
    ("Anniversary Spa Weekend", 420.0, 780.0, False),
)

DAY = 86_400
_YEAR = 365.25 * DAY
MIN_DAILY_COMPLETED = 12  # completed orders guaranteed on each of the last 90 days
DORMANT_SHARE = 0.30  # of ordering customers: no order in the last 180 days
_INSERT_CHUNK = 5_000
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()

# Per persona: population share, orders/year, party-size Poisson mean, push-app share,
# events per 120 days, product mix weights (aligned with PRODUCTS) and event mix (EVENT_TYPES).
_PERSONA_SHARE = np.array([0.30, 0.12, 0.10, 0.33, 0.15])
_ORDER_RATE = np.array([5.5, 7.5, 3.5, 1.5, 1.0])
_PARTY_EXTRA = np.array([0.1, 2.5, 1.5, 0.6, 1.0])
_PUSH_SHARE = np.array([0.45, 0.25, 0.15, 0.35, 0.20])
_EVENT_RATE = np.array([15.0, 19.0, 21.0, 11.0, 14.0])
_PRODUCT_MIX = np.array(
    [
        [35, 25, 8, 10, 10, 5, 3, 0, 0, 0, 0, 0, 0, 0, 0, 4],
        [25, 10, 2, 0, 0, 0, 15, 20, 25, 3, 0, 0, 0, 0, 0, 0],
        [5, 0, 0, 0, 0, 0, 20, 40, 10, 20, 0, 0, 0, 0, 5, 0],
        [0, 5, 0, 5, 20, 5, 0, 0, 0, 0, 35, 30, 0, 0, 0, 0],
        [0, 0, 0, 0, 10, 10, 0, 0, 0, 0, 0, 0, 30, 20, 15, 15],
    ],
    dtype=float,
)
_EVENT_MIX = np.array(
    [
        [20, 12, 3, 2, 2, 3, 1, 6, 2, 22, 20, 7],
        [10, 6, 8, 8, 9, 10, 5, 6, 8, 12, 13, 5],
        [10, 6, 9, 10, 7, 12, 8, 8, 6, 10, 10, 4],
        [22, 18, 4, 1, 1, 2, 1, 9, 1, 20, 16, 5],
        [18, 15, 8, 3, 2, 8, 7, 14, 1, 12, 9, 3],
    ],
    dtype=float,
)
_CONTENT: dict[str, tuple[str, ...]] = {
    "blog_view": (
        "blog-48-hours-in-harbor-town",
        "blog-best-coastal-walks",
        "blog-business-travel-packing-list",
        "blog-family-summer-checklist",
        "blog-questions-to-ask-a-wedding-venue",
        "blog-autumn-seasonal-menu",
        "blog-working-remotely-from-a-hotel",
        "blog-pine-lodge-spa-guide",
    ),
    "social_click": (
        "social-instagram-harbor-sunset",
        "social-linkedin-conference-season",
        "social-facebook-family-summer",
        "social-pinterest-wedding-tablescapes",
        "social-tiktok-suite-tour",
    ),
    "ebook_download": (
        "ebook-conference-planning-guide",
        "ebook-wedding-planner-workbook",
        "ebook-family-travel-handbook",
    ),
    "webinar_attend": (
        "webinar-hybrid-events-playbook",
        "webinar-live-venue-walkthrough",
        "webinar-corporate-travel-policy",
    ),
    "report_download": (
        "report-business-travel-trends",
        "report-meetings-industry-outlook",
        "report-sustainable-stays",
    ),
    "case_study_view": (
        "case-study-tech-offsite",
        "case-study-garden-wedding",
        "case-study-sales-kickoff",
    ),
    "demo_request": (
        "demo-site-visit-harbor",
        "demo-site-visit-pine-lodge",
        "demo-virtual-venue-tour",
    ),
    "testimonial_view": (
        "testimonial-okafor-wedding",
        "testimonial-family-summer-review",
        "testimonial-delegate-feedback",
    ),
    "analyst_report_view": (
        "analyst-boutique-hotels-ranking",
        "analyst-mice-venue-index",
    ),
    "product_detail_view": tuple(
        "product-" + "-".join("".join(c for c in w.lower() if c.isalnum()) for w in p[0].split())
        for p in PRODUCTS
    ),
    "email_open": (
        "email-welcome-series-1",
        "email-weekend-escape-offer",
        "email-loyalty-points-reminder",
        "email-winback-we-miss-you",
        "email-conference-season",
        "email-family-summer-early-bird",
    ),
}
_CONTENT["email_click"] = _CONTENT["email_open"]
_CONTENT_NULL_SHARE = {"social_click": 0.10, "demo_request": 0.40}

# (city, IANA timezone) per locale; cities are real so timezones are consistent.
_CITIES: dict[str, tuple[tuple[str, str], ...]] = {
    "en_US": (
        ("New York", "America/New_York"),
        ("Boston", "America/New_York"),
        ("Chicago", "America/Chicago"),
        ("Austin", "America/Chicago"),
        ("Denver", "America/Denver"),
        ("Seattle", "America/Los_Angeles"),
        ("San Francisco", "America/Los_Angeles"),
        ("Los Angeles", "America/Los_Angeles"),
    ),
    "en_GB": (
        ("London", "Europe/London"),
        ("Manchester", "Europe/London"),
        ("Bristol", "Europe/London"),
        ("Edinburgh", "Europe/London"),
        ("Leeds", "Europe/London"),
    ),
    "de_DE": (
        ("Berlin", "Europe/Berlin"),
        ("Hamburg", "Europe/Berlin"),
        ("München", "Europe/Berlin"),
        ("Köln", "Europe/Berlin"),
        ("Frankfurt am Main", "Europe/Berlin"),
    ),
    "fr_FR": (
        ("Paris", "Europe/Paris"),
        ("Lyon", "Europe/Paris"),
        ("Marseille", "Europe/Paris"),
        ("Bordeaux", "Europe/Paris"),
        ("Nantes", "Europe/Paris"),
    ),
}
_LOCALE_SHARE = np.array([0.45, 0.25, 0.17, 0.13])
_UNICODE_NAMES = (
    ("Zoë", "Whitfield"),
    ("Łukasz", "Nowak"),
    ("José", "Álvarez"),
    ("Françoise", "Lefèvre"),
    ("Jürgen", "Groß"),
    ("Siobhán", "Ó Súilleabháin"),
)
_HTML_NAMES = (("Liam", "O'Brien & <Sons>"), ("<b>Ava</b>", "Hart"), ('Tom "TJ"', "Smith & Co <Ltd>"))
_BAD_EMAILS = ("not-an-email", "{local}.example.com", "{local}@", "{local} @example.com")
_BAD_PHONES = ("+1555", "555-0123", "+44 (0) 7700 900123")

_TRANSLIT = str.maketrans({"Ł": "L", "ł": "l", "ß": "ss", "Ø": "O", "ø": "o", "æ": "ae"})

METADATA = sa.MetaData()
CUSTOMERS = sa.Table(
    "customers",
    METADATA,
    sa.Column("customer_id", sa.Text, primary_key=True),
    sa.Column("email", sa.Text),
    sa.Column("phone", sa.Text),
    sa.Column("first_name", sa.Text),
    sa.Column("last_name", sa.Text),
    sa.Column("locale", sa.Text),
    sa.Column("timezone", sa.Text),
    sa.Column("persona", sa.Text),
    sa.Column("created_at", sa.DateTime),
    sa.Column("city", sa.Text),
    sa.Column("loyalty_number", sa.Text),
)
ORDERS = sa.Table(
    "orders",
    METADATA,
    sa.Column("order_id", sa.Text, primary_key=True),
    sa.Column("customer_id", sa.Text, nullable=False, index=True),
    sa.Column("ordered_at", sa.DateTime, nullable=False, index=True),
    sa.Column("total", sa.Numeric(12, 2, asdecimal=False), nullable=False),
    sa.Column("status", sa.Text, nullable=False),
    sa.Column("product", sa.Text, nullable=False),
    sa.Column("referred_by", sa.Text),
)
CHANNEL_PREFERENCES = sa.Table(
    "channel_preferences",
    METADATA,
    sa.Column("customer_id", sa.Text, primary_key=True),
    sa.Column("channel", sa.Text, primary_key=True),
    sa.Column("opted_in", sa.Boolean, nullable=False),
    sa.Column("source", sa.Text),
    sa.Column("consented_at", sa.DateTime),
)
EVENTS = sa.Table(
    "events",
    METADATA,
    sa.Column("customer_id", sa.Text, nullable=False, index=True),
    sa.Column("event_type", sa.Text, nullable=False),
    sa.Column("occurred_at", sa.DateTime, nullable=False, index=True),
    sa.Column("content_id", sa.Text),
)
_TABLES = (CUSTOMERS, ORDERS, CHANNEL_PREFERENCES, EVENTS)


def has_warehouse(engine: sa.Engine) -> bool:
    """Return True when the ``customers`` table exists (in the default schema/search_path)."""
    return sa.inspect(engine).has_table("customers")


def seed(
    engine: sa.Engine, as_of: date, customers: int = 5000, seed: int = 42, years: float = 2.0
) -> dict[str, int]:
    """Create the contract tables (if missing) and fill them; returns row counts per table.

    Existing rows in the four tables are replaced (idempotent, safe for task retries).
    Deterministic for a given ``seed``/``as_of``/``customers``/``years``.
    """
    if customers < 1:
        raise ValueError("customers must be >= 1")
    if years <= 0:
        raise ValueError("years must be > 0")
    frames = build_frames(as_of, customers=customers, seed=seed, years=years)
    METADATA.create_all(engine, checkfirst=True)
    with engine.begin() as conn:
        for table in reversed(_TABLES):
            conn.execute(table.delete())
        for table in _TABLES:
            if conn.dialect.name == "postgresql" and conn.dialect.driver == "psycopg2":
                _copy_psycopg2(conn, table, frames[table.name])
                continue
            records = _records(frames[table.name])
            for start in range(0, len(records), _INSERT_CHUNK):
                conn.execute(table.insert(), records[start : start + _INSERT_CHUNK])
    return {name: len(df) for name, df in frames.items()}


def build_frames(
    as_of: date, customers: int = 5000, seed: int = 42, years: float = 2.0
) -> dict[str, pd.DataFrame]:
    """Generate the four tables as DataFrames without touching a database."""
    rng = np.random.default_rng(seed)
    t0 = (as_of.toordinal() - _EPOCH_ORDINAL) * DAY  # as_of midnight, UTC epoch seconds
    window_start = t0 - int(years * _YEAR)
    cust = _customers(rng, customers, seed, t0, window_start)
    orders = _orders(rng, cust, t0)
    prefs = _preferences(rng, cust, t0)
    _text_message_advocates(rng, orders, prefs, t0)
    events = _events(rng, cust, prefs, t0)
    return {
        "customers": _customer_frame(cust),
        "orders": orders,
        "channel_preferences": prefs,
        "events": events,
    }


# --------------------------------------------------------------------------- helpers


ADVOCATES = 3  # recent referred bookings credited to guests who only take text messages


def _text_message_advocates(
    rng: np.random.Generator, orders: pd.DataFrame, prefs: pd.DataFrame, t0: int
) -> None:
    """Credit a few of the last 45 days' referred bookings to SMS-only guests (in place).

    Referral thank-yous then show on both channels in any demo window, whatever the random draw.
    """
    opted = prefs[prefs["opted_in"].astype(bool)]
    by_channel = opted.groupby("channel")["customer_id"].agg(set)
    sms_only = sorted(by_channel.get("sms", set()) - by_channel.get("email", set()))
    recent = orders.index[
        orders["referred_by"].notna()
        & (orders["status"] == "completed")
        & (orders["ordered_at"] >= _to_datetimes(np.array([t0 - 45 * DAY]))[0])
    ]
    first_order: dict[Any, Any] = orders.groupby("customer_id")["ordered_at"].min().to_dict()
    for row in rng.permutation(recent)[:ADVOCATES]:
        at, buyer = orders.at[row, "ordered_at"], orders.at[row, "customer_id"]
        candidates = [c for c in sms_only if c != buyer and c in first_order and first_order[c] < at]
        if candidates:
            orders.at[row, "referred_by"] = candidates[int(rng.integers(len(candidates)))]


def _to_datetimes(seconds: np.ndarray) -> np.ndarray:
    return np.asarray(seconds, dtype="int64").astype("datetime64[s]")


def _ascii_slug(text: str) -> str:
    text = text.translate(_TRANSLIT)
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii").lower()
    return "".join(c for c in text if c.isalnum())


def _pick(rng: np.random.Generator, weights: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Vectorised categorical draw: one column index per row of ``weights[rows]``."""
    cum = np.cumsum(weights / weights.sum(axis=1, keepdims=True), axis=1)
    u = rng.random(len(rows))
    return np.minimum((u[:, None] > cum[rows]).sum(axis=1), weights.shape[1] - 1)


def _take_slots(perm: np.ndarray, start: int, count: int) -> tuple[np.ndarray, int]:
    chosen = perm[start : start + count]
    return chosen, start + len(chosen)


def _customers(rng: np.random.Generator, n: int, seed: int, t0: int, window_start: int) -> dict[str, Any]:
    persona = rng.choice(len(PERSONAS), size=n, p=_PERSONA_SHARE)
    locale = rng.choice(len(LOCALES), size=n, p=_LOCALE_SHARE)
    created = rng.integers(window_start, t0 - DAY, size=n)
    first = np.empty(n, dtype=object)
    last = np.empty(n, dtype=object)
    city = np.empty(n, dtype=object)
    tz = np.empty(n, dtype=object)
    phone = np.empty(n, dtype=object)
    for li, loc in enumerate(LOCALES):
        mask = locale == li
        k = int(mask.sum())
        fake = Faker(loc)
        fake.seed_instance(seed * 100 + li)
        firsts = np.array([fake.first_name() for _ in range(300)], dtype=object)
        lasts = np.array([fake.last_name() for _ in range(300)], dtype=object)
        first[mask] = firsts[rng.integers(0, len(firsts), k)]
        last[mask] = lasts[rng.integers(0, len(lasts), k)]
        cities = _CITIES[loc]
        ci = rng.integers(0, len(cities), k)
        city[mask] = [cities[i][0] for i in ci]
        tz[mask] = [cities[i][1] for i in ci]
        phone[mask] = _phones(rng, loc, k)

    perm = rng.permutation(n)
    pos = 0
    n_blank = round(0.03 * n)
    blank, pos = _take_slots(perm, pos, n_blank)
    first[blank[: len(blank) // 2]] = ""
    first[blank[len(blank) // 2 :]] = None
    for names in (_UNICODE_NAMES, _HTML_NAMES):
        slots, pos = _take_slots(perm, pos, len(names))
        for slot, (fn, ln) in zip(slots, names, strict=False):
            first[slot], last[slot] = fn, ln

    phone[rng.random(n) < 0.25] = None
    with_phone = np.flatnonzero(phone != None)  # noqa: E711 - elementwise on object array
    if len(with_phone):
        bad = rng.choice(with_phone, size=min(len(_BAD_PHONES), len(with_phone)), replace=False)
        phone[bad] = list(_BAD_PHONES[: len(bad)])
    tz[rng.random(n) < 0.05] = None

    email = _emails(rng, first, last)
    loyalty = np.array(
        [f"HP{(int(i) * 7_654_321 + 1_234_567) % 90_000_000 + 10_000_000:08d}" for i in rng.permutation(n)],
        dtype=object,
    )
    loyalty[rng.random(n) < 0.45] = None
    return {
        "n": n,
        "ids": np.array([f"C{i + 1:06d}" for i in range(n)], dtype=object),
        "persona": persona,
        "locale": locale,
        "created": created,
        "first": first,
        "last": last,
        "email": email,
        "phone": phone,
        "tz": tz,
        "city": city,
        "loyalty": loyalty,
        "window_start": window_start,
    }


def _phones(rng: np.random.Generator, loc: str, k: int) -> list[str]:
    """Fictional-range E.164 numbers for a locale."""
    if loc == "en_US":
        area = rng.integers(201, 990, k)
        area = np.where(area % 100 == 11, area + 1, area)
        return [f"+1{a}55501{x:02d}" for a, x in zip(area, rng.integers(0, 100, k), strict=True)]
    if loc == "en_GB":
        return [f"+447700900{x:03d}" for x in rng.integers(0, 1000, k)]
    if loc == "de_DE":
        return [f"+49151{x:08d}" for x in rng.integers(0, 100_000_000, k)]
    return [f"+3363998{x:04d}" for x in rng.integers(0, 10_000, k)]


def _emails(rng: np.random.Generator, first: np.ndarray, last: np.ndarray) -> np.ndarray:
    n = len(first)
    style = rng.integers(0, 4, n)
    digits = rng.integers(1, 100, n)
    domain = rng.choice(len(EMAIL_DOMAINS), size=n, p=[0.7, 0.15, 0.15])
    locals_: list[str] = []
    for i in range(n):
        fn = _ascii_slug(first[i] or "")
        ln = _ascii_slug(last[i] or "") or "guest"
        if not fn:
            local = f"{ln}{digits[i]}"
        elif style[i] == 0:
            local = f"{fn}.{ln}"
        elif style[i] == 1:
            local = f"{fn[0]}{ln}"
        elif style[i] == 2:
            local = f"{fn}_{ln}{digits[i]}"
        else:
            local = f"{fn}{ln}{digits[i]}"
        locals_.append(local)
    seen: set[str] = set()
    emails = np.empty(n, dtype=object)
    for i, local in enumerate(locals_):
        if local in seen:
            local = f"{local}.{i + 1}"
        seen.add(local)
        emails[i] = f"{local}@{EMAIL_DOMAINS[domain[i]]}"
    bad = np.flatnonzero(rng.random(n) < 0.01)
    kinds = rng.integers(0, len(_BAD_EMAILS), len(bad))
    for pos, kind in zip(bad, kinds, strict=True):
        emails[pos] = _BAD_EMAILS[kind].format(local=locals_[pos])
    return emails


def _customer_frame(c: dict[str, Any]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "customer_id": c["ids"],
            "email": c["email"],
            "phone": c["phone"],
            "first_name": c["first"],
            "last_name": c["last"],
            "locale": np.array(LOCALES, dtype=object)[c["locale"]],
            "timezone": c["tz"],
            "persona": np.array(PERSONAS, dtype=object)[c["persona"]],
            "created_at": _to_datetimes(c["created"]),
            "city": c["city"],
            "loyalty_number": c["loyalty"],
        }
    )


def _basket(rng: np.random.Generator, persona: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Product index and rounded total for each order of the given personas."""
    product = _pick(rng, _PRODUCT_MIX, persona)
    low = np.array([p[1] for p in PRODUCTS])[product]
    high = np.array([p[2] for p in PRODUCTS])[product]
    per_room = np.array([p[3] for p in PRODUCTS])[product]
    price = low + (high - low) * rng.beta(2.0, 2.5, len(product))
    rooms = np.where(per_room, 1 + rng.poisson(_PARTY_EXTRA[persona]), 1)
    return product, np.round(price * rooms, 2)


def _orders(rng: np.random.Generator, c: dict[str, Any], t0: int) -> pd.DataFrame:
    n, created, persona = c["n"], c["created"], c["persona"]
    end_excl = t0 + DAY
    recent_cut = t0 - 180 * DAY  # an order at/after this instant is "in the last 180 days"
    ordered = rng.random(n) < 0.9
    orderers = np.flatnonzero(ordered)
    eligible = orderers[created[orderers] < t0 - 200 * DAY]
    n_dormant = min(round(DORMANT_SHARE * len(orderers)), len(eligible))
    dormant = np.zeros(n, dtype=bool)
    dormant[rng.choice(eligible, size=n_dormant, replace=False)] = True
    c["ordered"], c["dormant"] = ordered, dormant

    delay = 300 + rng.exponential(3 * DAY, len(orderers)).astype("int64")
    first_at = created[orderers] + delay
    is_dorm = dormant[orderers]
    first_at = np.where(is_dorm, np.minimum(first_at, recent_cut - 10 * DAY), np.minimum(first_at, t0))
    last_at = np.where(
        is_dorm,
        first_at + (rng.random(len(orderers)) * (recent_cut - DAY - first_at)).astype("int64"),
        end_excl - 1,
    )
    appetite = rng.lognormal(-0.18, 0.6, len(orderers))
    n_extra = rng.poisson(_ORDER_RATE[persona[orderers]] * appetite * (last_at - first_at) / _YEAR)
    rep = np.repeat(np.arange(len(orderers)), n_extra)
    extra_at = first_at[rep] + (rng.random(len(rep)) * (last_at[rep] - first_at[rep])).astype("int64")
    needs_recent = ~is_dorm & (first_at < recent_cut + 10 * DAY)
    nr = np.flatnonzero(needs_recent)
    recent_at = rng.integers(recent_cut + 10 * DAY, end_excl, len(nr))
    cust_idx = np.concatenate([orderers, orderers[rep], orderers[nr]])
    at = np.concatenate([first_at, extra_at, recent_at])

    u = rng.random(len(at))
    status = np.where(u < 0.08, 1, np.where(u < 0.12, 2, 0))

    # Top up so every one of the last 90 days has enough completed orders.
    day0 = t0 - 89 * DAY
    done = (status == 0) & (at >= day0)
    counts = np.bincount((at[done] - day0) // DAY, minlength=90)[:90]
    active = np.flatnonzero(ordered & ~dormant)
    active = active[np.argsort(created[active], kind="stable")]
    active_created = created[active]
    top_cust: list[np.ndarray] = []
    top_at: list[np.ndarray] = []
    for d in np.flatnonzero(counts < MIN_DAILY_COMPLETED):
        day_start = day0 + int(d) * DAY
        avail = int(np.searchsorted(active_created, day_start, side="left"))
        if avail == 0:
            continue
        need = MIN_DAILY_COMPLETED - int(counts[d])
        top_cust.append(active[rng.integers(0, avail, need)])
        top_at.append(day_start + rng.integers(0, DAY, need))
    if top_cust:
        cust_idx = np.concatenate([cust_idx, *top_cust])
        at = np.concatenate([at, *top_at])
        status = np.concatenate([status, np.zeros(sum(len(x) for x in top_cust), dtype=status.dtype)])

    order = np.lexsort((cust_idx, at))
    cust_idx, at, status = cust_idx[order], at[order], status[order]
    product, total = _basket(rng, persona[cust_idx])
    referred_by = _referrals(rng, c["ids"], cust_idx, at)
    return pd.DataFrame(
        {
            "order_id": np.array([f"O{i + 1:07d}" for i in range(len(at))], dtype=object),
            "customer_id": c["ids"][cust_idx],
            "ordered_at": _to_datetimes(at),
            "total": total,
            "status": np.array(ORDER_STATUSES, dtype=object)[status],
            "product": np.array([p[0] for p in PRODUCTS], dtype=object)[product],
            "referred_by": referred_by,
        }
    )


def _referrals(rng: np.random.Generator, ids: np.ndarray, cust_idx: np.ndarray, at: np.ndarray) -> np.ndarray:
    """~5% of orders (customers' first orders) credit an earlier-ordering customer."""
    referred_by = np.full(len(at), None, dtype=object)
    _, first_pos = np.unique(cust_idx, return_index=True)
    before = np.searchsorted(at, at[first_pos], side="left")
    candidates = first_pos[before > 0]
    k = min(round(0.05 * len(at)), len(candidates))
    if k == 0:
        return referred_by
    chosen = np.sort(rng.choice(candidates, size=k, replace=False))
    src = (rng.random(k) * np.searchsorted(at, at[chosen], side="left")).astype("int64")
    referred_by[chosen] = ids[cust_idx[src]]
    return referred_by


def _preferences(rng: np.random.Generator, c: dict[str, Any], t0: int) -> pd.DataFrame:
    n, created, persona = c["n"], c["created"], c["persona"]
    no_prefs = np.zeros(n, dtype=bool)
    no_prefs[rng.choice(n, size=round(0.05 * n), replace=False)] = True
    has_phone = c["phone"] != None  # noqa: E711 - elementwise on object array
    parts: list[pd.DataFrame] = []
    specs: Sequence[tuple[str, np.ndarray, float, list[float]]] = (
        ("email", ~no_prefs, 0.85, [0.35, 0.35, 0.10, 0.20]),
        ("sms", ~no_prefs & has_phone & (rng.random(n) < 0.60), 0.70, [0.55, 0.20, 0.20, 0.05]),
        ("push", ~no_prefs & (rng.random(n) < _PUSH_SHARE[persona]), 0.60, [0.0, 0.6, 0.4, 0.0]),
    )
    for channel, mask, opt_rate, source_p in specs:
        idx = np.flatnonzero(mask)
        k = len(idx)
        source = rng.choice(len(CONSENT_SOURCES), size=k, p=source_p)
        span = t0 - 1 - created[idx]
        soon = np.minimum(rng.exponential(7 * DAY, k).astype("int64"), span)
        later = (rng.random(k) * span).astype("int64")
        consented = created[idx] + np.where(source == 2, later, np.where(source == 3, 0, soon))
        parts.append(
            pd.DataFrame(
                {
                    "customer_id": c["ids"][idx],
                    "channel": channel,
                    "opted_in": rng.random(k) < opt_rate,
                    "source": np.array(CONSENT_SOURCES, dtype=object)[source],
                    "consented_at": _to_datetimes(consented),
                }
            )
        )
    prefs = pd.concat(parts, ignore_index=True)
    return prefs.sort_values(["customer_id", "channel"], kind="stable", ignore_index=True)


def _events(rng: np.random.Generator, c: dict[str, Any], prefs: pd.DataFrame, t0: int) -> pd.DataFrame:
    n, created, persona = c["n"], c["created"], c["persona"]
    start, end_excl = t0 - 119 * DAY, t0 + DAY
    email_ok = np.zeros(n, dtype=bool)
    opted = prefs[(prefs["channel"] == "email") & prefs["opted_in"]]["customer_id"]
    email_ok[opted.str.slice(1).astype(int).to_numpy() - 1] = True
    begin = np.maximum(created, start)
    exposure = (end_excl - begin) / (end_excl - start)
    state = np.where(c["dormant"], 0.25, np.where(c["ordered"], 1.0, 0.7))
    counts = rng.poisson(_EVENT_RATE[persona] * state * exposure)
    cust_idx = np.repeat(np.arange(n), counts)
    mix = np.vstack([_EVENT_MIX, _EVENT_MIX * np.r_[np.ones(10), 0.0, 0.0]])
    group = persona[cust_idx] + len(PERSONAS) * (~email_ok[cust_idx])
    etype = _pick(rng, mix, group)
    at = begin[cust_idx] + (rng.random(len(cust_idx)) * (end_excl - begin[cust_idx])).astype("int64")

    catalogue = [_CONTENT[t] for t in EVENT_TYPES]
    lengths = np.array([len(x) for x in catalogue])
    offsets = np.r_[0, np.cumsum(lengths)[:-1]]
    flat = np.array([cid for x in catalogue for cid in x], dtype=object)
    pick = offsets[etype] + (rng.random(len(etype)) * lengths[etype]).astype("int64")
    content = flat[pick]
    null_share = np.array([_CONTENT_NULL_SHARE.get(t, 0.0) for t in EVENT_TYPES])
    content[rng.random(len(etype)) < null_share[etype]] = None

    order = np.lexsort((etype, cust_idx, at))
    return pd.DataFrame(
        {
            "customer_id": c["ids"][cust_idx[order]],
            "event_type": np.array(EVENT_TYPES, dtype=object)[etype[order]],
            "occurred_at": _to_datetimes(at[order]),
            "content_id": content[order],
        }
    )


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts of plain Python values (datetime, bool, float, str, None)."""
    columns: dict[str, list[Any]] = {}
    for name in df.columns:
        col = df[name]
        if pd.api.types.is_datetime64_any_dtype(col):
            columns[name] = col.to_numpy().astype("datetime64[us]").astype(object).tolist()
        elif pd.api.types.is_bool_dtype(col) or pd.api.types.is_float_dtype(col):
            columns[name] = col.to_numpy().tolist()
        else:
            values = col.to_numpy(dtype=object)
            columns[name] = [None if v is None or v is pd.NA or v != v else v for v in values]
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def _copy_psycopg2(conn: sa.Connection, table: sa.Table, df: pd.DataFrame) -> None:
    """Bulk load through PostgreSQL COPY (an order of magnitude faster than multi-row INSERTs)."""
    out = df.copy()
    for name in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[name]):
            out[name] = out[name].dt.strftime("%Y-%m-%d %H:%M:%S")
    buf = io.StringIO()
    # Unquoted \N is NULL; an unquoted empty field stays an empty string (e.g. blank first names).
    out.to_csv(buf, index=False, header=False, na_rep="\\N", float_format="%.2f")
    buf.seek(0)
    copy_csv(conn, table, [str(c) for c in out.columns], buf)
