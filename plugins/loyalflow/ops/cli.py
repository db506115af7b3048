"""The ``loyalflow`` command line: run, validate, preview, explain and demo."""

from __future__ import annotations

import datetime as dt
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from loyalflow.errors import LoyalflowError, SettingsError
from loyalflow.settings import Settings

app = typer.Typer(
    help="Lifecycle marketing campaigns from YAML, delivered exactly once.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(width=None if sys.stdout.isatty() else 160)  # logs and CI: no truncated tables
err = Console(stderr=True)

AsOf = Annotated[str, typer.Option("--as-of", help="Evaluate at the end of this day (YYYY-MM-DD, UTC).")]
Warehouse = Annotated[str | None, typer.Option("--warehouse", help="SQLAlchemy URL of the warehouse.")]


def _date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise LoyalflowError(f"--as-of must be a date as YYYY-MM-DD, got '{value}'") from None


# Settings that command-line options override, named by their option in an error.
_OPTIONS = {"warehouse_url": "--warehouse", "state_url": "--state", "outbox_dir": "--outbox"}


def _settings(**overrides: Any) -> Settings:
    """``Settings`` from the environment and options; an invalid one is a :class:`SettingsError`."""
    from pydantic import ValidationError

    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**given)
    except ValidationError as exc:
        raise SettingsError.from_validation(exc, {k: o for k, o in _OPTIONS.items() if k in given}) from None


def _guarded(fn: Callable[[], int | None]) -> None:
    """Run ``fn``; a :class:`LoyalflowError` becomes one red line and exit code 1."""
    try:
        code = fn()
    except LoyalflowError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code or 0)


def print_summary(frame: Any, title: str) -> None:
    """A rich table of the per campaign and step summary."""
    table = Table(title=title)
    for col in frame.columns:
        table.add_column(str(col), justify="left" if col in ("campaign", "step", "skipped") else "right")
    for row in frame.itertuples(index=False):
        table.add_row(*[str(v) for v in row])
    console.print(table)


@app.command()
def run(
    campaign: str,
    as_of: AsOf,
    warehouse: Warehouse = None,
    outbox: Annotated[Path | None, typer.Option(help="Folder of the outbox channel.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Decide and render, send nothing.")] = False,
    send_limit: Annotated[int | None, typer.Option(help="Send at most this many messages.")] = None,
    workers: Annotated[
        int, typer.Option(min=1, help="Processes that work on audience chunks at once (one per core).")
    ] = 1,
) -> None:
    """Run CAMPAIGN for one day, the same pipeline the DAG runs."""

    def go() -> int:
        from loyalflow.ops.progress import chunk_bar
        from loyalflow.ops.summary import summary
        from loyalflow.pipeline import run as run_pipeline
        from loyalflow.runtime import RunOptions, Runtime

        day = _date(as_of)
        rt = Runtime(_settings(warehouse_url=warehouse, outbox_dir=outbox))
        run_id = f"cli__{day}__{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S%f}"
        opts = RunOptions(day, run_id, dry_run=dry_run, send_limit=send_limit)
        with chunk_bar(console, campaign, dry_run) as rate:
            totals = run_pipeline(rt, campaign, opts, progress=rate.add, workers=workers)
        if not totals:
            console.print(f"{campaign}: the segment returned nobody due on {day}; nothing to send.")
            return 0
        print_summary(summary(rt.state, [run_id]), f"{campaign} as of {day}")
        return 0

    _guarded(go)


@app.command()
def validate(
    path: Annotated[Path | None, typer.Argument(help="A campaign file or folder.")] = None,
    warehouse: Warehouse = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Day for the sample rows.")] = None,
) -> None:
    """Check every campaign: schema, SQL and templates rendered on sample rows."""

    def go() -> int:
        from loyalflow.ops.validate import validate_all

        settings = _settings(warehouse_url=warehouse)
        day = _date(as_of) if as_of else dt.date.today()
        problems = validate_all(settings, path, day, lambda m: console.print(m, soft_wrap=True))
        for problem in problems:
            err.print(f"[red]error:[/red] {problem}", highlight=False, soft_wrap=True)
        return 1 if problems else 0

    _guarded(go)


