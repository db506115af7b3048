"""report.html in a real browser: from the file, and in the Airflow UI through the plugin's view.

The report comes from a small demo hotel group lived through the library pipeline (31 days, so every
chart has data). Headless Chromium opens the file, then a real ``airflow api-server`` with the
loyalflow plugin: the page needs Airflow's login, the navigation shows "Campaign report", and the
view's iframe draws the same charts. Each chart must hold plotly's SVG, nothing outside may be
requested, and screenshots go to ``out/report-file.png`` and ``out/report-airflow.png``.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from loyalflow.demo.run import run_demo
from loyalflow.report.build import build_report, write_report
from loyalflow.runtime import Runtime
from loyalflow.settings import Settings
from tests.conftest import ROOT
from tests.web.airflow_server import api_server as api_server_process
from tests.web.conftest import free_port

AS_OF = dt.date(2026, 11, 20)
SHOTS = ROOT / "out"
USER = "analyst"  # a viewer: seeing the Airflow website is all the report asks


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """report.json and report.html of a 300-guest demo lived for 31 days."""
    home = tmp_path_factory.mktemp("report")
    settings = Settings(
        warehouse_url=f"sqlite:///{home / 'warehouse.db'}",
        outbox_dir=home / "outbox",
        work_url=str(home / "work"),
        report_dir=home / "out",
    )
    run_demo(settings, AS_OF, customers=300, via_airflow=False, echo=lambda _: None, days=31)
    rt = Runtime(settings)
    write_report(build_report(rt.state, rt.warehouse, AS_OF, 14), settings.report_dir)
    return settings.report_dir


def charts_drawn(driver: Any, expected: int, timeout: float = 30) -> int:
    """Wait until ``expected`` chart divs each hold a plotly SVG; return how many do."""
    script = (
        "return [...document.querySelectorAll('div.chart')]"
        ".filter(d => d.querySelector('.js-plotly-plot svg.main-svg g')).length"
    )
    deadline = time.monotonic() + timeout
    drawn = 0
    while time.monotonic() < deadline:
        drawn = driver.execute_script(script)
        if drawn >= expected:
            break
        time.sleep(0.3)
    return int(drawn)


def requested(driver: Any) -> list[str]:
    """Every resource the current document fetched (Resource Timing), besides the document."""
    return list(driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)"))


def test_the_file_draws_every_chart_offline(report_dir: Path, browser: Any) -> None:
    page = (report_dir / "report.html").read_text(encoding="utf-8")
    expected = page.count('<div class="chart">')
    assert expected >= 9  # lift, five funnels, conversions over time, dormant, tiers
    browser.get((report_dir / "report.html").as_uri())
    assert charts_drawn(browser, expected) == expected
    assert all(url.startswith(("file:", "data:", "blob:")) for url in requested(browser)), requested(browser)
    assert "helps" in browser.find_element("css selector", "table").text or "no clear effect" in page
    SHOTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(SHOTS / "report-file.png"))


@pytest.fixture
def api_server(tmp_path: Path, report_dir: Path) -> Iterator[tuple[str, Path]]:
    """``airflow api-server`` with the plugin, one viewer account, LOYALFLOW_REPORT_DIR = the report.

    Yields the base URL and the server's AIRFLOW_HOME (where the simple auth manager writes passwords).
    """
    env = {
        "LOYALFLOW_REPORT_DIR": str(report_dir),
        "LOYALFLOW_WAREHOUSE_URL": f"sqlite:///{tmp_path / 'warehouse.db'}",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:viewer",
    }
    with api_server_process(tmp_path, free_port(), env) as (base, home, _):
        yield base, home


@pytest.mark.airflow
def test_the_airflow_ui_shows_the_report_behind_its_login(
    api_server: tuple[str, Path], report_dir: Path, browser: Any
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    base, home = api_server
    with httpx.Client(base_url=base, timeout=30) as http:
        assert http.get("/loyalflow/report/").status_code == 401  # no Airflow login, no report
        assert http.get("/loyalflow/report/report.json").status_code == 401
        password = json.loads((home / "simple_auth_manager_passwords.json.generated").read_text())[USER]
        token = http.post("/auth/token", json={"username": USER, "password": password}).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        page = http.get("/loyalflow/report/", headers=auth)
        assert page.status_code == 200 and page.text == (report_dir / "report.html").read_text(
            encoding="utf-8"
        )
        assert http.get("/loyalflow/report/report.json", headers=auth).json()["as_of"] == AS_OF.isoformat()
        plugins = http.get("/api/v2/plugins", headers=auth).json()["plugins"]
        (view,) = [v for p in plugins if p["name"] == "loyalflow" for v in p["external_views"]]
        assert (view["name"], view["href"], view["destination"]) == (
            "Campaign report",
            "/loyalflow/report/",
            "nav",
        )

    browser.get(f"{base}/api/v2/monitor/health")
    browser.add_cookie({"name": "_token", "value": token, "path": "/"})  # what Airflow's login page sets
    browser.get(f"{base}/plugin/{view['url_route']}")
    wait = WebDriverWait(browser, 60)  # the React UI renders its navigation after loading
    link = wait.until(
        ec.presence_of_element_located((By.CSS_SELECTOR, f"a[href$='/plugin/{view['url_route']}']"))
    )
    assert "Campaign report" in (link.text or link.get_attribute("title") or link.get_attribute("aria-label"))
    frame = wait.until(ec.presence_of_element_located((By.CSS_SELECTOR, "iframe")))
    assert frame.get_attribute("src") == f"{base}/loyalflow/report/"
    browser.switch_to.frame(frame)
    expected = (report_dir / "report.html").read_text(encoding="utf-8").count('<div class="chart">')
    assert charts_drawn(browser, expected) == expected
    assert all(url.startswith((base, "data:", "blob:")) for url in requested(browser)), requested(browser)
    browser.switch_to.default_content()
    time.sleep(0.5)
    SHOTS.mkdir(exist_ok=True)
    assert browser.save_screenshot(str(SHOTS / "report-airflow.png"))
