"""UWS 1.1 documents: the job list, a job, its results and parameters, as XML or JSON.

The XML follows the IVOA schema (namespace ``http://www.ivoa.net/xml/UWS/v1.0``,
``version="1.1"``, xlink references), element order included. UWS defines no JSON; the JSON
mirror (``Accept: application/json``) uses the XML element names as keys.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

UWS_NS = "http://www.ivoa.net/xml/UWS/v1.0"
XLINK_NS = "http://www.w3.org/1999/xlink"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
#: Our own elements inside ``uws:jobInfo``.
CAESAR_NS = "urn:caesar-rest:uws"
UWS_VERSION = "1.1"

_NAMESPACES = (
    f'xmlns:uws="{UWS_NS}" xmlns:xlink="{XLINK_NS}" xmlns:xsi="{XSI_NS}" version="{UWS_VERSION}"'
)
# Characters XML 1.0 cannot carry at all (job logs may hold control characters).
_INVALID_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(value: object) -> str:
    """Escape ``value`` for XML element content or a double-quoted attribute."""
    s = _INVALID_XML.sub("\ufffd", str(value))
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def uws_time(dt: datetime | None) -> str | None:
    """ISO-8601 UTC with milliseconds and ``Z`` (the form UWS clients expect), or None."""
    if dt is None:
        return None
    if dt.tzinfo is None:  # SQLite drops the zone: stored values are UTC
        dt = dt.replace(tzinfo=UTC)
    dt = dt.astimezone(UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


def parse_uws_time(value: str) -> datetime:
    """Parse an ISO-8601 instant (``Z`` or an offset; a naive value is UTC).

    Raises
    ------
    ValueError
        When ``value`` is not an ISO-8601 date-time.
    """
    dt = datetime.fromisoformat(value.strip())
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC)


def _xml_doc(body: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?>\n{body}\n'


def _opt(tag: str, value: str | None, nillable: bool) -> str:
    """An element with text, ``xsi:nil`` when empty and nillable, or nothing."""
    if value is None or value == "":
        return f'<uws:{tag} xsi:nil="true"/>' if nillable else ""
    return f"<uws:{tag}>{xml_text(value)}</uws:{tag}>"


@dataclass
class JobRef:
    """One entry of the job list."""

    job_id: str
    href: str
    phase: str
    run_id: str | None
    owner: str | None
    creation_time: datetime | None

    def to_json(self) -> dict[str, Any]:
        """The JSON mirror of ``uws:jobref``."""
        return {
            "id": self.job_id,
            "href": self.href,
            "phase": self.phase,
            "runId": self.run_id,
            "ownerId": self.owner,
            "creationTime": uws_time(self.creation_time),
        }

    def to_xml(self) -> str:
        """``uws:jobref`` (ShortJobDescription), in schema order."""
        parts = [f"<uws:phase>{xml_text(self.phase)}</uws:phase>"]
        if self.run_id:
            parts.append(f"<uws:runId>{xml_text(self.run_id)}</uws:runId>")
        parts.append(_opt("ownerId", self.owner, nillable=True))
        created = uws_time(self.creation_time)
        if created:
            parts.append(f"<uws:creationTime>{created}</uws:creationTime>")
        inner = "".join(parts)
        return (
            f'<uws:jobref id="{xml_text(self.job_id)}" xlink:href="{xml_text(self.href)}">'
            f"{inner}</uws:jobref>"
        )


def job_list_xml(refs: Iterable[JobRef]) -> str:
    """The ``uws:jobs`` document."""
    body = "".join(f"\n  {r.to_xml()}" for r in refs)
    return _xml_doc(f"<uws:jobs {_NAMESPACES}>{body}\n</uws:jobs>")


def job_list_json(refs: Iterable[JobRef]) -> dict[str, Any]:
    """The JSON mirror of the job list."""
    return {"version": UWS_VERSION, "jobs": [r.to_json() for r in refs]}


@dataclass
class ResultRef:
    """One result of a job: a stable id, where to fetch it, its size and type."""

    id: str
    href: str
    size: int
    mime_type: str
    #: For an alias (``result``, the primary catalogue for TAP-minded clients): the real id.
    alias_of: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON mirror of ``uws:result``."""
        out: dict[str, Any] = {
            "id": self.id,
            "href": self.href,
            "size": self.size,
            "mimeType": self.mime_type,
        }
        if self.alias_of:
            out["aliasOf"] = self.alias_of
        return out

    def to_xml(self) -> str:
        """``uws:result`` with its xlink reference."""
        return (
            f'<uws:result id="{xml_text(self.id)}" xlink:href="{xml_text(self.href)}" '
            f'size="{int(self.size)}" mime-type="{xml_text(self.mime_type)}"/>'
        )


