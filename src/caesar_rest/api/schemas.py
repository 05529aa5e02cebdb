"""Pydantic models that document the v1.0 request and response bodies in the OpenAPI schema.

Handlers build their JSON directly (cheaper on hot routes); these models are the contract.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class ErrorBody(BaseModel):
    """Every error: the message under ``status`` (the predecessor's shape)."""

    status: str = Field(description="What went wrong")
    request_id: str | None = Field(None, description="Present on internal errors")


class SubmitErrorBody(ErrorBody):
    """A refused job submission."""

    state: str = "ABORTED"
    app: str = ""
    job_id: str = ""
    submit_date: str = ""
    errors: list[str] | None = Field(None, description="One message per bad option")


class UploadReply(BaseModel):
    """Answer to an upload."""

    filename_orig: str
    tag: str
    format: str = Field(description="Stored extension: fits, fits.gz, png, jpg, gif")
    size: float = Field(description="Size in MiB")
    size_bytes: int
    sha256: str
    uuid: str = Field(description="The file id")
    date: str
    status: str


class FileDoc(BaseModel):
    """One entry of ``/fileids``."""

    fileid: str
    filename_orig: str
    fileext: str
    filesize: float = Field(description="MiB")
    filedate: str
    metadata: dict[str, Any] | str
    tag: str
    size_bytes: int
    sha256: str
    kind: str


class SubmitRequest(BaseModel):
    """Body of ``POST /job``."""

    app: str = Field(description="App name, see /apps")
    job_inputs: dict[str, Any] = Field(
        default_factory=dict, description="Option values by name, see /app/<name>/describe"
    )
    data_inputs: str | None = Field(
        None,
        description="File id of the input image (required unless job_inputs has the "
        "predecessor's 'inputfile': a file id or an upload's path)",
    )
    tag: Any = Field(None, description="Free value stored with the job (4 KiB at most)")


class SubmitReply(BaseModel):
    """Answer to an accepted submission (HTTP 202)."""

    status: str
    state: str = "PENDING"
    app: str
    job_id: str
    submit_date: str
    job_inputs: dict[str, Any]
    data_inputs: str
    tag: Any
    #: Given names without effect here (run-control keys of the predecessor, options accepted
    #: only for compatibility), sorted.
    ineffective_options: list[str] = Field(default_factory=list)


class JobEventDoc(BaseModel):
    """One state change of a job."""

    time: str
    from_: str | None = Field(None, alias="from")
    to: str
    reason: str | None
    message: str


class StatusReply(BaseModel):
    """Status of a job."""

    job_id: str
    pid: str = Field(description="Backend process or job id; '' until known")
    state: str = Field(
        description="PENDING, RUNNING, SUCCESS, FAILURE, TIMED-OUT, CANCELED, ABORTED, UNKNOWN"
    )
    status: str = Field(description="Human-readable message")
    exit_code: int = Field(description="-1 until known; negative: ended by that signal")
    elapsed_time: float
    tag: Any
    phase: str = Field(description="UWS 1.1 phase")
    backend: str
    submit_date: str
    start_date: str
    end_date: str
    events: list[JobEventDoc] = Field(default_factory=list, description="State changes")


class JobDoc(BaseModel):
    """One entry of ``/jobs``."""

    job_id: str
    submit_date: str
    app: str
    job_inputs: Any
    data_inputs: str | None
    metadata: str
    tag: Any
    scheduler: str
    state: str
    status: str
    pid: str
    elapsed_time: float
    exit_code: int


class MessageReply(BaseModel):
    """A plain acknowledgement."""

    status: str
    state: str | None = None


class PendingReply(BaseModel):
    """Outputs of a job that has not finished (HTTP 202)."""

    job_id: str
    status: str
    state: str


class ReadyReply(BaseModel):
    """Answer of ``/readyz``: ``ok`` or ``not ready`` (503), with each check's verdict."""

    status: str
    checks: dict[str, str] = Field(description="'ok', 'missing' or 'error: <why>' per check")


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for error codes."""
    return {code: {"model": ErrorBody} for code in codes}
