"""Submit, follow, cancel and list jobs; fetch their outputs."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse

from caesar_rest.api.body import loads_strict
from caesar_rest.api.context import ServiceContext
from caesar_rest.api.crossorigin import require_json
from caesar_rest.api.deps import Ctx, FinishedJob, OwnedJob, Owner, current_identity, get_and_post
from caesar_rest.api.downloads import RangedFileResponse
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
from caesar_rest.auth.users import Limits
from caesar_rest.db.fastread import EngineReader
from caesar_rest.db.models import JobRecord, JobResult
from caesar_rest.errors import Invalid, NotFound, ServiceError, TooLarge
from caesar_rest.jobs import queries
from caesar_rest.jobs.archive import ensure_archive
from caesar_rest.jobs.listing import DEFAULT_PAGE, MAX_PAGE, Page
from caesar_rest.jobs.service import INPUTFILE, InputFileNotFound
from caesar_rest.jobs.states import legacy_state
from caesar_rest.logconfig import get_logger
from caesar_rest.storage.paths import is_file_id, is_job_id
from caesar_rest.timeutil import iso

router = APIRouter(tags=["jobs"])
#: The largest integer query parameter: what a 32-bit database integer holds.
MAX_INT32 = 2**31 - 1
log = get_logger(__name__)


def submit_error(exc: ServiceError, body: Any) -> ServiceError:
    """The v1.0 router's adapter: the predecessor's submit error shape for any service error.

    The answer keeps the error's status, headers and fields and adds ``state``, ``app``,
    ``job_id`` and ``submit_date``. Bad options and an unknown input file are worded as the
    predecessor worded them (UWS words them its own way: ``api/uws/create.creation_error``).
    """
    message, extra = exc.message, dict(exc.body)
    if isinstance(exc, OptionError):
        message, extra["errors"] = f"Invalid job_inputs: {exc}", exc.problems
    elif isinstance(exc, InputFileNotFound):
        message = "Cannot find file corresponding to given data input uid!"
    app = body.get("app", "") if isinstance(body, dict) else ""
    return ServiceError(
        exc.status,
        message,
        headers=exc.headers,
        state="ABORTED",
        app=app if isinstance(app, str) else "",
        job_id="",
        submit_date="",
        **extra,
    )


def _parse_body(raw: bytes, max_body: int) -> Any:
    """The request body as strict JSON (raises :class:`TooLarge` or :class:`Invalid`).

    NaN, Infinity, nesting deeper than Python's parser takes and NUL characters are refused:
    none of them can be stored in every database, or written back as JSON.
    """
    if len(raw) > max_body:
        raise TooLarge(f"Request body too large (limit {max_body} bytes)")
    return loads_strict(raw) if raw else None


def _check_body(body: Any) -> dict[str, Any]:
    """The submission, checked field by field; ``job_inputs`` defaults to ``{}``."""
    if not isinstance(body, dict) or not body:
        raise Invalid("Request body must be a non-empty JSON object")
    app = body.get("app")
    if not isinstance(app, str) or not app:
        raise Invalid("Missing or empty 'app' (the app name)")
    if body.get("job_inputs") is None:
        body["job_inputs"] = {}
    if not isinstance(body["job_inputs"], dict):
        raise Invalid("'job_inputs' must be a JSON object of options")
    data_inputs = body.get("data_inputs")
    if data_inputs is None and INPUTFILE not in body["job_inputs"]:
        # The predecessor's README names the input as job_inputs.inputfile instead.
        raise Invalid(
            "Missing 'data_inputs' (the file id of the input image) or job_inputs.inputfile"
        )
    if data_inputs is not None and (
        not isinstance(data_inputs, str) or not is_file_id(data_inputs)
    ):
        raise Invalid("'data_inputs' must be a file id (32 hexadecimal digits)")
    tag = body.get("tag")
    if tag is not None and len(json.dumps(tag)) > 4096:
        raise Invalid("'tag' is too long (4 KiB at most)")
    return body


def _create(ctx: ServiceContext, owner: str, body: dict[str, Any]) -> tuple[Limits, JobRecord]:
    """The caller's limits and the job created under them: one trip to the thread pool, so
    the job's start waits for no second hand-over between the event loop and a thread."""
    limits = ctx.users.limits(owner)
    job = ctx.jobs.create(
        owner,
        body["app"],
        body["job_inputs"],
        body.get("data_inputs"),
        body.get("tag"),
        limits=limits,
        compat=True,
    )
    return limits, job


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
async def submit_job(request: Request, ctx: Ctx, owner: Owner) -> JSONResponse:
    """Body: ``{"app": str, "job_inputs": {option: value}, "data_inputs": file id, "tag": any}``.

    Answers 202 with ``state: PENDING`` once the job is stored and dispatched. As the
    predecessor's README sends it, the input may instead be ``job_inputs.inputfile`` (a file
    id or an upload's path), and ``job_inputs`` may hold the predecessor's run-control keys
    (``run``, ``envfile``, ``no-mpi``, ...): the answer's ``ineffective_options`` names them
    with the app's options that have no effect here.
    """
    max_body = ctx.settings.max_json_body_kib * 1024
    clen = request.headers.get("content-length", "")
    body: Any = None
    try:
        if clen.isdigit() and int(clen) > max_body:
            raise TooLarge(f"Request body too large (limit {max_body} bytes)")
        require_json(request)  # a text/plain body is a cross-site form post (415)
        body = _parse_body(await request.body(), max_body)
        body = _check_body(body)
        limits, job = await run_in_threadpool(_create, ctx, owner, body)
    except ServiceError as exc:
        raise submit_error(exc, body) from None
    app = ctx.apps.get(job.app)
    used = (INPUTFILE,) if body.get("data_inputs") is None else ()
    unused = app.without_effect(job.job_inputs, used=used) if app is not None else []
    reply = SubmitReply(
        status="Job submitted and registered with success",
        state="PENDING",
        app=job.app,
        job_id=job.id,
        submit_date=iso(job.created_at),
        job_inputs=job.job_inputs,
        data_inputs=job.input_file_id or "",
        tag=job.tag,
        ineffective_options=unused,
    )
    warning = await run_in_threadpool(quota_warning, ctx, owner, limits)
    return JSONResponse({**reply.model_dump(), **warning}, status_code=202)


