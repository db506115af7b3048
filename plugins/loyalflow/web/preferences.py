"""The preference centre, one-click unsubscribe and response links (FastAPI; mounted in Airflow by
loyalflow_plugin.py at ``/loyalflow``, or run alone with ``loyalflow serve``).

Routes follow :func:`loyalflow.compose.context.links`. Every route verifies the HMAC-signed token first
(current or previous key): a forged, altered, empty or huge token gets 400 and changes nothing. A GET
never changes anything (link scanners follow GETs): unsubscribe and response links show a page with a
button that POSTs. POST /unsubscribe/{token} is the RFC 8058 one-click endpoint (no cookies, no CSRF
token); repeating it answers 200 again without a second identical ledger row. When a database cannot
be reached the answer is 503 with ``Retry-After`` and a log line without any address.

Consent changes are appended to ``loyalflow_consent`` (never the warehouse), with their suppression in
the same state transaction; the CRM gets them through ``loyalflow consent export``. Channels and topics:
a channel switch is scope ``all``; topics are the ``marketing`` category and each marketing campaign the
campaign files declare. Relationship messages (thank-you) are not a topic: they stop with their channel
or with "unsubscribe from everything". Pages are Jinja templates (``web/templates``, autoescaped) in
the customer's language (``customers.locale``; catalogs in ``web/locale``, see :mod:`loyalflow.web.i18n`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import sqlalchemy as sa
from babel.dates import format_date
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from starlette.exceptions import HTTPException

from loyalflow.compose.tokens import LinkToken, verify_link
from loyalflow.decide import consent, responses, suppressions
from loyalflow.decide.addresses import normalise
from loyalflow.decide.consent import Consent, ConsentBook
from loyalflow.errors import DatabaseError, LoyalflowError
from loyalflow.settings import Settings, get_settings
from loyalflow.state import consent as ledger
from loyalflow.warehouse import read_by_ids, records
from loyalflow.web import i18n

log = logging.getLogger(__name__)
CHANNELS = {"email": "email", "sms": "phone"}
SOURCE = "preference_centre"
MARKETING = "marketing"
TOPICS_FIELD = "topics"  # the form showed topic boxes: an absent box is an unticked one
PAUSE_DAYS = 30
RETRY_AFTER_SECONDS = 120
ANSWERS = ("positive", "negative", "later")
TEMPLATES = Path(__file__).resolve().parent / "templates"
HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
    "base-uri 'none'; frame-ancestors 'none'",
}
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(\.[\w-]+)+")
_PHONE = re.compile(r"\+?\d[\d ().-]{6,}\d")


def _(message: str) -> str:
    """Marks a message for the catalogs; translated when rendered (see :func:`_render`)."""
    return message


INVALID_LINK = _("This link is invalid or has been altered.")
NOT_FOUND = _("We could not find this page.")
UNKNOWN_ANSWER = _("This answer is not one we know.")
UNAVAILABLE = _("We cannot save your choice right now. Please try again in a few minutes.")
app = FastAPI(title="loyalflow preference centre", docs_url=None, redoc_url=None, openapi_url=None)
templates = Environment(
    loader=FileSystemLoader(str(TEMPLATES)),
    autoescape=True,
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


# --- runtime, customer, brand, topics ---------------------------------------------------------------


def _runtime() -> Any:
    from loyalflow.runtime import Runtime

    return Runtime(get_settings())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _token(value: str) -> LinkToken:
    token = verify_link(get_settings(), value)
    if token is None or token.channel not in CHANNELS:
        raise HTTPException(400, INVALID_LINK)
    return token


def _customer(rt: Any, customer_id: str) -> dict[str, Any]:
    with rt.warehouse.connect() as conn:
        row = conn.execute(
            sa.text("SELECT * FROM customers WHERE customer_id = :c"), {"c": customer_id}
        ).first()
    if row is None:
        raise HTTPException(404, NOT_FOUND)
    return dict(row._mapping)


def _maybe_customer(rt: Any, customer_id: str) -> dict[str, Any] | None:
    """The customer for a page's language only: None when missing or the warehouse is unreadable."""
    try:
        return _customer(rt, customer_id)
    except (HTTPException, sa.exc.SQLAlchemyError, LoyalflowError):
        return None


