"""Ordered idempotency keys for new campaigns; campaigns that already sent keep their hashed keys.

Keys in customer order sit side by side in the ledger's index, so a chunk's claims and updates touch
few pages. A key that may already have left (a provider's reference, a Message-ID, a scheduled
payload, an event still to come) must never change, so every campaign with a ledger row is listed
here as ``hashed`` and keeps its keys; the list is never written again.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context, op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    key_formats = op.create_table(
        "loyalflow_key_formats",
        sa.Column("campaign", sa.String(100), primary_key=True),
        sa.Column("format", sa.String(20), nullable=False),
        sa.Column("recorded_at", sa.DateTime, nullable=False),
    )
    if not context.is_offline_mode() and not sa.inspect(op.get_bind()).has_table("loyalflow_ledger"):
        return  # nothing has been sent: every campaign gets ordered keys
    ledger = sa.table("loyalflow_ledger", sa.column("campaign"))
    op.execute(
        sa.insert(key_formats).from_select(
            ["campaign", "format", "recorded_at"],
            sa.select(ledger.c.campaign, sa.literal("hashed"), sa.func.current_timestamp()).distinct(),
        )
    )


def downgrade() -> None:
    op.drop_table("loyalflow_key_formats")
