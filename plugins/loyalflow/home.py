"""Where a project's campaigns and templates live, without loading the settings machinery.

DAG files need only these two folders at parse time; :class:`loyalflow.settings.Settings` (pydantic
settings, about 35 ms to import) is loaded inside tasks. Both read ``LOYALFLOW_HOME`` the same way.
"""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[2]


def home() -> Path:
    """``LOYALFLOW_HOME``, else this checkout."""
    return Path(os.environ.get("LOYALFLOW_HOME") or PROJECT_DIR)


def campaigns_dir() -> Path:
    """Folder of campaign YAML files and their SQL."""
    return home() / "campaigns"


def templates_dir() -> Path:
    """Folder of Jinja templates."""
    return home() / "templates"
