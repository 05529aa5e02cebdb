"""UWS answers: content negotiation, atomic values and the job document from a record."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, PlainTextResponse
from starlette.responses import Response

from caesar_rest.api.uws.documents import JobDocument, ResultRef
from caesar_rest.apps.registry import AppRegistry
from caesar_rest.db.models import JobRecord, JobResult
from caesar_rest.jobs.states import Phase, Reason, legacy_state

XML_MEDIA = "application/xml"
#: Id of the alias of the primary VOTable catalogue, for clients that look for "result" (TAP).
ALIAS = "result"
PRIMARY = "catalog"


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


def xml_response(body: str) -> Response:
    """An XML document answer."""
    return Response(body, media_type=XML_MEDIA)


def value_response(request: Request, name: str, value: str | int | None) -> Response:
    """An atomic value: text (UWS), or ``{name: value}`` for JSON clients."""
    if wants_json(request):
        return JSONResponse({name: value})
    return PlainTextResponse("" if value is None else str(value))


def param_text(value: Any) -> str:
    """A parameter value as UWS shows it: strings as they are, the rest as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def result_refs(
    apps: AppRegistry, request: Request, job: JobRecord, rows: list[JobResult]
) -> list[ResultRef]:
    """The job's results in the app's order, with the ``result`` alias of the catalogue."""
    app = apps.get(job.app)
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


def job_parameters(job: JobRecord) -> dict[str, str]:
    """``app``, ``file`` and the job's validated options, as text."""
    params = {"app": job.app, "file": job.input_file_id or ""}
    for name, value in (job.options or {}).items():
        params[name] = param_text(value)
    return params


def job_document(
    apps: AppRegistry, request: Request, job: JobRecord, rows: list[JobResult]
) -> JobDocument:
    """The UWS job document of ``job`` with its result rows ``rows``."""
    results = result_refs(apps, request, job, rows)
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
        "tag": None if job.tag is None else param_text(job.tag),
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
        parameters=job_parameters(job),
        results=results,
        error=error,
        info=info,
    )
