"""The IVOA UWS 1.1 job tree at ``/uws/jobs``, over the same jobs as the v1.0 API.

See ``docs/uws.md`` for the routes, the parameters and the choices made where the standard
leaves room. Containers are XML (JSON with ``Accept: application/json``); atomic values are
text. Every change answers 303 See Other; bad input answers a JSON error.
"""

from __future__ import annotations

from datetime import datetime
from functools import partial

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, PlainTextResponse, RedirectResponse
from starlette.responses import Response

from caesar_rest.api.context import ServiceContext
from caesar_rest.api.deps import Ctx, Files, Owner, UwsJob, find_uws_job
from caesar_rest.api.downloads import RangedFileResponse
from caesar_rest.api.uws.create import CreateRequest, creation_error, parse_create
from caesar_rest.api.uws.documents import (
    JobRef,
    job_list_json,
    job_list_xml,
    parameters_document,
    parse_uws_time,
    results_document,
    uws_time,
)
from caesar_rest.api.uws.params import (
    Params,
    parse_destruction,
    parse_duration,
    parse_filter_phase,
    parse_int,
    parse_phase,
    read_params,
)
from caesar_rest.api.uws.render import (
    ALIAS,
    PRIMARY,
    job_document,
    job_parameters,
    result_refs,
    value_response,
    wants_json,
    xml_response,
)
from caesar_rest.api.uws.waiter import PhaseWatcher, wait_for_change, watcher_for
from caesar_rest.auth.users import Limits
from caesar_rest.db.models import FileRecord, JobRecord
from caesar_rest.errors import Forbidden, Invalid, NotFound, ServiceError, Unsupported
from caesar_rest.jobs import queries
from caesar_rest.jobs.states import FINAL, Phase
from caesar_rest.logconfig import get_logger
from caesar_rest.storage.direct import offered
from caesar_rest.storage.files import FileService, UploadLimits
from caesar_rest.storage.upload import ReceivedUpload, UploadError

router = APIRouter(prefix="/uws", tags=["uws"])
log = get_logger(__name__)

#: UWS blocks WAIT only in these phases (UWS 1.1 §2.2.3.4).
BLOCKING = frozenset({Phase.PENDING.value, Phase.QUEUED.value, Phase.EXECUTING.value})
ERROR_LOG_TAIL = 64 * 1024


# --- helpers -----------------------------------------------------------------------------
def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _watcher(ctx: ServiceContext) -> PhaseWatcher:
    return watcher_for(ctx.jobs, ctx.settings.uws_wait_recheck)


# --- documents ---------------------------------------------------------------------------
def _render_job(ctx: ServiceContext, request: Request, job: JobRecord) -> Response:
    doc = job_document(ctx.apps, request, job, ctx.jobs.results(job))
    if wants_json(request):
        return JSONResponse(doc.to_json())
    return xml_response(doc.to_xml())


# --- the job list ------------------------------------------------------------------------
@router.get("/jobs", name="uws_jobs", summary="UWS job list (filters PHASE, AFTER, LAST)")
def list_jobs(request: Request, ctx: Ctx, owner: Owner) -> Response:
    """The caller's jobs, oldest first; ``LAST=n`` gives the n most recent, newest first.

    ``PHASE`` may be repeated (any of them); ``AFTER`` keeps jobs created after an instant.
    ARCHIVED jobs are listed only when asked for by ``PHASE``.
    """
    params = Params(request.query_params.multi_items())
    phases = [parse_filter_phase(v) for v in params.getlist("phase")]
    after_s = params.get("after")
    last_s = params.get("last")
    after = None
    if after_s is not None:
        try:
            after = parse_uws_time(after_s)
        except ValueError:
            raise Invalid(f"AFTER must be an ISO-8601 instant; got {after_s!r}") from None
    last = parse_int("LAST", last_s, minimum=1) if last_s is not None else None
    rows = queries.uws_jobs(ctx.engine, owner, phases, after, last)
    refs = [
        JobRef(
            r.id,
            str(request.url_for("uws_job", job_id=r.id)),
            r.phase,
            r.run_id,
            r.owner,
            r.created_at,
        )
        for r in rows
    ]
    if wants_json(request):
        return JSONResponse(job_list_json(refs))
    return xml_response(job_list_xml(refs))


