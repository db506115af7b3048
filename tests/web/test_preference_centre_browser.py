"""A guest walks the preference centre in headless Chromium: a topic, a pause, then everything off.

Each choice is checked against the next pipeline run, and the page is photographed in English and in
French (``out/preferences-en.png``, ``out/preferences-fr.png``) for a person to look at.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from loyalflow.compose.context import links
from loyalflow.decide.eligibility import in_holdout
from loyalflow.pipeline import run
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.settings import Settings
from loyalflow.state import consent as ledger
from tests.compliance_helpers import outbox
from tests.conftest import ROOT
from tests.factories import Shop

# Runs happen after the clicks (consent recorded after a send moment does not count for it): tomorrow,
# 15:00 UTC, 10:00 in New York, inside the SMS window.
DAY = dt.datetime.combine(dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1), dt.time(15))
PHONE = "+14155550123"
SHOTS = ROOT / "out"


def go(settings: Settings, campaign: str, when: dt.datetime) -> dict[str, int]:
    opts = RunOptions(when.date(), f"w-{campaign}-{when:%Y%m%d%H%M}", now=when)
    return run(Runtime(settings), campaign, opts)


def sent(settings: Settings, campaign: str, cid: str, day: dt.datetime) -> list[str]:
    """Channels of ``campaign``'s messages to ``cid`` sent on ``day``."""
    return sorted(
        m["channel"]
        for m in outbox(settings.outbox_dir)
        if (m["campaign"], m["customer_id"]) == (campaign, cid) and m["send_at"].startswith(f"{day:%Y-%m-%d}")
    )


def outside_holdout(prefix: str, campaign: str = "remorse_reduction") -> str:
    return next(f"{prefix}{i:03d}" for i in range(1000) if not in_holdout(campaign, f"{prefix}{i:03d}", 10))


def submit(driver: Any, button: str, expect: str) -> Any:
    """Click ``button`` and wait for the next page's element ``expect``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver.find_element(By.ID, button).click()
    return WebDriverWait(driver, 15).until(ec.presence_of_element_located((By.ID, expect)))


def screenshot(driver: Any, path: Path) -> None:
    """The whole page, not just the window."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(3):  # the window's frame takes some height: grow until nothing scrolls
        height = int(driver.execute_script("return document.documentElement.scrollHeight"))
        if height <= int(driver.execute_script("return window.innerHeight")):
            break
        driver.set_window_size(1100, height + 200)
    driver.save_screenshot(str(path))
    assert path.stat().st_size > 10_000


def test_a_guest_changes_a_topic_pauses_and_unsubscribes_from_everything(
    served: Settings, shop: Shop, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    cid = shop.customer(
        customer_id=outside_holdout("E"), phone=PHONE, channels=("email", "sms"), timezone="America/New_York"
    )
    shop.order(cid, DAY - dt.timedelta(days=3))
    page = links(served, cid, "email", "remorse_reduction")["preferences"]

    driver.get(page)
    assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "en"
    assert driver.title.startswith("Your communication preferences")
    legends = [e.text for e in driver.find_elements(By.TAG_NAME, "legend")]
    assert {"Email", "Text messages (SMS)", "Topics", "Need a break?", "Unsubscribe from everything"} <= set(
        legends
    )
    for box in driver.find_elements(By.CSS_SELECTOR, "input[type=checkbox]"):  # every box has a label
        assert driver.find_element(By.CSS_SELECTOR, f"label[for='{box.get_attribute('id')}']").text.strip()
    topic = driver.find_element(By.ID, "topic-email-remorse_reduction")
    assert topic.is_selected() and driver.find_element(By.ID, "topic-sms-remorse_reduction").is_selected()
    labels = driver.find_element(By.ID, "topics-email").text
    assert "Offers and news" in labels and "Remorse reduction" in labels and "Referral ask" in labels
    assert "Thank-you" not in labels  # relationship messages are not a topic
    screenshot(driver, SHOTS / "preferences-en.png")

    # 1. a topic: no more "Remorse reduction" by email (SMS stays on)
    topic.click()
    status = submit(driver, "save", "saved")
    assert status.get_attribute("role") == "status" and "saved" in status.text
    assert "Remorse reduction" not in driver.find_element(By.ID, "summary").text.split("\n")[0]
    go(served, "remorse_reduction", DAY)
    assert sent(served, "remorse_reduction", cid, DAY) == ["sms"]  # email declined: the next channel

    # 2. a pause: 30 days without offers on any channel; booking messages still come
    submit(driver, "back", "preferences")
    assert not driver.find_element(By.ID, "topic-email-remorse_reduction").is_selected()
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).date()
    assert f"paused until {until:%B} {until.day}, {until.year}" in submit(driver, "pause", "saved").text
    assert "paused until" in submit(driver, "back", "paused").text
    later = DAY + dt.timedelta(days=7)  # day 10 after the booking: get_the_most is due
    shop.order(cid, later)
    go(served, "remorse_reduction", later)
    go(served, "thank_you", later)
    assert sent(served, "remorse_reduction", cid, later) == []
    assert sent(served, "thank_you", cid, later) == ["email"]
    with Runtime(served).state.connect() as conn:
        pauses = conn.execute(sa.select(ledger).where(ledger.c.source == "pause")).mappings().all()
    assert {(p["channel"], p["scope"], p["opted_in"]) for p in pauses} == {
        ("email", "marketing", False),
        ("sms", "marketing", False),
    }

    # 3. unsubscribe from everything: not even a thank-you afterwards
    assert "unsubscribed from everything" in submit(driver, "unsubscribe-all", "saved").text
    last = DAY + dt.timedelta(days=8)
    shop.order(cid, last)
    go(served, "thank_you", last)
    assert sent(served, "thank_you", cid, last) == []
    submit(driver, "back", "preferences")
    assert not driver.find_element(By.ID, "pref-email").is_selected()
    assert not driver.find_element(By.ID, "pref-sms").is_selected()


def test_the_preference_centre_speaks_french_to_a_french_guest(
    served: Settings, shop: Shop, browser: Any
) -> None:
    from selenium.webdriver.common.by import By

    driver = browser
    cid = shop.customer(first_name="Élodie", locale="fr_FR", phone="+33612345678", channels=("email", "sms"))
    driver.get(links(served, cid, "email", "thank_you")["preferences"])
    assert driver.find_element(By.TAG_NAME, "html").get_attribute("lang") == "fr"
    assert driver.title.startswith("Vos préférences de communication")
    assert driver.find_element(By.ID, "save").text == "Enregistrer mes préférences"
    assert "Offres et actualités" in driver.find_element(By.ID, "topics-email").text
    assert driver.find_element(By.ID, "unsubscribe-all").text == "Se désabonner de tout"
    screenshot(driver, SHOTS / "preferences-fr.png")
    until = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).date()
    status = submit(driver, "pause", "saved").text
    assert "en pause jusqu’au" in status and str(until.year) in status
    driver.get(links(served, cid, "email", "thank_you")["unsubscribe"])
    question = driver.find_element(By.TAG_NAME, "main").text
    assert "Ne plus recevoir les e-mails de Harbor & Pine Hotels ?" in question
    assert submit(driver, "unsubscribe", "done").text == "Vous ne recevrez plus ces messages."
