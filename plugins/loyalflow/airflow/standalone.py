"""``make airflow``: Airflow 3 on this project's ``dags/`` and ``plugins/`` in one command, no Docker.

``python -m loyalflow.airflow.standalone`` migrates the metadata database, seeds the demo warehouse when
it is missing, and starts the parts of ``airflow standalone`` (api-server, scheduler with the
LocalExecutor, dag-processor, triggerer), each in its own process group, with:

- ``AIRFLOW_HOME`` under ``.airflow/`` (or the one in the environment);
- a free API port (or ``--port``), and ``AIRFLOW__CORE__EXECUTION_API_SERVER_URL`` on that port;
- free ports for the worker and triggerer log servers (8793/8794 may collide with a chosen API port);
- the simple auth manager with user ``admin`` and a password kept in ``.airflow/passwords.json``;
- the Connection ``loyalflow_airflow_api`` (``AIRFLOW_CONN_*``), so a run's summary becomes its note;
- with ``--smtp``, a local SMTP catcher (aiosmtpd, writing a Maildir) behind ``smtp_default``, and email
  sent through it instead of the outbox.

It waits for ``/api/v2/monitor/health``, prints the URL, user, password and preference-centre URL, and on
Ctrl-C (SIGINT) or SIGTERM stops every process it started. Component logs: ``.airflow/standalone/``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import httpx
import sqlalchemy as sa

from loyalflow.errors import LoyalflowError
from loyalflow.settings import PROJECT_DIR, Settings

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
USER = "admin"
SIMPLE_AUTH = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
BIN = Path(sys.executable).parent


def free_port(host: str) -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def password(file: Path) -> str:
    """The admin password from the simple auth manager's file, created (0600) on first start."""
    if file.exists():
        known = json.loads(file.read_text(encoding="utf-8") or "{}")
        if known.get(USER):
            return str(known[USER])
    value = secrets.token_urlsafe(12)
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps({USER: value}), encoding="utf-8")
    file.chmod(0o600)
    return value


@dataclass
class Local:
    """Where and how the local Airflow runs."""

    home: Path
    host: str
    port: int
    password: str
    env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        """The API server's (and UI's) base URL."""
        return f"http://{self.host}:{self.port}"


def configure(home: Path, host: str, port: int, project: Path = PROJECT_DIR) -> Local:
    """The environment every component runs with (the caller's, plus Airflow and loyalflow settings)."""
    passwords = home / "passwords.json"
    local = Local(home, host, port or free_port(host), password(passwords))
    base = local.url
    api = json.dumps({"conn_type": "http", "host": base, "login": USER, "password": local.password})
    local.env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(project / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(project / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__AUTH_MANAGER": SIMPLE_AUTH,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base}/execution/",
        "AIRFLOW__API__HOST": host,
        "AIRFLOW__API__PORT": str(local.port),
        "AIRFLOW__API__BASE_URL": base,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port(host)),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port(host)),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",  # task logs show each chunk's progress
        "AIRFLOW_CONN_LOYALFLOW_AIRFLOW_API": api,
        "LOYALFLOW_HOME": os.environ.get("LOYALFLOW_HOME", str(project)),
        "LOYALFLOW_PUBLIC_URL": os.environ.get("LOYALFLOW_PUBLIC_URL", f"{base}/loyalflow"),
    }
    return local


def local_secret(file: Path) -> str:
    """A random ``LOYALFLOW_SECRET_KEY`` kept in ``file`` (real providers refuse the development key)."""
    if not file.exists():
        file.write_text(secrets.token_urlsafe(48), encoding="utf-8")
        file.chmod(0o600)
    return file.read_text(encoding="utf-8").strip()


