"""A real browser (headless Chromium) follows the links of a rendered email into the preference centre."""

from __future__ import annotations

import datetime as dt
import re
import socket
import threading
import time
from collections.abc import Iterator
from html import unescape
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from loyalflow.pipeline import run
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.settings import Settings, get_settings
from loyalflow.web.preferences import app
from tests.compliance_helpers import outbox
from tests.conftest import IN_CI
from tests.factories import Shop

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
DAY = dt.datetime(2026, 11, 20, 15, 0)
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-dev-shm-usage",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Any]:
    """Headless Chromium through the system chromedriver (nothing is downloaded)."""
    if not (CHROMIUM.exists() and DRIVER.exists()):
        message = "Chromium is missing: run `make browser` (apt-get install chromium chromium-driver)"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (*FLAGS, f"--user-data-dir={tmp_path / 'chromium'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
def served(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """The preference centre on 127.0.0.1 under uvicorn; links in emails point at it (public_url)."""
    port = _free_port()
    monkeypatch.setenv("LOYALFLOW_PUBLIC_URL", f"http://127.0.0.1:{port}")
    get_settings.cache_clear()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield Settings()
    finally:
        server.should_exit = True
        thread.join(10)


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

    driver = browser
    cid = shop.customer(channels=("email",))
    shop.order(cid, DAY)
    thank(served, DAY)
    (mail,) = outbox(served.outbox_dir)
    link = mail["headers"]["List-Unsubscribe"].strip("<>")
    driver.get(link)
    driver.find_element(By.ID, "unsubscribe").click()
    assert driver.find_element(By.ID, "done")
    later = DAY + dt.timedelta(days=1)
    shop.order(cid, later)
    thank(served, later)
    assert len(outbox(served.outbox_dir)) == 1
