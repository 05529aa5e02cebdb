"""Submit, follow, cancel and list jobs; fetch their outputs."""

from __future__ import annotations

import base64
import json
from functools import partial
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response
from sqlalchemy import bindparam, select

from caesar_rest.api.context import ServiceContext
from caesar_rest.api.deps import current_identity, current_user, get_and_post, get_ctx
from caesar_rest.api.errors import ApiError
from caesar_rest.api.quota import quota_warning
from caesar_rest.api.routing import DirectRoute
from caesar_rest.api.schemas import (
    JobDoc,
    MessageReply,
    PendingReply,
    StatusReply,
    SubmitErrorBody,
    SubmitReply,
    SubmitRequest,
    errors,
)
from caesar_rest.apps.base import OptionError
from caesar_rest.auth.quotas import QuotaExceeded
from caesar_rest.db.fastread import EngineReader
from caesar_rest.db.models import JobEvent, JobRecord, JobResult
from caesar_rest.jobs.archive import ensure_archive
from caesar_rest.jobs.service import InputFileNotFound, JobNotFound, SubmitError
from caesar_rest.jobs.states import LEGACY_UNFINISHED, legacy_state
from caesar_rest.logconfig import get_logger
from caesar_rest.storage.paths import is_file_id, is_job_id, safe_join
from caesar_rest.timeutil import iso

router = APIRouter(tags=["jobs"])
log = get_logger(__name__)

_STATUS_COLS = (
    JobRecord.id,
    JobRecord.owner,
    JobRecord.pid,
    JobRecord.phase,
    JobRecord.reason,
    JobRecord.message,
    JobRecord.exit_code,
    JobRecord.elapsed,
    JobRecord.tag,
    JobRecord.backend,
    JobRecord.backend_job_id,
    JobRecord.created_at,
    JobRecord.started_at,
    JobRecord.ended_at,
)


def _submit_error(code: int, message: str, body: Any, **extra: Any) -> ApiError:
    """The predecessor's submit error shape."""
    app = body.get("app", "") if isinstance(body, dict) else ""
    return ApiError(
        code,
        message,
        state="ABORTED",
        app=app if isinstance(app, str) else "",
        job_id="",
        submit_date="",
        **extra,
    )


@router.post(
    "/job",
    status_code=202,
    summary="Submit a job",
    responses={202: {"model": SubmitReply}, 400: {"model": SubmitErrorBody}},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": SubmitRequest.model_json_schema()}},
        }
    },
)
async def submit_job(
    request: Request,
    ctx: ServiceContext = Depends(get_ctx),
    owner: str = Depends(current_user),
) -> JSONResponse:
    """Body: ``{"app": str, "job_inputs": {option: value}, "data_inputs": file id, "tag": any}``.

    Answers 202 with ``state: PENDING`` once the job is stored and dispatched.
    """
    max_body = ctx.settings.max_json_body_kib * 1024
    clen = request.headers.get("content-length", "")
    if clen.isdigit() and int(clen) > max_body:
        raise _submit_error(413, f"Request body too large (limit {max_body} bytes)", None)
    raw = await request.body()
    if len(raw) > max_body:
        raise _submit_error(413, f"Request body too large (limit {max_body} bytes)", None)
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError):
        raise _submit_error(400, "Request body is not valid JSON", None) from None
    if not isinstance(body, dict) or not body:
        raise _submit_error(400, "Request body must be a non-empty JSON object", body)
    app = body.get("app")
    if not isinstance(app, str) or not app:
        raise _submit_error(400, "Missing or empty 'app' (the app name)", body)
    data_inputs = body.get("data_inputs")
    if data_inputs is None:
        raise _submit_error(400, "Missing 'data_inputs' (the file id of the input image)", body)
    if not isinstance(data_inputs, str) or not is_file_id(data_inputs):
        raise _submit_error(400, "'data_inputs' must be a file id (32 hexadecimal digits)", body)
    job_inputs = body.get("job_inputs", {})
    if job_inputs is None:
        job_inputs = {}
    if not isinstance(job_inputs, dict):
        raise _submit_error(400, "'job_inputs' must be a JSON object of options", body)
    tag = body.get("tag")
    if tag is not None and len(json.dumps(tag)) > 4096:
        raise _submit_error(400, "'tag' is too long (4 KiB at most)", body)
    limits = await run_in_threadpool(ctx.users.limits, owner)
    try:
        job = await run_in_threadpool(
            partial(ctx.jobs.create, limits=limits), owner, app, job_inputs, data_inputs, tag
        )
    except QuotaExceeded as exc:
        headers = (
            {"Retry-After": str(exc.body["retry_after"])} if "retry_after" in exc.body else None
        )
        raise ApiError(
            exc.code,
            exc.message,
            headers=headers,
            state="ABORTED",
            app=app,
            job_id="",
            submit_date="",
            **exc.body,
        ) from None
    except OptionError as exc:
        raise _submit_error(400, f"Invalid job_inputs: {exc}", body, errors=exc.problems) from None
    except InputFileNotFound:
        raise _submit_error(
            400, "Cannot find file corresponding to given data input uid!", body
        ) from None
    except SubmitError as exc:
        raise _submit_error(400, str(exc), body) from None
    return JSONResponse(
        {
            "status": "Job submitted and registered with success",
            "state": "PENDING",
            "app": job.app,
            "job_id": job.id,
            "submit_date": iso(job.created_at),
            "job_inputs": job.job_inputs,
            "data_inputs": job.input_file_id,
            "tag": job.tag,
            **await run_in_threadpool(quota_warning, ctx, owner, limits),
        },
        status_code=202,
    )


