"""The README's settings table lists every ``LOYALFLOW_*`` setting, so none goes undocumented."""

from __future__ import annotations

import re

from loyalflow.settings import Settings
from tests.conftest import ROOT


def test_every_setting_is_in_the_readme_table() -> None:
    text = (ROOT / "README.md").read_text()
    table = text[text.index("### Every setting") :].split("\n\n###")[0]
    documented = {name.lower() for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", table)}
    assert set(Settings.model_fields) - documented == set()
