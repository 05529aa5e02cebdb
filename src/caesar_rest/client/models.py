"""Typed values returned by :class:`caesar_rest.client.CaesarClient`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

#: Phases after which a job no longer changes (UWS).
FINAL_PHASES = frozenset({"COMPLETED", "ERROR", "ABORTED", "ARCHIVED"})


def parse_time(value: Any) -> datetime | None:
    """An ISO-8601 instant from the service, or None."""
    if not value or not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class _Model:
    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (times as ISO-8601 strings)."""
        data: dict[str, Any] = _plain(asdict(self))  # type: ignore[call-overload]
        return data


@dataclass
class FileInfo(_Model):
    """An uploaded file."""

    file_id: str
    filename: str
    size: int
    sha256: str
    format: str
    tag: str = ""
    date: datetime | None = None

    @classmethod
    def from_upload(cls, data: dict[str, Any]) -> FileInfo:
        """From the v1.0 upload reply."""
        return cls(
            file_id=str(data["uuid"]),
            filename=str(data.get("filename_orig", "")),
            size=int(data.get("size_bytes", 0)),
            sha256=str(data.get("sha256", "")),
            format=str(data.get("format", "")),
            tag=str(data.get("tag", "") or ""),
            date=parse_time(data.get("date")),
        )


@dataclass
class AppInfo(_Model):
    """An app of the service."""

    name: str
    description: str = ""
    available: bool = True
    reason: str | None = None


@dataclass
class AppOption(_Model):
    """One option of an app."""

    name: str
    type: str
    description: str = ""
    default: Any = None
    minimum: Any = None
    maximum: Any = None
    allowed_values: list[str] | None = None
    mandatory: bool = False
    advanced: bool = False
    category: str = ""

    @property
    def is_flag(self) -> bool:
        """Whether the option is a true/false flag."""
        return self.type == "none"

    @classmethod
    def from_describe(cls, name: str, data: dict[str, Any]) -> AppOption:
        """From one entry of the v1.0 ``describe`` reply."""
        return cls(
            name=name,
            type=str(data.get("type", "str")),
            description=str(data.get("description", "")),
            default=data.get("default"),
            minimum=None if data.get("min") in (None, "") else data.get("min"),
            maximum=None if data.get("max") in (None, "") else data.get("max"),
            allowed_values=data.get("allowed_values"),
            mandatory=bool(data.get("mandatory", False)),
            advanced=bool(data.get("advanced", False)),
            category=str(data.get("category", "")),
        )


@dataclass
class ResultInfo(_Model):
    """A result of a job: its stable id, URL, size and type."""

    id: str
    href: str
    size: int = 0
    mime_type: str = ""
    #: Set for an alias of another result (``result`` is the primary catalogue).
    alias_of: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ResultInfo:
        """From the UWS JSON result entry."""
        return cls(
            id=str(data["id"]),
            href=str(data["href"]),
            size=int(data.get("size") or 0),
            mime_type=str(data.get("mimeType") or ""),
            alias_of=data.get("aliasOf"),
        )


@dataclass
class Job(_Model):
    """A job as the UWS job document describes it."""

    job_id: str
    phase: str
    app: str = ""
    owner: str | None = None
    run_id: str | None = None
    creation_time: datetime | None = None
    start_time: datetime | None = None
    end_time: datetime | None = None
    execution_duration: int = 0
    destruction: datetime | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    results: list[ResultInfo] = field(default_factory=list)
    #: The error summary of an ERROR or ABORTED job.
    error: str | None = None
    message: str = ""
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """Whether the job has reached a final phase."""
        return self.phase in FINAL_PHASES

    @property
    def succeeded(self) -> bool:
        """Whether the job completed."""
        return self.phase == "COMPLETED"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Job:
        """From the UWS JSON job document."""
        info = data.get("jobInfo") or {}
        err = data.get("errorSummary") or None
        params = data.get("parameters") or {}
        return cls(
            job_id=str(data["jobId"]),
            phase=str(data["phase"]),
            app=str(info.get("app") or params.get("app") or ""),
            owner=data.get("ownerId"),
            run_id=data.get("runId"),
            creation_time=parse_time(data.get("creationTime")),
            start_time=parse_time(data.get("startTime")),
            end_time=parse_time(data.get("endTime")),
            execution_duration=int(data.get("executionDuration") or 0),
            destruction=parse_time(data.get("destruction")),
            parameters={str(k): str(v) for k, v in params.items()},
            results=[ResultInfo.from_json(r) for r in data.get("results") or []],
            error=str(err.get("message")) if isinstance(err, dict) else None,
            message=str(info.get("message") or ""),
            info=dict(info),
        )


@dataclass
class JobRef(_Model):
    """An entry of the job list."""

    job_id: str
    phase: str
    href: str = ""
    run_id: str | None = None
    owner: str | None = None
    creation_time: datetime | None = None
    #: The app, the input's file id and the input's file name (see ``CaesarClient.jobs``).
    app: str = ""
    input_file: str = ""
    input_name: str = ""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobRef:
        """From the UWS JSON job list entry."""
        return cls(
            job_id=str(data["id"]),
            phase=str(data["phase"]),
            href=str(data.get("href") or ""),
            run_id=data.get("runId"),
            owner=data.get("ownerId"),
            creation_time=parse_time(data.get("creationTime")),
        )
