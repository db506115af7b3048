"""A temporary loyalflow project with small marketing campaigns, for consent/cap/quiet-hour tests."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.conftest import ROOT

PROMO_SQL = """SELECT customer_id, :as_of AS anchor_id, :as_of_start AS anchor_at
FROM customers
"""
PROMO_YAML = """id: {id}
name: Promo {id}
category: marketing
schedule: "@daily"
channels: [email, sms]
segment: sql/{id}.sql
catch_up_days: 0
priority: {priority}
steps:
  - id: offer
"""
TEMPLATES = {
    "offer.subject.j2": "{{ greeting }}, an offer from {{ brand.name }}",
    "offer.html.j2": '{% extends "layouts/email.html.j2" %}'
    "{% block body %}<p>{{ greeting }}</p>{% endblock %}",
    "offer.txt.j2": '{% extends "layouts/email.txt.j2" %}{% block body %}{{ greeting }}{% endblock %}',
    "offer.sms.j2": "{{ brand.name }}: {{ greeting }}, an offer for you.",
}


def promo_project(home: Path, promos: dict[str, int]) -> Path:
    """``home`` with brand, thank_you and one marketing campaign per ``{id: priority}``."""
    (home / "campaigns" / "sql").mkdir(parents=True, exist_ok=True)
    for name in ("brand.yaml", "thank_you.yaml", "sql/thank_you.sql"):
        shutil.copy(ROOT / "campaigns" / name, home / "campaigns" / name)
    for folder in ("layouts", "partials", "thank_you"):
        shutil.copytree(ROOT / "templates" / folder, home / "templates" / folder, dirs_exist_ok=True)
    for cid, priority in promos.items():
        (home / "campaigns" / f"{cid}.yaml").write_text(PROMO_YAML.format(id=cid, priority=priority))
        (home / "campaigns" / "sql" / f"{cid}.sql").write_text(PROMO_SQL)
        (home / "templates" / cid).mkdir(parents=True, exist_ok=True)
        for name, text in TEMPLATES.items():
            (home / "templates" / cid / name).write_text(text)
    return home


def outbox(folder: Path) -> list[dict]:
    """Every message in an outbox folder."""
    return [
        json.loads(line) for f in sorted(Path(folder).rglob("*.jsonl")) for line in f.read_text().splitlines()
    ]