@app.command()
def doctor(
    warehouse: Warehouse = None,
    state: Annotated[str | None, typer.Option("--state", help="SQLAlchemy URL of loyalflow's state.")] = None,
) -> None:
    """Check the warehouse against loyalflow's contract, and the state database, before any campaign."""

    def go() -> int:
        from loyalflow.ops.doctor import check, failed
        from loyalflow.runtime import Runtime
        from loyalflow.warehouse import engine_for

        settings = _settings(warehouse_url=warehouse, state_url=state)
        rt = Runtime(settings)  # rt.state is never touched: it would create loyalflow's tables
        state_engine = engine_for(settings.state_url) if settings.state_url else None
        findings = check(rt.warehouse, state_engine, settings.campaigns_dir)
        for finding in findings:
            console.print(str(finding), highlight=False, markup=False, soft_wrap=True)
        errors = sum(f.level == "error" for f in findings)
        warnings = sum(f.level == "warn" for f in findings)
        verdict = "campaigns cannot run until the errors are fixed" if errors else "campaigns can run"
        console.print(f"{errors} error(s), {warnings} warning(s): {verdict}", highlight=False)
        return 1 if failed(findings) else 0

    _guarded(go)


@app.command()
def preview(
    campaign: str,
    customer: Annotated[str, typer.Option(help="Customer id.")],
    step: Annotated[str | None, typer.Option(help="Step id (default: the first).")] = None,
    as_of: Annotated[str | None, typer.Option("--as-of", help="Day (default: today).")] = None,
    channel: Annotated[str | None, typer.Option(help="email or sms (default: all).")] = None,
    warehouse: Warehouse = None,
) -> None:
    """Render CAMPAIGN for one customer and print it, without sending."""

    def go() -> int:
        from loyalflow.ops.preview import preview as render_preview

        settings = _settings(warehouse_url=warehouse)
        day = _date(as_of) if as_of else dt.date.today()
        for kind, parts in render_preview(settings, campaign, customer, step, day, channel).items():
            console.rule(f"{campaign} · {kind}")
            for part, text in parts.items():
                console.print(f"[bold]{part}[/bold]", highlight=False)
                console.print(text, highlight=False, markup=False)
        return 0

    _guarded(go)


@app.command()
def explain(
    customer: str,
    campaign: Annotated[str | None, typer.Option(help="Only this campaign.")] = None,
    warehouse: Warehouse = None,
) -> None:
    """Why did (or didn't) CUSTOMER get each message: every recorded decision with its reason."""

    def go() -> int:
        from loyalflow.ops.explain import evidence, lines
        from loyalflow.ops.reports import decisions_for
        from loyalflow.runtime import Runtime

        rt = Runtime(_settings(warehouse_url=warehouse))
        frame = decisions_for(rt.state, customer, campaign)
        if frame.empty:
            console.print(f"no decisions recorded for customer {customer}")
        else:
            console.rule(f"decisions for customer {customer}, newest first")
            for line in lines(frame):
                console.print(line, highlight=False, markup=False, soft_wrap=True)
        for title, table in evidence(rt.state, rt.warehouse, customer, campaign).items():
            if table.empty:
                console.print(f"{title}: none")
            else:
                print_summary(table, title)
        return 0

    _guarded(go)


