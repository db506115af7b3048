"""Thank-you end to end through the library pipeline and the CLI, on a contract-only warehouse."""

from __future__ import annotations

import datetime as dt
import email
from pathlib import Path

from loyalflow.decide.eligibility import in_holdout
from loyalflow.settings import Settings
from tests.cli_helpers import AS_OF, invoke_run, outbox_lines
from tests.factories import Shop

DAY = dt.datetime(2026, 11, 20, 14, 30)


def run_cli(settings: Settings, *args: str) -> str:
    result = invoke_run(settings, "thank_you", *args)
    assert result.exit_code == 0, result.output
    return result.output


def test_buyers_thanked_once_and_rerun_adds_nothing(settings: Settings, shop: Shop) -> None:
    buyer = shop.customer(first_name="Zoë")
    shop.order(buyer, DAY)
    shop.order(buyer, DAY + dt.timedelta(hours=2))  # two orders the same day: still one thank-you
    yesterday = shop.customer()
    shop.order(yesterday, DAY - dt.timedelta(days=3))
    returned = shop.customer()
    shop.order(returned, DAY, status="returned")
    run_cli(settings)
    lines = outbox_lines(settings)
    assert [(m["customer_id"], m["step"], m["channel"]) for m in lines] == [(buyer, "thanks", "email")]
    msg = lines[0]
    assert msg["subject"].startswith("Zoë, thank you")
    assert msg["headers"]["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["headers"]["List-Unsubscribe"].startswith("<http")
    assert set(msg) >= {
        "campaign",
        "step",
        "customer_id",
        "channel",
        "to",
        "subject",
        "text",
        "html",
        "headers",
        "send_at",
        "idempotency_key",
    }
    eml = email.message_from_bytes(next(Path(settings.outbox_dir).rglob("*.eml")).read_bytes())
    assert eml.get_content_type() == "multipart/alternative"
    assert eml["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    output = run_cli(settings)
    assert "sent already" in output
    assert len(outbox_lines(settings)) == 1


def test_referrer_is_thanked_when_friend_buys(settings: Settings, shop: Shop) -> None:
    referrer = shop.customer(first_name="Maya")
    friend = shop.customer(first_name="Leo")
    shop.order(friend, DAY, referred_by=referrer)
    run_cli(settings)
    steps = {(m["customer_id"], m["step"]) for m in outbox_lines(settings)}
    assert steps == {(friend, "thanks"), (referrer, "referrer_thanks")}
    referrer_msg = next(m for m in outbox_lines(settings) if m["step"] == "referrer_thanks")
    assert "Leo" in referrer_msg["subject"]


def test_falls_back_to_sms_when_email_not_opted_in(settings: Settings, shop: Shop) -> None:
    cid = shop.customer(phone="+14155550123", channels=("sms",), timezone="America/Los_Angeles")
    shop.order(cid, DAY)
    run_cli(settings)
    (msg,) = outbox_lines(settings)
    assert msg["channel"] == "sms" and msg["to"] == "+14155550123"
    assert "Reply STOP to opt out" in msg["text"]
    assert "subject" not in msg


def test_no_consent_row_means_no_message(settings: Settings, shop: Shop) -> None:
    cid = shop.customer(channels=())
    shop.order(cid, DAY)
    withdrew = shop.customer()
    shop.consent(withdrew, "email", False, at=dt.datetime(2026, 1, 1))  # latest row wins
    shop.order(withdrew, DAY)
    output = run_cli(settings)
    assert outbox_lines(settings) == []
    assert "no consent for any channel" in output


def test_dry_run_and_send_limit(settings: Settings, shop: Shop) -> None:
    for _ in range(5):
        shop.order(shop.customer(), DAY)
    run_cli(settings, "--dry-run")
    assert outbox_lines(settings) == []
    run_cli(settings, "--send-limit", "2")
    assert len(outbox_lines(settings)) == 2
    run_cli(settings)
    assert len(outbox_lines(settings)) == 5


def test_warehouse_from_an_airflow_connection(settings: Settings, shop: Shop, monkeypatch) -> None:
    cid = shop.customer()
    shop.order(cid, DAY)
    path = settings.warehouse_url.removeprefix("sqlite:///")
    monkeypatch.setenv("AIRFLOW_CONN_CUSTOMER_WAREHOUSE", f"sqlite:///{path}")
    from loyalflow.pipeline import run
    from loyalflow.runtime import RunOptions, Runtime

    via_conn = settings.model_copy(
        update={"warehouse_url": "sqlite:///nowhere.db", "warehouse_conn_id": "customer_warehouse"}
    )
    assert run(Runtime(via_conn), "thank_you", RunOptions(AS_OF, "conn-test")) == {"sent": 1}


CAMPAIGN_IDS = (
    "buying_cycle_nurture",
    "thank_you",
    "remorse_reduction",
    "referral_ask",
    "dormant_reactivation",
)


def test_cli_runs_every_campaign_on_a_contract_only_warehouse(settings: Settings, shop: Shop) -> None:
    """Each campaign id through `loyalflow run`, with data that makes every program send something."""
    vip = shop.customer(first_name="Vera", persona="corporate_travel_manager")
    shop.order(vip, DAY - dt.timedelta(days=21), total=9000.0)  # referral ask: top 20% by value
    settled = shop.customer(persona="vacationing_family")
    shop.order(settled, DAY - dt.timedelta(days=3), total=400.0)  # remorse reassurance
    dormant = shop.customer(persona="event_planner")
    shop.order(dormant, DAY - dt.timedelta(days=180))  # dormancy starts today: reminder
    reader = shop.customer(persona="wedding_couple")
    shop.event(reader, "ebook_download", DAY - dt.timedelta(days=2), "venue-checklist")
    crowd = [shop.customer() for _ in range(4)]  # value tiers need a crowd
    for i, quiet in enumerate(crowd):
        shop.order(quiet, DAY - dt.timedelta(days=400 + i), total=10.0)  # dormant for long: they enter too
    sent: dict[str, set[str]] = {}
    for campaign in CAMPAIGN_IDS:
        result = invoke_run(settings, campaign)
        assert result.exit_code == 0, result.output
    for m in outbox_lines(settings):
        sent.setdefault(m["campaign"], set()).add(m["customer_id"])
    assert sent["referral_ask"] == {vip} and sent["remorse_reduction"] == {settled}
    # state entry: on its first run the whole dormant base enters, not only today's newly dormant guest
    dormant_base = {c for c in (dormant, *crowd) if not in_holdout("dormant_reactivation", c, 10)}
    assert dormant in dormant_base and sent["dormant_reactivation"] == dormant_base
    assert sent["buying_cycle_nurture"] == {reader}


def test_referral_codes_are_stored_when_a_message_shows_one(project: Path, shop: Shop) -> None:
    """A code is stored (so referred orders can be attributed) when the message showed it, not before."""
    from loyalflow.compose.referral import code_for, customer_for
    from loyalflow.pipeline import run
    from loyalflow.runtime import RunOptions, Runtime

    plain, coded = shop.customer(), shop.customer()
    shop.order(plain, DAY)
    settings = Settings()
    rt = Runtime(settings)
    run(rt, "thank_you", RunOptions(AS_OF, "plain"))
    assert customer_for(rt.state, code_for(settings.secret_key, plain)) is None  # the thank-you shows none
    text = project / "templates" / "thank_you" / "thanks.txt.j2"
    shown = "Your code: {{ referral_code }}\n{% endblock %}"
    text.write_text(text.read_text().replace("{% endblock %}", shown))
    shop.order(coded, DAY)
    rt = Runtime(Settings())
    run(rt, "thank_you", RunOptions(AS_OF, "coded"))
    line = next(m for m in outbox_lines(settings) if m["customer_id"] == coded)
    assert code_for(settings.secret_key, coded) in line["text"]
    assert customer_for(rt.state, code_for(settings.secret_key, coded).lower()) == coded
    assert customer_for(rt.state, code_for(settings.secret_key, plain)) is None
    assert customer_for(rt.state, "HP-NOTACODE") is None