def _brand(settings: Settings) -> dict[str, Any]:
    from loyalflow.spec import load_brand

    try:
        return load_brand(settings.campaigns_dir).model_dump()
    except LoyalflowError:
        log.warning("campaigns/brand.yaml is invalid; the preference centre shows a plain masthead")
        fields = ("postal_address", "support_url", "support_phone", "website", "logo_text")
        return {"name": "Preferences", "primary_color": "#1f3b4d", **dict.fromkeys(fields, "")}


@dataclass(frozen=True)
class Topic:
    """Something a customer may hear about on a channel: the marketing category or one campaign."""

    scope: str  # "marketing" or a campaign id (the consent ledger's scope)
    label: str  # a msgid (the category) or the campaign's name
    finer: bool = False  # a campaign inside the category

    @property
    def scopes(self) -> tuple[str, ...]:
        """The consent scopes that decide this topic (as eligibility reads them for a campaign)."""
        return ("all", MARKETING) if self.scope == MARKETING else ("all", MARKETING, self.scope)


def topics(settings: Settings) -> list[Topic]:
    """Offers and news (the marketing category), then each marketing campaign by its name."""
    from loyalflow.spec import campaign_files, load_campaign

    found = [Topic(MARKETING, _("Offers and news"))]
    for path in campaign_files(settings.campaigns_dir):
        try:
            campaign = load_campaign(path)
        except LoyalflowError:
            log.warning("preference centre: %s is invalid and is not offered as a topic", path.name)
            continue
        if campaign.category == MARKETING:
            found.append(Topic(campaign.id, campaign.name, finer=True))
    return found


# --- consent: reading, simulating, writing ------------------------------------------------------------


def _with(book: ConsentBook, cid: str, channel: str, row: Consent, at: dt.datetime) -> ConsentBook:
    """``book`` plus one (not yet written) ledger row at moment ``at``."""
    rows = {key: list(bucket) for key, bucket in book.rows.items()}
    bucket = rows.setdefault((cid, channel), [])
    bucket.append((at, len(bucket) + 1_000_000, row))
    bucket.sort(key=lambda t: (t[0] is not None, t[0] or dt.datetime.min, t[1]))
    return ConsentBook(rows)


def _on(book: ConsentBook, cid: str, channel: str, scopes: tuple[str, ...], at: dt.datetime) -> bool:
    row = book.latest(cid, channel, scopes, at=at)
    return bool(row and row.opted_in)


def _warehouse_latest(book: ConsentBook | None, cid: str, channel: str) -> dt.datetime | None:
    """The newest dated ``channel_preferences`` row of the customer and channel."""
    if book is None:
        return None
    times = [w for w, _, r in book.rows.get((cid, channel), []) if r.origin == consent.WAREHOUSE and w]
    return max(times, default=None)


def _lock(conn: sa.Connection, cid: str, channel: str) -> None:
    """Serialise consent writes of one customer and channel (PostgreSQL; SQLite has one writer)."""
    if conn.dialect.name == "postgresql":
        digest = hashlib.sha256(f"loyalflow_consent|{cid}|{channel}".encode()).digest()
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(int.from_bytes(digest[:8], "big", signed=True))))