def _status_doc(ctx: ServiceContext, owner: str, job_id: str) -> dict[str, Any] | None:
    """The status document of the caller's job, or None."""
    reader = ctx.reader or EngineReader(ctx.engine)  # build() always makes one
    rows = reader.all(queries.STATUS_STMT, {"job_id": job_id})
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
    if not is_job_id(job_id):
        raise Invalid(f"Invalid job id {job_id!r}")
    if ctx.reader is not None and ctx.reader.inline:
        # SQLite primary-key reads take tens of microseconds: a thread hand-off costs more.
        doc = _status_doc(ctx, owner, job_id)
    else:
        doc = await run_in_threadpool(_status_doc, ctx, owner, job_id)
    if doc is None:
        raise NotFound(
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


#: The query parameters of ``GET /jobs`` that ask for a page (any of them).
PAGE_PARAMS = ("limit", "cursor", "order", "offset")
_LIST_DOC = (
    "Without any of `limit`, `cursor`, `order` and `offset`: every job of the caller, oldest "
    "first, streamed (the predecessor's list). With any of them: one page of the same "
    f"documents, at most `limit` ({DEFAULT_PAGE} by default, at most {MAX_PAGE}); `Link` "
    'headers (RFC 8288) give the next and the previous page (`rel="next"`, `rel="prev"`) '
    "with an opaque `cursor`, which stays right while jobs are added."
)
_LIST_PARAMS: list[dict[str, Any]] = [
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "description": f"Page size (default {DEFAULT_PAGE} once paging).",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE},
    },
    {
        "name": "cursor",
        "in": "query",
        "required": False,
        "description": "Where the page starts: the cursor of a `Link` header, as it is.",
        "schema": {"type": "string", "maxLength": 256},
    },
    {
        "name": "order",
        "in": "query",
        "required": False,
        "description": "`asc`: oldest first (the default); `desc`: newest first.",
        "schema": {"type": "string", "enum": ["asc", "desc"]},
    },
    {
        "name": "offset",
        "in": "query",
        "required": False,
        "description": "Skip this many jobs (first page only; prefer `cursor`).",
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_INT32},
    },
]


def _int_param(name: str, text: str, low: int, high: int) -> int:
    """A bounded integer query parameter (400 otherwise)."""
    if not text.strip().lstrip("+-").isdigit() or len(text) > 20:
        raise Invalid(f"Invalid request: {name}: must be an integer", errors=[name])
    value = int(text)
    if not low <= value <= high:
        raise Invalid(
            f"Invalid request: {name}: must be between {low} and {high}; got {value}",
            errors=[name],
        )
    return value


def _page_args(query: Any) -> dict[str, Any]:
    """The page request's arguments for :meth:`JobLister.page` (400 for bad values)."""
    args: dict[str, Any] = {}
    if "limit" in query:
        args["limit"] = _int_param("limit", query["limit"], 1, MAX_PAGE)
    if "offset" in query:
        args["offset"] = _int_param("offset", query["offset"], 0, MAX_INT32)
    if "order" in query:
        order = query["order"]
        if order not in ("asc", "desc"):
            raise Invalid(f"Invalid request: order: 'asc' or 'desc'; got {order!r}")
        args["descending"] = order == "desc"
    if "cursor" in query:
        args["cursor"] = query["cursor"]
    return args


def _links(request: Request, page: Page) -> str:
    """The ``Link`` header of a page (RFC 8288): its ``next`` and ``prev`` pages."""
    links = []
    for rel, cursor in (("next", page.next), ("prev", page.prev)):
        if cursor is not None:
            query = urlencode({"limit": page.limit, "cursor": cursor})
            links.append(f'<{request.url.replace(query=query)}>; rel="{rel}"')
    return ", ".join(links)