def with_smtp_catcher(local: Local, maildir: Path) -> list[str]:
    """Send email through a local SMTP catcher: ``smtp_default`` on a free port, the SMTP provider, a
    local secret key unless one is set. Returns the catcher's command (it writes a Maildir)."""
    port = free_port(local.host)
    smtp = {
        "conn_type": "smtp",
        "host": local.host,
        "port": port,
        "extra": {"disable_ssl": True, "disable_tls": True},
    }
    local.env.update(
        AIRFLOW_CONN_SMTP_DEFAULT=json.dumps(smtp),
        LOYALFLOW_EMAIL_PROVIDER="smtp",
        LOYALFLOW_SECRET_KEY=os.environ.get("LOYALFLOW_SECRET_KEY")
        or local_secret(local.home / "secret_key"),
    )
    maildir.parent.mkdir(parents=True, exist_ok=True)  # aiosmtpd creates the Maildir (cur, new, tmp)
    return [
        sys.executable,
        "-m",
        "aiosmtpd",
        "-n",
        "-l",
        f"{local.host}:{port}",
        "-c",
        "aiosmtpd.handlers.Mailbox",
        str(maildir),
    ]


def seed_if_missing(settings: Settings, customers: int, echo: Callable[[str], None]) -> str | None:
    """Seed the embedded (SQLite) demo warehouse when it has no customers; the first customer's id.

    The data runs up to today (UTC), so a campaign's scheduled run (for yesterday, once unpaused) and a
    triggered run for today both find bookings.
    """
    from loyalflow.demo.data import has_warehouse, seed
    from loyalflow.warehouse import engine_for

    if settings.warehouse_conn_id:
        return None  # a warehouse behind an Airflow Connection is the user's own: never seeded
    engine = engine_for(settings.warehouse_url)
    if not has_warehouse(engine):
        if engine.dialect.name != "sqlite":
            echo(f"warning: {settings.warehouse_url} has no customers table (only SQLite is seeded)")
            return None
        echo(f"seeding the demo warehouse ({customers} customers) at {settings.warehouse_url}")
        seed(engine, dt.datetime.now(dt.UTC).date(), customers=customers)
    with engine.connect() as conn:
        first = conn.execute(sa.text("SELECT MIN(customer_id) FROM customers")).scalar()
    engine.dispose()
    return None if first is None else str(first)


def start(local: Local, extra: dict[str, list[str]] | None = None) -> dict[str, subprocess.Popen[bytes]]:
    """Migrate the metadata database, then start each component (and ``extra`` commands, by name) in its
    own process group."""
    logs = local.home / "standalone"
    logs.mkdir(parents=True, exist_ok=True)
    migrate = subprocess.run(  # noqa: S603 - our own venv's airflow, fixed arguments
        [str(BIN / "airflow"), "db", "migrate"], env=local.env, capture_output=True, text=True, check=False
    )
    if migrate.returncode != 0:
        raise LoyalflowError(f"airflow db migrate failed: {migrate.stderr.strip().splitlines()[-1:]}")
    procs = {}
    commands = {name: [str(BIN / "airflow"), name] for name in COMPONENTS} | (extra or {})
    for name, command in commands.items():
        with (logs / f"{name}.log").open("ab") as out:
            procs[name] = subprocess.Popen(  # noqa: S603 - our own venv's programs, fixed arguments
                command,
                env=local.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # its own process group: its workers are stopped with it
            )
    return procs


def exited(procs: dict[str, subprocess.Popen[bytes]]) -> str | None:
    """The name of a component that has exited, if any."""
    return next((name for name, p in procs.items() if p.poll() is not None), None)


