"""``make airflow``'s script end to end: real Airflow components on loopback, driven through REST API v2.

The script (plugins/loyalflow/airflow/standalone.py) starts on a free port with a private AIRFLOW_HOME and
its own demo warehouse. The test unpauses thank_you (its scheduled run for yesterday goes first), then
triggers for today: a dry run (the run's note says "would send", nothing is sent), a real run (the note
says "Sent", the outbox and ledger grow by that many), and a test send to two addresses (exactly those
two messages appear, marked as tests, and the ledger, decisions and caps do not change). Ctrl-C (SIGINT)
must then stop every process the script started.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import sqlalchemy as sa

from loyalflow.state import cap_reservations, decisions, ledger
from tests.conftest import ROOT

pytestmark = pytest.mark.airflow
STAFF = ["QA.Lead@Example.com", "+1 415 555 0100"]
READY = re.compile(r"Airflow is ready after \d+ s: (?P<url>http://\S+)")


@dataclass
class Local:
    url: str
    password: str
    home: Path
    warehouse: str
    outbox: Path
    proc: subprocess.Popen[str]
    output: list[str]


def _reader(stream: Any, lines: queue.Queue[str]) -> None:
    for line in stream:
        lines.put(line.rstrip("\n"))


def started_by(home: Path) -> list[psutil.Process]:
    """Every live process whose environment has this AIRFLOW_HOME (the script's components and workers)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.environ().get("AIRFLOW_HOME") == str(home) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.fixture
def local_airflow(tmp_path: Path) -> Iterator[Local]:
    home, outbox = tmp_path / "airflow", tmp_path / "outbox"
    warehouse = f"sqlite:///{tmp_path / 'warehouse.db'}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "LOYALFLOW_"))},
        "AIRFLOW_HOME": str(home),
        "LOYALFLOW_HOME": str(ROOT),
        "LOYALFLOW_WAREHOUSE_URL": warehouse,
        "LOYALFLOW_OUTBOX_DIR": str(outbox),
        "LOYALFLOW_WORK_URL": str(tmp_path / "work"),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "loyalflow.airflow.standalone", "--customers", "400", "--timeout", "240"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # like a terminal: Ctrl-C reaches the script, not its components
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_reader, args=(proc.stdout, lines), daemon=True).start()
    output: list[str] = []
    try:
        deadline, url = time.monotonic() + 300, None
        while url is None:
            assert time.monotonic() < deadline, "no 'Airflow is ready' line:\n" + "\n".join(output)
            try:
                output.append(lines.get(timeout=1))
            except queue.Empty:
                assert proc.poll() is None, "the script exited:\n" + "\n".join(output)
                continue
            if match := READY.search(output[-1]):
                url = match["url"]
        while not output[-1].startswith("Press Ctrl-C"):  # the rest of the banner
            output.append(lines.get(timeout=10))
        password = next(line.split()[1] for line in output if line.strip().startswith("password:"))
        yield Local(url, password, home, warehouse, outbox, proc, output)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                for p in [*started_by(home), psutil.Process(proc.pid)]:
                    p.kill()


def api(local: Local) -> httpx.Client:
    token = httpx.post(f"{local.url}/auth/token", json={"username": "admin", "password": local.password})
    assert token.status_code in (200, 201), token.text
    headers = {"Authorization": f"Bearer {token.json()['access_token']}"}
    return httpx.Client(base_url=local.url, headers=headers, timeout=30)


def wait_for(what: str, check: Any, timeout: float = 180) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)
    return value


def finished(http: httpx.Client, run_id: str) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        run = http.get(f"/api/v2/dags/thank_you/dagRuns/{run_id}").json()
        return run if run["state"] in ("success", "failed") else None

    return wait_for(f"run {run_id}", done)


def trigger(http: httpx.Client, conf: dict[str, Any]) -> dict[str, Any]:
    response = http.post("/api/v2/dags/thank_you/dagRuns", json={"logical_date": None, "conf": conf})
    assert response.status_code == 200, response.text
    run = finished(http, response.json()["dag_run_id"])
    assert run["state"] == "success", run
    return run


def outbox(local: Local) -> list[dict[str, Any]]:
    return [json.loads(line) for f in sorted(local.outbox.rglob("*.jsonl")) for line in f.open()]


def new_since(local: Local, keys: set[str]) -> list[dict[str, Any]]:
    return [m for m in outbox(local) if m["idempotency_key"] not in keys]


def keys(local: Local) -> set[str]:
    return {m["idempotency_key"] for m in outbox(local)}


def counts(local: Local) -> dict[str, int]:
    engine = sa.create_engine(local.warehouse)
    with engine.connect() as conn:
        found = {
            t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar_one()
            for t in (ledger, decisions, cap_reservations)
        }
        sent = sa.select(sa.func.count()).select_from(ledger).where(ledger.c.status == "sent")
        found["sent"] = conn.execute(sent).scalar_one()
    engine.dispose()
    return found


