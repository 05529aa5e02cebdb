"""The IVOA UWS 1.1 job tree at ``/uws/jobs``, over the same jobs as the v1.0 API.

See ``docs/uws.md`` for the routes, the parameters and the choices made where the standard
leaves room. Containers are XML (JSON with ``Accept: application/json``); atomic values are
text. Every change answers 303 See Other; bad input answers a JSON error.
"""

from __future__ import annotations

import contextlib
import json
import os
from datetime import datetime, timedelta
from functools import partial
from typing import Any, cast
from urllib.parse import parse_qsl

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse
from python_multipart.exceptions import MultipartParseError
from sqlalchemy import CursorResult, delete, select, update
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from caesar_rest.api.context import ServiceContext
from caesar_rest.api.deps import current_user, get_ctx
from caesar_rest.api.errors import ApiError
from caesar_rest.api.uws.documents import (
    JobDocument,
    JobRef,
    ResultRef,
    job_list_json,
    job_list_xml,
    parameters_document,
    parse_uws_time,
    results_document,
    uws_time,
)
from caesar_rest.api.uws.params import (
    Params,
    app_options,
    parse_filter_phase,
    parse_int,
    parse_phase,
    parse_run_id,
)
from caesar_rest.api.uws.waiter import PhaseWatcher, wait_for_change, watcher_for
from caesar_rest.apps.base import OptionError
from caesar_rest.auth.quotas import QuotaExceeded
from caesar_rest.auth.users import Limits
from caesar_rest.db.models import FileRecord, JobRecord, JobResult
from caesar_rest.jobs.service import (
    LOG_FILE,
    SPEC_FILE,
    InputFileNotFound,
    JobNotFound,
    SubmitError,
)
from caesar_rest.jobs.states import FINAL, Phase, Reason, legacy_state
from caesar_rest.logconfig import get_logger
from caesar_rest.storage.formats import FileFormat, FormatError, sniff
from caesar_rest.storage.paths import (
    is_file_id,
    is_job_id,
    safe_join,
)
from caesar_rest.storage.register import store_upload
from caesar_rest.storage.upload import (
    ReceivedUpload,
    UploadError,
    UploadTooLarge,
    receive_upload,
)
from caesar_rest.timeutil import utcnow

router = APIRouter(prefix="/uws", tags=["uws"])
log = get_logger(__name__)

XML_MEDIA = "application/xml"
#: UWS blocks WAIT only in these phases (UWS 1.1 §2.2.3.4).
BLOCKING = frozenset({Phase.PENDING.value, Phase.QUEUED.value, Phase.EXECUTING.value})
#: Id of the alias of the primary VOTable catalogue, for clients that look for "result" (TAP).
ALIAS = "result"
PRIMARY = "catalog"
ERROR_LOG_TAIL = 64 * 1024


# --- helpers -----------------------------------------------------------------------------
def wants_json(request: Request) -> bool:
    """Whether the client prefers JSON over XML (``Accept: application/json``)."""
    accept = request.headers.get("accept", "")
    best: dict[str, float] = {}
    for item in accept.split(","):
        mtype, *params = (p.strip() for p in item.split(";"))
        q = 1.0
        for p in params:
            if p.startswith("q="):
                with contextlib.suppress(ValueError):
                    q = float(p[2:])
        best[mtype.lower()] = max(q, best.get(mtype.lower(), 0.0))
    q_json = best.get("application/json", 0.0)
    q_xml = max(best.get("application/xml", 0.0), best.get("text/xml", 0.0))
    return q_json > 0 and q_json >= q_xml


def _xml(body: str) -> Response:
    return Response(body, media_type=XML_MEDIA)


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _value(request: Request, name: str, value: str | int | None) -> Response:
    """An atomic value: text (UWS), or ``{name: value}`` for JSON clients."""
    if wants_json(request):
        return JSONResponse({name: value})
    return PlainTextResponse("" if value is None else str(value))


def _not_found(job_id: str) -> ApiError:
    return ApiError(404, f"No job {job_id}", job_id=job_id)


