"""Prometheus metrics: requests by route, jobs by state and app, queue depth, job durations.

Request metrics are counted in each API process, labelled with the path template of the route
the request matched (:class:`RouteLabels`); with several workers ``caesar-rest serve`` (and the
gunicorn configuration) sets ``PROMETHEUS_MULTIPROC_DIR`` so a scrape of any worker sees the
sum. Job metrics are read from the database at scrape time, so every process reports the same,
current figures. The ``process_*`` metrics describe the serving process, or, with several
workers, every process of the server (the master and its workers, by ``pid`` label).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from starlette.routing import BaseRoute, Match
from starlette.types import Scope

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


UNMATCHED = "unmatched"


class RouteLabels:
    """The ``route`` label of a request: the path template of the route it matched.

    Routes of included routers carry their own path without the prefix they were included
    under, so the full templates are recorded once, when the application is built, by route
    object. Plain Starlette routes (``/openapi.json``, ``/docs``) leave no route in the scope
    after routing: they are matched again here, only for requests without one.

    Parameters
    ----------
    included
        ``(prefix, routes)`` pairs: the routes of each router and the prefix it was included
        under (``""`` for routes added to the application itself or routers with their own
        prefix only).
    plain
        The application's top-level routes (those without a route object in the scope).
    """

    def __init__(
        self,
        included: Iterable[tuple[str, Iterable[BaseRoute]]],
        plain: Iterable[BaseRoute] = (),
    ) -> None:
        self._by_id: dict[int, str] = {}
        self._keep: list[BaseRoute] = []  # the ids stay unique while the routes are alive
        for prefix, routes in included:
            for route in routes:
                fmt = getattr(route, "path_format", None)
                if fmt is not None:
                    self._by_id[id(route)] = prefix + fmt
                    self._keep.append(route)
        self._plain = [
            (r, str(fmt)) for r in plain if (fmt := getattr(r, "path_format", None)) is not None
        ]

    def __call__(self, scope: Scope) -> str:
        """The label of a request whose routing is done."""
        route = scope.get("route")
        if route is not None:
            label = self._by_id.get(id(route))
            if label is not None:
                return label
            # A route added after the application was built: its own template.
            return str(getattr(route, "path_format", None) or UNMATCHED)
        for candidate, fmt in self._plain:
            match, _ = candidate.matches(scope)
            if match is Match.FULL:
                return fmt
        return UNMATCHED


def _ppid(pid: str) -> int | None:
    """The parent of a process, from ``/proc/PID/stat`` (None when it has gone)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: fields after its last ")".
    return int(stat.rsplit(b")", 1)[1].split()[1])


def server_pids() -> list[int]:
    """The processes of a multi-worker server: its master (this worker's parent) and the
    master's children (the workers; under uvicorn's supervisor also multiprocessing's resource
    tracker)."""
    master = os.getppid()
    pids = [master]
    try:
        names = [e.name for e in os.scandir("/proc") if e.name.isdigit()]
    except OSError:
        return [os.getpid()]
    pids += sorted(int(n) for n in names if _ppid(n) == master)
    return pids


class ServerProcessesCollector(Collector):
    """The ``process_*`` metrics of every server process, labelled by ``pid``.

    In multiprocess mode a scrape reaches one worker; per-process figures of that one alone
    would change from scrape to scrape, so the worker answering reports all of them.
    """

    def collect(self) -> Iterator[Metric]:
        families: dict[str, Metric] = {}
        for pid in server_pids():
            one = ProcessCollector(pid=lambda p=pid: p, registry=None)  # type: ignore[misc]
            for fam in one.collect():
                out = families.setdefault(fam.name, Metric(fam.name, fam.documentation, fam.type))
                for s in fam.samples:
                    out.add_sample(s.name, {**s.labels, "pid": str(pid)}, s.value)
        yield from families.values()


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
        registry.register(ServerProcessesCollector())
    else:
        registry.register(REQUESTS)
        registry.register(LATENCY)
        ProcessCollector(registry=registry)
        # Garbage collections of this process (in multiprocess mode, only of the one worker
        # that answers: left out there).
        registry.register(GC_COLLECTOR)
    registry.register(PLATFORM_COLLECTOR)
    registry.register(JobsCollector(ctx))
    return generate_latest(registry), CONTENT_TYPE_LATEST
