"""The consent ledger, campaign entries and campaign activations.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "loyalflow_consent",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("customer_id", sa.String(100), nullable=False),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("scope", sa.String(100), nullable=False),
        sa.Column("opted_in", sa.Boolean, nullable=False),
        sa.Column("source", sa.String(40), nullable=False),
        sa.Column("fingerprint", sa.String(64)),
        sa.Column("until", sa.DateTime),
        sa.Column("recorded_at", sa.DateTime, nullable=False),
        sa.Index("ix_loyalflow_consent_customer", "customer_id", "channel"),
        sa.Index("ix_loyalflow_consent_recorded", "recorded_at"),
    )
    op.create_table(
        "loyalflow_entries",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("campaign", sa.String(100), nullable=False),
        sa.Column("customer_id", sa.String(100), nullable=False),
        sa.Column("entered_on", sa.Date, nullable=False),
        sa.Column("exited_on", sa.Date),
        sa.Column("exit_reason", sa.String(200)),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("campaign", "customer_id", "entered_on", name="uq_loyalflow_entry"),
        sa.Index("ix_loyalflow_entries_open", "campaign", "exited_on"),
    )
    op.create_table(
        "loyalflow_activations",
        sa.Column("campaign", sa.String(100), primary_key=True),
        sa.Column("activated_on", sa.Date, nullable=False),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("loyalflow_activations")
    op.drop_table("loyalflow_entries")
    op.drop_table("loyalflow_consent")
