"""The rendered messages stay byte-identical to the golden files (see tests/compose/golden_cases.py)."""

from __future__ import annotations

import json

import pytest

from loyalflow.spec import campaign_files
from tests.compose.golden_cases import GOLDEN, compose_each, render_all, runtime

CAMPAIGNS = [p.stem for p in campaign_files(runtime().settings.campaigns_dir)]


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[str, dict[str, str]]]:
    return render_all(runtime())


@pytest.fixture(scope="module")
def composed() -> dict[str, dict[str, dict[str, str]]]:
    return compose_each(runtime())


def _mismatches(expected: dict[str, dict[str, str]], got: dict[str, dict[str, str]]) -> list[str]:
    out = []
    for case in sorted(set(expected) | set(got)):
        want, have = expected.get(case), got.get(case)
        if want != have:
            parts = sorted(
                p for p in set(want or {}) | set(have or {}) if (want or {}).get(p) != (have or {}).get(p)
            )
            out.append(f"{case}: {', '.join(parts) or 'missing case'} differ")
    return out


@pytest.mark.parametrize("campaign_id", CAMPAIGNS)
def test_render_parts_matches_golden(
    rendered: dict[str, dict[str, dict[str, str]]], campaign_id: str
) -> None:
    expected = json.loads((GOLDEN / f"{campaign_id}.json").read_text(encoding="utf-8"))
    assert len(expected) >= 20  # every step × channel × customer, not an empty file
    problems = _mismatches(expected, rendered[campaign_id])
    assert not problems, "\n".join(problems[:20])


@pytest.mark.parametrize("campaign_id", CAMPAIGNS)
def test_compose_all_matches_golden(composed: dict[str, dict[str, dict[str, str]]], campaign_id: str) -> None:
    expected = json.loads((GOLDEN / f"{campaign_id}.json").read_text(encoding="utf-8"))
    problems = _mismatches(expected, composed[campaign_id])
    assert not problems, "\n".join(problems[:20])


def test_golden_covers_every_part_and_persona() -> None:
    cases = {c for p in GOLDEN.glob("*.json") for c in json.loads(p.read_text(encoding="utf-8"))}
    assert {c.split("/")[0] for c in cases} == set(CAMPAIGNS)
    assert {c.split("/")[2] for c in cases} == {"email", "sms"}
    assert {
        "vacationing_family",
        "wedding_couple",
        "corporate_travel_manager",
        "event_planner",
        "independent_business_traveller",
        "astronaut",
        "None",
    } <= {c.split("/")[4] for c in cases}