def wait_healthy(local: Local, procs: dict[str, subprocess.Popen[bytes]], timeout: float) -> None:
    """Until ``/api/v2/monitor/health`` reports the database, scheduler, dag-processor and triggerer
    healthy; a component that exits or a timeout raises, naming its log."""
    deadline = time.monotonic() + timeout
    while True:
        dead = exited(procs)
        if dead:
            raise LoyalflowError(f"airflow {dead} exited; see {local.home / 'standalone' / dead}.log")
        try:
            health = httpx.get(f"{local.url}/api/v2/monitor/health", timeout=2).json()
            if all(
                (health.get(part) or {}).get("status") == "healthy"
                for part in ("metadatabase", "scheduler", "dag_processor", "triggerer")
            ):
                return
        except (httpx.HTTPError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise LoyalflowError(
                f"Airflow not healthy after {timeout:.0f} s; see {local.home / 'standalone'}"
            )
        time.sleep(0.5)


def stop(procs: dict[str, subprocess.Popen[bytes]], grace: float = 30) -> None:
    """SIGTERM to every component's process group, SIGKILL to whatever still runs after ``grace``."""
    for p in procs.values():
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + grace
    for p in procs.values():
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in procs.values():
        try:
            os.killpg(p.pid, signal.SIGKILL)  # also workers left behind by a component that did exit
        except ProcessLookupError:
            pass
        p.wait()


def banner(
    local: Local, settings: Settings, first_customer: str | None, seconds: float, maildir: Path | None = None
) -> list[str]:
    """What the user needs: URL, user, password, preference centre, where messages and logs go."""
    from loyalflow.compose.context import links

    lines = [
        f"Airflow is ready after {seconds:.0f} s: {local.url}",
        f"  user:      {USER}",
        f"  password:  {local.password}   (kept in {local.home / 'passwords.json'})",
    ]
    if first_customer:
        page = links(settings, first_customer, "email", "thank_you")["preferences"]
        lines.append(f"  preference centre of customer {first_customer}: {page}")
    if maildir is not None:
        lines.append(f"  email (SMTP catcher):   {maildir} (a Maildir; SMS still go to the outbox)")
    lines += [
        f"  sent messages (outbox): {settings.outbox_dir}",
        f"  component logs:         {local.home / 'standalone'}",
        "  campaigns start paused: unpause one in the UI to let it run on its schedule.",
        "Press Ctrl-C to stop Airflow.",
    ]
    return lines


def _exported(local: Local) -> Settings:
    """The settings the tasks and the preference centre read: ``local``'s LOYALFLOW_* in this process too."""
    os.environ.update({k: v for k, v in local.env.items() if k.startswith("LOYALFLOW_")})
    return Settings()


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    """Start Airflow locally, print how to log in, run until Ctrl-C or SIGTERM; stop everything."""
    parser = argparse.ArgumentParser(prog="make airflow", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default: loopback)")
    parser.add_argument("--port", type=int, default=0, help="API and UI port (default: a free one)")
    parser.add_argument("--customers", type=int, default=5000, help="demo customers when seeding")
    parser.add_argument("--timeout", type=float, default=300, help="seconds to wait for a healthy Airflow")
    parser.add_argument("--smtp", action="store_true", help="send email to a local SMTP catcher (Maildir)")
    args = parser.parse_args(argv)
    began = time.monotonic()
    home = Path(os.environ.get("AIRFLOW_HOME") or PROJECT_DIR / ".airflow").resolve()
    local = configure(home, args.host, args.port)
    settings = _exported(local)
    maildir = settings.outbox_dir.parent / "mail" if args.smtp else None
    extra = {}
    if maildir is not None:
        extra["smtp-catcher"] = with_smtp_catcher(local, maildir)
        settings = _exported(local)
    for signum in (signal.SIGINT, signal.SIGTERM):  # SIGINT too: a shell may start us with it ignored
        signal.signal(signum, _raise_interrupt)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        first = seed_if_missing(settings, args.customers, print)
        print(f"starting Airflow ({', '.join(COMPONENTS)}) with AIRFLOW_HOME={home}", flush=True)
        procs = start(local, extra)
        wait_healthy(local, procs, args.timeout)
        print("\n".join(banner(local, settings, first, time.monotonic() - began, maildir)), flush=True)
        while (dead := exited(procs)) is None:
            time.sleep(1)
        print(f"airflow {dead} exited; see {home / 'standalone' / dead}.log; stopping the rest", flush=True)
        return 1
    except LoyalflowError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print("stopping Airflow", flush=True)
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not leave orphans
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stop(procs)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
