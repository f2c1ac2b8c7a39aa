"""The dashboard: a static single-page app served by the API itself.

``GET /dashboard`` answers ``api/dashboard/index.html``; its scripts and style sheet are served
under ``/dashboard/static/``. Neither needs an API key: the page's own data calls carry it
(``Authorization: Bearer``, from a field the page stores in ``localStorage``). Nothing here is in
the OpenAPI schema.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

DASHBOARD_DIR = Path(__file__).resolve().parents[1] / "dashboard"

router = APIRouter(include_in_schema=False)


@router.get("/dashboard")
async def dashboard() -> FileResponse:
    return FileResponse(
        DASHBOARD_DIR / "index.html",
        media_type="text/html",
        headers={"Cache-Control": "no-cache"},
    )


@router.get("/dashboard/")
async def dashboard_slash() -> RedirectResponse:
    return RedirectResponse("../dashboard", status_code=307)


def mount_dashboard(app: FastAPI) -> None:
    """Add the page and its static assets to ``app``."""
    app.include_router(router)
    app.mount(
        "/dashboard/static",
        StaticFiles(directory=DASHBOARD_DIR, check_dir=True),
        name="dashboard-static",
    )