def _check_job_id(job_id: str) -> None:
    if not is_job_id(job_id):
        raise ApiError(400, f"Invalid job id {job_id!r}")


def _not_found(job_id: str, owner: str) -> ApiError:
    return ApiError(404, f"Job {job_id} not found for user {owner}!", job_id=job_id)


# Built once: compiling it on every request is a measurable part of the status route. The
# job and its events in one statement (one round trip on a database server).
_STATUS_STMT = (
    select(
        *_STATUS_COLS,
        JobEvent.id.label("ev_id"),
        JobEvent.at.label("ev_at"),
        JobEvent.from_phase.label("ev_from"),
        JobEvent.to_phase.label("ev_to"),
        JobEvent.reason.label("ev_reason"),
        JobEvent.message.label("ev_message"),
    )
    .select_from(JobRecord)
    .outerjoin(JobEvent, JobEvent.job_id == JobRecord.id)
    .where(JobRecord.id == bindparam("job_id"))
    .order_by(JobEvent.id)
)


def _status_doc(ctx: ServiceContext, owner: str, job_id: str) -> dict[str, Any] | None:
    """The status document of the caller's job, or None."""
    reader = ctx.reader or EngineReader(ctx.engine)  # build() always makes one
    rows = reader.all(_STATUS_STMT, {"job_id": job_id})
    if not rows or rows[0].owner != owner:
        return None
    row = rows[0]
    return {
        "job_id": row.id,
        "pid": legacy_pid(row.pid, row.backend_job_id),
        "state": legacy_state(row.phase, row.reason),
        "status": row.message,
        "exit_code": -1 if row.exit_code is None else row.exit_code,
        "elapsed_time": 0 if row.elapsed is None else row.elapsed,
        "tag": row.tag,
        "phase": row.phase,
        "backend": row.backend,
        "submit_date": iso(row.created_at),
        "start_date": iso(row.started_at),
        "end_date": iso(row.ended_at),
        # State changes with time and reason (backend and monitor decisions included).
        "events": [
            {
                "time": iso(e.ev_at),
                "from": e.ev_from,
                "to": e.ev_to,
                "reason": e.ev_reason,
                "message": e.ev_message,
            }
            for e in rows
            if e.ev_id is not None  # a job without events: one row, no event
        ],
    }