def _append(
    conn: sa.Connection,
    cid: str,
    channel: str,
    opted_in: bool,
    source: str,
    *,
    scope: str = "all",
    until: dt.datetime | None = None,
    fingerprint: str | None = None,
    at: dt.datetime | None = None,
    once: bool = False,
    newer_than: dt.datetime | None = None,
) -> bool:
    """Append a consent row. With ``once`` (a channel-wide change, no pause): not when the latest ledger
    row of the customer, channel and scope already says the same and no warehouse row newer than it
    (``newer_than``) says otherwise, i.e. when the row would change nothing."""
    if once and scope == "all" and until is None:
        _lock(conn, cid, channel)
        latest = conn.execute(
            sa.select(ledger.c.opted_in, ledger.c.until, ledger.c.recorded_at)
            .where(ledger.c.customer_id == cid, ledger.c.channel == channel, ledger.c.scope == scope)
            .order_by(ledger.c.recorded_at.desc(), ledger.c.id.desc())
            .limit(1)
        ).first()
        if latest is not None and bool(latest.opted_in) == opted_in and latest.until is None:
            when = consent.moment(latest.recorded_at)
            if newer_than is None or (when is not None and when >= newer_than):
                return False
    consent.record(
        conn, cid, channel, opted_in, source, scope=scope, until=until, request_fingerprint=fingerprint, at=at
    )
    return True


def _write(
    conn: sa.Connection,
    customer: dict[str, Any],
    channel: str,
    opted_in: bool,
    source: str,
    *,
    scope: str = "all",
    until: dt.datetime | None = None,
    fingerprint: str | None = None,
    at: dt.datetime | None = None,
    once: bool = False,
    newer_than: dt.datetime | None = None,
) -> bool:
    """One consent change inside the caller's transaction: the suppression first, then the ledger row.

    Only a channel-wide change (scope ``all``, no pause) touches suppressions: they are keyed by address
    and have no time, so a topic suppression would outlive a later, finer opt-in.
    """
    cid = str(customer["customer_id"])
    address = normalise(channel, customer.get(CHANNELS[channel]))
    if address is not None and scope == "all" and until is None:
        if opted_in:
            suppressions.remove(conn, channel, address, scope="all")
        else:
            suppressions.add(
                conn, channel, address, "unsubscribed", scope="all", source=source, customer_id=cid
            )
    return _append(
        conn,
        cid,
        channel,
        opted_in,
        source,
        scope=scope,
        until=until,
        fingerprint=fingerprint,
        at=at,
        once=once,
        newer_than=newer_than,
    )


def _set_consent(
    rt: Any,
    customer: dict[str, Any],
    channel: str,
    opted_in: bool,
    source: str,
    *,
    scope: str = "all",
    until: dt.datetime | None = None,
    request: str | None = None,
    book: ConsentBook | None = None,
) -> bool:
    """Append a consent row and, for a channel-wide change, its suppression, in one state transaction.

    loyalflow never writes to the warehouse: the change reaches the CRM through ``consent export``.
    A repeat of the latest row (a second one-click) adds nothing; returns whether a row was added.
    """
    cid = str(customer["customer_id"])
    newer = _warehouse_latest(book, cid, channel) if scope == "all" else None
    with rt.state.begin() as conn:
        return _write(
            conn,
            customer,
            channel,
            opted_in,
            source,
            scope=scope,
            until=until,
            fingerprint=request,
            once=True,
            newer_than=newer,
        )


@dataclass(frozen=True)
class Change:
    """One consent row a form save will append."""

    channel: str
    scope: str
    opted_in: bool
    at: dt.datetime


def plan_save(
    book: ConsentBook,
    customer: dict[str, Any],
    form: dict[str, list[str]],
    offered: list[Topic],
    now: dt.datetime,
) -> tuple[list[Change], ConsentBook]:
    """The rows a save appends, and the book as it will read afterwards.

    Per channel with an address: the switch (scope ``all``) first; when it stays or turns on and the
    form showed topics (``TOPICS_FIELD``), each topic whose box differs from what the book (with the
    rows planned so far) would decide. Rows are a microsecond apart, in the order they were decided.
    """
    cid = str(customer["customer_id"])
    changes: list[Change] = []
    sim, moment = book, now

    def change(channel: str, scope: str, wanted: bool) -> None:
        nonlocal sim, moment
        moment = moment + dt.timedelta(microseconds=1)
        changes.append(Change(channel, scope, wanted, moment))
        sim = _with(sim, cid, channel, Consent(wanted, SOURCE, moment, scope, "loyalflow"), moment)

    for channel, column in CHANNELS.items():
        if normalise(channel, customer.get(column)) is None:
            continue  # no address: the box was disabled, nothing to change
        wanted = form.get(channel, [""])[0] == "on"
        if wanted != _on(sim, cid, channel, ("all",), moment):
            change(channel, "all", wanted)
        if not wanted or TOPICS_FIELD not in form:
            continue  # topics apply while their channel is on (and only a form that showed them)
        for topic in offered:
            box = form.get(f"{channel}:{topic.scope}", [""])[0] == "on"
            if box != _on(sim, cid, channel, topic.scopes, moment):
                change(channel, topic.scope, box)
    return changes, sim


