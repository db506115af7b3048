"""The preference centre and one-click unsubscribe over HTTP (FastAPI's TestClient)."""

from __future__ import annotations

import datetime as dt
import logging
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from loyalflow.compose.tokens import LinkToken, sign
from loyalflow.decide import consent, suppressions
from loyalflow.runtime import Runtime
from loyalflow.settings import Settings, get_settings
from loyalflow.spec import Brand
from loyalflow.state import consent as ledger
from loyalflow.state import responses
from loyalflow.web import i18n
from loyalflow.web.preferences import CHANNELS, Topic, app, plan_save, topics
from tests.conftest import ROOT
from tests.factories import Shop

PHONE = "+14155550123"
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
ONE_CLICK = {"content": "List-Unsubscribe=One-Click", "headers": FORM}
EMAIL_RE = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


@pytest.fixture
def client(settings: Settings) -> TestClient:
    return TestClient(app)


def token(settings: Settings, cid: str, channel: str = "email", campaign: str | None = "thank_you") -> str:
    return sign(settings.secret_key, LinkToken(cid, channel, campaign))


def rows(settings: Settings, cid: str) -> list[tuple[str, str, bool, str]]:
    with Runtime(settings).state.connect() as conn:
        found = conn.execute(sa.select(ledger).where(ledger.c.customer_id == cid).order_by(ledger.c.id))
        return [(r.channel, r.scope, r.opted_in, r.source) for r in found]


def book(settings: Settings, cid: str) -> consent.ConsentBook:
    rt = Runtime(settings)
    return consent.effective(rt.warehouse, rt.state, [cid])


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def boxes(page: str) -> dict[str, bool]:
    """Every checkbox of a page by name: whether it is ticked."""
    found = {}
    for tag in re.findall(r"<input type=\"checkbox\"[^>]*>", page):
        name = re.search(r'name="([^"]+)"', tag).group(1)  # type: ignore[union-attr]
        found[name] = " checked" in tag
    return found


def ticked(page: str, **changes: bool) -> dict[str, str]:
    """The form a browser would post: the page's ticked boxes, with ``changes`` applied."""
    state = {**boxes(page), **{k.replace("__", ":"): v for k, v in changes.items()}}
    return {"action": "save", "topics": "shown", **{k: "on" for k, v in state.items() if v}}


# --- one-click ------------------------------------------------------------------------------------


def test_one_click_repeats_answer_200_and_add_no_second_row(
    settings: Settings, shop: Shop, client: TestClient
) -> None:
    cid = shop.customer(phone=PHONE, channels=("email", "sms"))
    url = f"/unsubscribe/{token(settings, cid)}"
    for _ in range(3):
        response = client.post(url, **ONE_CLICK)
        assert response.status_code == 200 and 'id="done"' in response.text
    assert rows(settings, cid) == [("email", "all", False, "one_click")]
    (supp,) = suppressions.list_(Runtime(settings).state, "email", f"{cid.lower()}@example.com")
    assert (supp["reason"], supp["scope"]) == ("unsubscribed", "all")
    # the CRM opts the customer in again later: a new one-click is a new opt-out
    shop.consent(cid, "email", True, at=now())
    assert client.post(url, **ONE_CLICK).status_code == 200
    assert rows(settings, cid) == [("email", "all", False, "one_click")] * 2
    assert not book(settings, cid).latest(cid, "email", at=now() + dt.timedelta(seconds=5)).opted_in


def test_get_never_unsubscribes(settings: Settings, shop: Shop, client: TestClient) -> None:
    cid = shop.customer()
    page = client.get(f"/unsubscribe/{token(settings, cid)}")
    assert page.status_code == 200
    assert '<form method="post">' in page.text and 'id="unsubscribe"' in page.text
    assert rows(settings, cid) == [] and suppressions.list_(Runtime(settings).state) == []
    assert client.head(f"/unsubscribe/{token(settings, cid)}").status_code in (200, 405)
    assert rows(settings, cid) == []


@pytest.mark.parametrize(
    "path",
    [
        "/unsubscribe/",
        "/unsubscribe/x",
        "/unsubscribe/" + "A" * 60_000,
        "/unsubscribe/%00",
        "/unsubscribe/%FF%FE",
        "/unsubscribe/..%2F..%2Fetc",
        "/unsubscribe/a.b.c",
        "/unsubscribe/%E2%98%83.%E2%98%83",
        "/preferences/",
        "/preferences/" + "B" * 5000,
        "/respond/x/positive",
        "/respond//positive",
        "/unsubscribe/WyJDMSIsImVtYWlsIiwidCJd.bad",
    ],
)
def test_malformed_or_huge_tokens_are_4xx_never_5xx(
    settings: Settings, client: TestClient, path: str
) -> None:
    for method in ("GET", "POST"):
        response = client.request(method, path, **(ONE_CLICK if method == "POST" else {}))
        assert 400 <= response.status_code < 500, (method, path[:40], response.status_code)
        assert "Traceback" not in response.text