# --- creation ----------------------------------------------------------------------------
async def _receive_inline(request: Request, files: FileService, owner: str) -> ReceivedUpload:
    """The inline image of a multipart creation request, in its temporary file."""
    limits = UploadLimits(request.headers.get("content-length"))
    try:
        return await files.receive(
            request.stream(),
            request.headers.get("content-type"),
            owner,
            limits,
            offered(request.scope),
        )
    except UploadError as exc:
        raise Invalid(
            f"{exc}. A multipart job request carries the image in a part named 'file' "
            "(with a file name); to use an uploaded file send FILE=<file id> form-encoded",
        ) from None


@router.post(
    "/jobs",
    name="uws_create_job",
    status_code=303,
    summary="Create a UWS job (303 to the job)",
    openapi_extra={
        "requestBody": {
            "content": {
                "application/x-www-form-urlencoded": {
                    "schema": {
                        "type": "object",
                        "required": ["app", "file"],
                        "properties": {
                            "app": {"type": "string"},
                            "file": {"type": "string", "description": "file id"},
                            "PHASE": {"type": "string", "enum": ["RUN"]},
                            "RUNID": {"type": "string"},
                            "EXECUTIONDURATION": {"type": "integer"},
                            "DESTRUCTION": {"type": "string", "format": "date-time"},
                        },
                        "additionalProperties": {"type": "string"},
                    }
                },
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["app", "file"],
                        "properties": {
                            "app": {"type": "string"},
                            "file": {"type": "string", "format": "binary"},
                        },
                        "additionalProperties": {"type": "string"},
                    }
                },
            }
        }
    },
)
async def create_job(request: Request, ctx: Ctx, files: Files, owner: Owner) -> RedirectResponse:
    """Parameters: ``app``, ``file`` (a file id, or the FITS image itself in a multipart part
    named ``file``), the app's options by name, and optionally ``PHASE=RUN`` (start at once),
    ``RUNID``, ``EXECUTIONDURATION`` (s) and ``DESTRUCTION`` (ISO-8601). Names are
    case-insensitive. Without ``PHASE=RUN`` the job waits in PENDING.
    """
    mtype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    received: ReceivedUpload | None = None
    if mtype == "multipart/form-data":
        received = await _receive_inline(request, files, owner)
        params = Params([*request.query_params.multi_items(), *received.fields.items()])
    else:
        params = await read_params(request, ctx.settings.max_json_body_kib * 1024)
    try:
        wanted = parse_create(ctx.apps, ctx.settings, params, received is not None)
        job = await _create(ctx, files, owner, wanted, received)
    except ServiceError as exc:
        raise creation_error(exc) from None
    finally:
        if received is not None:
            received.discard()  # a no-op once the file was moved into place
    log.info("uws_job_created", user=owner, job_id=job.id, app=job.app, phase=job.phase)
    return _see_other(str(request.url_for("uws_job", job_id=job.id)))


async def _store_inline(
    files: FileService, owner: str, app_name: str, received: ReceivedUpload, limits: Limits
) -> FileRecord:
    """Register an inline upload as a file of ``owner`` (as the v1.0 upload does)."""
    fmt = await files.identify(received)
    if fmt.kind != "fits":
        raise Unsupported(f"App {app_name} needs a FITS image; the upload is {fmt.kind}")
    return await run_in_threadpool(files.store, owner, received, fmt, limits, action="uws_upload")


