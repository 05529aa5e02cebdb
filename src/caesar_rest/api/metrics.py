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

from caesar_rest.jobs import queries

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
        figures = queries.job_figures(self.ctx.sessions, DURATION_BUCKETS)
        for (state, app), n in sorted(figures.by_state.items()):
            by_state.add_metric([state, app], n)
        for backend, n in figures.queued.items():
            queue.add_metric([backend], n)
        for app, (total, ssum, cum) in figures.durations.items():
            buckets = [(floatToGoString(b), c) for b, c in zip(DURATION_BUCKETS, cum, strict=True)]
            buckets.append(("+Inf", total))
            hist.add_metric([app], buckets, ssum)
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