async def job_status(job_id: str, request: Request) -> JSONResponse:
    """Legacy fields (state, status, exit_code, elapsed_time, pid) plus the UWS phase."""
    # The route clients poll: a DirectRoute (no dependency solving, which was a fifth of its
    # time), so the context and the caller are read here.
    ctx: ServiceContext = request.app.state.ctx
    owner = (await current_identity(request)).user_id
    _check_job_id(job_id)
    if ctx.reader is not None and ctx.reader.inline:
        # SQLite primary-key reads take tens of microseconds: a thread hand-off costs more.
        doc = _status_doc(ctx, owner, job_id)
    else:
        doc = await run_in_threadpool(_status_doc, ctx, owner, job_id)
    if doc is None:
        raise ApiError(
            404,
            f"Job {job_id} not found for user {owner}!",
            job_id=job_id,
            pid="",
            state="",
            exit_code="",
            elapsed_time="",
            tag="",
        )
    return JSONResponse(doc)


router.add_api_route(
    "/job/{job_id}/status",
    job_status,
    methods=["GET"],
    summary="Status of a job",
    responses={200: {"model": StatusReply}, **errors(400, 404)},
    route_class_override=DirectRoute,
)


def legacy_pid(pid: int | None, backend_job_id: str | None) -> str:
    """The predecessor's ``pid``: the local process id, else the backend's job id (Slurm...)."""
    if pid is not None:
        return str(pid)
    return backend_job_id or ""


def job_doc(j: Any) -> dict[str, Any]:
    """The predecessor's job document (without server paths)."""
    return {
        "job_id": j.id,
        "submit_date": iso(j.created_at),
        "app": j.app,
        "job_inputs": j.job_inputs,
        "data_inputs": j.input_file_id,
        "metadata": "",
        "tag": j.tag,
        "scheduler": j.backend,
        "state": legacy_state(j.phase, j.reason),
        "status": j.message,
        "pid": legacy_pid(j.pid, j.backend_job_id),
        "elapsed_time": 0 if j.elapsed is None else j.elapsed,
        "exit_code": -1 if j.exit_code is None else j.exit_code,
    }


_LIST_COLS = (
    JobRecord.id,
    JobRecord.created_at,
    JobRecord.app,
    JobRecord.job_inputs,
    JobRecord.input_file_id,
    JobRecord.tag,
    JobRecord.backend,
    JobRecord.phase,
    JobRecord.reason,
    JobRecord.message,
    JobRecord.pid,
    JobRecord.backend_job_id,
    JobRecord.elapsed,
    JobRecord.exit_code,
)


@router.get("/jobs", summary="List the caller's jobs", responses={200: {"model": list[JobDoc]}})
def list_jobs(
    ctx: ServiceContext = Depends(get_ctx),
    owner: str = Depends(current_user),
    limit: int | None = Query(None, ge=1, le=100000, description="At most this many jobs"),
    offset: int = Query(0, ge=0, description="Skip this many jobs (oldest first)"),
) -> Response:
    """All jobs of the caller, oldest first (``limit``/``offset`` page through them)."""
    stmt = (
        select(*_LIST_COLS)
        .where(JobRecord.owner == owner)
        .order_by(JobRecord.created_at, JobRecord.id)
        .offset(offset)
    )
    if limit is not None:
        stmt = stmt.limit(limit)
    with ctx.engine.connect() as conn:
        rows = conn.execute(stmt).all()
    body = json.dumps([job_doc(r) for r in rows], separators=(",", ":"))
    return Response(body, media_type="application/json")


@get_and_post(
    router,
    "/job/{job_id}/cancel",
    summary="Cancel a job",
    responses={200: {"model": MessageReply}, **errors(400, 404)},
)
def cancel_job(
    job_id: str,
    ctx: ServiceContext = Depends(get_ctx),
    owner: str = Depends(current_user),
) -> JSONResponse:
    """Cancel through the job's own backend. A finished job is left as it is (200)."""
    _check_job_id(job_id)
    try:
        job = ctx.jobs.get(owner, job_id)
    except JobNotFound:
        raise _not_found(job_id, owner) from None
    state = legacy_state(job.phase, job.reason)
    if not ctx.jobs.cancel(job):
        return JSONResponse(
            {
                "status": f"Job {job_id} already completed with state {state}, "
                "nothing to be canceled.",
                "state": state,
            }
        )
    log.info("job_canceled", action="canceljob", user=owner, job_id=job_id)
    return JSONResponse({"status": "Job canceled and status updated in DB", "state": "CANCELED"})