def _paused_until(book: ConsentBook, cid: str, now: dt.datetime) -> dt.datetime | None:
    ends = [
        row.until
        for channel in CHANNELS
        if (row := book.latest(cid, channel, ("all", MARKETING), at=now)) is not None
        and row.source == "pause"
        and row.until is not None
    ]
    return max(ends, default=None)


# --- pages ----------------------------------------------------------------------------------------


def _lang(customer: dict[str, Any] | None, request: Request | None = None) -> str:
    if customer is not None and customer.get("locale"):
        return i18n.language(customer.get("locale"))
    return i18n.from_header(request.headers.get("accept-language") if request is not None else None)


def _render(
    template: str, lang: str, title: str, code: int = 200, headers: dict[str, str] | None = None, **ctx: Any
) -> HTMLResponse:
    """A page in ``lang`` (``title`` is a msgid, translated here; ``_`` translates in the template)."""
    gettext = i18n.translations(lang).gettext
    defaults: dict[str, Any] = {
        "status": None,
        "status_id": None,
        "paragraphs": [],
        "button": None,
        "button_id": "confirm",
        "hidden": {},
        "back": None,
        "back_label": "",
    }
    html = templates.get_template(template).render(
        {
            **defaults,
            **ctx,
            "lang": lang,
            "_": gettext,
            "title": gettext(title),
            "brand": ctx.get("brand") or _brand(get_settings()),
        }
    )
    return HTMLResponse(html, status_code=code, headers={**HEADERS, **(headers or {})})


def _message(
    lang: str, title: str, status: str | None = None, *paragraphs: str, code: int = 200, **ctx: Any
) -> HTMLResponse:
    gettext = i18n.translations(lang).gettext
    return _render(
        "page.html.j2",
        lang,
        title,
        code,
        status=gettext(status) if status else None,
        paragraphs=[gettext(p) for p in paragraphs],
        **ctx,
    )


def _masked(channel: str, address: str) -> str:
    if channel == "email":
        local, _at, domain = address.partition("@")
        return f"{local[:1]}•••@{domain}"
    return f"••• {address[-4:]}"


def _channel_labels(lang: str) -> dict[str, dict[str, str]]:
    gettext = i18n.translations(lang).gettext
    return {
        "email": {
            "label": gettext("Email"),
            "switch": gettext("Send me emails"),
            "missing": gettext("We have no email address for you."),
            "noun": gettext("emails"),
        },
        "sms": {
            "label": gettext("Text messages (SMS)"),
            "switch": gettext("Send me text messages"),
            "missing": gettext("We have no mobile number for you."),
            "noun": gettext("text messages"),
        },
    }