async def _create(
    ctx: ServiceContext,
    files: FileService,
    owner: str,
    wanted: CreateRequest,
    received: ReceivedUpload | None,
) -> JobRecord:
    """Store the inline image if any, then the job; the image is forgotten if the job fails."""
    limits = await run_in_threadpool(ctx.users.limits, owner)
    stored: FileRecord | None = None
    if received is not None:
        stored = await _store_inline(files, owner, wanted.app.name, received, limits)
    file_id = stored.id if stored is not None else wanted.file_id
    assert file_id is not None
    try:
        return await run_in_threadpool(
            partial(
                ctx.jobs.create,
                limits=limits,
                run=wanted.run,
                time_limit=wanted.time_limit,
                run_id=wanted.run_id,
                destruction_at=wanted.destruction,
            ),
            owner,
            wanted.app.name,
            wanted.options,
            file_id,
            None,
        )
    except BaseException:
        if stored is not None:
            await run_in_threadpool(files.forget, stored)
        raise


# --- one job -----------------------------------------------------------------------------
def _wait_timeout(ctx: ServiceContext, wait_s: str | None) -> float:
    """Seconds a WAIT request may block: 0 without WAIT, the server's cap for -1."""
    if wait_s is None:
        return 0.0
    try:
        wait = float(wait_s)
    except ValueError:
        raise Invalid(f"WAIT must be a number of seconds; got {wait_s!r}") from None
    cap = ctx.settings.uws_wait_max
    return cap if wait < 0 or wait != wait else min(wait, cap)


@router.get("/jobs/{job_id}", name="uws_job", summary="UWS job document (WAIT blocks)")
async def get_job(job_id: str, request: Request, ctx: Ctx, owner: Owner) -> Response:
    """The job. ``WAIT=n`` blocks up to n seconds (-1: the server's cap) while the job is
    PENDING, QUEUED or EXECUTING, returning as soon as its phase changes; with ``PHASE=X`` it
    returns at once if the job is no longer in X.
    """
    params = Params(request.query_params.multi_items())
    timeout = _wait_timeout(ctx, params.get("wait"))
    phase_s = params.get("phase")
    expect = parse_filter_phase(phase_s) if phase_s is not None else None
    if timeout <= 0:
        job = await run_in_threadpool(find_uws_job, ctx, owner, job_id)
        return await run_in_threadpool(_render_job, ctx, request, job)
    watcher = _watcher(ctx)
    waiter = watcher.register(job_id)  # before reading: no change can slip in between
    try:
        job = await run_in_threadpool(find_uws_job, ctx, owner, job_id)
        waiter.baseline = job.phase
        loop = waiter.loop
        deadline = loop.time() + timeout
        while job.phase in BLOCKING and (expect is None or expect == job.phase):
            remaining = deadline - loop.time()
            if remaining <= 0 or not await wait_for_change(waiter, remaining):
                break
            waiter.event.clear()
            job = await run_in_threadpool(find_uws_job, ctx, owner, job_id)
            if job.phase != waiter.baseline:
                break
    finally:
        watcher.unregister(waiter)
    return await run_in_threadpool(_render_job, ctx, request, job)


def _delete(ctx: ServiceContext, owner: str, job: JobRecord) -> None:
    job = find_uws_job(ctx, owner, job.id)  # read again: the phase decides what to stop
    ctx.jobs.delete(job)
    _watcher(ctx).notify(job.id)
    log.info("uws_job_deleted", user=owner, job_id=job.id)


@router.delete("/jobs/{job_id}", name="uws_delete_job", summary="Destroy a job (303 to list)")
async def delete_job(job: UwsJob, request: Request, ctx: Ctx, owner: Owner) -> RedirectResponse:
    """Abort the job if it runs, remove its results and forget it."""
    await run_in_threadpool(_delete, ctx, owner, job)
    return _see_other(str(request.url_for("uws_jobs")))


