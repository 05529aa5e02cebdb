"""The output model: list a job's named results, serve each by name, compare two jobs.

Every finished job has the results its app registered (``catalog``, ``catalog-csv``,
``catalog-json``, ``regions``, ``preview``, ``preview-thumb``, ``components``..., ``log``) plus
``archive``, the tar.gz of its folder, built on first request. Files are served with HTTP range
support (:class:`~caesar_rest.api.downloads.RangedFileResponse`: ``206`` with ``Content-Range``
for one range, ``multipart/byteranges`` for several, a JSON ``416`` with
``Content-Range: bytes */size`` for a range it cannot serve) and ``HEAD``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from caesar_rest.api.context import ServiceContext
from caesar_rest.api.deps import Ctx, FinishedJob, Owner, finished, owned_job
from caesar_rest.api.downloads import RangedFileResponse
from caesar_rest.api.schemas import PendingReply, errors
from caesar_rest.db.models import JobRecord
from caesar_rest.errors import Invalid, NotFound
from caesar_rest.jobs.archive import ensure_archive
from caesar_rest.jobs.states import legacy_state
from caesar_rest.logconfig import get_logger
from caesar_rest.storage.paths import safe_join

router = APIRouter(tags=["results"])
log = get_logger(__name__)

ARCHIVE = "archive"
ARCHIVE_MIME = "application/gzip"
#: Shown in the browser rather than downloaded.
_INLINE_PREFIXES = ("image/", "text/", "application/json")


def _archive_size(ctx: ServiceContext, job: JobRecord) -> int | None:
    # Known only once built; the archive is rebuilt when the folder changed since.
    path = ctx.jobs.archive_path(job)
    return path.stat().st_size if path.is_file() else None


@router.get(
    "/job/{job_id}/results",
    summary="List a job's results",
    responses={202: {"model": PendingReply}, **errors(400, 404)},
)
def list_results(job: FinishedJob, request: Request, ctx: Ctx) -> JSONResponse:
    """Named results with file name, MIME type, size and URL, plus the on-demand ``archive``.

    ``archive`` has ``size: null`` until it is first downloaded (it is built then).
    """
    items: list[dict[str, Any]] = []
    for row in ctx.jobs.results(job):
        items.append(
            {
                "id": row.name,
                "name": row.name,
                "filename": row.filename,
                "mime": row.mime,
                "size": row.size,
                "url": str(request.url_for("get_result", job_id=job.id, name=row.name)),
            }
        )
    items.append(
        {
            "id": ARCHIVE,
            "name": ARCHIVE,
            "filename": f"job_{job.id}.tar.gz",
            "mime": ARCHIVE_MIME,
            "size": _archive_size(ctx, job),
            "url": str(request.url_for("get_result", job_id=job.id, name=ARCHIVE)),
            "on_demand": True,
        }
    )
    return JSONResponse(
        {
            "job_id": job.id,
            "app": job.app,
            "state": legacy_state(job.phase, job.reason),
            "results": items,
        }
    )


@router.get(
    "/job/{job_id}/results/{name}",
    name="get_result",
    summary="Download one result by name (HTTP range requests supported)",
    response_class=RangedFileResponse,
    responses={202: {"model": PendingReply}, **errors(400, 404, 416)},
)
async def get_result(
    job: FinishedJob, name: str, request: Request, ctx: Ctx, owner: Owner
) -> Response:
    """The file of result ``name`` (``archive``: the job folder as tar.gz, built on demand).

    Send ``Range: bytes=START-END`` to get part of a file (``206 Partial Content``).
    """
    if name == ARCHIVE:
        path = await run_in_threadpool(ensure_archive, ctx.jobs, job)
        mime, filename = ARCHIVE_MIME, f"job_{job.id}.tar.gz"
    else:
        rows = {r.name: r for r in await run_in_threadpool(ctx.jobs.results, job)}
        row = rows.get(name)
        if row is None:
            known = ", ".join([*sorted(rows), ARCHIVE])
            raise NotFound(f"Job {job.id} has no result {name!r}; results: {known}", job_id=job.id)
        path = ctx.jobs.result_path(job, row)
        mime, filename = row.mime, row.filename
    try:
        stat = path.stat()
    except OSError:
        raise NotFound(f"Result {name!r} of job {job.id} is missing on disk") from None
    inline = mime.startswith(_INLINE_PREFIXES)
    log.info("job_result", action="jobresult", user=owner, job_id=job.id, result=name)
    return RangedFileResponse(
        path,
        media_type=mime,
        filename=filename,
        stat_result=stat,
        content_disposition_type="inline" if inline else "attachment",
    )


def _read_beam(ctx: ServiceContext, job: JobRecord) -> float | None:
    """Beam major axis (arcsec) from the job's summary.json, when the app wrote one."""
    try:
        summary = json.loads(safe_join(ctx.jobs.job_dir(job), "summary.json").read_text())
        value = float(summary["image"]["beam"]["bmaj_arcsec"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return value if math.isfinite(value) and value > 0 else None


def _catalogue_path(ctx: ServiceContext, job: JobRecord, which: str) -> Any:
    name = "catalog-csv" if which == "catalog" else "components-csv"
    row = ctx.jobs.result(job, (name,))
    if row is None:
        raise NotFound(
            f"Job {job.id} ({job.app}) has no {which} catalogue to compare",
            job_id=job.id,
        )
    return ctx.jobs.result_path(job, row)


def _compare(
    ctx: ServiceContext,
    job_a: JobRecord,
    job_b: JobRecord,
    radius: float | None,
    which: str,
    as_png: bool,
) -> dict[str, Any] | bytes:
    from caesar_rest.catalogue.compare import compare_catalogues, comparison_png, read_catalogue

    a = read_catalogue(_catalogue_path(ctx, job_a, which))
    b = read_catalogue(_catalogue_path(ctx, job_b, which))
    labels = (f"{job_a.app} {job_a.id}", f"{job_b.app} {job_b.id}")
    try:
        result = compare_catalogues(a, b, radius, _read_beam(ctx, job_a), labels=labels)
    except ValueError as exc:
        raise Invalid(f"Cannot compare: {exc}") from None
    if as_png:
        return comparison_png(a, b, result)
    return result.to_dict(a, b)


@router.get(
    "/compare",
    summary="Compare the catalogues of two jobs run on the same input file",
    responses={202: {"model": PendingReply}, **errors(400, 404)},
)
async def compare_jobs(
    request: Request,
    ctx: Ctx,
    owner: Owner,
    job_a: str = Query(..., description="First job (A)"),
    job_b: str = Query(..., description="Second job (B)"),
    radius: float | None = Query(
        None, gt=0, le=3600, description="Match radius in arcsec (default: the beam FWHM)"
    ),
    catalog: str = Query(
        "catalog", pattern="^(catalog|components)$", description="'catalog' or 'components'"
    ),
    format: str = Query("json", pattern="^(json|png)$", description="'json' report or 'png' plot"),
) -> Response:
    """Cross-match B against A: matches, unmatched on each side, flux ratio B/A, offsets.

    Both jobs must belong to the caller, have finished successfully and have run on the same
    input file. ``format=png`` returns the comparison plot.
    """
    jobs = []
    for job_id in (job_a, job_b):
        job = finished(await run_in_threadpool(owned_job, job_id, ctx, owner))
        state = legacy_state(job.phase, job.reason)
        if state != "SUCCESS":
            raise Invalid(
                f"Job {job.id} ended with state {state}; it has no catalogue", job_id=job.id
            )
        jobs.append(job)
    ja, jb = jobs
    if ja.input_file_id != jb.input_file_id:
        raise Invalid(
            f"Jobs {ja.id} and {jb.id} ran on different input files "
            f"({ja.input_file_id} and {jb.input_file_id}); compare jobs of the same image",
        )
    out = await run_in_threadpool(_compare, ctx, ja, jb, radius, catalog, format == "png")
    if isinstance(out, bytes):
        return Response(out, media_type="image/png")
    plot = request.url.include_query_params(format="png")
    out = {
        "job_a": {"job_id": ja.id, "app": ja.app},
        "job_b": {"job_id": jb.id, "app": jb.app},
        "input_file": ja.input_file_id,
        "catalog": catalog,
        **out,
        "plot_url": str(plot),
    }
    return JSONResponse(out)
