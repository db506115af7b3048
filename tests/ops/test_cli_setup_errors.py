"""Every command, with broken Connections and settings: a non-zero exit and one error line naming the
Connection or setting at fault, never a traceback.

Settings and database problems reach every command (each reads the settings and opens the warehouse or
loyalflow's state). Provider problems reach only the commands that send (run, dispatch, demo), which
are given something to send first. A command without a row here fails ``test_every_command_is_covered``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import typer

from loyalflow.ops.cli import app
from loyalflow.pipeline import run
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.settings import Settings, get_settings
from loyalflow.state import ledger
from tests.cli_helpers import runner
from tests.deliver.test_dispatch import Recorder
from tests.delivery_helpers import AS_OF, DAY, set_connection
from tests.factories import Shop

Args = Callable[[Settings, Path], list[str]]


def _due_buyer(settings: Settings) -> None:
    """A customer opted in to email with an order on DAY: thank_you sends to them on AS_OF."""
    shop = Shop(sa.create_engine(settings.warehouse_url))
    shop.order(shop.customer(), DAY)


def _scheduled_email(settings: Settings) -> None:
    """One email kept in the ledger for the email window, then made due: dispatch has work to do."""
    shop = Shop(sa.create_engine(settings.warehouse_url))
    night = dt.datetime.combine(dt.date.today() + dt.timedelta(days=3), dt.time(23, 30))
    shop.order(shop.customer(), night - dt.timedelta(hours=2))
    rt = Runtime(settings.model_copy(update={"email_window": "08:00-21:00"}), channels={"email": Recorder()})
    assert run(rt, "thank_you", RunOptions(night.date(), "night", now=night)) == {"scheduled": 1}
    with rt.state.begin() as conn:
        conn.execute(sa.update(ledger).values(send_at=dt.datetime(2026, 1, 1)))


def _run(settings: Settings, tmp_path: Path) -> list[str]:
    _due_buyer(settings)
    return ["run", "thank_you", "--as-of", str(AS_OF)]


def _dispatch(settings: Settings, tmp_path: Path) -> list[str]:
    _scheduled_email(settings)
    return ["dispatch"]


def _ingest(settings: Settings, tmp_path: Path) -> list[str]:
    path = tmp_path / "events.json"
    event = {"event": "bounce", "email": "guest@example.com", "timestamp": 1790000000, "sg_message_id": "m.1"}
    path.write_text(json.dumps([event]))
    return ["ingest", "sendgrid", str(path)]


COMMANDS: dict[str, Args] = {
    "run": _run,
    "validate": lambda s, t: ["validate"],
    "doctor": lambda s, t: ["doctor"],
    "preview": lambda s, t: ["preview", "thank_you", "--customer", "C00001", "--as-of", str(AS_OF)],
    "explain": lambda s, t: ["explain", "C00001"],
    "report": lambda s, t: ["report", "--as-of", str(AS_OF)],
    "dispatch": _dispatch,
    "demo": lambda s, t: ["demo", "--customers", "30", "--no-airflow"],
    "ingest": _ingest,
    "suppress": lambda s, t: ["suppress", "email", "guest@example.com"],
    "serve": lambda s, t: ["serve", "--port", "0"],
    "db upgrade": lambda s, t: ["db", "upgrade"],
    "db current": lambda s, t: ["db", "current"],
    "consent export": lambda s, t: ["consent", "export", "--since", str(AS_OF), "--out", str(t / "c.csv")],
}
SENDERS = ("run", "dispatch", "demo")

# broken thing → (LOYALFLOW_* variables, Connections, what the error line must name)
Broken = tuple[dict[str, str], dict[str, dict[str, object]], tuple[str, ...]]
EVERYWHERE: dict[str, Broken] = {
    "unknown-provider": ({"LOYALFLOW_EMAIL_PROVIDER": "carrier-pigeon"}, {}, ("LOYALFLOW_EMAIL_PROVIDER",)),
    "invalid-number": ({"LOYALFLOW_CHUNK_SIZE": "lots"}, {}, ("LOYALFLOW_CHUNK_SIZE",)),
    "bad-warehouse-url": (
        {"LOYALFLOW_WAREHOUSE_URL": "notadb://x"},
        {},
        ("notadb://x", "LOYALFLOW_WAREHOUSE_URL"),
    ),
    "missing-warehouse-connection": (
        {"LOYALFLOW_WAREHOUSE_CONN_ID": "missing_warehouse"},
        {},
        ("missing_warehouse", "not defined"),
    ),
}
REMOTE_PLAIN_SMTP = {
    "conn_type": "smtp",
    "host": "smtp.example.com",
    "login": "mailer",
    "password": "s3cret",
    "extra": {"disable_ssl": True, "disable_tls": True},
}
WHEN_SENDING: dict[str, Broken] = {
    "missing-smtp-connection": ({"LOYALFLOW_EMAIL_PROVIDER": "smtp"}, {}, ("smtp_default", "not defined")),
    "sendgrid-connection-without-password": (
        {"LOYALFLOW_EMAIL_PROVIDER": "sendgrid"},
        {"sendgrid_default": {"conn_type": "http", "host": "https://api.sendgrid.com"}},
        ("sendgrid_default", "password"),
    ),
    "plain-text-smtp-login-to-a-remote-host": (
        {"LOYALFLOW_EMAIL_PROVIDER": "smtp"},
        {"smtp_default": REMOTE_PLAIN_SMTP},
        ("smtp_default", "disable_tls"),
    ),
}


@pytest.fixture(autouse=True)
def no_server(monkeypatch: pytest.MonkeyPatch) -> None:
    """``serve`` is only tested up to its setup checks: starting uvicorn fails the test."""
    import uvicorn

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("serve started a server despite a setup error")

    monkeypatch.setattr(uvicorn, "run", refuse)
    for conn_id in ("smtp_default", "sendgrid_default", "missing_warehouse"):
        monkeypatch.delenv(f"AIRFLOW_CONN_{conn_id.upper()}", raising=False)


def command_paths(group: Any = None, prefix: str = "") -> set[str]:
    """Every command of the CLI as typed (``run``, ``db upgrade``), from the click tree typer builds."""
    group = group or typer.main.get_command(app)
    paths: set[str] = set()
    for name, command in group.commands.items():
        path = f"{prefix}{name}"
        paths |= command_paths(command, f"{path} ") if hasattr(command, "commands") else {path}
    return paths


PRESENT = command_paths()


def invoke_broken(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str, broken: Broken
) -> tuple[int, str]:
    """Prepare the command against working settings, then break them and run it."""
    if command not in PRESENT:
        pytest.skip(f"this CLI has no command {command!r}")
    args = COMMANDS[command](settings, tmp_path)
    env, connections, _ = broken
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for conn_id, fields in connections.items():
        set_connection(monkeypatch, conn_id, **fields)
    get_settings.cache_clear()
    result = runner.invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


def assert_one_error_line(code: int, output: str, names: tuple[str, ...]) -> None:
    assert code != 0, output
    assert "Traceback" not in output, output
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output
    assert output.rstrip().endswith(errors[0]), output  # the error is the last thing printed
    for name in names:
        assert name in errors[0], output


def test_every_command_is_covered() -> None:
    assert {"run", "validate", "serve"} <= PRESENT, PRESENT
    assert not PRESENT - set(COMMANDS), f"give new commands a row here: {sorted(PRESENT - set(COMMANDS))}"


@pytest.mark.parametrize("broken", sorted(EVERYWHERE))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_broken_settings_and_databases(
    command: str, broken: str, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, output = invoke_broken(settings, tmp_path, monkeypatch, command, EVERYWHERE[broken])
    assert_one_error_line(code, output, EVERYWHERE[broken][2])
    if broken != "missing-warehouse-connection":
        assert len(output.strip().splitlines()) == 1, output  # failed before doing anything


@pytest.mark.parametrize("broken", sorted(WHEN_SENDING))
@pytest.mark.parametrize("command", SENDERS)
def test_broken_provider_connections(
    command: str, broken: str, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, output = invoke_broken(settings, tmp_path, monkeypatch, command, WHEN_SENDING[broken])
    assert_one_error_line(code, output, WHEN_SENDING[broken][2])
    assert "s3cret" not in output


UNREACHABLE = "postgresql+psycopg2://loyalflow:s3cret@127.0.0.1:1/state"
REPORTERS = ("doctor", "validate")  # they list every problem they find, this one among them


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_unreachable_state_database_is_named_without_its_password(
    command: str, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, output = invoke_broken(
        settings, tmp_path, monkeypatch, command, ({"LOYALFLOW_STATE_URL": UNREACHABLE}, {}, ())
    )
    assert "s3cret" not in output
    if command in REPORTERS:
        assert code != 0 and "Traceback" not in output, output
        assert "loyalflow:***@127.0.0.1:1/state is unreachable" in output, output
    else:
        assert_one_error_line(code, output, ("loyalflow:***@127.0.0.1:1/state", "LOYALFLOW_STATE_URL"))


def test_a_bad_warehouse_option_is_named(
    settings: Settings, shop: Shop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, output = invoke_broken(settings, tmp_path, monkeypatch, "report", ({}, {}, ()))
    assert code == 0, output  # the working settings: the report runs
    result = runner.invoke(app, ["report", "--as-of", str(AS_OF), "--warehouse", "notadb://x"])
    assert_one_error_line(result.exit_code, result.output, ("notadb://x", "--warehouse"))
