"""Airflow plugin: loyalflow's preference centre, one-click unsubscribe and report in the API server."""

from __future__ import annotations

from typing import Any

from airflow.plugins_manager import AirflowPlugin

from loyalflow.web.preferences import app as preference_app

REPORT_URL = "/loyalflow/report"


def guarded_report_app() -> Any:
    """The report app behind Airflow's login (any user who may see the Airflow website)."""
    from airflow.api_fastapi.auth.managers.models.resource_details import AccessView
    from airflow.api_fastapi.core_api.security import requires_access_view
    from fastapi import Depends

    from loyalflow.web.report import report_app

    return report_app([Depends(requires_access_view(AccessView.WEBSITE))])


class OnFirstRequest:
    """An ASGI app built on its first request: processes that load plugins without serving skip
    importing Airflow's API security (only the API server serves)."""

    def __init__(self, factory: Any) -> None:
        self.factory, self.app = factory, None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if self.app is None:
            self.app = self.factory()
        await self.app(scope, receive, send)


class LoyalflowPlugin(AirflowPlugin):
    """Serves ``/loyalflow/preferences/…``, ``/loyalflow/unsubscribe/…``, ``/loyalflow/respond/…``
    (no login: customers follow these links) and ``/loyalflow/report/`` (Airflow login), which the
    UI's navigation shows as "Campaign report" (docs/report.md).
    """

    name = "loyalflow"
    # the report first: the mount at /loyalflow would otherwise take its requests
    fastapi_apps = [
        {"app": OnFirstRequest(guarded_report_app), "url_prefix": REPORT_URL, "name": "loyalflow report"},
        {"app": preference_app, "url_prefix": "/loyalflow", "name": "loyalflow preference centre"},
    ]
    external_views = [
        {
            "name": "Campaign report",
            "href": f"{REPORT_URL}/",
            "destination": "nav",
            "url_route": "loyalflow-report",
            "nav_top_level": True,
        }
    ]
