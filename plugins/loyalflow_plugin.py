"""Airflow plugin: mounts loyalflow's preference centre and one-click unsubscribe in the API server."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from loyalflow.web.preferences import app as preference_app


class LoyalflowPlugin(AirflowPlugin):
    """Serves ``/loyalflow/preferences/…``, ``/loyalflow/unsubscribe/…`` and ``/loyalflow/respond/…``."""

    name = "loyalflow"
    fastapi_apps = [
        {"app": preference_app, "url_prefix": "/loyalflow", "name": "loyalflow preference centre"}
    ]
