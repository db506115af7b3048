"""Run `loyalflow run` in-process and read the outbox: shared by the CLI-level tests."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from typer.testing import CliRunner, Result

from loyalflow.ops.cli import app
from loyalflow.settings import Settings

AS_OF = dt.date(2026, 11, 20)
runner = CliRunner()


def invoke_run(settings: Settings, campaign: str = "thank_you", *args: str, as_of: dt.date = AS_OF) -> Result:
    """``loyalflow run CAMPAIGN --as-of D --warehouse URL --outbox DIR [args]`` against the test settings."""
    return runner.invoke(
        app,
        [
            "run",
            campaign,
            "--as-of",
            str(as_of),
            "--warehouse",
            settings.warehouse_url,
            "--outbox",
            str(settings.outbox_dir),
            *args,
        ],
    )


def outbox_lines(settings: Settings) -> list[dict]:
    """Every message in the outbox, file by file."""
    return [
        json.loads(line)
        for f in sorted(Path(settings.outbox_dir).rglob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]