@app.command()
def report(
    as_of: AsOf,
    warehouse: Warehouse = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print report.json instead of tables.")] = False,
) -> None:
    """Lift per step with 95% intervals and verdicts, referral, dormant, churn, value tiers.

    Also writes report.json and report.html to LOYALFLOW_REPORT_DIR (default out/), docs/report.md.
    """

    def go() -> int:
        import json

        from loyalflow.report.build import build_report, write_report
        from loyalflow.runtime import Runtime

        rt = Runtime(_settings(warehouse_url=warehouse))
        found = build_report(rt.state, rt.warehouse, _date(as_of), rt.settings.attribution_days)
        paths = write_report(found, rt.settings.report_dir)
        if as_json:
            sys.stdout.write(json.dumps(found, indent=2) + "\n")
        else:
            _print_report(found)
        err.print("wrote " + " and ".join(str(p) for p in paths), highlight=False, soft_wrap=True)
        return 0

    _guarded(go)


def _lift_text(row: dict[str, Any]) -> str:
    """``+2.1 pts [-0.4, +4.6]``: an absolute lift and its 95% interval in percentage points."""
    if row["lift"] is None:
        return "-"
    return f"{100 * row['lift']:+.1f} pts [{100 * row['lift_ci_low']:+.1f}, {100 * row['lift_ci_high']:+.1f}]"


