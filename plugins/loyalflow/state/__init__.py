"""loyalflow's own tables (prefixed ``loyalflow_``) and their versioned schema.

The table objects are defined in :mod:`loyalflow.state.tables` and re-exported here, so every stage
imports them as ``from loyalflow.state import ledger``. ``ensure_schema(engine)`` brings a state database
to the newest migration (:mod:`loyalflow.state.migrate`, Alembic revisions in ``migrations/versions``).
"""

from __future__ import annotations

from loyalflow.state.migrate import HEAD, Upgrade, current, ensure_schema, upgrade
from loyalflow.state.tables import (
    activations,
    cap_reservations,
    consent,
    decisions,
    delivery_events,
    entries,
    key_formats,
    ledger,
    metadata,
    referral_codes,
    responses,
    suppressions,
)

__all__ = [
    "HEAD",
    "Upgrade",
    "activations",
    "cap_reservations",
    "consent",
    "current",
    "decisions",
    "delivery_events",
    "ensure_schema",
    "entries",
    "key_formats",
    "ledger",
    "metadata",
    "referral_codes",
    "responses",
    "suppressions",
    "upgrade",
]
