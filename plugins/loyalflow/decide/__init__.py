"""Who may get what: consent, suppressions, addresses, exits, holdout, caps, quiet hours."""
