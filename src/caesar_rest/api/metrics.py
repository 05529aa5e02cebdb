"""Prometheus metrics: requests by route, jobs by state and app, queue depth, job durations.

Request metrics are counted in each API process; with several workers ``caesar-rest serve``
sets ``PROMETHEUS_MULTIPROC_DIR`` so a scrape of any worker sees the sum. Job metrics are read
from the database at scrape time, so every process reports the same, current figures.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from sqlalchemy import case, func, select

from caesar_rest.db.models import JobRecord
from caesar_rest.jobs.states import FINAL, legacy_state

if TYPE_CHECKING:
    from caesar_rest.api.context import ServiceContext

REQUESTS = Counter("caesar_http_requests_total", "HTTP requests", ["method", "route", "status"])
LATENCY = Histogram(
    "caesar_http_request_duration_seconds",
    "HTTP request latency",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 10, 60),
)
DURATION_BUCKETS = (
    1.0,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    600.0,
    1800.0,
    3600.0,
    7200.0,
    21600.0,
    86400.0,
)


_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}


def observe_request(method: str, route: str, status: int, seconds: float) -> None:
    """Count one request."""
    key = (method, route, status)
    pair = _children.get(key)
    if pair is None:
        # Labelled children looked up once per (method, route, status): routes are templates,
        # so the set is small (bounded anyway, in case of odd methods).
        pair = (REQUESTS.labels(method, route, str(status)), LATENCY.labels(method, route))
        if len(_children) < 10_000:
            _children[key] = pair
    pair[0].inc()
    pair[1].observe(seconds)


class JobsCollector(Collector):
    """Job figures read from the database at scrape time."""

    def __init__(self, ctx: ServiceContext):
        self.ctx = ctx

    def collect(self) -> Iterator[Any]:
        by_state = GaugeMetricFamily(
            "caesar_jobs", "Jobs by state and app", labels=["state", "app"]
        )
        queue = GaugeMetricFamily(
            "caesar_jobs_queued", "Jobs waiting to run, by backend", labels=["backend"]
        )
        hist = HistogramMetricFamily(
            "caesar_job_duration_seconds", "Elapsed time of finished jobs", labels=["app"]
        )
        with self.ctx.sessions() as s:
            counts: dict[tuple[str, str], int] = {}
            for phase, reason, app, n in s.execute(
                select(
                    JobRecord.phase, JobRecord.reason, JobRecord.app, func.count(JobRecord.id)
                ).group_by(JobRecord.phase, JobRecord.reason, JobRecord.app)
            ).all():
                key = (legacy_state(phase, reason), app)
                counts[key] = counts.get(key, 0) + int(n)
            for (state, app), n in sorted(counts.items()):
                by_state.add_metric([state, app], n)
            for backend, n in s.execute(
                select(JobRecord.backend, func.count(JobRecord.id))
                .where(JobRecord.phase == "QUEUED")
                .group_by(JobRecord.backend)
            ).all():
                queue.add_metric([backend], int(n))
            cols = [func.sum(case((JobRecord.elapsed <= b, 1), else_=0)) for b in DURATION_BUCKETS]
            rows = s.execute(
                select(
                    JobRecord.app,
                    func.count(JobRecord.id),
                    func.coalesce(func.sum(JobRecord.elapsed), 0.0),
                    *cols,
                )
                .where(
                    JobRecord.phase.in_([p.value for p in FINAL]), JobRecord.elapsed.is_not(None)
                )
                .group_by(JobRecord.app)
            ).all()
            for app, total, ssum, *cum in rows:
                buckets = [
                    (floatToGoString(b), int(c or 0))
                    for b, c in zip(DURATION_BUCKETS, cum, strict=True)
                ]
                buckets.append(("+Inf", int(total)))
                hist.add_metric([app], buckets, float(ssum))
        yield by_state
        yield queue
        yield hist


def render(ctx: ServiceContext) -> tuple[bytes, str]:
    """The exposition text of every metric."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(registry)
    else:
        registry.register(REQUESTS)
        registry.register(LATENCY)
    registry.register(JobsCollector(ctx))
    return generate_latest(registry), CONTENT_TYPE_LATEST
