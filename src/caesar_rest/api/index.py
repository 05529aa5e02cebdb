"""The web page, login/logout compatibility routes and health checks."""

from __future__ import annotations

import hmac
import shutil
from html import escape
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
)

from caesar_rest import __version__
from caesar_rest.api.context import ServiceContext
from caesar_rest.api.deps import Ctx, Owner, current_identity
from caesar_rest.api.metrics import render
from caesar_rest.api.schemas import ReadyReply
from caesar_rest.errors import Forbidden
from caesar_rest.jobs import queries

router = APIRouter()

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>caesar-rest</title>
<style>body{{font-family:sans-serif;max-width:46em;margin:2em auto;line-height:1.4}}
form{{margin:1em 0;padding:1em;border:1px solid #ccc}}</style></head>
<body><h1>caesar-rest {version}</h1>
<p>Welcome, you are using the service as <b>{user}</b>.
<a href="app/">Open the web application</a>.</p>
<p>API: <code>/caesar/api/v1.0</code> &middot; <a href="/docs">interactive documentation</a>
&middot; <a href="/openapi.json">OpenAPI</a></p>
<form method="post" action="caesar/api/v1.0/upload" enctype="multipart/form-data">
<label>Upload a FITS image: <input type="file" name="file"></label>
<label>Tag: <input type="text" name="tag"></label> <button>Upload</button></form>
<form method="post" action="caesar/api/v1.0/download">
<label>Download file id: <input type="text" name="uuid" size="34"></label>
<button>Download</button></form>
<p>Apps: {apps}</p>
</body></html>"""


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def index(ctx: Ctx, user: Owner) -> str:
    """A small page with an upload and a download form."""
    return _PAGE.format(
        version=__version__, user=escape(user), apps=escape(", ".join(ctx.apps.names()))
    )


#: The web application's files (api/static/app): plain ES modules and CSS, no build step.
APP_DIR = Path(__file__).parent / "static" / "app"
APP_FILES = {
    "app.js": "text/javascript; charset=utf-8",
    "viewer.js": "text/javascript; charset=utf-8",
    "samp.js": "text/javascript; charset=utf-8",
    "auth.js": "text/javascript; charset=utf-8",
    "tus.js": "text/javascript; charset=utf-8",
    "app.css": "text/css; charset=utf-8",
}


@router.get("/app", include_in_schema=False)
def app_redirect() -> RedirectResponse:
    """The application's page lives at ``/app/`` (its asset URLs are relative)."""
    return RedirectResponse(url="app/", status_code=307)


@router.get("/app/", include_in_schema=False)
def app_page() -> FileResponse:
    """The single-page web application (files, jobs, job page, viewer)."""
    return FileResponse(APP_DIR / "index.html", media_type="text/html; charset=utf-8")


@router.get("/app/config", include_in_schema=False)
def app_config(ctx: Ctx) -> JSONResponse:
    """What the page needs to log in: whether tokens are required, and the provider's client."""
    oidc = ctx.settings.oidc
    if ctx.validator is None:
        return JSONResponse({"auth": False})
    return JSONResponse(
        {
            "auth": True,
            "issuer": oidc.issuer,
            "client_id": oidc.web_client_id,
            "scope": oidc.web_scope,
            "resource": oidc.audience,
        }
    )


@router.get("/app/static/{name}", include_in_schema=False)
def app_asset(name: str) -> Response:
    """One of the application's files, by name (no paths)."""
    media_type = APP_FILES.get(name)
    if media_type is None:
        return JSONResponse({"status": "No such file"}, status_code=404)
    return FileResponse(
        APP_DIR / name, media_type=media_type, headers={"Cache-Control": "no-cache"}
    )


@router.get("/login", summary="Compatibility: who am I")
def login(ctx: Ctx, user: Owner) -> JSONResponse:
    """The caller: the local user with authentication off, else the bearer token's user.

    With ``--aai`` an absent or invalid token has already been answered with 401 (as the
    predecessor's ``/login`` answered), so reaching here means the token is valid.
    """
    if ctx.validator is None:
        return JSONResponse({"status": "authentication is off", "user": user})
    return JSONResponse({"status": "authenticated by a valid bearer token", "user": user})


@router.get("/logout", response_class=PlainTextResponse, summary="Compatibility: log out")
def logout() -> str:
    """Nothing to clear with authentication off."""
    return "Bye bye"


@router.get("/healthz", summary="Liveness")
def healthz() -> JSONResponse:
    """The process answers."""
    return JSONResponse({"status": "ok", "version": __version__})


@router.get(
    "/readyz",
    summary="Readiness: database, storage (and its free space), broker and result store",
    responses={503: {"model": ReadyReply}},
)
def readyz(ctx: Ctx) -> JSONResponse:
    """Checks the database, the data and job folders (present, with ``ready_min_free_mib``
    free on their disk) and, with the celery backend, the broker and the result backend.

    503 names the failed check (``"datadir": "error: disk nearly full (...)"``)."""
    checks: dict[str, str] = {}
    try:
        queries.ping(ctx.engine)
        checks["database"] = "ok"
    except Exception as exc:  # report, do not raise
        checks["database"] = f"error: {type(exc).__name__}"
    for name, path in (("datadir", ctx.settings.datadir), ("jobdir", ctx.settings.jobdir)):
        checks[name] = _folder_check(path, ctx.settings.ready_min_free_mib)
    if ctx.settings.celery_enabled:
        checks["broker"] = _broker_check(ctx)
        checks["result_backend"] = _result_backend_check(ctx)
    ok = all(v.startswith("ok") for v in checks.values())
    return JSONResponse(
        {"status": "ok" if ok else "not ready", "checks": checks}, status_code=200 if ok else 503
    )


def _folder_check(path: Path, min_free_mib: int) -> str:
    """``ok`` when ``path`` is a folder whose disk has ``min_free_mib`` free (0: any)."""
    if not path.is_dir():
        return "missing"
    if min_free_mib <= 0:
        return "ok"
    try:
        free = shutil.disk_usage(path).free
    except OSError as exc:  # report, do not raise
        return f"error: {type(exc).__name__}"
    free_mib = free // 2**20
    if free_mib < min_free_mib:
        return f"error: disk nearly full ({free_mib} MiB free, ready_min_free_mib {min_free_mib})"
    return "ok"


def _broker_check(ctx: ServiceContext) -> str:
    """Connect (and log in) to the Celery broker, with a short timeout: probes must be quick."""
    from kombu.connection import Connection

    from caesar_rest.backends.celery_app import broker_url

    try:
        with Connection(broker_url(ctx.settings.celery), connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=0, timeout=2)
        return "ok"
    except Exception as exc:  # report, do not raise
        return f"error: {type(exc).__name__}"


def _result_backend_check(ctx: ServiceContext) -> str:
    """Reach the result backend the celery backend uses (a ping with a short timeout)."""
    from caesar_rest.backends.celery_app import result_backend_check

    backend = ctx.backends.get("celery")
    app = getattr(backend, "app", None)
    if app is None:
        return "error: no celery backend"
    return result_backend_check(app)


async def metrics_reader(request: Request) -> None:
    """Let the caller read ``/metrics``: anyone with authentication off; with it on, the
    ``metrics_token`` bearer token or an admin's token (401 without a valid token, 403 for
    another user).
    """
    ctx: ServiceContext = request.app.state.ctx
    if ctx.validator is None:
        return
    wanted = ctx.settings.metrics_token
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if (
        wanted is not None
        and scheme.lower() == "bearer"
        and hmac.compare_digest(token.strip().encode(), wanted.get_secret_value().encode())
    ):
        return
    ident = await current_identity(request)
    if not ident.admin:
        raise Forbidden("/metrics needs the admin role or the metrics token")


@router.get("/metrics", include_in_schema=False, dependencies=[Depends(metrics_reader)])
def metrics(ctx: Ctx) -> Response:
    """Prometheus exposition (requests by route, jobs by state and app, durations).

    Open with authentication off; with it on, for the metrics token or an admin
    (:func:`metrics_reader`).
    """
    if not ctx.settings.metrics:
        return JSONResponse({"status": "metrics are off"}, status_code=404)
    body, ctype = render(ctx)
    return Response(body, media_type=ctype)
