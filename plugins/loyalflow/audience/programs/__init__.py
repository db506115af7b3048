"""Programs: Python steps between a segment query and the sequence engine, named by ``program:`` in YAML."""

from __future__ import annotations

from types import ModuleType

from loyalflow.audience.programs import nurture

PROGRAMS: dict[str, ModuleType] = {"nurture": nurture}
