"""Operator commands: the CLI, reports, explain, preview and validate."""