def _view(
    book: ConsentBook, customer: dict[str, Any], offered: list[Topic], now: dt.datetime, lang: str
) -> list[dict[str, Any]]:
    """Each channel with its switch and topic boxes as a save would read them back."""
    gettext = i18n.translations(lang).gettext
    cid = str(customer["customer_id"])
    labels = _channel_labels(lang)
    out = []
    for channel, column in CHANNELS.items():
        address = normalise(channel, customer.get(column))
        on = _on(book, cid, channel, ("all",), now)
        # A channel that is off shows its topics as turning it on would leave them (all on).
        seen = book if on else _with(book, cid, channel, Consent(True, SOURCE, now, "all", "loyalflow"), now)
        out.append(
            {
                "id": channel,
                **labels[channel],
                "address": _masked(channel, address) if address else None,
                "on": on and address is not None,
                "topics": [
                    {
                        "scope": t.scope,
                        "label": gettext(t.label),
                        "finer": t.finer,
                        "hint": gettext("Every campaign below") if not t.finer else None,
                        "on": _on(seen, cid, channel, t.scopes, now),
                    }
                    for t in offered
                ],
            }
        )
    return out


def _summary(
    book: ConsentBook, customer: dict[str, Any], offered: list[Topic], now: dt.datetime, lang: str
) -> list[str]:
    gettext = i18n.translations(lang).gettext
    cid = str(customer["customer_id"])
    lines = []
    for channel, labels in _channel_labels(lang).items():
        if not _on(book, cid, channel, ("all",), now):
            lines.append(gettext("%(channel)s: nothing") % {"channel": labels["label"]})
            continue
        chosen = [gettext(t.label) for t in offered if _on(book, cid, channel, t.scopes, now)]
        about = ", ".join(chosen) if chosen else gettext("messages about your bookings only")
        lines.append(gettext("%(channel)s: %(topics)s") % {"channel": labels["label"], "topics": about})
    return lines


def _preferences_page(rt: Any, customer: dict[str, Any], book: ConsentBook, now: dt.datetime) -> HTMLResponse:
    lang = _lang(customer)
    offered = topics(rt.settings)
    paused = _paused_until(book, str(customer["customer_id"]), now)
    return _render(
        "preferences.html.j2",
        lang,
        _("Your communication preferences"),
        brand=_brand(rt.settings),
        channels=_view(book, customer, offered, now, lang),
        paused_until=format_date(paused.date(), format="long", locale=lang) if paused else None,
    )


async def _form(request: Request) -> dict[str, list[str]]:
    return parse_qs((await request.body()).decode("utf-8", "replace")[:20_000])


def _fingerprint(request: Request, token: str) -> str:
    client = request.client.host if request.client else ""
    return consent.fingerprint(token, client, request.headers.get("user-agent", ""))


def _scrubbed(text: str) -> str:
    return _PHONE.sub("<phone>", _EMAIL.sub("<email>", text))


@app.exception_handler(HTTPException)
async def _error(request: Request, exc: HTTPException) -> HTMLResponse:
    detail = str(exc.detail)
    known = {INVALID_LINK, NOT_FOUND, UNKNOWN_ANSWER}
    if detail not in known:
        detail = NOT_FOUND if exc.status_code in (404, 405) else INVALID_LINK
    return _message(_lang(None, request), _("Sorry"), None, detail, code=exc.status_code)


