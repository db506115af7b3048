"""The message: rendering, per-customer context, signed links and referral codes."""
