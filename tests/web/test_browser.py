"""A real browser (headless Chromium) follows the links of a rendered email into the preference centre."""

from __future__ import annotations

import datetime as dt
import re
from html import unescape
from typing import Any

from loyalflow.pipeline import run
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.settings import Settings
from tests.compliance_helpers import outbox
from tests.factories import Shop

DAY = dt.datetime(2026, 11, 20, 15, 0)


def thank(settings: Settings, when: dt.datetime) -> None:
    run(Runtime(settings), "thank_you", RunOptions(when.date(), f"b-{when:%Y%m%d%H%M}", now=when))


def test_opting_out_of_email_in_the_browser_is_honoured_by_the_next_run(
    served: Settings, shop: Shop, browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    cid = shop.customer(phone="+14155550123", channels=("email", "sms"), timezone="America/New_York")
    shop.order(cid, DAY)
    thank(served, DAY)
    (mail,) = outbox(served.outbox_dir)
    assert mail["channel"] == "email"
    link = unescape(re.search(r'href="([^"]+/preferences/[^"]+)"', mail["html"]).group(1))
    assert link.startswith(served.public_url)

    driver.get(link)
    email_box = driver.find_element(By.ID, "pref-email")
    sms_box = driver.find_element(By.ID, "pref-sms")
    assert email_box.is_selected() and sms_box.is_selected()
    email_box.click()
    driver.find_element(By.ID, "save").click()
    WebDriverWait(driver, 10).until(ec.presence_of_element_located((By.ID, "saved")))
    driver.find_element(By.ID, "back").click()
    assert not driver.find_element(By.ID, "pref-email").is_selected()

    later = DAY + dt.timedelta(days=1)
    shop.order(cid, later)
    thank(served, later)
    latest = [m for m in outbox(served.outbox_dir) if m["send_at"].startswith("2026-11-21")]
    assert [(m["customer_id"], m["channel"]) for m in latest] == [(cid, "sms")]

    driver.get(f"{served.public_url}/preferences/{link.rsplit('/', 1)[1][:-2]}xx")
    assert "invalid" in driver.page_source


def test_unsubscribe_link_confirms_in_the_browser(served: Settings, shop: Shop, browser: Any) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    driver = browser
    cid = shop.customer(channels=("email",))
    shop.order(cid, DAY)
    thank(served, DAY)
    (mail,) = outbox(served.outbox_dir)
    link = mail["headers"]["List-Unsubscribe"].strip("<>")
    driver.get(link)
    driver.find_element(By.ID, "unsubscribe").click()
    # the click submits a form: wait for the next page instead of racing it
    assert WebDriverWait(driver, 10).until(ec.presence_of_element_located((By.ID, "done")))
    later = DAY + dt.timedelta(days=1)
    shop.order(cid, later)
    thank(served, later)
    assert len(outbox(served.outbox_dir)) == 1
