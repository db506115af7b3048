"""Exactly-once delivery: the ledger, channels, scheduled dispatch and reconciliation."""