def _finished_job(ctx: ServiceContext, owner: str, job_id: str) -> JobRecord | JSONResponse:
    _check_job_id(job_id)
    try:
        job = ctx.jobs.get(owner, job_id)
    except JobNotFound:
        raise _not_found(job_id, owner) from None
    state = legacy_state(job.phase, job.reason)
    if state in LEGACY_UNFINISHED:
        return JSONResponse(
            {
                "job_id": job_id,
                "status": f"Job {job_id} not yet completed (state={state}), output not available",
                "state": state,
            },
            status_code=202,
        )
    return job


def _result(ctx: ServiceContext, job: JobRecord, names: tuple[str, ...]) -> JobResult:
    with ctx.sessions() as s:
        rows = {
            r.name: r for r in s.scalars(select(JobResult).where(JobResult.job_id == job.id)).all()
        }
    for name in names:
        if name in rows:
            return rows[name]
    raise ApiError(404, f"Cannot find desired output for job {job.id}!", job_id=job.id)


@router.get(
    "/job/{job_id}/output",
    summary="The job folder as a tar.gz",
    response_class=FileResponse,
    responses={202: {"model": PendingReply}, **errors(400, 404)},
)
async def job_output(
    job_id: str,
    ctx: ServiceContext = Depends(get_ctx),
    owner: str = Depends(current_user),
) -> Response:
    """202 while the job runs; then ``job_<id>.tar.gz`` of its folder."""
    job = await run_in_threadpool(_finished_job, ctx, owner, job_id)
    if isinstance(job, JSONResponse):
        return job
    path = await run_in_threadpool(ensure_archive, ctx.jobs, job)
    log.info("job_output", action="joboutput", user=owner, job_id=job_id)
    return FileResponse(path, media_type="application/gzip", filename=f"job_{job.id}.tar.gz")


def _file_route(names: tuple[str, ...], as_json: bool) -> Any:
    def handler(
        job_id: str,
        ctx: ServiceContext = Depends(get_ctx),
        owner: str = Depends(current_user),
    ) -> Response:
        job = _finished_job(ctx, owner, job_id)
        if isinstance(job, JSONResponse):
            return job
        res = _result(ctx, job, names)
        path = safe_join(ctx.jobs.job_dir(job), res.filename)
        if not path.is_file():
            raise ApiError(404, f"Cannot find desired output for job {job.id}!", job_id=job.id)
        if as_json:
            return Response(path.read_bytes(), media_type="application/json")
        return FileResponse(path, media_type=res.mime, filename=res.filename)

    return handler


_OUT: dict[str, Any] = {"responses": {202: {"model": PendingReply}, **errors(400, 404)}}

router.add_api_route(
    "/job/{job_id}/sources",
    _file_route(("catalog-json",), True),
    methods=["GET"],
    summary="Source (island) catalogue as JSON",
    **_OUT,
)
router.add_api_route(
    "/job/{job_id}/output-sources",
    _file_route(("islands-dat", "catalog-csv"), False),
    methods=["GET"],
    summary="Source catalogue file",
    **_OUT,
)
router.add_api_route(
    "/job/{job_id}/source-components",
    _file_route(("components-json",), True),
    methods=["GET"],
    summary="Component catalogue as JSON (apps that fit components)",
    **_OUT,
)
router.add_api_route(
    "/job/{job_id}/output-components",
    _file_route(("components-dat", "components-csv"), False),
    methods=["GET"],
    summary="Component catalogue file",
    **_OUT,
)
router.add_api_route(
    "/job/{job_id}/output-plot",
    _file_route(("preview",), False),
    methods=["GET"],
    summary="Preview picture (PNG)",
    **_OUT,
)


@router.get("/job/{job_id}/preview", summary="Preview picture, base64 in JSON", **_OUT)
def job_preview(
    job_id: str,
    ctx: ServiceContext = Depends(get_ctx),
    owner: str = Depends(current_user),
) -> Response:
    """``{"status": "", "image": <base64 PNG>}``."""
    job = _finished_job(ctx, owner, job_id)
    if isinstance(job, JSONResponse):
        return job
    res = _result(ctx, job, ("preview",))
    data = safe_join(ctx.jobs.job_dir(job), res.filename).read_bytes()
    return JSONResponse({"status": "", "image": base64.b64encode(data).decode()})
