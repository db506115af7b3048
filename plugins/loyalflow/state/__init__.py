"""loyalflow's own tables (prefixed ``loyalflow_``) and the schema they live in.

The table objects are defined in :mod:`loyalflow.state.tables` and re-exported here, so every stage
imports them as ``from loyalflow.state import ledger``.
"""

from __future__ import annotations

from loyalflow.state.tables import (
    activations,
    cap_reservations,
    consent,
    decisions,
    delivery_events,
    ensure_schema,
    entries,
    ledger,
    metadata,
    referral_codes,
    responses,
    suppressions,
)

__all__ = [
    "activations",
    "cap_reservations",
    "consent",
    "decisions",
    "delivery_events",
    "ensure_schema",
    "entries",
    "ledger",
    "metadata",
    "referral_codes",
    "responses",
    "suppressions",
]