@router.post("/jobs/{job_id}", name="uws_post_job", summary="ACTION=DELETE destroys the job")
async def post_job(job: UwsJob, request: Request, ctx: Ctx, owner: Owner) -> RedirectResponse:
    """``ACTION=DELETE`` (for clients that cannot send DELETE)."""
    # The job dependency checks ownership first: another user learns nothing, not even about
    # bad parameters.
    action = (await read_params(request, ctx.settings.max_json_body_kib * 1024)).get("action")
    if action is None or action.strip().upper() != "DELETE":
        raise Invalid("POST to a job takes ACTION=DELETE")
    await run_in_threadpool(_delete, ctx, owner, job)
    return _see_other(str(request.url_for("uws_jobs")))


# --- phase -------------------------------------------------------------------------------
@router.get("/jobs/{job_id}/phase", name="uws_phase", summary="The job's phase (text)")
def get_phase(job: UwsJob, request: Request) -> Response:
    """One phase name."""
    return value_response(request, "phase", job.phase)


def _change_phase(ctx: ServiceContext, owner: str, job: JobRecord, action: str) -> None:
    phase = Phase(job.phase)
    if action == "RUN":
        if phase in (Phase.PENDING, Phase.HELD):
            ctx.jobs.request_run(job)  # QuotaExceeded answers 429
        elif phase in FINAL:
            raise Forbidden(f"Job {job.id} has ended ({phase}); it cannot run again")
        # QUEUED, EXECUTING, ...: already on its way; RUN again changes nothing
    elif phase not in FINAL:
        ctx.jobs.cancel(job)
        log.info("uws_job_aborted", user=owner, job_id=job.id)


@router.post("/jobs/{job_id}/phase", name="uws_set_phase", summary="PHASE=RUN or PHASE=ABORT")
async def post_phase(job: UwsJob, request: Request, ctx: Ctx, owner: Owner) -> RedirectResponse:
    """``RUN`` starts a PENDING job; ``ABORT`` stops an unfinished one. 303 to the job."""
    value = await _param(request, ctx, "phase", "Missing PHASE (RUN or ABORT)")
    action = parse_phase(value, ["RUN", "ABORT"])
    # Read again: the phase may have changed while the body arrived.
    job = await run_in_threadpool(find_uws_job, ctx, owner, job.id)
    await run_in_threadpool(_change_phase, ctx, owner, job, action)
    return _see_other(str(request.url_for("uws_job", job_id=job.id)))


async def _param(request: Request, ctx: ServiceContext, name: str, missing: str) -> str:
    """The value of one parameter of the request (400 with ``missing`` when it is absent)."""
    value = (await read_params(request, ctx.settings.max_json_body_kib * 1024)).get(name)
    if value is None:
        raise Invalid(missing)
    return value


# --- execution duration and destruction --------------------------------------------------
@router.get(
    "/jobs/{job_id}/executionduration",
    name="uws_executionduration",
    summary="Execution time limit in seconds (text)",
)
def get_executionduration(job: UwsJob, request: Request) -> Response:
    """Seconds the job may run before it is stopped."""
    return value_response(request, "executionDuration", job.time_limit)


def _set_time_limit(ctx: ServiceContext, owner: str, job: JobRecord, seconds: int) -> None:
    job = find_uws_job(ctx, owner, job.id)  # read again: gone while the body arrived is 404
    seconds = min(seconds, ctx.users.limits(owner).time_limit)
    if not ctx.jobs.set_time_limit(job, seconds):
        raise Forbidden(f"The execution duration of job {job.id} can be changed only while PENDING")


@router.post(
    "/jobs/{job_id}/executionduration",
    name="uws_set_executionduration",
    summary="EXECUTIONDURATION=n (clamped to the maximum)",
)
async def post_executionduration(
    job: UwsJob, request: Request, ctx: Ctx, owner: Owner
) -> RedirectResponse:
    """Change the time limit of a PENDING job; 0 and large values get the maximum."""
    value = await _param(request, ctx, "executionduration", "Missing EXECUTIONDURATION (seconds)")
    seconds = parse_duration(value, ctx.settings.max_job_time_limit)
    await run_in_threadpool(_set_time_limit, ctx, owner, job, seconds)
    return _see_other(str(request.url_for("uws_job", job_id=job.id)))