def _owned(ctx: ServiceContext, owner: str, job_id: str) -> JobRecord:
    """The caller's job, or 404 (also for another owner's job and malformed ids)."""
    if not is_job_id(job_id):
        raise _not_found(job_id)
    try:
        return ctx.jobs.get(owner, job_id)
    except JobNotFound:
        raise _not_found(job_id) from None


def _watcher(ctx: ServiceContext) -> PhaseWatcher:
    return watcher_for(ctx.jobs, ctx.settings.uws_wait_recheck)


def _quota_error(exc: QuotaExceeded) -> ApiError:
    retry = exc.body.get("retry_after")
    headers = {"Retry-After": str(retry)} if retry is not None else None
    return ApiError(exc.code, exc.message, headers=headers, **exc.body)


async def _body_params(request: Request, ctx: ServiceContext) -> list[tuple[str, str]]:
    """Parameters of a small form body (URL-encoded, or multipart without files)."""
    mtype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    limit = ctx.settings.max_json_body_kib * 1024
    if mtype in ("", "application/x-www-form-urlencoded"):
        body = bytearray()
        try:
            async for chunk in request.stream():
                body.extend(chunk)
                if len(body) > limit:
                    raise ApiError(413, f"Request body too large (limit {limit} bytes)")
        except ClientDisconnect:
            raise ApiError(400, "Client disconnected during the request") from None
        if not body:
            return []
        try:
            return parse_qsl(
                bytes(body).decode("utf-8"), keep_blank_values=True, max_num_fields=1000
            )
        except (UnicodeDecodeError, ValueError):
            raise ApiError(400, "The form body is not valid UTF-8 form data") from None
    if mtype == "multipart/form-data":
        try:
            form = await request.form(max_files=0, max_fields=1000)
        except Exception as exc:  # starlette's MultiPartException and parser errors
            raise ApiError(400, f"Malformed or unexpected multipart form: {exc}") from None
        return [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    raise ApiError(
        415, "Send parameters as application/x-www-form-urlencoded or multipart/form-data"
    )


async def _all_params(request: Request, ctx: ServiceContext) -> Params:
    return Params([*request.query_params.multi_items(), *await _body_params(request, ctx)])


# --- documents ---------------------------------------------------------------------------
def _param_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _result_refs(
    ctx: ServiceContext, request: Request, job: JobRecord, rows: list[JobResult]
) -> list[ResultRef]:
    app = ctx.apps.get(job.app)
    order = {spec.name: i for i, spec in enumerate(app.results if app else ())}
    rows = sorted(rows, key=lambda r: (order.get(r.name, len(order)), r.name))

    def href(name: str) -> str:
        return str(request.url_for("uws_result", job_id=job.id, result_id=name))

    refs = [ResultRef(r.name, href(r.name), r.size, r.mime) for r in rows]
    names = {r.name for r in rows}
    primary = next((r for r in rows if r.name == PRIMARY), None)
    if primary is not None and ALIAS not in names:
        refs.insert(0, ResultRef(ALIAS, href(ALIAS), primary.size, primary.mime, PRIMARY))
    return refs


def _results_of(ctx: ServiceContext, job_id: str) -> list[JobResult]:
    with ctx.sessions() as s:
        return list(s.scalars(select(JobResult).where(JobResult.job_id == job_id)).all())


def _parameters(job: JobRecord) -> dict[str, str]:
    params = {"app": job.app, "file": job.input_file_id or ""}
    for name, value in (job.options or {}).items():
        params[name] = _param_text(value)
    return params


def _document(ctx: ServiceContext, request: Request, job: JobRecord) -> JobDocument:
    results = _result_refs(ctx, request, job, _results_of(ctx, job.id))
    error: tuple[str, str] | None = None
    if job.phase in (Phase.ERROR.value, Phase.ABORTED.value):
        etype = "transient" if job.reason == Reason.LOST.value else "fatal"
        error = (etype, job.message or job.phase.lower())
    info: dict[str, Any] = {
        "app": job.app,
        "backend": job.backend,
        "state": legacy_state(job.phase, job.reason),
        "message": job.message,
        "reason": job.reason,
        "exitCode": job.exit_code,
        "elapsed": job.elapsed,
        "cpuTime": job.cpu_time,
        "tag": None if job.tag is None else _param_text(job.tag),
    }
    return JobDocument(
        job_id=job.id,
        run_id=job.run_id,
        owner=job.owner,
        phase=job.phase,
        creation_time=job.created_at,
        start_time=job.started_at,
        end_time=job.ended_at,
        execution_duration=job.time_limit,
        destruction=job.destruction_at,
        parameters=_parameters(job),
        results=results,
        error=error,
        info=info,
    )


def _render_job(ctx: ServiceContext, request: Request, job: JobRecord) -> Response:
    doc = _document(ctx, request, job)
    if wants_json(request):
        return JSONResponse(doc.to_json())
    return _xml(doc.to_xml())


# --- the job list ------------------------------------------------------------------------
@router.get("/jobs", name="uws_jobs", summary="UWS job list (filters PHASE, AFTER, LAST)")
def list_jobs(
    request: Request,
    ctx: ServiceContext = Depends(get_ctx),
    owner: str = Depends(current_user),
) -> Response:
    """The caller's jobs, oldest first; ``LAST=n`` gives the n most recent, newest first.

    ``PHASE`` may be repeated (any of them); ``AFTER`` keeps jobs created after an instant.
    ARCHIVED jobs are listed only when asked for by ``PHASE``.
    """
    params = Params(request.query_params.multi_items())
    phases = [parse_filter_phase(v) for v in params.getlist("phase")]
    after_s = params.get("after")
    last_s = params.get("last")
    stmt = select(
        JobRecord.id, JobRecord.phase, JobRecord.run_id, JobRecord.owner, JobRecord.created_at
    ).where(JobRecord.owner == owner)
    if phases:
        stmt = stmt.where(JobRecord.phase.in_(phases))
    else:
        stmt = stmt.where(JobRecord.phase != Phase.ARCHIVED.value)
    if after_s is not None:
        try:
            after = parse_uws_time(after_s)
        except ValueError:
            raise ApiError(400, f"AFTER must be an ISO-8601 instant; got {after_s!r}") from None
        if after.microsecond % 1000 == 0:
            # Times are shown to the millisecond: a job shown at the AFTER instant is not after
            # it, even if its stored time has more digits.
            stmt = stmt.where(JobRecord.created_at >= after + timedelta(milliseconds=1))
        else:
            stmt = stmt.where(JobRecord.created_at > after)
    if last_s is not None:
        last = parse_int("LAST", last_s, minimum=1)
        stmt = stmt.order_by(JobRecord.created_at.desc(), JobRecord.id.desc()).limit(last)
    else:
        stmt = stmt.order_by(JobRecord.created_at, JobRecord.id)
    with ctx.engine.connect() as conn:
        rows = conn.execute(stmt).all()
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
    return _xml(job_list_xml(refs))


# --- creation ----------------------------------------------------------------------------
async def _receive_inline(request: Request, ctx: ServiceContext) -> ReceivedUpload:
    settings = ctx.settings
    limit = settings.max_upload_bytes
    too_large = ApiError(413, f"Upload too large: the limit is {settings.max_upload_mib} MiB")
    clen = request.headers.get("content-length")
    if clen and clen.isdigit() and int(clen) > limit + 64 * 1024:
        raise too_large
    try:
        return await receive_upload(
            request.stream(),
            request.headers.get("content-type"),
            settings.datadir,
            limit,
            buffer_size=settings.upload_chunk_kib * 1024,
            durable=settings.upload_fsync,
        )
    except UploadTooLarge:
        raise too_large from None
    except UploadError as exc:
        raise ApiError(
            400,
            f"{exc}. A multipart job request carries the image in a part named 'file' "
            "(with a file name); to use an uploaded file send FILE=<file id> form-encoded",
        ) from None
    except MultipartParseError as exc:
        raise ApiError(400, f"Malformed multipart body: {exc}") from None
    except ClientDisconnect:
        raise ApiError(400, "Client disconnected during the upload") from None


def _store_inline(
    ctx: ServiceContext, owner: str, received: ReceivedUpload, fmt: FileFormat, limits: Limits
) -> FileRecord:
    """Register an inline upload as a file of ``owner`` (as the v1.0 upload does)."""
    rec = store_upload(ctx.settings, ctx.sessions, owner, received, fmt, limits)
    log.info("file_uploaded", action="uws_upload", user=owner, file_id=rec.id, size=rec.size)
    return rec


def _forget_file(ctx: ServiceContext, rec: FileRecord) -> None:
    """Remove an inline upload whose job could not be created."""
    with ctx.sessions.begin() as s:
        s.execute(delete(FileRecord).where(FileRecord.id == rec.id))
    with contextlib.suppress(FileNotFoundError, ValueError):
        safe_join(ctx.settings.datadir, rec.relpath).unlink()


def _time_limit(ctx: ServiceContext, value: str) -> int:
    """EXECUTIONDURATION in seconds: 0 (unlimited) and too-large values get the maximum."""
    seconds = parse_int("EXECUTIONDURATION", value, minimum=0)
    cap = ctx.settings.max_job_time_limit
    return cap if seconds == 0 else min(seconds, cap)


def _destruction(ctx: ServiceContext, value: str) -> datetime:
    """DESTRUCTION clamped between now and ``max_destruction_days`` from now."""
    try:
        wanted = parse_uws_time(value)
    except ValueError:
        raise ApiError(400, f"DESTRUCTION must be an ISO-8601 instant; got {value!r}") from None
    now = utcnow()
    latest = now + timedelta(days=ctx.settings.max_destruction_days)
    return min(max(wanted, now), latest)


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
async def create_job(
    request: Request,
    ctx: ServiceContext = Depends(get_ctx),
    owner: str = Depends(current_user),
) -> RedirectResponse:
    """Parameters: ``app``, ``file`` (a file id, or the FITS image itself in a multipart part
    named ``file``), the app's options by name, and optionally ``PHASE=RUN`` (start at once),
    ``RUNID``, ``EXECUTIONDURATION`` (s) and ``DESTRUCTION`` (ISO-8601). Names are
    case-insensitive. Without ``PHASE=RUN`` the job waits in PENDING.
    """
    mtype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    received: ReceivedUpload | None = None
    if mtype == "multipart/form-data":
        received = await _receive_inline(request, ctx)
        params = Params([*request.query_params.multi_items(), *received.fields.items()])
    else:
        params = await _all_params(request, ctx)
    try:
        job = await _create(request, ctx, owner, params, received)
    finally:
        if received is not None:
            received.discard()  # a no-op once the file was moved into place
    log.info("uws_job_created", user=owner, job_id=job.id, app=job.app, phase=job.phase)
    return _see_other(str(request.url_for("uws_job", job_id=job.id)))


async def _create(
    request: Request,
    ctx: ServiceContext,
    owner: str,
    params: Params,
    received: ReceivedUpload | None,
) -> JobRecord:
    app_name = params.get("app")
    if not app_name:
        raise ApiError(400, "Missing parameter app (the app to run); see GET /caesar/api/v1.0/apps")
    app = ctx.apps.get(app_name)
    if app is None:
        raise ApiError(400, f"Unknown app {app_name}; apps: {', '.join(ctx.apps.names())}")
    ok, why = app.availability()
    if not ok:
        raise ApiError(400, f"App {app.name} is not available on this service: {why}")
    phase = params.get("phase")
    run = phase is not None and parse_phase(phase, ["RUN"]) == "RUN"
    run_id = parse_run_id(rid) if (rid := params.get("runid")) is not None else None
    exec_s = params.get("executionduration")
    time_limit = _time_limit(ctx, exec_s) if exec_s is not None else None
    dest_s = params.get("destruction")
    destruction = _destruction(ctx, dest_s) if dest_s is not None else None
    file_ids = {v for v in (params.get("file"), params.get("file_id")) if v}
    if len(file_ids) > 1:
        raise ApiError(400, "FILE and FILE_ID disagree; give the input file once")
    file_id = file_ids.pop() if file_ids else None
    if received is not None and file_id:
        raise ApiError(400, "Give either an uploaded image or a file id, not both")
    if received is None and not file_id:
        raise ApiError(
            400,
            "Missing parameter file: the id of an uploaded file, or the FITS image itself "
            "in a multipart part named 'file'",
        )
    if file_id is not None and not is_file_id(file_id):
        raise ApiError(400, f"Invalid file id {file_id!r}: expected 32 hexadecimal digits")
    job_inputs = app_options(app, params.options())
    try:
        app.validate(job_inputs)  # before storing an inline upload that would be refused
    except OptionError as exc:
        raise ApiError(400, f"Invalid options: {exc}", errors=exc.problems) from None
    limits = await run_in_threadpool(ctx.users.limits, owner)
    stored: FileRecord | None = None
    if received is not None:
        try:
            fmt = await run_in_threadpool(sniff, received.temp_path, received.client_filename)
        except FormatError as exc:
            raise ApiError(415, f"File refused: {exc}") from None
        if fmt.kind != "fits":
            raise ApiError(415, f"App {app.name} needs a FITS image; the upload is {fmt.kind}")
        try:
            stored = await run_in_threadpool(_store_inline, ctx, owner, received, fmt, limits)
        except QuotaExceeded as exc:
            raise _quota_error(exc) from None
        file_id = stored.id
    assert file_id is not None
    create = partial(
        ctx.jobs.create,
        limits=limits,
        run=run,
        time_limit=time_limit,
        run_id=run_id,
        destruction_at=destruction,
    )
    try:
        return await run_in_threadpool(create, owner, app.name, job_inputs, file_id, None)
    except BaseException as exc:
        if stored is not None:
            await run_in_threadpool(_forget_file, ctx, stored)
        if isinstance(exc, QuotaExceeded):
            raise _quota_error(exc) from None
        if isinstance(exc, OptionError):
            raise ApiError(400, f"Invalid options: {exc}", errors=exc.problems) from None
        if isinstance(exc, InputFileNotFound):
            raise ApiError(400, f"No uploaded file {file_id}") from None
        if isinstance(exc, SubmitError):
            raise ApiError(400, str(exc)) from None
        raise


# --- one job -----------------------------------------------------------------------------
@router.get("/jobs/{job_id}", name="uws_job", summary="UWS job document (WAIT blocks)")
async def get_job(
    job_id: str,
    request: Request,
    ctx: ServiceContext = Depends(get_ctx),
    owner: str = Depends(current_user),
) -> Response:
    """The job. ``WAIT=n`` blocks up to n seconds (-1: the server's cap) while the job is
    PENDING, QUEUED or EXECUTING, returning as soon as its phase changes; with ``PHASE=X`` it
    returns at once if the job is no longer in X.
    """
    params = Params(request.query_params.multi_items())
    wait_s = params.get("wait")
    phase_s = params.get("phase")
    expect = parse_filter_phase(phase_s) if phase_s is not None else None
    timeout = 0.0
    if wait_s is not None:
        try:
            wait = float(wait_s)
        except ValueError:
            raise ApiError(400, f"WAIT must be a number of seconds; got {wait_s!r}") from None
        cap = ctx.settings.uws_wait_max
        timeout = cap if wait < 0 or wait != wait else min(wait, cap)
    if timeout <= 0:
        job = await run_in_threadpool(_owned, ctx, owner, job_id)
        return await run_in_threadpool(_render_job, ctx, request, job)
    watcher = _watcher(ctx)
    waiter = watcher.register(job_id)  # before reading: no change can slip in between
    try:
        job = await run_in_threadpool(_owned, ctx, owner, job_id)
        waiter.baseline = job.phase
        loop = waiter.loop
        deadline = loop.time() + timeout
        while job.phase in BLOCKING and (expect is None or expect == job.phase):
            remaining = deadline - loop.time()
            if remaining <= 0 or not await wait_for_change(waiter, remaining):
                break
            waiter.event.clear()
            job = await run_in_threadpool(_owned, ctx, owner, job_id)
            if job.phase != waiter.baseline:
                break
    finally:
        watcher.unregister(waiter)
    return await run_in_threadpool(_render_job, ctx, request, job)


def _delete(ctx: ServiceContext, owner: str, job_id: str) -> None:
    job = _owned(ctx, owner, job_id)
    ctx.jobs.delete(job)
    _watcher(ctx).notify(job_id)
    log.info("uws_job_deleted", user=owner, job_id=job_id)


@router.delete("/jobs/{job_id}", name="uws_delete_job", summary="Destroy a job (303 to list)")
async def delete_job(
    job_id: str,
    request: Request,
    ctx: ServiceContext = Depends(get_ctx),
    owner: str = Depends(current_user),
) -> RedirectResponse:
    """Abort the job if it runs, remove its results and forget it."""
    await run_in_threadpool(_delete, ctx, owner, job_id)
    return _see_other(str(request.url_for("uws_jobs")))


@router.post("/jobs/{job_id}", name="uws_post_job", summary="ACTION=DELETE destroys the job")
async def post_job(
    job_id: str,
    request: Request,
    ctx: ServiceContext = Depends(get_ctx),
    owner: str = Depends(current_user),
) -> RedirectResponse:
    """``ACTION=DELETE`` (for clients that cannot send DELETE)."""
    # Ownership first: another user must learn nothing, not even about bad parameters.
    await run_in_threadpool(_owned, ctx, owner, job_id)
    params = await _all_params(request, ctx)
    action = params.get("action")
    if action is None or action.strip().upper() != "DELETE":
        raise ApiError(400, "POST to a job takes ACTION=DELETE")
    await run_in_threadpool(_delete, ctx, owner, job_id)
    return _see_other(str(request.url_for("uws_jobs")))


# --- phase -------------------------------------------------------------------------------
@router.get("/jobs/{job_id}/phase", name="uws_phase", summary="The job's phase (text)")
def get_phase(
    job_id: str,
    request: Request,
    ctx: ServiceContext = Depends(get_ctx),
    owner: str = Depends(current_user),
) -> Response:
    """One phase name."""
    return _value(request, "phase", _owned(ctx, owner, job_id).phase)


def _change_phase(ctx: ServiceContext, owner: str, job_id: str, action: str) -> None:
    job = _owned(ctx, owner, job_id)
    phase = Phase(job.phase)
    if action == "RUN":
        if phase in (Phase.PENDING, Phase.HELD):
            try:
                ctx.jobs.request_run(job)
            except QuotaExceeded as exc:
                raise _quota_error(exc) from None
        elif phase in FINAL:
            raise ApiError(403, f"Job {job_id} has ended ({phase}); it cannot run again")
        # QUEUED, EXECUTING, ...: already on its way; RUN again changes nothing
    elif phase not in FINAL:
        ctx.jobs.cancel(job)
        log.info("uws_job_aborted", user=owner, job_id=job_id)


@router.post("/jobs/{job_id}/phase", name="uws_set_phase", summary="PHASE=RUN or PHASE=ABORT")
async def post_phase(
    job_id: str,
    request: Request,
    ctx: ServiceContext = Depends(get_ctx),
    owner: str = Depends(current_user),
) -> RedirectResponse:
    """``RUN`` starts a PENDING job; ``ABORT`` stops an unfinished one. 303 to the job."""
    # Ownership first: another user must learn nothing, not even about bad parameters.
    await run_in_threadpool(_owned, ctx, owner, job_id)
    params = await _all_params(request, ctx)
    value = params.get("phase")
    if value is None:
        raise ApiError(400, "Missing PHASE (RUN or ABORT)")
    action = parse_phase(value, ["RUN", "ABORT"])
    await run_in_threadpool(_change_phase, ctx, owner, job_id, action)
    return _see_other(str(request.url_for("uws_job", job_id=job_id)))


# --- execution duration and destruction --------------------------------------------------
@router.get(
    "/jobs/{job_id}/executionduration",
    name="uws_executionduration",
    summary="Execution time limit in seconds (text)",
)
def get_executionduration(
    job_id: str,
    request: Request,
    ctx: ServiceContext = Depends(get_ctx),
    owner: str = Depends(current_user),
) -> Response:
    """Seconds the job may run before it is stopped."""
    return _value(request, "executionDuration", _owned(ctx, owner, job_id).time_limit)


def _set_time_limit(ctx: ServiceContext, owner: str, job_id: str, seconds: int) -> None:
    job = _owned(ctx, owner, job_id)
    seconds = min(seconds, ctx.users.limits(owner).time_limit)
    with ctx.sessions.begin() as s:
        result = s.execute(
            update(JobRecord)
            .where(JobRecord.id == job.id, JobRecord.phase == Phase.PENDING.value)
            .values(time_limit=seconds, updated_at=utcnow())
        )
        changed = cast(CursorResult[Any], result).rowcount
    if not changed:
        raise ApiError(
            403, f"The execution duration of job {job_id} can be changed only while PENDING"
        )
    # Keep the job's spec (read by backends) in line with the record.
    spec_path = ctx.jobs.job_dir(job) / SPEC_FILE
    with contextlib.suppress(OSError, ValueError):
        spec = json.loads(spec_path.read_text())
        spec["time_limit"] = seconds
        tmp = spec_path.with_name(f".{SPEC_FILE}.tmp")
        tmp.write_text(json.dumps(spec, indent=1))
        os.replace(tmp, spec_path)


async def _owned_param(
    request: Request, ctx: ServiceContext, owner: str, job_id: str, name: str, missing: str
) -> str:
    """The value of one parameter of a request on the caller's job (400 when it is absent).

    Ownership is checked first: another user must learn nothing, not even about bad parameters.
    """
    await run_in_threadpool(_owned, ctx, owner, job_id)
    value = (await _all_params(request, ctx)).get(name)
    if value is None:
        raise ApiError(400, missing)
    return value


@router.post(
    "/jobs/{job_id}/executionduration",
    name="uws_set_executionduration",
    summary="EXECUTIONDURATION=n (clamped to the maximum)",
)
async def post_executionduration(
    job_id: str,
    request: Request,
    ctx: ServiceContext = Depends(get_ctx),
    owner: str = Depends(current_user),
) -> RedirectResponse:
    """Change the time limit of a PENDING job; 0 and large values get the maximum."""
    value = await _owned_param(
        request, ctx, owner, job_id, "executionduration", "Missing EXECUTIONDURATION (seconds)"
    )
    seconds = _time_limit(ctx, value)
    await run_in_threadpool(_set_time_limit, ctx, owner, job_id, seconds)
    return _see_other(str(request.url_for("uws_job", job_id=job_id)))


@router.get(
    "/jobs/{job_id}/destruction",
    name="uws_destruction",
    summary="When the job is destroyed (ISO-8601 text)",
)
def get_destruction(
    job_id: str,
    request: Request,
    ctx: ServiceContext = Depends(get_ctx),
    owner: str = Depends(current_user),
) -> Response:
    """The destruction instant, or empty when none is set."""
    return _value(request, "destruction", uws_time(_owned(ctx, owner, job_id).destruction_at))


def _set_destruction(ctx: ServiceContext, owner: str, job_id: str, when: datetime) -> None:
    job = _owned(ctx, owner, job_id)
    with ctx.sessions.begin() as s:
        s.execute(
            update(JobRecord)
            .where(JobRecord.id == job.id)
            .values(destruction_at=when, updated_at=utcnow())
        )


@router.post(
    "/jobs/{job_id}/destruction",
    name="uws_set_destruction",
    summary="DESTRUCTION=ISO-8601 (clamped)",
)
async def post_destruction(
    job_id: str,
    request: Request,
    ctx: ServiceContext = Depends(get_ctx),
    owner: str = Depends(current_user),
) -> RedirectResponse:
    """Move the destruction time (not before now, not beyond ``max_destruction_days``)."""
    value = await _owned_param(
        request, ctx, owner, job_id, "destruction", "Missing DESTRUCTION (an ISO-8601 instant)"
    )
    when = _destruction(ctx, value)
    await run_in_threadpool(_set_destruction, ctx, owner, job_id, when)
    return _see_other(str(request.url_for("uws_job", job_id=job_id)))


# --- read-only resources -----------------------------------------------------------------
@router.get("/jobs/{job_id}/error", name="uws_error", summary="Error detail (text)")
def get_error(
    job_id: str,
    ctx: ServiceContext = Depends(get_ctx),
    owner: str = Depends(current_user),
) -> Response:
    """The error message and the end of the job's log, for ERROR and ABORTED jobs."""
    job = _owned(ctx, owner, job_id)
    if job.phase not in (Phase.ERROR.value, Phase.ABORTED.value):
        raise ApiError(404, f"Job {job_id} has no error (phase {job.phase})", job_id=job_id)
    text = f"{job.phase}: {job.message}\n"
    logfile = ctx.jobs.job_dir(job) / LOG_FILE
    with contextlib.suppress(OSError):
        with open(logfile, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            fh.seek(max(0, size - ERROR_LOG_TAIL))
            tail = fh.read().decode("utf-8", "replace")
        text += f"\n--- end of job.log ---\n{tail}"
    return PlainTextResponse(text)


@router.get("/jobs/{job_id}/quote", name="uws_quote", summary="Expected end (text; empty)")
def get_quote(
    job_id: str,
    request: Request,
    ctx: ServiceContext = Depends(get_ctx),
    owner: str = Depends(current_user),
) -> Response:
    """Empty: run times depend on the image and are not predicted."""
    _owned(ctx, owner, job_id)
    return _value(request, "quote", None)


@router.get("/jobs/{job_id}/owner", name="uws_owner", summary="The job's owner (text)")
def get_owner(
    job_id: str,
    request: Request,
    ctx: ServiceContext = Depends(get_ctx),
    owner: str = Depends(current_user),
) -> Response:
    """The owner's user id."""
    return _value(request, "ownerId", _owned(ctx, owner, job_id).owner)


@router.get("/jobs/{job_id}/parameters", name="uws_parameters", summary="The job's parameters")
def get_parameters(
    job_id: str,
    request: Request,
    ctx: ServiceContext = Depends(get_ctx),
    owner: str = Depends(current_user),
) -> Response:
    """``app``, ``file`` (the input file id) and the app's options as validated."""
    params = _parameters(_owned(ctx, owner, job_id))
    if wants_json(request):
        return JSONResponse({"parameters": params})
    return _xml(parameters_document(params))


@router.get("/jobs/{job_id}/results", name="uws_results", summary="The job's results")
def get_results(
    job_id: str,
    request: Request,
    ctx: ServiceContext = Depends(get_ctx),
    owner: str = Depends(current_user),
) -> Response:
    """Results with stable ids (``catalog``, ``catalog-csv``, ``regions``, ``log``, ...)."""
    job = _owned(ctx, owner, job_id)
    refs = _result_refs(ctx, request, job, _results_of(ctx, job.id))
    if wants_json(request):
        return JSONResponse({"results": [r.to_json() for r in refs]})
    return _xml(results_document(refs))


@router.get("/jobs/{job_id}/results/{result_id}", name="uws_result", summary="Download one result")
def get_result(
    job_id: str,
    result_id: str,
    ctx: ServiceContext = Depends(get_ctx),
    owner: str = Depends(current_user),
) -> FileResponse:
    """The result file, with its MIME type and file name."""
    job = _owned(ctx, owner, job_id)
    rows = {r.name: r for r in _results_of(ctx, job.id)}
    row = rows.get(result_id)
    if row is None and result_id == ALIAS:
        row = rows.get(PRIMARY)
    missing = ApiError(404, f"Job {job_id} has no result {result_id!r}", job_id=job_id)
    if row is None:
        raise missing
    path = safe_join(ctx.jobs.job_dir(job), row.filename)
    if not path.is_file():
        raise missing
    return FileResponse(path, media_type=row.mime, filename=row.filename)
