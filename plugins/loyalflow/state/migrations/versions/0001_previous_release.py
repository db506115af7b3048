"""The state tables of the last release before versioned migrations (the baseline).

Revision ID: 0001
Revises:
Create Date: 2026-12-01

A database created by that release (``metadata.create_all``) has exactly these tables and no version
table: ``loyalflow.state.migrate`` completes it to this revision and stamps it instead of running this.
It also reads the tables this migration creates for that, so keep every table in one op.create_table
call with its indexes inline.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "loyalflow_ledger",
        sa.Column("idempotency_key", sa.String(64), primary_key=True),
        sa.Column("campaign", sa.String(100), nullable=False),
        sa.Column("step", sa.String(100), nullable=False),
        sa.Column("customer_id", sa.String(100), nullable=False),
        sa.Column("anchor_id", sa.String(200), nullable=False),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("category", sa.String(20), nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("provider", sa.String(20), nullable=False),
        sa.Column("provider_message_id", sa.String(200)),
        sa.Column("error", sa.Text),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("as_of", sa.Date, nullable=False),
        sa.Column("send_at", sa.DateTime),
        sa.Column("payload", sa.Text),
        sa.Column("claimed_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Index("ix_loyalflow_ledger_customer", "customer_id", "as_of"),
        sa.Index("ix_loyalflow_ledger_campaign", "campaign", "step", "status"),
    )
    op.create_table(
        "loyalflow_decisions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(250), nullable=False),
        sa.Column("as_of", sa.Date, nullable=False),
        sa.Column("campaign", sa.String(100), nullable=False),
        sa.Column("step", sa.String(100), nullable=False),
        sa.Column("customer_id", sa.String(100), nullable=False),
        sa.Column("anchor_id", sa.String(200), nullable=False),
        sa.Column("channel", sa.String(20)),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("reason", sa.String(60), nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("idempotency_key", sa.String(64)),
        sa.Column("decided_at", sa.DateTime, nullable=False),
        sa.Index("ix_loyalflow_decisions_run", "run_id", "campaign"),
        sa.Index("ix_loyalflow_decisions_customer", "customer_id"),
    )
    op.create_table(
        "loyalflow_suppressions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("address", sa.String(320), nullable=False),
        sa.Column("channel", sa.String(20), nullable=False),
        sa.Column("scope", sa.String(100), nullable=False),
        sa.Column("reason", sa.String(40), nullable=False),
        sa.Column("source", sa.String(100)),
        sa.Column("customer_id", sa.String(100)),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.UniqueConstraint("address", "channel", "scope", "reason", name="uq_loyalflow_suppression"),
    )
    op.create_table(
        "loyalflow_responses",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("customer_id", sa.String(100), nullable=False),
        sa.Column("campaign", sa.String(100)),
        sa.Column("answer", sa.String(20), nullable=False),
        sa.Column("channel", sa.String(20)),
        sa.Column("source", sa.String(40), nullable=False),
        sa.Column("snooze_until", sa.Date),
        sa.Column("churn_type", sa.String(30)),
        sa.Column("received_at", sa.DateTime, nullable=False),
        sa.Index("ix_loyalflow_responses_customer", "customer_id", "campaign"),
    )
    op.create_table(
        "loyalflow_referral_codes",
        sa.Column("customer_id", sa.String(100), primary_key=True),
        sa.Column("code", sa.String(40), nullable=False, unique=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    op.create_table(
        "loyalflow_delivery_events",
        sa.Column("provider", sa.String(20), primary_key=True),
        sa.Column("event_id", sa.String(200), primary_key=True),
        sa.Column("event_type", sa.String(40), nullable=False),
        sa.Column("idempotency_key", sa.String(64)),
        sa.Column("provider_message_id", sa.String(200)),
        sa.Column("customer_id", sa.String(100)),
        sa.Column("occurred_at", sa.DateTime, nullable=False),
        sa.Index("ix_loyalflow_delivery_events_key", "idempotency_key"),
    )
    op.create_table(
        "loyalflow_cap_reservations",
        sa.Column("idempotency_key", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(100), nullable=False),
        sa.Column("day", sa.Date, nullable=False),
        sa.Column("campaign", sa.String(100), nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("detail", sa.Text),
        sa.Column("updated_at", sa.DateTime, nullable=False),
        sa.Index("ix_loyalflow_cap_reservations_customer", "customer_id", "day"),
    )


def downgrade() -> None:
    for table in (
        "loyalflow_cap_reservations",
        "loyalflow_delivery_events",
        "loyalflow_referral_codes",
        "loyalflow_responses",
        "loyalflow_suppressions",
        "loyalflow_decisions",
        "loyalflow_ledger",
    ):
        op.drop_table(table)
