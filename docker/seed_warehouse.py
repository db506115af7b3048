"""One-shot seeding for docker-compose.yml's ``loyalflow-seed`` service.

Fills the warehouse (LOYALFLOW_WAREHOUSE_CONN_ID or LOYALFLOW_WAREHOUSE_URL) with the demo hotel
group's data (``loyalflow.demo.data.seed``), creates loyalflow's own tables once before any task runs,
and, when email goes through SES, verifies the brand's sender on the local AWS (moto refuses mail from
an unverified address). A warehouse that already has customers is kept, so a restart never wipes what
the campaigns did; ``--force`` seeds it again.

    python docker/seed_warehouse.py [--customers N] [--as-of YYYY-MM-DD] [--force]
"""

from __future__ import annotations

import argparse
import datetime as dt

import sqlalchemy as sa  # noqa: TID253 - a one-shot script, never parsed as a DAG

from loyalflow.demo.data import seed
from loyalflow.runtime import Runtime
from loyalflow.settings import get_settings
from loyalflow.state import ensure_schema


def has_customers(engine: sa.Engine) -> bool:
    """Whether the warehouse already holds a customers table with rows."""
    if not sa.inspect(engine).has_table("customers"):
        return False
    with engine.connect() as conn:
        return conn.execute(sa.text("SELECT 1 FROM customers LIMIT 1")).first() is not None


def main(argv: list[str] | None = None) -> None:
    """Seed (unless already seeded), create the state tables, verify the SES sender when used."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=5000, help="customers in the demo warehouse")
    parser.add_argument("--as-of", type=dt.date.fromisoformat, default=dt.date(2026, 11, 20))
    parser.add_argument("--force", action="store_true", help="replace a warehouse that has customers")
    args = parser.parse_args(argv)
    rt = Runtime(get_settings())
    if has_customers(rt.warehouse) and not args.force:
        print("warehouse already seeded: kept (--force seeds it again)")
    else:
        counts = seed(rt.warehouse, args.as_of, customers=args.customers)
        print("warehouse seeded up to", args.as_of, counts)
    ensure_schema(rt.state)  # loyalflow's tables, once, before the first tasks would race to create them
    if rt.settings.email_provider == "ses":
        verify_sender(rt)


def verify_sender(rt: Runtime) -> None:
    """Verify the brand's ``from_email`` on SES (idempotent: an identity that exists is fine)."""
    from botocore.exceptions import ClientError

    from loyalflow.hooks import aws_client

    try:
        aws_client("sesv2", rt.settings.aws_conn_id).create_email_identity(EmailIdentity=rt.brand.from_email)
    except ClientError as exc:
        if exc.response["Error"]["Code"] != "AlreadyExistsException":
            raise
    print("SES sender verified:", rt.brand.from_email)


if __name__ == "__main__":
    main()
