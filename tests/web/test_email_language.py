"""An email's ``lang`` is the language of its copy, not the customer's locale (English templates: en)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

from loyalflow.pipeline import run
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.settings import Settings
from tests.compliance_helpers import outbox
from tests.factories import Shop

DAY = dt.datetime(2026, 11, 20, 14, 0)


def html_lang(message: dict) -> str:
    return re.search(r'<html lang="([^"]*)"', message["html"]).group(1)  # type: ignore[union-attr]


def test_a_french_guest_gets_english_copy_marked_english(settings: Settings, shop: Shop) -> None:
    fr = shop.customer(locale="fr_FR", first_name="Élodie")
    en = shop.customer(locale="en_GB")
    for cid in (fr, en):
        shop.order(cid, DAY)
    run(Runtime(settings), "thank_you", RunOptions(DAY.date(), "lang-1", now=DAY))
    mails = {m["customer_id"]: m for m in outbox(settings.outbox_dir)}
    assert html_lang(mails[fr]) == "en" and html_lang(mails[en]) == "en"


def test_a_campaign_whose_copy_is_french_says_so(settings: Settings, shop: Shop, project: Path) -> None:
    path = project / "campaigns" / "thank_you.yaml"
    path.write_text(path.read_text() + "params:\n  language: fr\n")
    cid = shop.customer(locale="en_US")
    shop.order(cid, DAY)
    run(Runtime(Settings()), "thank_you", RunOptions(DAY.date(), "lang-2", now=DAY))
    (mail,) = outbox(settings.outbox_dir)
    assert html_lang(mail) == "fr"
