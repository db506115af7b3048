"""The preference centre and one-click unsubscribe (FastAPI; mounted in Airflow by loyalflow_plugin.py).

Routes follow :func:`loyalflow.compose.context.links`. Every route verifies the HMAC-signed token first: a
forged or altered token gets 400 and changes nothing. POST /unsubscribe/{token} is the RFC 8058
one-click endpoint (no cookies, no CSRF token). Run alone with ``uvicorn loyalflow.web.preferences:app``.
"""

from __future__ import annotations

import datetime as dt
import html
from typing import Any
from urllib.parse import parse_qs

import sqlalchemy as sa
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse

from loyalflow.compose.tokens import LinkToken, verify
from loyalflow.decide import consent, responses, suppressions
from loyalflow.decide.addresses import normalise
from loyalflow.settings import get_settings

CHANNELS = {"email": "email", "sms": "phone"}
SOURCE = "preference_centre"
app = FastAPI(title="loyalflow preference centre", docs_url=None, redoc_url=None, openapi_url=None)


def _runtime() -> Any:
    from loyalflow.runtime import Runtime

    return Runtime(get_settings())


def _token(value: str) -> LinkToken:
    token = verify(get_settings().secret_key, value)
    if token is None or token.channel not in CHANNELS:
        raise HTTPException(400, "This link is invalid or has been altered.")
    return token


def _customer(rt: Any, customer_id: str) -> dict[str, Any]:
    with rt.warehouse.connect() as conn:
        row = conn.execute(
            sa.text("SELECT * FROM customers WHERE customer_id = :c"), {"c": customer_id}
        ).first()
    if row is None:
        raise HTTPException(404, "We could not find your subscription.")
    return dict(row._mapping)


def _consent(rt: Any, customer_id: str) -> dict[str, bool]:
    """Whether each channel is opted in now (warehouse and consent ledger, scope ``all``)."""
    book = consent.effective(rt.warehouse, rt.state, [customer_id])
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return {ch: bool((row := book.latest(customer_id, ch, at=now)) and row.opted_in) for ch in CHANNELS}


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
) -> None:
    """Append a consent row and, on opt-out, an unsubscribe suppression, in one state transaction.

    loyalflow never writes to the warehouse: the change reaches the CRM through ``consent export``.
    """
    cid = str(customer["customer_id"])
    address = normalise(channel, customer.get(CHANNELS[channel]))
    with rt.state.begin() as conn:
        consent.record(
            conn, cid, channel, opted_in, source, scope=scope, until=until, request_fingerprint=request
        )
        if address is None or until is not None:
            return
        if opted_in:
            suppressions.remove(conn, channel, address, scope=scope)
        else:
            suppressions.add(
                conn, channel, address, "unsubscribed", scope=scope, source=source, customer_id=cid
            )


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(
        f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'></head>"
        f"<body style='font-family: sans-serif; max-width: 36em; margin: 2em auto'>"
        f"<h1>{html.escape(title)}</h1>{body}</body></html>",
        status_code=status,
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


async def _form(request: Request) -> dict[str, list[str]]:
    return parse_qs((await request.body()).decode("utf-8", "replace"))


@app.exception_handler(HTTPException)
async def _error(request: Request, exc: HTTPException) -> HTMLResponse:
    return _page("Sorry", f"<p>{html.escape(str(exc.detail))}</p>", exc.status_code)


@app.get("/preferences/{token}", response_class=HTMLResponse)
def show_preferences(token: str, saved: int = 0) -> HTMLResponse:
    """The customer's channels with their current opt-in state, as a form."""
    link = _token(token)
    rt = _runtime()
    customer = _customer(rt, link.customer_id)
    state = _consent(rt, link.customer_id)
    boxes = "".join(
        f"<p><label><input type='checkbox' name='{ch}' id='pref-{ch}' value='on'"
        f"{' checked' if state[ch] else ''}{'' if customer.get(col) else ' disabled'}> "
        f"{'Email' if ch == 'email' else 'Text messages (SMS)'}</label></p>"
        for ch, col in CHANNELS.items()
    )
    note = "<p id='saved' role='status'>Your preferences are saved.</p>" if saved else ""
    return _page(
        "Your communication preferences",
        f"{note}<form method='post' id='preferences'>{boxes}"
        "<p><button type='submit' id='save'>Save preferences</button></p></form>",
    )


@app.post("/preferences/{token}", response_class=HTMLResponse)
async def save_preferences(token: str, request: Request) -> HTMLResponse:
    """Store each changed channel as a new consent row (source ``preference_centre``)."""
    link = _token(token)
    form = await _form(request)
    rt = _runtime()
    customer = _customer(rt, link.customer_id)
    current = _consent(rt, link.customer_id)
    for channel, column in CHANNELS.items():
        wanted = form.get(channel, [""])[0] == "on"
        if wanted != current[channel] and (customer.get(column) or not wanted):
            _set_consent(rt, customer, channel, wanted, SOURCE)
    return show_preferences(token, saved=1)


@app.get("/unsubscribe/{token}", response_class=HTMLResponse)
def confirm_unsubscribe(token: str) -> HTMLResponse:
    """A confirmation page (GET never changes anything: link scanners follow GETs)."""
    link = _token(token)
    label = "emails" if link.channel == "email" else "text messages"
    return _page(
        "Unsubscribe",
        f"<form method='post'><p>Stop all {label} from us?</p>"
        "<p><button type='submit' id='unsubscribe'>Unsubscribe</button></p></form>"
        f"<p><a href='../preferences/{html.escape(token)}'>Manage your preferences instead</a></p>",
    )


@app.post("/unsubscribe/{token}", response_class=HTMLResponse)
def unsubscribe(token: str) -> HTMLResponse:
    """RFC 8058 one-click: opt out of the token's channel at once (consent row and suppression)."""
    link = _token(token)
    rt = _runtime()
    _set_consent(rt, _customer(rt, link.customer_id), link.channel, False, "one_click")
    return _page("You are unsubscribed", "<p id='done'>You will not receive these messages any more.</p>")


@app.api_route("/respond/{token}/{answer}", methods=["GET", "POST"], response_class=HTMLResponse)
def respond(token: str, answer: str) -> HTMLResponse:
    """Record a positive, negative or "later" (snoozed) response; repeated clicks the same day count once."""
    link = _token(token)
    if answer not in ("positive", "negative", "later"):
        raise HTTPException(400, "Unknown answer.")
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    responses.record(
        _runtime().state,
        link.customer_id,
        answer,
        at=now,
        source="link",
        campaign=link.campaign,
        channel=link.channel,
        snooze_days=get_settings().snooze_days,
    )
    return _page("Thank you", "<p id='done'>We have noted your answer.</p>")


@app.post("/webhooks/sendgrid")
async def sendgrid_webhook(request: Request) -> JSONResponse:
    """SendGrid's signed event webhook (configure the public key as LOYALFLOW_SENDGRID_WEBHOOK_PUBLIC_KEY)."""
    from loyalflow.errors import LoyalflowError
    from loyalflow.web.events import SIGNATURE_HEADER, TIMESTAMP_HEADER, ingest

    settings = get_settings()
    if not settings.sendgrid_webhook_public_key:
        raise HTTPException(403, "Webhook verification is not configured.")
    try:
        counts = ingest(
            settings,
            "sendgrid",
            await request.body(),
            signature=request.headers.get(SIGNATURE_HEADER),
            timestamp=request.headers.get(TIMESTAMP_HEADER),
        )
    except LoyalflowError as exc:
        raise HTTPException(403, str(exc)) from None
    return JSONResponse(counts)
