"""The predecessor-compatible ``/caesar/api/v1.0`` API."""

from fastapi import APIRouter

from caesar_rest.api.v1 import accounting, admin, apps, files, jobs, results, tus, viewer

PREFIX = "/caesar/api/v1.0"

# Routes are matched in order and the job routes are the ones clients poll: first.
ROUTERS: tuple[APIRouter, ...] = (
    jobs.router,
    files.router,
    tus.router,
    apps.router,
    accounting.router,
    admin.router,
    results.router,
    viewer.router,
)


def include(parent: APIRouter) -> None:
    """Add the v1.0 routes to ``parent`` under :data:`PREFIX`, one router level deep.

    FastAPI matches included routers level by level (each level re-matches the path), so the
    routers are included directly rather than under a ``/caesar/api/v1.0`` router of their own.
    """
    for r in ROUTERS:
        parent.include_router(r, prefix=PREFIX)
