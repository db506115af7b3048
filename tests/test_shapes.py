"""The shape matrix: every shipped campaign reaches the same customers whatever the warehouse looks like.

One generated warehouse (:mod:`tests.shapes`: 20,000 customers, 60,000 orders over 18 months) is loaded
into each shape (SQLite / PostgreSQL x BIGINT / text ids x state in the warehouse / state apart with the
warehouse read-only, plus PostgreSQL with ``timestamptz`` columns), and every campaign runs for AS_OF as
a dry run. Per campaign and step, the customers reached (outcome ``dry_run``) must be the reference
shape's (SQLite, text ids, state in the warehouse), ids mapped back to the text ids.

The campaigns run from a copy of the project with every holdout at 0%: the holdout is a hash of the
customer id *as written*, so ``5000000123`` and ``C000123`` fall on either side of it independently, and
a held-out anchor frees its re-entry slot for another one; with it the sets would differ by id type by
design. The holdout itself is covered by the 60-day and first-day tests.

Shapes run in worker processes (one per core, at most four), the slowest first; the table of customers
reached per shape and campaign is printed (``pytest -s``) and written to ``out/shapes.md``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import multiprocessing
import os
import shutil
import time
import traceback
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from loyalflow.decide.addresses import normalise_email, normalise_phone
from loyalflow.pipeline import run
from loyalflow.runtime import RunOptions, Runtime
from loyalflow.settings import Settings
from loyalflow.spec import campaign_files
from loyalflow.state import decisions
from tests.shapes import (
    AS_OF,
    EVENT_TYPES,
    NOW,
    PERSONAS,
    PG_ADMIN_URL,
    REFERENCE,
    SHAPES,
    Frames,
    Shape,
    build,
    warehouse,
)

pytestmark = pytest.mark.shapes

ROOT = Path(__file__).resolve().parents[1]
CAMPAIGNS = tuple(p.stem for p in campaign_files(ROOT / "campaigns"))
IN_CI = os.environ.get("CI") == "true"
WORKERS = max(1, min(4, os.cpu_count() or 1))
_FRAMES: Frames | None = None  # the generated warehouse, in a worker process


@dataclass
class CampaignResult:
    """One campaign's dry run on one shape: (step, text id) -> the reasons recorded, or the error."""

    seconds: float = 0.0
    error: str | None = None
    totals: dict[str, int] = field(default_factory=dict)
    reasons: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    def with_reason(self, step: str, reason: str) -> set[str]:
        """Text ids of the customers that got ``reason`` for ``step`` (on any anchor)."""
        return {c for (s, c), found in self.reasons.items() if s == step and reason in found}

    @property
    def steps(self) -> set[str]:
        """Steps with any decision."""
        return {s for s, _ in self.reasons}

    @property
    def reached(self) -> set[str]:
        """Text ids reached by any step."""
        return {c for (_, c), found in self.reasons.items() if "dry_run" in found}


@dataclass
class ShapeResult:
    """Every campaign's dry run on one shape, or why the shape could not be built."""

    shape: Shape
    load_seconds: float = 0.0
    seconds: float = 0.0
    unavailable: str | None = None
    campaigns: dict[str, CampaignResult] = field(default_factory=dict)


def _init_worker(frames: Frames) -> None:
    global _FRAMES
    _FRAMES = frames


def run_shape(shape: Shape, workdir: Path, home: Path) -> ShapeResult:
    """Load ``shape``, dry-run every campaign on it, read the decisions back (in a worker process)."""
    assert _FRAMES is not None, "the worker was started without the generated warehouse"
    started = time.perf_counter()
    result = ShapeResult(shape)
    workdir.mkdir(parents=True, exist_ok=True)
    # loyalflow creates the parent folder of a SQLite database path; for a file: URI that is a folder
    # named "file:" in the working directory, so work where that does no harm
    with contextlib.chdir(workdir):
        try:
            with warehouse(shape, _FRAMES, workdir / "db") as loaded:
                result.load_seconds = loaded.seconds
                settings = Settings(
                    home=home,
                    warehouse_url=loaded.warehouse_url,
                    state_url=loaded.state_url,
                    outbox_dir=workdir / "outbox",
                    work_url=str(workdir / "work"),
                    secret_key="shape-matrix-secret-key-for-dry-runs-only",
                )
                rt = Runtime(settings)
                try:
                    for campaign in CAMPAIGNS:
                        result.campaigns[campaign] = _run_campaign(rt, campaign, loaded.normalise)
                finally:
                    for engine in (rt.warehouse, rt.state):
                        engine.dispose()
        except sa.exc.OperationalError as exc:  # PostgreSQL went away before the shape was built
            if shape.engine != "postgresql" or result.campaigns:
                raise
            result.unavailable = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
    result.seconds = time.perf_counter() - started
    return result


