"""The FastAPI application factory."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from caesar_rest import __version__
from caesar_rest.api import index, uws, v1
from caesar_rest.api.context import ServiceContext
from caesar_rest.api.errors import install_error_handlers
from caesar_rest.api.middleware import RequestIdMiddleware
from caesar_rest.logconfig import configure_logging, get_logger
from caesar_rest.settings import Settings, get_settings

log = get_logger(__name__)
_gc_frozen = False

DESCRIPTION = """
Upload radio images, run source finders on them, follow the jobs and fetch catalogues,
region files and pictures. The `/caesar/api/v1.0` routes are wire-compatible with the
predecessor service; see `docs/compatibility.md` for the deliberate differences.
"""


def create_app(settings: Settings | None = None, start_backends: bool = True) -> FastAPI:
    """Build the application; the service context is created at start-up."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings)
        ctx = ServiceContext.build(settings)
        app.state.ctx = ctx
        if not settings.aai:
            log.warning(
                "authentication_off",
                user=settings.local_user,
                note="every request acts as this one local user",
            )
        if start_backends:
            ctx.start()
        # The objects made so far (modules, routes, SQLAlchemy metadata) live as long as the
        # process: moving them out of the collector's generations makes each full
        # collection scan only what requests allocate, which cuts the latency spikes.
        # Once per process (test suites start many applications in one process).
        if not _gc_frozen:
            gc.collect()
            gc.freeze()
            globals()["_gc_frozen"] = True
        log.info(
            "service_started",
            version=__version__,
            db=settings.database_url,
            datadir=str(settings.datadir),
            jobdir=str(settings.jobdir),
            scheduler=settings.job_scheduler,
        )
        try:
            yield
        finally:
            ctx.stop()
            log.info("service_stopped")

    app = FastAPI(
        title="caesar-rest",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        root_path=settings.root_path,
    )
    install_error_handlers(app)
    # Matched in order (no path is shared between them): the polled v1 routes first.
    v1.include(app.router)
    app.include_router(uws.router)
    app.include_router(index.router)
    app.add_middleware(RequestIdMiddleware)
    return app


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory caesar_rest.api.app:app_from_env``."""
    return create_app()