async def list_jobs(request: Request) -> Response:
    """All jobs of the caller, oldest first, or one page of them (``limit``, ``cursor``)."""
    # Clients poll this route: a DirectRoute, as the status route (parameters read here).
    ctx: ServiceContext = request.app.state.ctx
    owner = (await current_identity(request)).user_id
    lister = ctx.job_lists
    assert lister is not None  # ServiceContext.build makes it
    query = request.query_params
    if not any(k in query for k in PAGE_PARAMS):
        log.debug("job_list", user=owner, streamed=True)
        return StreamingResponse(lister.stream_async(owner), media_type="application/json")
    page = await lister.page_async(owner, **_page_args(query))
    headers = {"Link": _links(request, page)} if page.next or page.prev else None
    return Response(page.body, media_type="application/json", headers=headers)


router.add_api_route(
    "/jobs",
    list_jobs,
    methods=["GET"],
    summary="List the caller's jobs (all, or a page)",
    description=_LIST_DOC,
    responses={
        200: {
            "model": list[JobDoc],
            "headers": {
                "Link": {
                    "description": 'Pages only: `rel="next"` and `rel="prev"` page URLs',
                    "schema": {"type": "string"},
                }
            },
        },
        **errors(400),
    },
    openapi_extra={"parameters": _LIST_PARAMS},
    route_class_override=DirectRoute,
)


@get_and_post(
    router,
    "/job/{job_id}/cancel",
    summary="Cancel a job",
    responses={200: {"model": MessageReply}, **errors(400, 404)},
)
def cancel_job(job: OwnedJob, ctx: Ctx, owner: Owner) -> JSONResponse:
    """Cancel through the job's own backend. A finished job is left as it is (200)."""
    state = legacy_state(job.phase, job.reason)
    if not ctx.jobs.cancel(job):
        reply = MessageReply(
            status=f"Job {job.id} already completed with state {state}, nothing to be canceled.",
            state=state,
        )
    else:
        log.info("job_canceled", action="canceljob", user=owner, job_id=job.id)
        reply = MessageReply(status="Job canceled and status updated in DB", state="CANCELED")
    return JSONResponse(reply.model_dump())


def _result(ctx: ServiceContext, job: JobRecord, names: tuple[str, ...]) -> tuple[JobResult, Path]:
    """The first of ``names`` that the job has, and its file (404 when none is there)."""
    row = ctx.jobs.result(job, names)
    path = None if row is None else ctx.jobs.result_path(job, row)
    if row is None or path is None or not path.is_file():
        raise NotFound(f"Cannot find desired output for job {job.id}!", job_id=job.id)
    return row, path


@router.get(
    "/job/{job_id}/output",
    summary="The job folder as a tar.gz",
    response_class=RangedFileResponse,
    responses={202: {"model": PendingReply}, **errors(400, 404)},
)
async def job_output(job: FinishedJob, ctx: Ctx, owner: Owner) -> Response:
    """202 while the job runs; then ``job_<id>.tar.gz`` of its folder."""
    path = await run_in_threadpool(ensure_archive, ctx.jobs, job)
    log.info("job_output", action="joboutput", user=owner, job_id=job.id)
    return RangedFileResponse(path, media_type="application/gzip", filename=f"job_{job.id}.tar.gz")


def _file_route(names: tuple[str, ...], as_json: bool) -> Callable[..., Response]:
    def handler(job: FinishedJob, ctx: Ctx) -> Response:
        row, path = _result(ctx, job, names)
        if as_json:
            return Response(path.read_bytes(), media_type="application/json")
        return RangedFileResponse(path, media_type=row.mime, filename=row.filename)

    return handler


_OUT: dict[str, Any] = {"responses": {202: {"model": PendingReply}, **errors(400, 404)}}

#: The catalogue and preview routes: path, result names (first found wins), sent as JSON, summary.
_FILE_ROUTES: tuple[tuple[str, tuple[str, ...], bool, str], ...] = (
    ("sources", ("catalog-json",), True, "Source (island) catalogue as JSON"),
    ("output-sources", ("islands-dat", "catalog-csv"), False, "Source catalogue file"),
    (
        "source-components",
        ("components-json",),
        True,
        "Component catalogue as JSON (apps that fit components)",
    ),
    ("output-components", ("components-dat", "components-csv"), False, "Component catalogue file"),
    ("output-plot", ("preview",), False, "Preview picture (PNG)"),
)
for _path, _names, _as_json, _summary in _FILE_ROUTES:
    router.add_api_route(
        f"/job/{{job_id}}/{_path}",
        _file_route(_names, _as_json),
        methods=["GET"],
        summary=_summary,
        **_OUT,
    )


@router.get("/job/{job_id}/preview", summary="Preview picture, base64 in JSON", **_OUT)
def job_preview(job: FinishedJob, ctx: Ctx) -> Response:
    """``{"status": "", "image": <base64 PNG>}``."""
    data = _result(ctx, job, ("preview",))[1].read_bytes()
    return JSONResponse({"status": "", "image": base64.b64encode(data).decode()})