def _rate_text(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _print_report(found: dict[str, Any]) -> None:
    """The report's figures as rich tables and lines (the numbers of report.json, formatted)."""
    import pandas as pd

    days = found["attribution_days"]
    rows = [
        {
            "campaign": s["campaign"],
            "step": s["step"],
            "sent": s["sent"],
            "holdout": s["holdout"],
            "conv sent": f"{s['conv_sent']} ({_rate_text(s['rate_sent'])})",
            "conv holdout": f"{s['conv_holdout']} ({_rate_text(s['rate_holdout'])})",
            "lift [95% CI]": _lift_text(s),
            "revenue/recipient": "-" if s["rev_per_sent"] is None else f"{s['rev_per_sent']:,.2f}",
            "verdict": s["verdict"],
        }
        for s in found["steps"]
    ]
    if rows:
        title = f"conversions within {days} days, as of {found['as_of']} ({found['method']['lift_ci']})"
        print_summary(pd.DataFrame(rows), title)
    dormant, referral = found["dormant"], found["referral"]
    console.print(
        f"dormant reactivation within {dormant['window_days']} days: sent {dormant['sent']}, holdout "
        f"{dormant['holdout']}, {_rate_text(dormant['rate_sent'])} vs {_rate_text(dormant['rate_holdout'])}, "
        f"lift {_lift_text(dormant)}: {dormant['verdict']}",
        highlight=False,
        soft_wrap=True,
    )
    console.print(
        f"referral: {referral['asks']} asks, friends booked after "
        f"{_rate_text(referral['referral_conversion_rate'])} of them vs overall conversion "
        f"{_rate_text(referral['overall_conversion_rate'])}; {referral['referred_bookings']} referred "
        f"bookings worth {referral['referred_revenue'] or 0:,.2f}",
        highlight=False,
        soft_wrap=True,
    )
    console.print("churn: " + ", ".join(f"{k} {v}" for k, v in found["churn"].items()), highlight=False)
    print_summary(pd.DataFrame(found["tiers"]), "customer lifetime value by 80:20 tier")


@app.command("dispatch")
def dispatch_cmd(warehouse: Warehouse = None) -> None:
    """Send scheduled messages (held for quiet hours or a send window) whose time has come."""

    def go() -> int:
        from loyalflow.deliver.dispatch import dispatch
        from loyalflow.runtime import Runtime

        counts = dispatch(Runtime(_settings(warehouse_url=warehouse)))
        summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "nothing due"
        console.print(f"dispatched: {summary}")
        return 0

    _guarded(go)


@app.command()
def demo(
    as_of: Annotated[str, typer.Option("--as-of")] = "2026-11-20",
    customers: Annotated[int, typer.Option(help="Customers in the demo warehouse.")] = 5000,
    airflow: Annotated[bool, typer.Option(help="Run the final day through Airflow (dag.test).")] = True,
    first_day: Annotated[
        bool,
        typer.Option(
            "--first-day",
            help="Instead: a business with two years of history and no earlier runs, run once for --as-of "
            "(its own warehouse and outbox under out/first_day).",
        ),
    ] = False,
) -> None:
    """Seed the embedded warehouse and run every campaign."""

    def go() -> int:
        from loyalflow.demo.run import first_day_settings, run_demo, run_first_day

        if first_day:
            day = _date(as_of)
            frame, entered = run_first_day(first_day_settings(_settings()), day, customers, console.print)
            print_summary(frame, f"first day with loyalflow, {as_of}: audience, sent and skipped by reason")
            for campaign_id, n in entered.items():
                console.print(f"{campaign_id}: {n:,} customers entered on {as_of} (all who match)")
            return 0
        with console.status("demo: starting", spinner="dots") as status:

            def echo(message: str) -> None:
                console.print(message, highlight=False)
                status.update(f"demo: {message}")

            frame = run_demo(_settings(), _date(as_of), customers, via_airflow=airflow, echo=echo)
        print_summary(frame, f"demo as of {as_of}: audience, sent and skipped by reason")
        return 0

    _guarded(go)


@app.command()
def ingest(
    provider: Annotated[str, typer.Argument(help="sendgrid, ses or sms.")],
    file: Annotated[Path, typer.Argument(help="JSON (array or lines) as the provider posted it.")],
    signature: Annotated[str | None, typer.Option(help="SendGrid signature header (base64).")] = None,
    timestamp: Annotated[str | None, typer.Option(help="SendGrid timestamp header.")] = None,
    warehouse: Warehouse = None,
) -> None:
    """Apply provider events: bounces, complaints, unsubscribes, STOP/START replies, engagement."""

    def go() -> int:
        from loyalflow.web.events import ingest as ingest_events

        try:
            body = file.read_bytes()
        except OSError as exc:
            raise LoyalflowError(f"cannot read {file}: {exc.strerror}") from None
        counts = ingest_events(
            _settings(warehouse_url=warehouse), provider, body, signature=signature, timestamp=timestamp
        )
        summary = ", ".join(f"{k}={v}" for k, v in sorted(counts.items())) or "no events"
        console.print(f"{provider}: {summary}")
        return 0

    _guarded(go)


@app.command()
def suppress(
    channel: Annotated[str, typer.Argument(help="email or sms.")],
    address: Annotated[str, typer.Argument(help="The address or E.164 number.")],
    scope: Annotated[str, typer.Option(help="all, marketing, relationship or a campaign id.")] = "all",
    reason: Annotated[str, typer.Option(help="unsubscribed, bounced, complained or manual.")] = "manual",
    remove: Annotated[bool, typer.Option("--remove", help="Lift the suppression instead.")] = False,
    warehouse: Warehouse = None,
) -> None:
    """Add (or with --remove lift) a suppression on an address."""

    def go() -> int:
        from loyalflow.decide import suppressions
        from loyalflow.runtime import Runtime

        state = Runtime(_settings(warehouse_url=warehouse)).state
        if remove:
            n = suppressions.remove(state, channel, address, reasons=(reason,), scope=scope)
            console.print(f"lifted {n} suppression(s)")
        else:
            added = suppressions.add(state, channel, address, reason, scope=scope, source="cli")
            console.print("suppressed" if added else "already suppressed")
        return 0

    _guarded(go)


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8090,
) -> None:
    """Serve the preference centre and one-click unsubscribe on their own (uvicorn)."""

    def go() -> int:
        import uvicorn

        from loyalflow.compose.tokens import require_production_key
        from loyalflow.runtime import Runtime

        settings = _settings()
        require_production_key(settings, host=host)  # a public preference centre needs a real key
        _ = Runtime(settings).state  # the database is checked before the port is bound
        uvicorn.run("loyalflow.web.preferences:app", host=host, port=port, log_level="warning")
        return 0

    _guarded(go)


# --------------------------------------------------------------------------- loyalflow db