@router.get(
    "/jobs/{job_id}/destruction",
    name="uws_destruction",
    summary="When the job is destroyed (ISO-8601 text)",
)
def get_destruction(job: UwsJob, request: Request) -> Response:
    """The destruction instant, or empty when none is set."""
    return value_response(request, "destruction", uws_time(job.destruction_at))


def _set_destruction(ctx: ServiceContext, owner: str, job: JobRecord, when: datetime) -> None:
    job = find_uws_job(ctx, owner, job.id)  # read again: gone while the body arrived is 404
    ctx.jobs.set_destruction(job, when)


@router.post(
    "/jobs/{job_id}/destruction",
    name="uws_set_destruction",
    summary="DESTRUCTION=ISO-8601 (clamped)",
)
async def post_destruction(
    job: UwsJob, request: Request, ctx: Ctx, owner: Owner
) -> RedirectResponse:
    """Move the destruction time (not before now, not beyond ``max_destruction_days``)."""
    value = await _param(request, ctx, "destruction", "Missing DESTRUCTION (an ISO-8601 instant)")
    when = parse_destruction(value, ctx.settings.max_destruction_days)
    await run_in_threadpool(_set_destruction, ctx, owner, job, when)
    return _see_other(str(request.url_for("uws_job", job_id=job.id)))


# --- read-only resources -----------------------------------------------------------------
@router.get("/jobs/{job_id}/error", name="uws_error", summary="Error detail (text)")
def get_error(job: UwsJob, ctx: Ctx) -> Response:
    """The error message and the end of the job's log, for ERROR and ABORTED jobs."""
    if job.phase not in (Phase.ERROR.value, Phase.ABORTED.value):
        raise NotFound(f"Job {job.id} has no error (phase {job.phase})", job_id=job.id)
    return PlainTextResponse(ctx.jobs.error_text(job, ERROR_LOG_TAIL))


@router.get("/jobs/{job_id}/quote", name="uws_quote", summary="Expected end (text; empty)")
def get_quote(job: UwsJob, request: Request) -> Response:
    """Empty: run times depend on the image and are not predicted."""
    return value_response(request, "quote", None)


@router.get("/jobs/{job_id}/owner", name="uws_owner", summary="The job's owner (text)")
def get_owner(job: UwsJob, request: Request) -> Response:
    """The owner's user id."""
    return value_response(request, "ownerId", job.owner)


@router.get("/jobs/{job_id}/parameters", name="uws_parameters", summary="The job's parameters")
def get_parameters(job: UwsJob, request: Request) -> Response:
    """``app``, ``file`` (the input file id) and the app's options as validated."""
    params = job_parameters(job)
    if wants_json(request):
        return JSONResponse({"parameters": params})
    return xml_response(parameters_document(params))


@router.get("/jobs/{job_id}/results", name="uws_results", summary="The job's results")
def get_results(job: UwsJob, request: Request, ctx: Ctx) -> Response:
    """Results with stable ids (``catalog``, ``catalog-csv``, ``regions``, ``log``, ...)."""
    refs = result_refs(ctx.apps, request, job, ctx.jobs.results(job))
    if wants_json(request):
        return JSONResponse({"results": [r.to_json() for r in refs]})
    return xml_response(results_document(refs))


@router.get("/jobs/{job_id}/results/{result_id}", name="uws_result", summary="Download one result")
def get_result(job: UwsJob, result_id: str, ctx: Ctx) -> RangedFileResponse:
    """The result file, with its MIME type and file name."""
    names = (result_id, PRIMARY) if result_id == ALIAS else (result_id,)
    row = ctx.jobs.result(job, names)
    path = None if row is None else ctx.jobs.result_path(job, row)
    if row is None or path is None or not path.is_file():
        raise NotFound(f"Job {job.id} has no result {result_id!r}", job_id=job.id)
    return RangedFileResponse(path, media_type=row.mime, filename=row.filename)
