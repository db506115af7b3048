"""Builds one Airflow DAG per campaign file: plan → send_chunk (mapped over audience chunks) → report."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, Param, get_current_context, task

from loyalflow.errors import LoyalflowError
from loyalflow.settings import get_settings
from loyalflow.spec import Campaign, load_campaign

if TYPE_CHECKING:
    from loyalflow.runtime import RunOptions, Runtime

START_DATE = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
log = logging.getLogger(__name__)


@contextmanager
def one_line_errors() -> Iterator[None]:
    """A :class:`LoyalflowError` is logged as its one line first, then re-raised (the task fails)."""
    try:
        yield
    except LoyalflowError as exc:
        log.error("%s", exc)
        raise


@lru_cache(maxsize=1)
def _runtime() -> Runtime:
    from loyalflow.runtime import Runtime

    return Runtime(get_settings())


def run_options(context: Any) -> RunOptions:
    """The run's options: ``as_of`` from the trigger form, else the last day of the data interval."""
    from loyalflow.runtime import RunOptions

    params = context["params"]
    if params.get("as_of"):
        as_of = dt.date.fromisoformat(params["as_of"])
    elif context.get("data_interval_end") is not None:
        as_of = (context["data_interval_end"] - dt.timedelta(microseconds=1)).date()
    else:
        as_of = context["dag_run"].run_after.date()
    limit = params.get("send_limit")
    return RunOptions(
        as_of=as_of,
        run_id=context["run_id"],
        dry_run=bool(params.get("dry_run")),
        send_limit=int(limit) if limit not in (None, "") else None,
    )


def build_dag(campaign: Campaign) -> DAG:
    """The DAG for one campaign; heavy imports happen inside the tasks, never at parse time."""
    with DAG(
        dag_id=campaign.id,
        description=campaign.name,
        schedule=campaign.schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        tags=sorted({"loyalflow", campaign.category, *campaign.tags}),
        doc_md=campaign.doc_md(),
        default_args={
            "owner": campaign.owner,
            "retries": campaign.retries,
            "retry_delay": dt.timedelta(minutes=5),
        },
        params={
            "as_of": Param(
                None,
                type=["null", "string"],
                format="date",
                description="Evaluate the campaign at the end of this day (default: the run's day).",
            ),
            "dry_run": Param(False, type="boolean", description="Decide and render, but send nothing."),
            "send_limit": Param(
                None,
                type=["null", "integer"],
                minimum=0,
                description="Send at most this many messages in this run.",
            ),
        },
    ) as dag:

        @task
        def plan() -> list[str]:
            """Materialise the audience into chunk files; fails (sending nothing) if a sample render fails."""
            from loyalflow.pipeline import plan as plan_run

            with one_line_errors():
                rt = _runtime()
                return plan_run(rt, rt.campaign(campaign.id), run_options(get_current_context()))

        @task(max_active_tis_per_dagrun=4)
        def send_chunk(chunk: str) -> dict[str, int]:
            """Decide, render and send one chunk of the audience."""
            from loyalflow.pipeline import process_chunk

            with one_line_errors():
                rt = _runtime()
                return process_chunk(rt, rt.campaign(campaign.id), chunk, run_options(get_current_context()))

        @task(trigger_rule="none_failed")
        def report() -> dict[str, int]:
            """Log the run's summary (audience, sent, skipped by reason per step); drop its audience files."""
            from loyalflow.audience.segments import discard
            from loyalflow.ops.summary import summary

            with one_line_errors():
                rt, run_id = _runtime(), get_current_context()["run_id"]
                frame = summary(rt.state, [run_id])
                print(frame.to_string(index=False))
                discard(rt.settings.work_url, campaign.id, run_id)
                return {"sent": int(frame["sent"].sum()) if not frame.empty else 0}

        send_chunk.expand(chunk=plan()) >> report()
    return dag


def campaign_dag(campaign_id: str) -> DAG:
    """Load ``campaigns/<campaign_id>.yaml`` and build its DAG (a bad file raises a one-line error)."""
    settings = get_settings()
    return build_dag(load_campaign(settings.campaigns_dir / f"{campaign_id}.yaml", settings.templates_dir))


def dispatch_dag(schedule: str = "*/15 * * * *") -> DAG:
    """The DAG that sends scheduled messages (quiet hours, send windows) once their send_at has come."""
    with DAG(
        dag_id="dispatch_scheduled",
        description="Send messages held for quiet hours or a send window once they are due",
        schedule=schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        tags=["loyalflow", "delivery"],
        doc_md="Sends the ledger's `scheduled` messages whose `send_at` has come, re-checking consent and "
        "suppressions first. Providers that schedule themselves (outbox, SendGrid) never need it.",
        default_args={"owner": "marketing-ops", "retries": 2, "retry_delay": dt.timedelta(minutes=2)},
    ) as dag:

        @task
        def dispatch_due() -> dict[str, int]:
            """Send every scheduled message that is due."""
            from loyalflow.deliver.dispatch import dispatch

            with one_line_errors():
                return dispatch(_runtime())

        dispatch_due()
    return dag
