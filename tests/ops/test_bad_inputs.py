"""Bad input gets a one-line, actionable error naming the file, field or customer, and sends nothing."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from loyalflow.errors import CampaignError
from loyalflow.ops.cli import app
from loyalflow.ops.reports import decisions_for
from loyalflow.pipeline import run
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.settings import Settings
from loyalflow.spec import load_campaign
from tests.cli_helpers import AS_OF, invoke_run, outbox_lines, runner
from tests.factories import Shop

ORDER_AT = dt.datetime(2026, 11, 20, 10)


def cli_run(settings: Settings) -> tuple[int, str]:
    result = invoke_run(settings)
    return result.exit_code, result.output


def error_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, output
    return lines[0]


@pytest.fixture
def buyer(shop: Shop) -> str:
    cid = shop.customer()
    shop.order(cid, ORDER_AT)
    return cid


def campaign_file(project: Path) -> Path:
    return project / "campaigns" / "thank_you.yaml"


def test_malformed_yaml(project: Path) -> None:
    path = campaign_file(project)
    path.write_text(path.read_text().replace("channels: [email, sms]", "channels: [email, sms"))
    with pytest.raises(CampaignError) as exc:
        load_campaign(path)
    assert "thank_you.yaml:" in str(exc.value) and "malformed YAML" in str(exc.value)
    assert "\n" not in str(exc.value)


def test_unknown_field_names_field_and_line(project: Path) -> None:
    path = campaign_file(project)
    text = path.read_text().replace("priority: 90", "priorty: 90")
    path.write_text(text)
    line = next(i for i, row in enumerate(text.splitlines(), 1) if row.startswith("priorty"))
    with pytest.raises(CampaignError, match=rf"thank_you.yaml:{line}: priorty: unknown field"):
        load_campaign(path)


def test_wrong_type_names_nested_field(project: Path) -> None:
    path = campaign_file(project)
    path.write_text(path.read_text().replace("delay_days: 0", "delay_days: soon", 1))
    with pytest.raises(CampaignError, match=r"thank_you.yaml:\d+: steps.0.delay_days: Input should be"):
        load_campaign(path)


def test_missing_template(project: Path, settings: Settings, buyer: str) -> None:
    (project / "templates" / "thank_you" / "thanks.sms.j2").unlink()
    code, output = cli_run(settings)
    assert code == 1
    assert "missing template" in error_line(output) and "thanks.sms.j2" in error_line(output)
    assert outbox_lines(settings) == []


def test_template_syntax_error(project: Path, settings: Settings, buyer: str) -> None:
    (project / "templates" / "thank_you" / "thanks.txt.j2").write_text("{% block body %}{{ greeting }")
    code, output = cli_run(settings)
    assert code == 1 and "thank_you/thanks.txt.j2:1" in error_line(output)
    assert outbox_lines(settings) == []


def test_undefined_variable_stops_the_campaign_before_sending(
    project: Path, settings: Settings, shop: Shop, buyer: str
) -> None:
    for _ in range(3):
        shop.order(shop.customer(), ORDER_AT)
    html = project / "templates" / "thank_you" / "thanks.html.j2"
    html.write_text(html.read_text().replace("{{ product }}", "{{ produkt }}"))
    code, output = cli_run(settings)
    assert (
        code == 1
        and "'produkt' is undefined" in error_line(output)
        and "thanks.html.j2" in error_line(output)
    )
    assert outbox_lines(settings) == []


def test_sql_error(project: Path, settings: Settings, buyer: str) -> None:
    (project / "campaigns" / "sql" / "thank_you.sql").write_text("SELECT nope FROM orderz")
    code, output = cli_run(settings)
    assert code == 1 and "thank_you.sql: SQL error" in error_line(output) and "orderz" in error_line(output)
    assert outbox_lines(settings) == []


def test_missing_column(project: Path, settings: Settings, buyer: str) -> None:
    (project / "campaigns" / "sql" / "thank_you.sql").write_text(
        "SELECT customer_id, order_id AS anchor_id FROM orders"
    )
    code, output = cli_run(settings)
    assert code == 1 and "missing column(s) anchor_at" in error_line(output)
    assert outbox_lines(settings) == []


def test_empty_segment_file_and_empty_audience(project: Path, settings: Settings, shop: Shop) -> None:
    code, output = cli_run(settings)  # no orders at all: nothing due, said plainly
    assert code == 0 and "nothing to send" in output
    (project / "campaigns" / "sql" / "thank_you.sql").write_text("  \n")
    code, output = cli_run(settings)
    assert code == 1 and "thank_you.sql: the segment query is empty" in error_line(output)
    assert outbox_lines(settings) == []


def test_null_email_and_invalid_phone_skip_that_customer_only(settings: Settings, shop: Shop) -> None:
    no_email = shop.customer(email=None)
    bad_phone = shop.customer(email=None, phone="+1555", channels=("email", "sms"))
    fine = shop.customer()
    for cid in (no_email, bad_phone, fine):
        shop.order(cid, ORDER_AT)
    code, _ = cli_run(settings)
    assert code == 0
    assert [m["customer_id"] for m in outbox_lines(settings)] == [fine]
    rt = Runtime(settings)
    for cid in (no_email, bad_phone):
        reasons = set(decisions_for(rt.state, cid)["reason"])
        assert reasons == {"invalid_address"}, (cid, reasons)


def test_unicode_and_html_in_names(settings: Settings, shop: Shop) -> None:
    html_name = shop.customer(first_name="<b>Zoë</b> & Co")
    blank = shop.customer(first_name="   ")
    for cid in (html_name, blank):
        shop.order(cid, ORDER_AT)
    cli_run(settings)
    by_id = {m["customer_id"]: m for m in outbox_lines(settings)}
    assert "&lt;b&gt;Zoë&lt;/b&gt; &amp; Co" in by_id[html_name]["html"]
    assert "<b>Zoë</b>" not in by_id[html_name]["html"]
    assert by_id[html_name]["text"].startswith("Hi <b>Zoë</b> & Co,")
    assert by_id[blank]["text"].startswith("Hi there,")
    assert "Hi ," not in by_id[blank]["html"] and by_id[blank]["subject"].startswith("Thank you")


def test_unknown_persona_falls_back_to_default_variant(settings: Settings, shop: Shop) -> None:
    wedding = shop.customer(persona="wedding_couple")
    unknown = shop.customer(persona="astronaut")
    for cid in (wedding, unknown):
        shop.order(cid, ORDER_AT)
    totals = run(Runtime(settings), "thank_you", RunOptions(AS_OF, "persona-test"))
    assert totals == {"sent": 2}
    by_id = {m["customer_id"]: m for m in outbox_lines(settings)}
    assert "wedding coordinator" in by_id[wedding]["html"]
    assert (
        "wedding coordinator" not in by_id[unknown]["html"] and "View your booking" in by_id[unknown]["html"]
    )


def test_unknown_campaign_and_bad_date(settings: Settings) -> None:
    result = runner.invoke(app, ["run", "thank_yuo", "--as-of", "2026-11-20"])
    assert result.exit_code == 1 and "unknown campaign 'thank_yuo'" in result.output
    result = runner.invoke(app, ["run", "thank_you", "--as-of", "20/11/2026"])
    assert result.exit_code == 1 and "--as-of must be a date" in result.output