@app.exception_handler(sa.exc.OperationalError)
@app.exception_handler(DatabaseError)
async def _unavailable(request: Request, exc: Exception) -> HTMLResponse:
    """A database is down: 503 with Retry-After, so a mail provider's one-click retries it later."""
    cause = getattr(exc, "orig", None) or exc
    first = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    route = request.scope.get("route")
    log.error(
        "loyalflow web: %s %s answered 503, database unavailable: %s: %s",
        request.method,
        getattr(route, "path", "?"),
        type(cause).__name__,
        _scrubbed(first)[:300],
    )
    return _message(
        _lang(None, request),
        _("Please try again soon"),
        None,
        UNAVAILABLE,
        code=503,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


# --- routes ---------------------------------------------------------------------------------------


@app.get("/preferences/{token}", response_class=HTMLResponse)
def show_preferences(token: str) -> HTMLResponse:
    """The customer's channels and topics with their current state, as a form."""
    link = _token(token)
    rt = _runtime()
    customer = _customer(rt, link.customer_id)
    book = consent.effective(rt.warehouse, rt.state, [link.customer_id])
    return _preferences_page(rt, customer, book, _now())


@app.post("/preferences/{token}", response_class=HTMLResponse)
async def save_preferences(token: str, request: Request) -> HTMLResponse:
    """Save the form, pause offers for 30 days, or unsubscribe from everything; then a confirmation."""
    from starlette.concurrency import run_in_threadpool

    link = _token(token)
    form = await _form(request)
    return await run_in_threadpool(_save, link, token, form, _fingerprint(request, token))


def _save(link: LinkToken, token: str, form: dict[str, list[str]], fingerprint: str) -> HTMLResponse:
    rt = _runtime()
    customer = _customer(rt, link.customer_id)
    cid, now = str(customer["customer_id"]), _now()
    book = consent.effective(rt.warehouse, rt.state, [cid])
    lang = _lang(customer)
    gettext = i18n.translations(lang).gettext
    action = form.get("action", ["save"])[0]
    offered = topics(rt.settings)
    back = quote(token)
    if action == "pause":
        until = now + dt.timedelta(days=PAUSE_DAYS)
        with rt.state.begin() as conn:
            for channel in CHANNELS:
                _write(
                    conn,
                    customer,
                    channel,
                    False,
                    "pause",
                    scope=MARKETING,
                    until=until,
                    fingerprint=fingerprint,
                )
        status = gettext("Offers and news are paused until %(date)s.") % {
            "date": format_date(until.date(), format="long", locale=lang)
        }
        title = _("Offers paused")
    elif action == "unsubscribe_all":
        with rt.state.begin() as conn:
            for channel in CHANNELS:
                _write(
                    conn,
                    customer,
                    channel,
                    False,
                    SOURCE,
                    fingerprint=fingerprint,
                    once=True,
                    newer_than=_warehouse_latest(book, cid, channel),
                )
        status = gettext("You are unsubscribed from everything. We will not contact you any more.")
        title = _("You are unsubscribed")
    else:
        changes, after = plan_save(book, customer, form, offered, now)
        with rt.state.begin() as conn:
            for c in changes:
                _write(
                    conn,
                    customer,
                    c.channel,
                    c.opted_in,
                    SOURCE,
                    scope=c.scope,
                    fingerprint=fingerprint,
                    at=c.at,
                )
        book = after
        status = gettext("Your preferences are saved.")
        title = _("Preferences saved")
    if action != "save":
        book = consent.effective(rt.warehouse, rt.state, [cid])
    moment = max(_now(), now) + dt.timedelta(milliseconds=1)  # after every row just written
    return _render(
        "saved.html.j2",
        lang,
        title,
        brand=_brand(rt.settings),
        status=status,
        summary=_summary(book, customer, offered, moment, lang),
        back=back,
    )


@app.get("/unsubscribe/{token}", response_class=HTMLResponse)
def confirm_unsubscribe(token: str, request: Request) -> HTMLResponse:
    """A confirmation page with a button (GET never changes anything: link scanners follow GETs)."""
    link = _token(token)
    rt = _runtime()
    lang = _lang(_maybe_customer(rt, link.customer_id), request)
    gettext = i18n.translations(lang).gettext
    question = gettext("Stop all %(what)s from %(brand)s?") % {
        "what": _channel_labels(lang)[link.channel]["noun"],
        "brand": _brand(rt.settings)["name"],
    }
    return _render(
        "page.html.j2",
        lang,
        _("Unsubscribe"),
        paragraphs=[question],
        button=gettext("Unsubscribe"),
        button_id="unsubscribe",
        back=f"../preferences/{quote(token)}",
        back_label=gettext("Manage your preferences instead"),
    )


@app.post("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe(token: str, request: Request) -> HTMLResponse:
    """RFC 8058 one-click: opt out of the token's channel now (consent row and suppression, one transaction).

    Idempotent: a repeat answers 200 and adds no second identical row. If the warehouse cannot be read
    (or no longer has the customer), the opt-out is still recorded by customer id; if the state database
    is down the answer is 503 with ``Retry-After`` (handled above), so the sender tries again.
    """
    link = _token(token)
    rt = _runtime()
    customer: dict[str, Any] = {"customer_id": link.customer_id}
    book: ConsentBook | None = None
    try:
        customer = _customer(rt, link.customer_id)
        columns = "customer_id, channel, opted_in, source, consented_at"
        prefs = read_by_ids(rt.warehouse, "channel_preferences", [link.customer_id], columns)
        book = consent.book_from_rows(records(prefs))
    except HTTPException:
        log.warning(
            "one-click unsubscribe for customer %s not in the warehouse; recorded by id", link.customer_id
        )
    except sa.exc.SQLAlchemyError as exc:
        if rt.settings.state_url is None and isinstance(exc, sa.exc.OperationalError):
            raise  # the state lives in the warehouse: it is down too (503)
        log.warning(
            "one-click unsubscribe: warehouse unreadable (%s); recorded by customer id", type(exc).__name__
        )
    _set_consent(
        rt, customer, link.channel, False, "one_click", request=_fingerprint(request, token), book=book
    )
    lang = _lang(customer if "locale" in customer else None, request)
    return _message(
        lang,
        _("You are unsubscribed"),
        _("You will not receive these messages any more."),
        back=f"../preferences/{quote(token)}",
        back_label=i18n.translations(lang).gettext("Manage your preferences"),
    )


def _answer_label(answer: str) -> str:
    return {
        "positive": _("Yes, I am happy"),
        "negative": _("No, thank you"),
        "later": _("Contact me later"),
    }[answer]


def _answer_link(token: str, answer: str) -> LinkToken:
    link = _token(token)
    if answer not in ANSWERS:
        raise HTTPException(400, UNKNOWN_ANSWER)
    return link


@app.get("/respond/{token}/{answer}", response_class=HTMLResponse)
def confirm_response(token: str, answer: str, request: Request) -> HTMLResponse:
    """A confirmation page: link scanners follow GETs, and a "negative" would end a sequence."""
    link = _answer_link(token, answer)
    lang = _lang(_maybe_customer(_runtime(), link.customer_id), request)
    gettext = i18n.translations(lang).gettext
    return _render(
        "page.html.j2",
        lang,
        _("Confirm your answer"),
        paragraphs=[gettext("Your answer: %(answer)s") % {"answer": gettext(_answer_label(answer))}],
        button=gettext("Send my answer"),
        button_id="respond",
    )


@app.post("/respond/{token}/{answer}", response_class=HTMLResponse)
def respond(token: str, answer: str, request: Request) -> HTMLResponse:
    """Record a positive, negative or "later" (snoozed) response; repeated clicks the same day count once."""
    link = _answer_link(token, answer)
    rt = _runtime()
    responses.record(
        rt.state,
        link.customer_id,
        answer,
        at=_now(),
        source="link",
        campaign=link.campaign,
        channel=link.channel,
        snooze_days=rt.settings.snooze_days,
    )
    lang = _lang(_maybe_customer(rt, link.customer_id), request)
    return _message(lang, _("Thank you"), _("We have noted your answer."))


@app.post("/webhooks/sendgrid")
async def sendgrid_webhook(request: Request) -> JSONResponse:
    """SendGrid's signed event webhook (configure the public key as LOYALFLOW_SENDGRID_WEBHOOK_PUBLIC_KEY)."""
    from loyalflow.web.events import SIGNATURE_HEADER, TIMESTAMP_HEADER, ingest

    settings = get_settings()
    if not settings.sendgrid_webhook_public_key:
        return JSONResponse({"error": "Webhook verification is not configured."}, status_code=403)
    try:
        counts = ingest(
            settings,
            "sendgrid",
            await request.body(),
            signature=request.headers.get(SIGNATURE_HEADER),
            timestamp=request.headers.get(TIMESTAMP_HEADER),
        )
    except LoyalflowError as exc:
        return JSONResponse({"error": str(exc)}, status_code=403)
    return JSONResponse(counts)
