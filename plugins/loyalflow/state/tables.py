"""loyalflow's own tables (prefixed ``loyalflow_``): what loyalflow knows, kept apart from the warehouse.

Send ledger (and the key format of its campaigns), decisions, suppressions, the consent ledger,
responses, referral codes, campaign entries and activations. They live in the state database
(``LOYALFLOW_STATE_URL``; default: the warehouse); segment SQL never reads them: loyalflow joins what
it knows to the segment's rows on its own side.

These are the models; the schema itself is created and changed only by the migrations in
``migrations/versions`` (``loyalflow.state.ensure_schema``): a change here needs a new revision there.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

ledger = sa.Table(
    "loyalflow_ledger",
    metadata,
    sa.Column("idempotency_key", sa.String(64), primary_key=True),
    sa.Column("campaign", sa.String(100), nullable=False),
    sa.Column("step", sa.String(100), nullable=False),
    sa.Column("customer_id", sa.String(100), nullable=False),
    sa.Column("anchor_id", sa.String(200), nullable=False),
    sa.Column("channel", sa.String(20), nullable=False),
    sa.Column("category", sa.String(20), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),  # claimed|scheduled|sent|failed|unknown|released
    sa.Column("provider", sa.String(20), nullable=False),
    sa.Column("provider_message_id", sa.String(200)),
    sa.Column("error", sa.Text),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("as_of", sa.Date, nullable=False),
    sa.Column("send_at", sa.DateTime),
    sa.Column("payload", sa.Text),  # the rendered message, kept while status is "scheduled"
    sa.Column("claimed_at", sa.DateTime, nullable=False),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Index("ix_loyalflow_ledger_customer", "customer_id", "as_of"),
    sa.Index("ix_loyalflow_ledger_campaign", "campaign", "step", "status"),
)

decisions = sa.Table(
    "loyalflow_decisions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("as_of", sa.Date, nullable=False),
    sa.Column("campaign", sa.String(100), nullable=False),
    sa.Column("step", sa.String(100), nullable=False),
    sa.Column("customer_id", sa.String(100), nullable=False),
    sa.Column("anchor_id", sa.String(200), nullable=False),
    sa.Column("channel", sa.String(20)),
    sa.Column("outcome", sa.String(20), nullable=False),  # sent | skipped | failed | dry_run
    sa.Column("reason", sa.String(60), nullable=False),
    sa.Column("detail", sa.Text),
    sa.Column("idempotency_key", sa.String(64)),
    sa.Column("decided_at", sa.DateTime, nullable=False),
    sa.Index("ix_loyalflow_decisions_run", "run_id", "campaign"),
    sa.Index("ix_loyalflow_decisions_customer", "customer_id"),
)

suppressions = sa.Table(
    "loyalflow_suppressions",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("address", sa.String(320), nullable=False),  # normalised email or E.164 phone
    sa.Column("channel", sa.String(20), nullable=False),
    sa.Column("scope", sa.String(100), nullable=False),  # all | <campaign category> | <campaign id>
    sa.Column("reason", sa.String(40), nullable=False),  # unsubscribed | bounced | complained | manual
    sa.Column("source", sa.String(100)),
    sa.Column("customer_id", sa.String(100)),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.UniqueConstraint("address", "channel", "scope", "reason", name="uq_loyalflow_suppression"),
)


responses = sa.Table(
    "loyalflow_responses",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("customer_id", sa.String(100), nullable=False),
    sa.Column("campaign", sa.String(100)),
    sa.Column("answer", sa.String(20), nullable=False),  # positive | negative | later
    sa.Column("channel", sa.String(20)),
    sa.Column("source", sa.String(40), nullable=False),  # link | sms | webhook | import
    sa.Column("snooze_until", sa.Date),  # for "contact me later"
    sa.Column("churn_type", sa.String(30)),  # account_churn | product_churn | decreased_spend
    sa.Column("received_at", sa.DateTime, nullable=False),
    sa.Index("ix_loyalflow_responses_customer", "customer_id", "campaign"),
)

referral_codes = sa.Table(
    "loyalflow_referral_codes",
    metadata,
    sa.Column("customer_id", sa.String(100), primary_key=True),
    sa.Column("code", sa.String(40), nullable=False, unique=True),
    sa.Column("created_at", sa.DateTime, nullable=False),
)

delivery_events = sa.Table(
    "loyalflow_delivery_events",
    metadata,
    sa.Column("provider", sa.String(20), primary_key=True),
    sa.Column("event_id", sa.String(200), primary_key=True),  # e.g. SendGrid sg_event_id: dedupe key
    sa.Column("event_type", sa.String(40), nullable=False),  # delivered | open | click | bounce | ...
    sa.Column("idempotency_key", sa.String(64)),
    sa.Column("provider_message_id", sa.String(200)),
    sa.Column("customer_id", sa.String(100)),
    sa.Column("occurred_at", sa.DateTime, nullable=False),
    sa.Index("ix_loyalflow_delivery_events_key", "idempotency_key"),
)

cap_reservations = sa.Table(
    "loyalflow_cap_reservations",
    metadata,
    sa.Column("idempotency_key", sa.String(64), primary_key=True),
    sa.Column("customer_id", sa.String(100), nullable=False),
    sa.Column("day", sa.Date, nullable=False),  # the customer's local day of send_at
    sa.Column("campaign", sa.String(100), nullable=False),
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),  # held | sending | sent | released
    sa.Column("detail", sa.Text),
    sa.Column("updated_at", sa.DateTime, nullable=False),
    sa.Index("ix_loyalflow_cap_reservations_customer", "customer_id", "day"),
)

consent = sa.Table(
    "loyalflow_consent",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("customer_id", sa.String(100), nullable=False),
    sa.Column("channel", sa.String(20), nullable=False),  # email | sms
    sa.Column("scope", sa.String(100), nullable=False),  # all | <campaign category> | <campaign id>
    sa.Column("opted_in", sa.Boolean, nullable=False),
    # preference_centre | one_click | sms_keyword | complaint | admin | pause
    sa.Column("source", sa.String(40), nullable=False),
    sa.Column("fingerprint", sa.String(64)),  # hash of the request (never a raw address)
    sa.Column("until", sa.DateTime),  # a pause: opted out until this moment
    sa.Column("recorded_at", sa.DateTime, nullable=False),
    sa.Index("ix_loyalflow_consent_customer", "customer_id", "channel"),
    sa.Index("ix_loyalflow_consent_recorded", "recorded_at"),
)

entries = sa.Table(
    "loyalflow_entries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("campaign", sa.String(100), nullable=False),
    sa.Column("customer_id", sa.String(100), nullable=False),
    sa.Column("entered_on", sa.Date, nullable=False),  # steps of a state-entry campaign count from here
    sa.Column("exited_on", sa.Date),
    sa.Column("exit_reason", sa.String(200)),
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.UniqueConstraint("campaign", "customer_id", "entered_on", name="uq_loyalflow_entry"),
    sa.Index("ix_loyalflow_entries_open", "campaign", "exited_on"),
)

activations = sa.Table(
    "loyalflow_activations",
    metadata,
    sa.Column("campaign", sa.String(100), primary_key=True),
    sa.Column("activated_on", sa.Date, nullable=False),  # the as-of day of the first real run
    sa.Column("run_id", sa.String(250), nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
)

key_formats = sa.Table(
    "loyalflow_key_formats",
    metadata,
    # campaigns whose idempotency keys are not the default (ordered) ones: written by migration 0003 only
    sa.Column("campaign", sa.String(100), primary_key=True),
    sa.Column("format", sa.String(20), nullable=False),  # hashed: the campaign sent before keys were ordered
    sa.Column("recorded_at", sa.DateTime, nullable=False),
)