def results_xml(results: Iterable[ResultRef], indent: str = "") -> str:
    """The ``uws:results`` element (no XML declaration)."""
    items = "".join(f"\n{indent}  {r.to_xml()}" for r in results)
    return f"<uws:results>{items}\n{indent}</uws:results>" if items else "<uws:results/>"


def parameters_xml(params: Mapping[str, str], indent: str = "") -> str:
    """The ``uws:parameters`` element (no XML declaration)."""
    items = "".join(
        f'\n{indent}  <uws:parameter id="{xml_text(k)}">{xml_text(v)}</uws:parameter>'
        for k, v in params.items()
    )
    return f"<uws:parameters>{items}\n{indent}</uws:parameters>" if items else "<uws:parameters/>"


def results_document(results: Iterable[ResultRef]) -> str:
    """A stand-alone ``uws:results`` document (``/{jobs}/{id}/results``)."""
    return _xml_doc(results_xml(results).replace("<uws:results", f"<uws:results {_NS_ONLY}", 1))


def parameters_document(params: Mapping[str, str]) -> str:
    """A stand-alone ``uws:parameters`` document (``/{jobs}/{id}/parameters``)."""
    return _xml_doc(
        parameters_xml(params).replace("<uws:parameters", f"<uws:parameters {_NS_ONLY}", 1)
    )


_NS_ONLY = f'xmlns:uws="{UWS_NS}" xmlns:xlink="{XLINK_NS}"'


@dataclass
class JobDocument:
    """Everything the UWS job resource shows."""

    job_id: str
    run_id: str | None
    owner: str | None
    phase: str
    creation_time: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    execution_duration: int
    destruction: datetime | None
    parameters: dict[str, str] = field(default_factory=dict)
    results: list[ResultRef] = field(default_factory=list)
    #: ``(type, message)`` for ERROR and ABORTED jobs; type is ``fatal`` or ``transient``.
    error: tuple[str, str] | None = None
    #: Extra facts in ``uws:jobInfo`` (our namespace): name -> text.
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON mirror of ``uws:job``."""
        err = None
        if self.error is not None:
            err = {"type": self.error[0], "hasDetail": True, "message": self.error[1]}
        return {
            "version": UWS_VERSION,
            "jobId": self.job_id,
            "runId": self.run_id,
            "ownerId": self.owner,
            "phase": self.phase,
            "quote": None,
            "creationTime": uws_time(self.creation_time),
            "startTime": uws_time(self.start_time),
            "endTime": uws_time(self.end_time),
            "executionDuration": self.execution_duration,
            "destruction": uws_time(self.destruction),
            "parameters": dict(self.parameters),
            "results": [r.to_json() for r in self.results],
            "errorSummary": err,
            "jobInfo": dict(self.info),
        }

    def to_xml(self) -> str:
        """The ``uws:job`` document, elements in the order of the schema's JobSummary."""
        lines = [f"<uws:jobId>{xml_text(self.job_id)}</uws:jobId>"]
        if self.run_id:
            lines.append(f"<uws:runId>{xml_text(self.run_id)}</uws:runId>")
        lines.append(_opt("ownerId", self.owner, nillable=True))
        lines.append(f"<uws:phase>{xml_text(self.phase)}</uws:phase>")
        lines.append('<uws:quote xsi:nil="true"/>')  # we cannot predict run times
        lines.append(_opt("creationTime", uws_time(self.creation_time), nillable=False))
        lines.append(_opt("startTime", uws_time(self.start_time), nillable=True))
        lines.append(_opt("endTime", uws_time(self.end_time), nillable=True))
        lines.append(
            f"<uws:executionDuration>{int(self.execution_duration)}</uws:executionDuration>"
        )
        lines.append(_opt("destruction", uws_time(self.destruction), nillable=True))
        lines.append(parameters_xml(self.parameters, "  "))
        lines.append(results_xml(self.results, "  "))
        if self.error is not None:
            etype, message = self.error
            lines.append(
                f'<uws:errorSummary type="{etype}" hasDetail="true">'
                f"<uws:message>{xml_text(message)}</uws:message></uws:errorSummary>"
            )
        if self.info:
            facts = "".join(
                f"\n    <c:{k}>{xml_text(v)}</c:{k}>" for k, v in self.info.items() if v is not None
            )
            lines.append(f'<uws:jobInfo xmlns:c="{CAESAR_NS}">{facts}\n  </uws:jobInfo>')
        body = "".join(f"\n  {line}" for line in lines if line)
        return _xml_doc(f"<uws:job {_NAMESPACES}>{body}\n</uws:job>")