def _run_campaign(rt: Runtime, campaign: str, normalise: Callable[[str], str]) -> CampaignResult:
    out = CampaignResult()
    run_id = f"shapes-{campaign}"
    started = time.perf_counter()
    try:
        out.totals = run(rt, campaign, RunOptions(AS_OF, run_id, dry_run=True, now=NOW))
    except Exception as exc:  # noqa: BLE001 - every failure is reported by the campaign's test
        out.error = f"{type(exc).__name__}: {exc}"
        out.error += "\n" + "".join(traceback.format_exception(exc)[-3:]).rstrip()
    out.seconds = time.perf_counter() - started
    stmt = sa.select(decisions.c.step, decisions.c.customer_id, decisions.c.reason).where(
        decisions.c.campaign == campaign, decisions.c.run_id == run_id
    )
    with rt.state.connect() as conn:
        reasons: dict[tuple[str, str], set[str]] = defaultdict(set)
        for step, customer_id, reason in conn.execute(stmt):
            reasons[(step, normalise(customer_id))].add(reason)
    out.reasons = dict(reasons)
    return out


def _pg_problem() -> str | None:
    engine = sa.create_engine(PG_ADMIN_URL)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return None
    except sa.exc.OperationalError as exc:
        return str(exc).splitlines()[0]
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def frames() -> Frames:
    """The generated warehouse, built once per test session."""
    return build(customers=20_000, orders=60_000)


@pytest.fixture(scope="module")
def matrix(frames: Frames, tmp_path_factory: pytest.TempPathFactory) -> dict[str, ShapeResult]:
    """Every shape's results, computed in worker processes; the table is printed and kept in out/."""
    pg_problem = _pg_problem()
    root = tmp_path_factory.mktemp("shapes")
    home = without_holdout(root / "project")
    todo = [s for s in SHAPES if s.engine == "sqlite" or pg_problem is None]
    todo.sort(key=lambda s: s.engine != "sqlite")  # SQLite shapes take longest: start them first
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(
        WORKERS, mp_context=context, initializer=_init_worker, initargs=(frames,)
    ) as pool:
        futures = {s.name: pool.submit(run_shape, s, root / s.name, home) for s in todo}
        results = {name: f.result() for name, f in futures.items()}
    for shape in SHAPES:
        if shape.name not in results:
            results[shape.name] = ShapeResult(shape, unavailable=f"PostgreSQL not reachable: {pg_problem}")
    wall = time.perf_counter() - started
    table = render_table(results, frames, wall)
    print("\n" + table)
    out = ROOT / "out"
    out.mkdir(exist_ok=True)
    (out / "shapes.md").write_text(table, encoding="utf-8")
    return results


def render_table(results: dict[str, ShapeResult], frames: Frames, wall: float) -> str:
    """Markdown: customers reached per shape and campaign, per step, timings and errors."""
    sizes = (
        f"{len(frames.customers):,} customers, {len(frames.orders):,} orders, "
        f"{len(frames.channel_preferences):,} consent rows, {len(frames.events):,} events, "
        f"{len(frames.answers):,} answers"
    )
    lines = [
        "# Shape matrix",
        "",
        f"Dry runs for {AS_OF} (now {NOW:%Y-%m-%d %H:%M} UTC) on {sizes}; {WORKERS} worker(s), "
        f"{wall:.0f} s wall time. Cells: distinct customers reached (outcome `dry_run`).",
        "",
        "| shape | load s | " + " | ".join(CAMPAIGNS) + " | total s |",
        "|---|---:|" + "---:|" * len(CAMPAIGNS) + "---:|",
    ]
    errors: list[str] = []
    for shape in SHAPES:
        res = results[shape.name]
        if res.unavailable:
            lines.append(f"| {shape.name} | - | " + " | ".join("n/a" for _ in CAMPAIGNS) + " | - |")
            continue
        cells = []
        for campaign in CAMPAIGNS:
            c = res.campaigns[campaign]
            cells.append(
                f"ERROR ({c.seconds:.1f} s)" if c.error else f"{len(c.reached):,} ({c.seconds:.1f} s)"
            )
            if c.error:
                errors.append(f"- **{shape.name} / {campaign}**: `{c.error.splitlines()[0]}`")
        lines.append(
            f"| {shape.name} | {res.load_seconds:.1f} | " + " | ".join(cells) + f" | {res.seconds:.0f} |"
        )
    steps = sorted(
        {(c, s) for r in results.values() for c, cr in r.campaigns.items() for s in cr.steps},
        key=lambda cs: (CAMPAIGNS.index(cs[0]), cs[1]),
    )
    lines += ["", "Reached per step:", "", "| shape | " + " | ".join(f"{c}/{s}" for c, s in steps) + " |"]
    lines.append("|---|" + "---:|" * len(steps))
    for shape in SHAPES:
        res = results[shape.name]
        if not res.unavailable:
            cells = [
                "ERROR" if res.campaigns[c].error else str(len(res.campaigns[c].with_reason(s, "dry_run")))
                for c, s in steps
            ]
            lines.append(f"| {shape.name} | " + " | ".join(cells) + " |")
    if errors:
        lines += ["", "Errors:", "", *errors]
    return "\n".join(lines) + "\n"