db = typer.Typer(help="loyalflow's own tables (loyalflow_*): their schema revision.", no_args_is_help=True)
app.add_typer(db, name="db")
StateUrl = Annotated[
    str | None,
    typer.Option("--state", help="SQLAlchemy URL of the state database (default: the warehouse)."),
]


def _state_engine(warehouse: str | None, state: str | None) -> Any:
    """The state database as ``Runtime.state`` picks it, without upgrading it on the way."""
    from loyalflow.runtime import Runtime
    from loyalflow.warehouse import engine_for

    rt = Runtime(_settings(warehouse_url=warehouse, state_url=state))
    return engine_for(rt.settings.state_url) if rt.settings.state_url else rt.warehouse


def _revision_label(revision: str | None) -> str:
    from loyalflow.state import HEAD

    return "none" if revision is None else f"{revision} (head)" if revision == HEAD else revision


@db.command("upgrade")
def db_upgrade(warehouse: Warehouse = None, state: StateUrl = None) -> None:
    """Upgrade loyalflow's tables to the newest revision (every run does this first anyway)."""

    def go() -> int:
        from loyalflow.state import upgrade

        done = upgrade(_state_engine(warehouse, state))
        before = "none (unversioned tables of the previous release)" if done.adopted else None
        console.print(f"before: {before or _revision_label(done.before)}", highlight=False)
        console.print(f"after:  {_revision_label(done.after)}", highlight=False)
        return 0

    _guarded(go)


@db.command("current")
def db_current(warehouse: Warehouse = None, state: StateUrl = None) -> None:
    """Print the revision loyalflow's tables are at and the newest this loyalflow knows."""

    def go() -> int:
        from loyalflow.state import HEAD, current

        revision = current(_state_engine(warehouse, state))
        console.print(f"current: {_revision_label(revision)}", highlight=False)
        console.print(f"head:    {HEAD}", highlight=False)
        return 0

    _guarded(go)


# --------------------------------------------------------------------------- loyalflow consent

consent_cli = typer.Typer(
    help="The consent changes loyalflow received (loyalflow_consent), for the CRM.", no_args_is_help=True
)
app.add_typer(consent_cli, name="consent")


@consent_cli.command("export")
def consent_export(
    since: Annotated[str, typer.Option("--since", help="Changes recorded since this day (YYYY-MM-DD).")],
    fmt: Annotated[str, typer.Option("--format", help="csv or parquet.")] = "csv",
    out: Annotated[
        str | None,
        typer.Option("--out", help="File or fsspec URL; '-' prints CSV (default: out/consent/consent-DAY)."),
    ] = None,
    warehouse: Warehouse = None,
    state: Annotated[str | None, typer.Option("--state", help="SQLAlchemy URL of loyalflow's state.")] = None,
) -> None:
    """Export consent changes since a day (preference centre, one-click, STOP/START, complaints)."""

    def go() -> int:
        from loyalflow.runtime import Runtime
        from loyalflow.web.consent_export import changes, default_url, export, parse_format, to_bytes

        try:
            day = dt.date.fromisoformat(since)
        except ValueError:
            raise LoyalflowError(f"--since must be a date as YYYY-MM-DD, got '{since}'") from None
        kind = parse_format(fmt)
        rt = Runtime(_settings(warehouse_url=warehouse, state_url=state))
        start = dt.datetime.combine(day, dt.time())
        if out == "-":
            if kind != "csv":
                raise LoyalflowError("--out - prints CSV only; give a file for --format parquet")
            sys.stdout.write(to_bytes(changes(rt.state, start), "csv").decode("utf-8"))
            return 0
        url = out or default_url(rt.settings, dt.datetime.now(dt.UTC).date(), kind)
        n = export(rt.state, start, url, kind)
        console.print(f"exported {n} consent change(s) since {day} to {url}", highlight=False, soft_wrap=True)
        return 0

    _guarded(go)


def main() -> None:  # pragma: no cover - console entry point
    """Entry point for ``python -m loyalflow.ops.cli``."""
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
