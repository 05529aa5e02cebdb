"""The FastAPI application factory."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from caesar_rest import __version__
from caesar_rest.api import index, uws, v1
from caesar_rest.api.context import ServiceContext
from caesar_rest.api.crossorigin import install_cross_origin
from caesar_rest.api.downloads import RangedFileResponse
from caesar_rest.api.errors import install_error_handlers
from caesar_rest.api.methods import AllowTable, HeadAsGet
from caesar_rest.api.metrics import RouteLabels
from caesar_rest.api.middleware import RequestIdMiddleware
from caesar_rest.api.openapi import install_openapi
from caesar_rest.api.publichost import PublicHost
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
        docs_url=None,  # /docs and /redoc are added below, with their assets served from
        redoc_url=None,  # this package
    )
    install_error_handlers(app)
    add_docs(app)
    # Matched in order (no path is shared between them): the polled v1 routes first.
    v1.include(app.router)
    app.include_router(uws.router)
    app.include_router(index.router)
    included = (
        [(v1.PREFIX, r.routes) for r in v1.ROUTERS]
        + [("", uws.router.routes), ("", index.router.routes)]
        + [("", [r for r in app.router.routes if isinstance(r, APIRoute)])]
    )
    plain = [r for r in app.router.routes if not isinstance(r, APIRoute)]
    labels = RouteLabels(included, plain=plain)
    app.state.allow_table = AllowTable([*included, ("", plain)])
    install_openapi(app, settings, included)
    app.add_middleware(HeadAsGet)  # innermost: every layer outside sees the real method
    app.add_middleware(PublicHost, public_url=settings.public_url)
    install_cross_origin(app, settings)  # inside the request ids: refusals carry one
    app.add_middleware(RequestIdMiddleware, route_label=labels)
    return app


#: The files of ``/docs`` (Swagger UI, api/static/swagger-ui) and ``/redoc`` (ReDoc,
#: api/static/redoc; see SOURCE.txt in each), by the name they are served under, with their
#: folder and media type.
STATIC_DIR = Path(__file__).parent / "static"
SWAGGER_DIR = STATIC_DIR / "swagger-ui"
DOCS_FILES = {
    "swagger-ui-bundle.js": (SWAGGER_DIR, "text/javascript; charset=utf-8"),
    "swagger-ui.css": (SWAGGER_DIR, "text/css; charset=utf-8"),
    "favicon-32x32.png": (SWAGGER_DIR, "image/png"),
    "redoc.standalone.js": (STATIC_DIR / "redoc", "text/javascript; charset=utf-8"),
}
DOCS_STATIC = "/docs/static"


def add_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` (ReDoc) with their scripts, style sheet and icon
    served by the service.

    FastAPI's own pages load them from a CDN (and ReDoc its fonts from Google), which leaves
    them blank on a host without internet access.
    """
    oauth2_redirect = app.swagger_ui_oauth2_redirect_url

    async def swagger_ui(request: Request) -> HTMLResponse:
        # Behind a proxy that strips a prefix, every URL of the page carries it.
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + str(app.openapi_url),
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{DOCS_STATIC}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{DOCS_STATIC}/swagger-ui.css",
            swagger_favicon_url=f"{root}{DOCS_STATIC}/favicon-32x32.png",
            oauth2_redirect_url=root + oauth2_redirect if oauth2_redirect else None,
            init_oauth=app.swagger_ui_init_oauth,
            swagger_ui_parameters=app.swagger_ui_parameters,
        )

    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_redoc_html(
            openapi_url=root + str(app.openapi_url),
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{DOCS_STATIC}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{DOCS_STATIC}/favicon-32x32.png",
            with_google_fonts=False,
        )

    async def swagger_oauth2_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def swagger_asset(request: Request, name: str) -> Response:
        found = DOCS_FILES.get(name)
        if found is None:
            return JSONResponse({"status": "No such file"}, status_code=404)
        folder, media_type = found
        return RangedFileResponse(
            folder / name,
            media_type=media_type,
            headers={"Cache-Control": "public, max-age=86400"},
        )

    app.add_api_route("/docs", swagger_ui, methods=["GET"], include_in_schema=False)
    app.add_api_route("/redoc", redoc, methods=["GET"], include_in_schema=False)
    if oauth2_redirect:
        app.add_api_route(
            oauth2_redirect, swagger_oauth2_redirect, methods=["GET"], include_in_schema=False
        )
    app.add_api_route(
        DOCS_STATIC + "/{name}", swagger_asset, methods=["GET"], include_in_schema=False
    )


def app_from_env() -> FastAPI:
    """Factory for ``uvicorn --factory caesar_rest.api.app:app_from_env``."""
    return create_app()