def without_holdout(home: Path) -> Path:
    """A copy of the project's campaigns, templates and DAG files with every holdout at 0%."""
    for folder in ("campaigns", "templates", "dags"):
        shutil.copytree(ROOT / folder, home / folder)
    for path in campaign_files(home / "campaigns"):
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        spec["holdout_percent"] = 0
        path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return home


def _sample(ids: set[str], n: int = 5) -> str:
    return ", ".join(sorted(ids)[:n]) + (" ..." if len(ids) > n else "")


# --------------------------------------------------------------------------- the factory


def test_the_factory_builds_the_required_warehouse(frames: Frames) -> None:
    cust, orders, prefs, events, answers = (
        frames.customers,
        frames.orders,
        frames.channel_preferences,
        frames.events,
        frames.answers,
    )
    assert len(cust) >= 20_000 and len(orders) >= 60_000
    first, last = orders["ordered_at"].min(), orders["ordered_at"].max()
    assert last.date() == AS_OF and (AS_OF - first.date()).days >= 540  # 18 months up to the as-of day
    assert set(orders["status"]) == {"completed", "returned", "cancelled"}
    referred = orders[orders["referrer"] > 0]
    assert len(referred) > 1000 and not (referred["referrer"] == referred["customer"]).any()
    day = orders["ordered_at"].dt.normalize()
    same_day = orders.groupby(["customer", day]).size()
    assert (same_day >= 2).sum() > 500
    recent = same_day[same_day.index.get_level_values(1) >= dt.datetime.combine(AS_OF, dt.time())]
    assert (recent >= 2).any(), "someone orders twice on the as-of day"
    assert not prefs.duplicated(["customer", "channel"]).any(), "one consent row per customer and channel"
    for channel in ("email", "sms"):
        assert set(prefs.loc[prefs["channel"] == channel, "opted_in"]) == {True, False}
    assert set(events["event_type"]) == set(EVENT_TYPES)
    assert set(cust["persona"]) == set(PERSONAS)
    assert all(normalise_email(e) == e.lower() for e in cust["email"])
    assert all(normalise_phone(p) == p for p in cust["phone"].dropna())
    assert cust["timezone"].str.contains("/").all() and cust["locale"].str.match(r"^[a-z]{2}_[A-Z]{2}$").all()
    assert set(answers["answer"]) == {"positive", "negative", "later"}
    assert (answers["at"] < dt.datetime.combine(AS_OF, dt.time())).all()


def test_the_factory_is_deterministic() -> None:
    a, b = build(customers=300, orders=900), build(customers=300, orders=900)
    for name in ("customers", "orders", "channel_preferences", "events", "answers"):
        assert getattr(a, name).equals(getattr(b, name)), name
    assert not build(customers=300, orders=900, seed=1).orders.equals(a.orders)


def test_ids_map_back_to_the_text_ids(frames: Frames) -> None:
    text, integer = frames.tables("text"), frames.tables("integer")
    assert text["customers"]["customer_id"].iloc[122] == "C000123"
    assert integer["customers"]["customer_id"].iloc[122] == 5_000_000_123
    assert str(integer["orders"]["referred_by"].dropna().iloc[0]).isdigit()
    assert text["orders"]["order_id"].is_monotonic_increasing  # zero-padded: text order = number order


# --------------------------------------------------------------------------- the matrix


@pytest.mark.parametrize("campaign", CAMPAIGNS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: s.name)
def test_campaign_reaches_the_reference_customers(
    matrix: dict[str, ShapeResult], frames: Frames, shape: Shape, campaign: str
) -> None:
    res = matrix[shape.name]
    if res.unavailable:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required under CI=true: {res.unavailable}")
        pytest.skip(res.unavailable)
    got = res.campaigns[campaign]
    assert got.error is None, f"{shape.name} / {campaign} failed:\n{got.error}"
    ref = matrix[REFERENCE.name].campaigns[campaign]
    assert ref.error is None, f"the reference shape {REFERENCE.name} failed on {campaign}:\n{ref.error}"
    problems = []
    for step in sorted(ref.steps | got.steps):
        expected, reached = ref.with_reason(step, "dry_run"), got.with_reason(step, "dry_run")
        if reached != expected:
            problems.append(
                f"{step}: reached {len(reached)}, expected {len(expected)}; "
                f"missing {_sample(expected - reached)}; extra {_sample(reached - expected)}"
            )
    assert not problems, f"{shape.name} / {campaign} differs from {REFERENCE.name}:\n" + "\n".join(problems)


def test_every_campaign_reaches_someone_in_the_reference(matrix: dict[str, ShapeResult]) -> None:
    ref = matrix[REFERENCE.name]
    assert set(ref.campaigns) == set(CAMPAIGNS)
    quiet = {c: r.error or "nobody reached" for c, r in ref.campaigns.items() if r.error or not r.reached}
    assert not quiet, quiet
