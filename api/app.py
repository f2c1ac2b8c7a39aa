"""The FastAPI application: ``create_app(settings)``; ``uvicorn api.app:create_app --factory``."""

from __future__ import annotations

import logging

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from api.broker import broker_ok
from api.deps import Principal, require_admin, threaded
from api.errors import install_error_handlers
from api.limits import Authenticate, BodySizeLimit, ConcurrencyLimit
from api.metrics import CONTENT_TYPE, Metrics, RequestMetrics
from api.routes import adapters, admin, completions, files, jobs, methods
from api.routes.dashboard import mount_dashboard
from api.streams import StreamSlots
from registry.db import POOL_SIZE, get_engine
from registry.settings import Settings, get_settings

log = logging.getLogger("steer.api")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.ensure_dirs()
    app = FastAPI(
        title="steering-service",
        description="Adaptation jobs with post-block activation steering; OpenAI-compatible.",
        version="0.1.0",
    )
    app.state.settings = settings
    app.state.stream_slots = StreamSlots(settings.max_streams_per_tenant)
    install_error_handlers(app)
    # Innermost first. Bodies are limited as they stream, once the caller is known: an unknown
    # caller is refused (401) before its body is read, whatever it announces; the key lookup (a
    # database read) runs within admission; requests wait for admission inside the metrics
    # middleware, so the latency histogram includes the wait.
    app.add_middleware(
        BodySizeLimit,
        upload_path="/v1/files",
        max_upload_bytes=settings.max_upload_bytes,
        max_json_bytes=settings.max_json_body_bytes,
    )
    app.add_middleware(Authenticate, settings=settings)
    app.add_middleware(ConcurrencyLimit, limit=POOL_SIZE)
    metrics = Metrics(settings, app)
    app.add_middleware(RequestMetrics, metrics=metrics)
    app.include_router(files.router)
    app.include_router(jobs.router)
    app.include_router(adapters.router)
    app.include_router(admin.router)
    app.include_router(completions.router)
    app.include_router(methods.router)
    mount_dashboard(app)

    @app.get("/metrics", tags=["operations"], include_in_schema=False)
    @threaded
    def prometheus_metrics(_admin: Principal = Depends(require_admin)) -> Response:
        """Prometheus text format: jobs by status, queue depth, throughput, latency (every
        tenant's figures: with ``STEER_AUTH=on`` an admin key is needed)."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/health", tags=["operations"])
    @threaded
    def health() -> JSONResponse:
        checks = {"database": "ok", "broker": "ok"}
        try:
            with get_engine(settings.resolved_database_url).connect() as connection:
                connection.execute(text("SELECT 1"))
        except Exception as exc:
            log.warning("health: database: %s", exc)
            checks["database"] = "unavailable"
        if not broker_ok(settings):
            checks["broker"] = "unavailable"
        healthy = all(v == "ok" for v in checks.values())
        return JSONResponse(
            status_code=200 if healthy else 503,
            content={"status": "ok" if healthy else "degraded", **checks},
        )

    return app