def test_make_airflow_dry_run_real_run_and_test_send_over_rest(local_airflow: Local) -> None:
    local = local_airflow
    assert local.url.startswith("http://127.0.0.1:")
    assert any("/loyalflow/preferences/" in line for line in local.output), local.output
    today = dt.datetime.now(dt.UTC).date().isoformat()
    with api(local) as http:
        assert http.get("/api/v2/monitor/health").json()["scheduler"]["status"] == "healthy"
        wait_for("the thank_you DAG", lambda: http.get("/api/v2/dags/thank_you").status_code == 200)
        assert http.get("/api/v2/importErrors").json()["total_entries"] == 0
        assert http.patch("/api/v2/dags/thank_you", json={"is_paused": False}).status_code == 200
        # unpausing schedules the run for yesterday; it activates the campaign and goes first
        scheduled = wait_for(
            "the scheduled run",
            lambda: http.get("/api/v2/dags/thank_you/dagRuns", params={"run_type": "scheduled"}).json()[
                "dag_runs"
            ],
        )
        assert finished(http, scheduled[0]["dag_run_id"])["note"]

        before, seen = counts(local), keys(local)
        dry = trigger(http, {"as_of": today, "dry_run": True})
        match = re.fullmatch(rf"Dry run for {today}: would send (\d+) \(.*\) of \d+ due.*", dry["note"])
        assert match and int(match[1]) > 0, dry["note"]
        assert keys(local) == seen and counts(local)["sent"] == before["sent"]

        real = trigger(http, {"as_of": today})
        assert real["note"].startswith(f"Sent for {today}: {match[1]} "), real["note"]
        sent = new_since(local, seen)
        assert len(sent) == int(match[1]) and all(not m["idempotency_key"].startswith("test-") for m in sent)
        assert counts(local)["sent"] == before["sent"] + len(sent)  # (a bundled booking adds a row too)

        before, seen = counts(local), keys(local)
        test = trigger(http, {"as_of": today, "test_recipients": STAFF})
        assert test["note"].startswith("Test send: 2 test message(s) to qa.lead@example.com, +14155550100"), (
            test
        )
        new = new_since(local, seen)
        assert sorted(m["to"] for m in new) == ["+14155550100", "qa.lead@example.com"]
        for m in new:
            assert m["idempotency_key"].startswith("test-") and m["customer_id"].startswith("test-")
            assert (m.get("subject") or m["text"]).startswith("[TEST] ")
        assert counts(local) == before  # nothing in the ledger, the decisions or the caps

    components = started_by(local.home)
    assert len(components) >= 4, [p.cmdline() for p in components]
    os.kill(local.proc.pid, signal.SIGINT)  # Ctrl-C
    assert local.proc.wait(90) == 0
    wait_for("every process to stop", lambda: not started_by(local.home), timeout=30)


def test_smtp_catcher_behind_smtp_default_receives_real_smtp_sends(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``--smtp``: smtp_default points at a local aiosmtpd that keeps a Maildir; the SMTP channel
    delivers there with the key the script generated (real providers refuse the development key)."""
    import mailbox
    import socket

    from loyalflow.airflow.standalone import configure, stop, with_smtp_catcher
    from loyalflow.compose.tokens import require_production_key
    from loyalflow.deliver.channels import Message, channel_for
    from loyalflow.settings import Settings

    local = configure(tmp_path / "home", "127.0.0.1", 0)
    command = with_smtp_catcher(local, tmp_path / "mail")
    assert local.env["LOYALFLOW_EMAIL_PROVIDER"] == "smtp"
    settings = Settings(email_provider="smtp", secret_key=local.env["LOYALFLOW_SECRET_KEY"])
    require_production_key(settings, provider="smtp")
    proc = subprocess.Popen(
        command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        smtp = json.loads(local.env["AIRFLOW_CONN_SMTP_DEFAULT"])

        def listening() -> bool:
            with socket.socket() as sock:
                return sock.connect_ex(("127.0.0.1", smtp["port"])) == 0

        wait_for("the SMTP catcher", listening, timeout=30)
        monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", local.env["AIRFLOW_CONN_SMTP_DEFAULT"])
        msg = Message(
            "k1",
            "thank_you",
            "thanks",
            "C1",
            "email",
            "guest@example.com",
            "Thank you",
            dt.datetime(2026, 12, 1, 9),
            "relationship",
            subject="[TEST] Thank you",
            html="<p>Thank you</p>",
            sender="Harbor <hi@example.com>",
        )
        (result,) = channel_for("email", settings).send([msg])
        assert result.status == "sent", result
        (mail,) = list(mailbox.Maildir(tmp_path / "mail"))
        assert mail["Subject"] == "[TEST] Thank you" and mail["To"] == "guest@example.com"
    finally:
        stop({"smtp-catcher": proc})
    assert proc.poll() is not None
