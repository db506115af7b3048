"""The preference centre, one-click unsubscribe and provider webhooks (FastAPI)."""
