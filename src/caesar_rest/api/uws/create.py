"""UWS job creation: the request's parameters checked into one :class:`CreateRequest`.

Everything that can be refused without touching the database or the inline image is refused
here, before an inline upload is stored: app, control parameters, input and the app's options.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from caesar_rest.api.uws.params import (
    Params,
    app_options,
    parse_destruction,
    parse_duration,
    parse_phase,
    parse_run_id,
)
from caesar_rest.apps.base import App, OptionError
from caesar_rest.apps.registry import AppRegistry
from caesar_rest.errors import Invalid, ServiceError
from caesar_rest.jobs.service import InputFileNotFound
from caesar_rest.settings import Settings
from caesar_rest.storage.paths import is_file_id


@dataclass(frozen=True)
class CreateRequest:
    """A checked job creation request.

    Parameters
    ----------
    app
        The app to run (available on this service).
    options
        The app's options, validated.
    file_id
        The input file's id; None when the image comes inline.
    run
        ``PHASE=RUN``: queue the job at once.
    run_id, time_limit, destruction
        RUNID, EXECUTIONDURATION (s, clamped) and DESTRUCTION (clamped), when given.
    """

    app: App
    options: dict[str, Any]
    file_id: str | None
    run: bool
    run_id: str | None
    time_limit: int | None
    destruction: datetime | None


def _app(apps: AppRegistry, name: str | None) -> App:
    if not name:
        raise Invalid("Missing parameter app (the app to run); see GET /caesar/api/v1.0/apps")
    app = apps.get(name)
    if app is None:
        raise Invalid(f"Unknown app {name}; apps: {', '.join(apps.names())}")
    ok, why = app.availability()
    if not ok:
        raise Invalid(f"App {app.name} is not available on this service: {why}")
    return app


def _file_id(params: Params, inline: bool) -> str | None:
    file_ids = {v for v in (params.get("file"), params.get("file_id")) if v}
    if len(file_ids) > 1:
        raise Invalid("FILE and FILE_ID disagree; give the input file once")
    file_id = file_ids.pop() if file_ids else None
    if inline and file_id:
        raise Invalid("Give either an uploaded image or a file id, not both")
    if not inline and not file_id:
        raise Invalid(
            "Missing parameter file: the id of an uploaded file, or the FITS image itself "
            "in a multipart part named 'file'"
        )
    if file_id is not None and not is_file_id(file_id):
        raise Invalid(f"Invalid file id {file_id!r}: expected 32 hexadecimal digits")
    return file_id


def parse_create(
    apps: AppRegistry, settings: Settings, params: Params, inline: bool
) -> CreateRequest:
    """Check a creation request's parameters.

    Parameters
    ----------
    apps
        The service's apps.
    settings
        For the limits of EXECUTIONDURATION and DESTRUCTION.
    params
        The request's parameters (query string and body).
    inline
        Whether the image comes in the request (multipart ``file`` part).

    Raises
    ------
    Invalid
        The first problem found (an ``OptionError`` for the app's options).
    """
    app = _app(apps, params.get("app"))
    phase = params.get("phase")
    run = phase is not None and parse_phase(phase, ["RUN"]) == "RUN"
    run_id = parse_run_id(rid) if (rid := params.get("runid")) is not None else None
    exec_s = params.get("executionduration")
    cap = settings.max_job_time_limit
    time_limit = parse_duration(exec_s, cap) if exec_s is not None else None
    dest_s = params.get("destruction")
    destruction = (
        parse_destruction(dest_s, settings.max_destruction_days) if dest_s is not None else None
    )
    file_id = _file_id(params, inline)
    options = app_options(app, params.options())
    app.validate(options)  # before an inline upload is stored that would be refused
    return CreateRequest(app, options, file_id, run, run_id, time_limit, destruction)


def creation_error(exc: ServiceError) -> ServiceError:
    """The UWS router's adapter: UWS wording for the errors of a job creation.

    Bad options and an unknown input file are worded for UWS clients (the v1.0 submission
    words them as the predecessor did: ``api/v1/jobs.submit_error``); others are unchanged.
    """
    if isinstance(exc, OptionError):
        return Invalid(f"Invalid options: {exc}", errors=exc.problems)
    if isinstance(exc, InputFileNotFound):
        return Invalid(f"No uploaded file {exc}")
    return exc