def test_a_valid_token_for_another_channel_or_customer_gone_is_handled(
    settings: Settings, shop: Shop, client: TestClient
) -> None:
    push = sign(settings.secret_key, LinkToken("C00001", "push", None))
    assert client.post(f"/unsubscribe/{push}", **ONE_CLICK).status_code == 400
    gone = token(settings, "C99999")  # signed by us, but the warehouse has no such customer any more
    assert client.post(f"/unsubscribe/{gone}", **ONE_CLICK).status_code == 200
    assert rows(settings, "C99999") == [("email", "all", False, "one_click")]  # recorded by customer id
    assert client.get(f"/preferences/{gone}").status_code == 404


def test_state_database_down_is_503_with_retry_after_and_a_log_line_without_address(
    settings: Settings,
    shop: Shop,
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    cid = shop.customer(phone=PHONE, channels=("email", "sms"))
    monkeypatch.setenv(
        "LOYALFLOW_STATE_URL", "postgresql+psycopg2://postgres@127.0.0.1:1/nothing?connect_timeout=2"
    )
    get_settings.cache_clear()
    caplog.set_level(logging.INFO)
    for method, path in (
        ("POST", f"/unsubscribe/{token(settings, cid)}"),
        ("GET", f"/preferences/{token(settings, cid)}"),
        ("POST", f"/preferences/{token(settings, cid)}"),
        ("POST", f"/respond/{token(settings, cid)}/negative"),
    ):
        response = client.request(method, path, **ONE_CLICK)
        assert response.status_code == 503, (method, path)
        assert response.headers["Retry-After"] == "120"
        assert "try again" in response.text
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "answered 503" in text and "database unavailable" in text
    assert not EMAIL_RE.search(text) and PHONE not in text


def test_warehouse_unreadable_one_click_is_still_recorded_when_the_state_is_apart(
    settings: Settings, shop: Shop, client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOYALFLOW_STATE_URL", f"sqlite:///{tmp_path / 'state.db'}")
    monkeypatch.setenv(
        "LOYALFLOW_WAREHOUSE_URL", "postgresql+psycopg2://postgres@127.0.0.1:1/gone?connect_timeout=2"
    )
    get_settings.cache_clear()
    response = client.post(f"/unsubscribe/{token(settings, 'C00042')}", **ONE_CLICK)
    assert response.status_code == 200
    assert rows(Settings(), "C00042") == [("email", "all", False, "one_click")]


# --- responses ------------------------------------------------------------------------------------


def test_response_links_confirm_on_get_and_record_on_post(
    settings: Settings, shop: Shop, client: TestClient
) -> None:
    cid = shop.customer()
    url = f"/respond/{token(settings, cid, campaign='dormant_reactivation')}/negative"
    page = client.get(url)
    assert page.status_code == 200 and "No, thank you" in page.text and 'id="respond"' in page.text
    with Runtime(settings).state.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(responses)).scalar() == 0
    assert client.post(url).status_code == 200
    with Runtime(settings).state.connect() as conn:
        (row,) = conn.execute(sa.select(responses)).mappings().all()
    assert (row["answer"], row["campaign"], row["source"]) == ("negative", "dormant_reactivation", "link")


# --- the preference centre ------------------------------------------------------------------------


def test_the_page_offers_channels_and_topics_from_the_campaign_files(
    settings: Settings, shop: Shop, client: TestClient
) -> None:
    cid = shop.customer(phone=PHONE, channels=("email",))
    page = client.get(f"/preferences/{token(settings, cid)}")
    assert page.status_code == 200
    found = boxes(page.text)
    assert found["email"] and not found["sms"]
    for channel in CHANNELS:
        for scope in ("marketing", "referral_ask", "dormant_reactivation", "remorse_reduction"):
            assert f"{channel}:{scope}" in found
        assert f"{channel}:thank_you" not in found  # relationship: not a topic
    assert found["email:referral_ask"]  # opted in by email: every topic on
    assert '<label for="pref-email">' in page.text and "<legend>Topics</legend>" in page.text
    assert (
        page.headers["Cache-Control"] == "no-store"
        and "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    )
    assert "#1f3b4d" in page.text and "Harbor &amp; Pine</span>" in page.text  # brand.yaml
    assert "18 Quayside Walk" in page.text
    assert f"{cid.lower()}@example.com" not in page.text and "c•••@example.com" in page.text


def test_saving_a_topic_appends_a_scoped_row_and_a_confirmation(
    settings: Settings, shop: Shop, client: TestClient
) -> None:
    cid = shop.customer(phone=PHONE, channels=("email", "sms"))
    url = f"/preferences/{token(settings, cid)}"
    saved = client.post(url, data=ticked(client.get(url).text, email__referral_ask=False))
    assert saved.status_code == 200 and 'id="saved" class="status" role="status"' in saved.text
    assert "Your preferences are saved." in saved.text and 'id="back"' in saved.text
    assert rows(settings, cid) == [("email", "referral_ask", False, "preference_centre")]
    assert suppressions.list_(Runtime(settings).state) == []  # topics are consent rows, not suppressions
    later = now() + dt.timedelta(seconds=1)
    assert (
        not book(settings, cid).latest(cid, "email", ("all", "marketing", "referral_ask"), at=later).opted_in
    )
    assert (
        book(settings, cid)
        .latest(cid, "email", ("all", "marketing", "dormant_reactivation"), at=later)
        .opted_in
    )
    page = client.get(url).text
    assert not boxes(page)["email:referral_ask"] and boxes(page)["sms:referral_ask"]
    assert client.post(url, data=ticked(page)).status_code == 200  # nothing changed: nothing appended
    assert len(rows(settings, cid)) == 1


def test_no_marketing_but_one_campaign_and_a_channel_switch(
    settings: Settings, shop: Shop, client: TestClient
) -> None:
    cid = shop.customer(phone=PHONE, channels=("email", "sms"))
    url = f"/preferences/{token(settings, cid)}"
    page = client.get(url).text
    off = {f"email__{s}": False for s in ("marketing", "dormant_reactivation", "remorse_reduction")}
    off |= {"email__buying_cycle_nurture": False}
    client.post(url, data=ticked(page, **off))  # only the referral ask by email
    later = now() + dt.timedelta(seconds=1)
    b = book(settings, cid)
    assert b.latest(cid, "email", ("all", "marketing", "referral_ask"), at=later).opted_in
    assert not b.latest(cid, "email", ("all", "marketing", "remorse_reduction"), at=later).opted_in
    assert b.latest(cid, "email", ("all",), at=later).opted_in  # the thank-you still comes
    client.post(url, data=ticked(client.get(url).text, sms=False))  # SMS off altogether
    assert rows(settings, cid)[-1] == ("sms", "all", False, "preference_centre")
    assert suppressions.list_(Runtime(settings).state, "sms", PHONE)[0]["scope"] == "all"
    page = client.get(url).text
    assert not boxes(page)["sms"] and boxes(page)["sms:marketing"]  # as turning it on would leave them
    client.post(url, data=ticked(page, sms=True))
    assert suppressions.list_(Runtime(settings).state, "sms", PHONE) == []
    assert (
        book(settings, cid)
        .latest(cid, "sms", ("all", "marketing"), at=now() + dt.timedelta(seconds=1))
        .opted_in
    )


def test_pause_for_30_days_and_unsubscribe_from_everything(
    settings: Settings, shop: Shop, client: TestClient
) -> None:
    cid = shop.customer(phone=PHONE, channels=("email", "sms"))
    url = f"/preferences/{token(settings, cid)}"
    paused = client.post(url, data={"action": "pause"})
    assert paused.status_code == 200 and "paused until" in paused.text
    with Runtime(settings).state.connect() as conn:
        pauses = conn.execute(sa.select(ledger)).mappings().all()
    assert {(p["channel"], p["scope"], p["opted_in"], p["source"]) for p in pauses} == {
        ("email", "marketing", False, "pause"),
        ("sms", "marketing", False, "pause"),
    }
    for p in pauses:
        assert abs((p["until"] - p["recorded_at"]) - dt.timedelta(days=30)) < dt.timedelta(seconds=5)
    b, soon, after = book(settings, cid), now() + dt.timedelta(days=1), now() + dt.timedelta(days=31)
    assert not b.latest(cid, "email", ("all", "marketing", "referral_ask"), at=soon).opted_in
    assert b.latest(cid, "email", ("all", "marketing", "referral_ask"), at=after).opted_in  # it ends
    assert b.latest(cid, "email", ("all", "relationship", "thank_you"), at=soon).opted_in  # bookings: on
    assert 'id="paused"' in client.get(url).text
    gone = client.post(url, data={"action": "unsubscribe_all"})
    assert gone.status_code == 200 and "unsubscribed from everything" in gone.text
    assert rows(settings, cid)[-2:] == [
        ("email", "all", False, "preference_centre"),
        ("sms", "all", False, "preference_centre"),
    ]
    b = book(settings, cid)
    for channel in CHANNELS:
        assert not b.latest(cid, channel, ("all", "relationship", "thank_you"), at=after).opted_in
    state = Runtime(settings).state
    assert {r["channel"] for r in suppressions.list_(state)} == {"email", "sms"}
    client.post(url, data={"action": "unsubscribe_all"})  # again: nothing new
    assert len(rows(settings, cid)) == 4


def test_plan_save_orders_the_switch_before_its_topics() -> None:
    start = dt.datetime(2026, 1, 1)
    b = consent.book_from_rows(
        [{"customer_id": "C1", "channel": "email", "opted_in": False, "source": "crm", "consented_at": start}]
    )
    offered = [Topic("marketing", "Offers and news"), Topic("promo", "Promo", finer=True)]
    customer = {"customer_id": "C1", "email": "c1@example.com", "phone": None}
    form = {"email": ["on"], "email:promo": ["on"], "topics": ["shown"]}
    changes, after = plan_save(b, customer, form, offered, start + dt.timedelta(days=1))
    assert [(c.channel, c.scope, c.opted_in) for c in changes] == [
        ("email", "all", True),
        ("email", "marketing", False),
        ("email", "promo", True),
    ]
    assert [c.at for c in changes] == sorted(c.at for c in changes)
    moment = start + dt.timedelta(days=2)
    assert after.latest("C1", "email", ("all", "marketing", "promo"), at=moment).opted_in
    assert not after.latest("C1", "email", ("all", "marketing", "other"), at=moment).opted_in
    changes, _ = plan_save(b, customer, {"email": ["on"]}, offered, moment)  # a form without topic boxes
    assert [(c.scope, c.opted_in) for c in changes] == [("all", True)]


def test_escaping_and_a_broken_campaign_file(
    settings: Settings, shop: Shop, client: TestClient, project: Path
) -> None:
    path = project / "campaigns" / "referral_ask.yaml"
    path.write_text(path.read_text().replace("name: Referral ask", 'name: "Refer <script>alert(1)</script>"'))
    (project / "campaigns" / "broken.yaml").write_text("id: [")
    cid = shop.customer()
    page = client.get(f"/preferences/{token(settings, cid)}").text
    assert "<script>" not in page and "Refer &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "email:dormant_reactivation" in page


def test_brand_colour_must_be_a_hex_colour() -> None:
    fields = {
        "name": "B",
        "from_email": "a@b.example",
        "from_name": "B",
        "postal_address": "1 Street, Town",
        "website": "https://b.example",
        "support_phone": "1",
        "support_url": "https://b.example/help",
    }
    assert Brand(**fields).primary_color == "#1f3b4d" and Brand(**fields).logo_text is None
    with pytest.raises(ValueError):
        Brand(**fields, primary_color="red;} body{display:none")


# --- languages ------------------------------------------------------------------------------------


def test_pages_follow_the_customers_locale(settings: Settings, shop: Shop, client: TestClient) -> None:
    fr = shop.customer(locale="fr_FR", phone=PHONE, channels=("email", "sms"))
    de = shop.customer(locale="de_DE")
    page = client.get(f"/preferences/{token(settings, fr)}").text
    assert '<html lang="fr">' in page and "Vos préférences de communication" in page
    assert "Offres et actualités" in page and "Parrainage" in page
    assert "Enregistrer mes préférences" in page
    saved = client.post(f"/preferences/{token(settings, fr)}", data={"action": "pause"}).text
    assert "en pause jusqu’au" in saved and re.search(r"\d+ \w+ \d{4}", saved)  # « 31 décembre 2026 »
    confirm = client.get(f"/unsubscribe/{token(settings, fr, 'sms')}").text
    assert "Ne plus recevoir les SMS de Harbor &amp; Pine Hotels\u00a0?" in confirm
    assert '<html lang="en">' in client.get(f"/preferences/{token(settings, de)}").text  # no German yet


def test_error_pages_follow_accept_language(settings: Settings, client: TestClient) -> None:
    french = client.get("/preferences/garbage", headers={"Accept-Language": "fr-CA,fr;q=0.9,en;q=0.5"})
    assert french.status_code == 400 and '<html lang="fr">' in french.text
    assert "Ce lien n’est pas valide ou a été modifié." in french.text
    english = client.get("/preferences/garbage")
    assert "This link is invalid or has been altered." in english.text


def test_every_message_has_a_french_translation() -> None:
    web = Path(i18n.__file__).parent
    sources = [web / "preferences.py", *sorted((web / "templates").glob("*.j2"))]
    msgids = {
        m.group(1)
        for path in sources
        for m in re.finditer(r'(?:\b_|gettext)\(\s*"((?:[^"\\]|\\.)*)"', path.read_text(encoding="utf-8"))
    }
    assert len(msgids) > 40
    french = i18n.translations("fr")
    missing = sorted(
        m for m in msgids if french.gettext(m) == m and m not in {"SMS", "%(channel)s: %(topics)s"}
    )
    assert missing == []
    names = [t.label for t in topics(Settings(home=ROOT))]
    assert len(names) == 5 and [n for n in names if french.gettext(n) == n] == []  # shipped campaigns
    assert i18n.available() == ("en", "fr")
