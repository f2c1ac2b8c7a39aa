"""Prometheus metrics at ``GET /metrics`` and the request middleware that feeds them.

Job figures are read from the registry at scrape time (so every API replica reports the same
truth and nothing is lost on restart): jobs by status, queue depth per queue, training
throughput of running jobs, tokens trained. Request latency is a histogram per route template
(``/v1/fine_tuning/jobs/{job_id}``, never the raw path, so ids do not explode the label set).
Each request is also logged once (its path in the message, so JSON logs carry its job id).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from registry.db import session_scope
from registry.models import Job, Metric
from registry.settings import Settings
from registry.states import JobStatus

log = logging.getLogger("steer.api.requests")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class RegistryCollector(Collector):
    def __init__(self, settings: Settings, app: FastAPI):
        self.settings, self.app = settings, app

    def collect(self) -> Iterator[Any]:
        """The registry's job figures, then generation's once this process has served any."""
        yield from _job_metrics(self.settings)
        served = getattr(self.app.state, "served_models", None)
        if served is not None:
            yield from _generation_metrics(served.stats())


def _job_metrics(settings: Settings) -> tuple[Any, ...]:
    """Jobs by status, queue depth per queue, running jobs' throughput, tokens trained."""
    jobs = GaugeMetricFamily("steer_jobs", "Fine-tuning jobs by status", labels=["status"])
    depth = GaugeMetricFamily(
        "steer_queue_depth", "Queued jobs waiting for a worker, per queue", labels=["queue"]
    )
    speed = GaugeMetricFamily(
        "steer_running_tokens_per_second",
        "Training throughput summed over running jobs (their latest step)",
    )
    tokens = CounterMetricFamily("steer_trained_tokens", "Tokens trained by all jobs")
    with session_scope(settings.resolved_database_url) as session:
        counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
        queued = session.execute(
            select(Job.queue, func.count())
            .where(Job.status == JobStatus.QUEUED.value)
            .group_by(Job.queue)
        ).all()
        latest = (
            select(func.max(Metric.id))
            .join(Job, Job.id == Metric.job_id)
            .where(Job.status == JobStatus.RUNNING.value, Metric.name == "tokens_per_second")
            .group_by(Metric.job_id)
        )
        throughput = session.scalar(
            select(func.coalesce(func.sum(Metric.value), 0.0)).where(Metric.id.in_(latest))
        )
        trained = session.scalar(select(func.coalesce(func.sum(Job.trained_tokens), 0)))
    for status in JobStatus:
        jobs.add_metric([status.value], counts.get(status.value, 0))
    for queue, count in queued:
        depth.add_metric([queue], count)
    speed.add_metric([], float(throughput or 0.0))
    tokens.add_metric([], float(trained or 0))
    return jobs, depth, speed, tokens


def _generation_metrics(stats: Any) -> tuple[Any, ...]:
    """The generation endpoints' cache lookups, adapter pool, rows in flight and batching."""
    lookups = CounterMetricFamily(
        "steer_generation_cache_lookups",
        "Model lookups of the generation endpoints (base models and full copies)",
        labels=["result"],
    )
    lookups.add_metric(["hit"], stats.model_hits)
    lookups.add_metric(["miss"], stats.model_misses)
    adapters = CounterMetricFamily(
        "steer_generation_adapter_lookups",
        "Adapter pool lookups of the generation endpoints",
        labels=["result"],
    )
    adapters.add_metric(["hit"], stats.pool.hits)
    adapters.add_metric(["miss"], stats.pool.misses)
    resident = GaugeMetricFamily(
        "steer_generation_adapter_pool_bytes", "Bytes of adapters resident for generation"
    )
    resident.add_metric([], stats.pool.bytes)
    rows = GaugeMetricFamily(
        "steer_generation_requests_in_flight", "Generation requests decoding or waiting"
    )
    rows.add_metric([], stats.rows_in_flight)
    passes = CounterMetricFamily(
        "steer_generation_forward_passes",
        "Forward passes of the generation engines by phase",
        labels=["phase"],
    )
    carried = CounterMetricFamily(
        "steer_generation_rows",
        "Request rows those forward passes carried (rows / passes: the mean batch)",
        labels=["phase"],
    )
    for phase, count in stats.passes.items():
        passes.add_metric([phase], count)
        carried.add_metric([phase], stats.rows_run[phase])
    return lookups, adapters, resident, rows, passes, carried


class Metrics:
    """One per app (tests run several apps in one process)."""

    def __init__(self, settings: Settings, app: FastAPI):
        self.registry = CollectorRegistry()
        self.latency = Histogram(
            "steer_http_request_duration_seconds",
            "HTTP request latency by route template",
            ["method", "route", "status"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.registry.register(RegistryCollector(settings, app))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestMetrics:
    """ASGI middleware: latency histogram + one log line per request."""

    def __init__(self, app: Any, *, metrics: Metrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_wrapper(message: dict) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            seconds = time.perf_counter() - started
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.latency.labels(scope["method"], route, str(status["code"])).observe(
                seconds
            )
            log.info(
                "%s %s %s %.1fms",
                scope["method"],
                scope.get("path", ""),
                status["code"],
                seconds * 1000,
                extra={
                    "http": {
                        "method": scope["method"],
                        "route": route,
                        "status": status["code"],
                        "ms": round(seconds * 1000, 1),
                    },
                },
            )
