"""The report page: ``report.html`` and ``report.json`` from ``LOYALFLOW_REPORT_DIR`` (FastAPI).

loyalflow_plugin.py mounts it in the Airflow API server at ``/loyalflow/report/`` behind Airflow's own
login (the ``dependencies`` it passes), and adds it to the UI's navigation as an external view. The
files are written by ``loyalflow report`` and the ``loyalflow_report`` DAG (docs/report.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.responses import FileResponse, HTMLResponse, Response

from loyalflow.settings import get_settings

MISSING = (
    "<!doctype html><html><body><h1>No report yet</h1><p>Run <code>loyalflow report --as-of D</code> or "
    "the <code>loyalflow_report</code> DAG to write report.html.</p></body></html>"
)


def report_app(dependencies: Sequence[Any] = ()) -> FastAPI:
    """The app serving ``/`` (report.html) and ``/report.json``; ``dependencies`` guard every route."""
    app = FastAPI(
        title="loyalflow report",
        dependencies=list(dependencies),
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    def _file(name: str, media_type: str) -> Response:
        path = get_settings().report_dir / name
        if not path.is_file():
            return HTMLResponse(MISSING, status_code=404)
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "no-store"})

    @app.get("/", response_class=HTMLResponse)
    def page() -> Response:
        return _file("report.html", "text/html; charset=utf-8")

    @app.get("/report.json")
    def data() -> Response:
        return _file("report.json", "application/json")

    return app
