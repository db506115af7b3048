"""Builds one Airflow DAG per campaign file: plan → send_chunk (mapped over audience chunks) → report.

The trigger form's Params: ``as_of``, ``dry_run``, ``send_limit`` and ``test_recipients`` (a test send:
``plan`` sends the campaign's real messages for sample customers to those addresses only, marked as
tests, and plans no audience; see plugins/loyalflow/deliver/testsend.py). ``report`` logs the run's
summary in a marketer's words and sets it as the DAG run's note (plugins/loyalflow/airflow/note.py).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from airflow.sdk import DAG, Param, get_current_context, task

from loyalflow.airflow.maintenance import START_DATE, maintenance_dag
from loyalflow.errors import LoyalflowError
from loyalflow.home import campaigns_dir, templates_dir
from loyalflow.spec import Campaign, load_campaign

if TYPE_CHECKING:
    from loyalflow.deliver.testsend import Recipient
    from loyalflow.runtime import RunOptions, Runtime

TEST_SEND_DOC = (
    " *test_recipients* (emails or E.164 phone numbers) sends one real message to each of them only, "
    "marked [TEST], and no customer. Each run's summary is its note. See docs/airflow.md."
)
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
    from loyalflow.settings import get_settings

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


def test_recipients(context: Any) -> list[Recipient]:
    """The trigger form's ``test_recipients``, validated; a bad address fails the task without retries."""
    from airflow.sdk.exceptions import AirflowFailException

    from loyalflow.deliver.testsend import parse_recipients

    try:
        return parse_recipients(context["params"].get("test_recipients"))
    except LoyalflowError as exc:
        log.error("%s", exc)
        raise AirflowFailException(str(exc)) from None


def build_dag(campaign: Campaign) -> DAG:
    """The DAG for one campaign; heavy imports happen inside the tasks, never at parse time.

    The tasks run the ``Campaign`` given here (the worker parses the DAG file again), so a campaign
    built in Python works as well as one loaded from ``campaigns/<id>.yaml``; its templates live in
    ``templates/<id>/`` and its segment SQL is resolved against ``campaign.source``'s folder.
    """
    with DAG(
        dag_id=campaign.id,
        description=campaign.name,
        schedule=campaign.schedule,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        tags=sorted({"loyalflow", campaign.category, *campaign.tags}),
        doc_md=campaign.doc_md() + TEST_SEND_DOC,
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
            "test_recipients": Param(
                [],
                type=["null", "array"],
                items={"type": "string"},
                title="Test recipients",
                description="A test send: email addresses or phone numbers (E.164, +4915123456789), one per "
                "line. Each gets one real message of this campaign, rendered for a real customer and marked "
                "[TEST]; no customer is messaged and nothing counts in the reports.",
            ),
        },
    ) as dag:

        @task
        def plan() -> list[str]:
            """Materialise the audience into chunk files; fails (sending nothing) if a sample render fails.

            A test send instead sends the test messages here and plans no audience.
            """
            with one_line_errors():
                rt, context = _runtime(), get_current_context()
                opts, recipients = run_options(context), test_recipients(context)
                if recipients:
                    from loyalflow.deliver.testsend import send_tests

                    rows = send_tests(rt, campaign, recipients, opts)
                    for row in rows:
                        log.info(
                            "test %s to %s (%s, step %s) %s",
                            row["status"],
                            row["to"],
                            row["channel"],
                            row["step"],
                            row["error"],
                        )
                    context["ti"].xcom_push(key="test_sends", value=rows)
                    return []
                from airflow.sdk import conf

                from loyalflow.pipeline import plan as plan_run

                most = min(rt.settings.max_chunks, conf.getint("core", "max_map_length", fallback=1024))
                chunks = plan_run(rt, campaign, opts, most)
                log.info(
                    "campaign %s: %d audience chunk(s) of %d customers (larger past %d chunks) for %s",
                    campaign.id,
                    len(chunks),
                    rt.settings.chunk_size,
                    most // 2,
                    opts.as_of,
                )
                return chunks

        @task(max_active_tis_per_dagrun=4)
        def send_chunk(chunk: str) -> dict[str, int]:
            """Decide, render and send one chunk of the audience."""
            from loyalflow.pipeline import process_chunk

            with one_line_errors():
                rt = _runtime()
                return process_chunk(rt, campaign, chunk, run_options(get_current_context()))

        @task(trigger_rule="none_failed")
        def report() -> dict[str, int]:
            """Log the summary in a marketer's words, set it as the DAG run's note; drop the audience."""
            from loyalflow.airflow.note import set_note
            from loyalflow.audience.segments import discard
            from loyalflow.ops.summary import note, summary

            with one_line_errors():
                rt, context = _runtime(), get_current_context()
                opts = run_options(context)
                tests = context["ti"].xcom_pull(task_ids="plan", key="test_sends") or []
                frame = summary(rt.state, [opts.run_id])
                if not frame.empty:
                    print(frame.to_string(index=False))
                text = note(rt.state, opts.run_id, opts.as_of, opts.dry_run, [t["to"] for t in tests])
                log.info("%s", text)
                set_note(campaign.id, opts.run_id, text)
                discard(rt.settings.work_url, campaign.id, opts.run_id)
                return {
                    "sent": int(frame["sent"].sum()),
                    "would_send": int(frame["would send"].sum()),
                    "test_messages": sum(t["status"] == "sent" for t in tests),
                }

        send_chunk.expand(chunk=plan()) >> report()
    return dag


def campaign_dag(campaign_id: str) -> DAG:
    """Load ``campaigns/<campaign_id>.yaml`` and build its DAG (a bad file raises a one-line error)."""
    return build_dag(load_campaign(campaigns_dir() / f"{campaign_id}.yaml", templates_dir()))


def dispatch_dag(schedule: str = "*/15 * * * *") -> DAG:
    """The DAG that sends scheduled messages (quiet hours, send windows) once their send_at has come."""
    with maintenance_dag(
        "dispatch_scheduled",
        "Send messages held for quiet hours or a send window once they are due",
        schedule,
        ["delivery"],
        "Sends the ledger's `scheduled` messages whose `send_at` has come, re-checking consent and "
        "suppressions first. Providers that schedule themselves (outbox, SendGrid) never need it.",
        retry_minutes=2,
    ) as dag:

        @task
        def dispatch_due() -> dict[str, int]:
            """Send every scheduled message that is due."""
            from loyalflow.deliver.dispatch import dispatch

            with one_line_errors():
                return dispatch(_runtime())

        dispatch_due()
    return dag
