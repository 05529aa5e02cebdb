"""A small slurmrestd client: JWT, dialect detection, submit, job state, cancel.

Two dialects of the REST API are spoken, chosen from the paths of the server's OpenAPI
document (``/openapi/v3``): v0.0.38 (Slurm 22.05, Debian 12) and v0.0.39 up to v0.0.44 (Slurm
23.02 and later). The differences that matter here:

========================  =============================  ==========================================
field                     v0.0.38                        v0.0.39+
========================  =============================  ==========================================
submit ``environment``    object ``{"PATH": "..."}``     list ``["PATH=..."]``
submit ``time_limit``     minutes (int)                  ``{"set": true, "number": minutes}``
submit ``script``         top level, beside ``job``      inside ``job`` (v0.0.40+)
``job_state``             string (a flag word wins:      list: base state then flags,
                          ``COMPLETING``...)             ``["RUNNING", "COMPLETING"]``
integers (times...)       plain integers                 ``{"set", "infinite", "number"}``
``exit_code``             raw wait status (``3<<8``)     ``{"status": [...], "return_code": {...},
                                                         "signal": {"id": {...}, "name"}}``
unknown job id            HTTP 500, error 2017           HTTP 404 or 500, error 2017
========================  =============================  ==========================================

Tokens are HS256 JWTs with the claims ``sun`` (user), ``iat`` and ``exp``, minted from the
cluster's ``jwt_hs256.key`` and renewed before they expire, or one given token.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt

#: REST API versions this client speaks, newest first.
SUPPORTED = ("v0.0.44", "v0.0.43", "v0.0.42", "v0.0.41", "v0.0.40", "v0.0.39", "v0.0.38")
#: slurm_errno ESLURM_INVALID_JOB_ID.
INVALID_JOB_ID = 2017
#: The base states of Slurm's job_state_codes.
BASE_STATES = frozenset(
    {
        "BOOT_FAIL",
        "CANCELLED",
        "COMPLETED",
        "DEADLINE",
        "FAILED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PENDING",
        "PREEMPTED",
        "RUNNING",
        "SUSPENDED",
        "TIMEOUT",
    }
)


class SlurmError(RuntimeError):
    """slurmrestd refused or failed a request."""


@dataclass
class SlurmJobSpec:
    """What a batch job asks for."""

    name: str
    script: str
    cwd: str
    stdout: str
    environment: dict[str, str]
    time_limit_min: int
    cpus: int = 1
    memory_mb: int = 0
    partition: str | None = None
    #: Tasks (MPI ranks), each with ``cpus`` CPUs and ``memory_mb`` of memory.
    tasks: int = 1
    #: Nodes the tasks are spread over (0: Slurm's choice).
    nodes: int = 0


@dataclass
class SlurmJobInfo:
    """The parts of a job record that the backend uses, in one shape for every dialect."""

    job_id: int
    name: str
    state: str  # the base state, or a flag word when v0.0.38 gives only that
    flags: list[str] = field(default_factory=list)
    exit_code: int | None = None  # negative: killed by that signal
    start_time: float | None = None
    end_time: float | None = None
    reason: str = ""


def number(value: Any) -> int | None:
    """An integer that may come as ``{"set", "infinite", "number"}`` (None if unset/infinite)."""
    if isinstance(value, dict):
        if not value.get("set", True) or value.get("infinite", False):
            return None
        value = value.get("number")
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return int(value)
    return None


def parse_exit_code(value: Any) -> int | None:
    """The job's exit status: a code >= 0, or -signal."""
    if isinstance(value, dict):
        sig = number((value.get("signal") or {}).get("id"))
        if sig:
            return -sig
        return number(value.get("return_code"))
    raw = number(value)
    if raw is None:
        return None
    # v0.0.38 gives the wait(2) status.
    if raw > 255:
        return raw >> 8
    return -(raw & 0x7F) if raw & 0x7F else raw


def parse_job(doc: dict[str, Any]) -> SlurmJobInfo:
    """A job record of either dialect."""
    raw = doc.get("job_state")
    words = [str(w) for w in (raw if isinstance(raw, list) else [raw] if raw else [])]
    base = next((w for w in words if w in BASE_STATES), words[0] if words else "UNKNOWN")
    start = number(doc.get("start_time"))
    end = number(doc.get("end_time"))
    return SlurmJobInfo(
        job_id=int(number(doc.get("job_id")) or 0),
        name=str(doc.get("name") or ""),
        state=base,
        flags=[w for w in words if w != base],
        exit_code=parse_exit_code(doc.get("exit_code")),
        start_time=float(start) if start else None,
        end_time=float(end) if end else None,
        reason=str(doc.get("state_reason") or ""),
    )


def pick_version(openapi: dict[str, Any]) -> str:
    """The newest supported version whose submit path the server documents."""
    paths = openapi.get("paths") or {}
    for v in SUPPORTED:
        if f"/slurm/{v}/job/submit" in paths:
            return v
    served = sorted({m.group(1) for p in paths if (m := re.match(r"/slurm/(v[\d.]+)/", p))})
    raise SlurmError(f"slurmrestd serves no supported API version (it has {served or 'none'})")


def submit_body(version: str, spec: SlurmJobSpec) -> dict[str, Any]:
    """The ``job/submit`` request body in the dialect of ``version``."""
    old = version == "v0.0.38"
    job: dict[str, Any] = {
        "name": spec.name,
        "current_working_directory": spec.cwd,
        "standard_output": spec.stdout,
        "standard_error": spec.stdout,
        "tasks": spec.tasks,
        "cpus_per_task": spec.cpus,
        "requeue": False,
    }
    if spec.nodes:
        job["minimum_nodes"] = job["maximum_nodes"] = spec.nodes
    if spec.partition:
        job["partition"] = spec.partition
    # One task: the memory of its node; several (MPI ranks, maybe on one node): per CPU.
    memory = (
        ("memory_per_node", spec.memory_mb)
        if spec.tasks <= 1
        else ("memory_per_cpu", -(-spec.memory_mb // max(1, spec.cpus)))
    )
    if old:
        job["environment"] = dict(spec.environment)
        job["time_limit"] = spec.time_limit_min
        if spec.memory_mb:
            job[memory[0]] = memory[1]
        return {"job": job, "script": spec.script}
    job["environment"] = [f"{k}={v}" for k, v in spec.environment.items()]
    job["time_limit"] = {"set": True, "infinite": False, "number": spec.time_limit_min}
    if spec.memory_mb:
        job[memory[0]] = {"set": True, "infinite": False, "number": memory[1]}
    if version == "v0.0.39":
        return {"job": job, "script": spec.script}
    job["script"] = spec.script
    return {"job": job}


def _errors(body: Any) -> list[dict[str, Any]]:
    errs = body.get("errors") if isinstance(body, dict) else None
    return [e for e in errs or [] if isinstance(e, dict)]


def _is_not_found(resp: httpx.Response, body: Any) -> bool:
    if any(
        e.get("error_number") == INVALID_JOB_ID or "Invalid job id" in str(e.get("error", ""))
        for e in _errors(body)
    ):
        return True
    return resp.status_code == 404 and not _errors(body)


class SlurmClient:
    """slurmrestd over HTTP with JWT authentication (thread-safe)."""

    def __init__(
        self,
        url: str,
        user: str,
        keyfile: Path | None = None,
        token: str | None = None,
        version: str | None = None,
        lifespan: int = 1800,
        timeout: float = 10.0,
        verify: bool = True,
        transport: httpx.BaseTransport | None = None,
    ):
        if keyfile is None and not token:
            raise SlurmError("slurm needs slurm_keyfile (to mint tokens) or slurm_token")
        self.url = url.rstrip("/")
        self.user = user
        self.keyfile = keyfile
        self._given_token = token
        self.lifespan = lifespan
        self._version = version
        self._token: str | None = None
        self._token_exp = 0.0
        self._lock = threading.Lock()
        self._http = httpx.Client(
            base_url=self.url, timeout=timeout, verify=verify, transport=transport
        )

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    # --- authentication ------------------------------------------------------------------
    def token(self) -> str:
        """A valid token: the given one, or one minted from the key (renewed 60 s early)."""
        if self._given_token:
            return self._given_token
        with self._lock:
            now = time.time()
            if self._token is None or now > self._token_exp - 60:
                assert self.keyfile is not None
                key = self.keyfile.read_bytes()
                exp = int(now) + self.lifespan
                self._token = jwt.encode(
                    {"sun": self.user, "iat": int(now), "exp": exp}, key, algorithm="HS256"
                )
                self._token_exp = exp
            return self._token

    def _headers(self) -> dict[str, str]:
        return {"X-SLURM-USER-NAME": self.user, "X-SLURM-USER-TOKEN": self.token()}

    def _request(self, method: str, path: str, **kw: Any) -> tuple[httpx.Response, Any]:
        try:
            resp = self._http.request(method, path, headers=self._headers(), **kw)
        except httpx.HTTPError as exc:
            raise SlurmError(f"slurmrestd {method} {path}: {exc}") from exc
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code in (401, 403):
            code = resp.status_code
            raise SlurmError(f"slurmrestd refused the token ({code}): {resp.text[:200]}")
        return resp, body

    # --- dialect -------------------------------------------------------------------------
    @property
    def version(self) -> str:
        """The API version in use (detected once from the OpenAPI document)."""
        if self._version is None:
            self._version = pick_version(self.openapi())
        return self._version

    def openapi(self) -> dict[str, Any]:
        """The server's OpenAPI document."""
        last = ""
        for path in ("/openapi/v3", "/openapi.json", "/openapi"):
            resp, body = self._request("GET", path)
            if resp.status_code == 200 and isinstance(body, dict) and "paths" in body:
                return body
            last = f"{path}: HTTP {resp.status_code}"
        raise SlurmError(f"no OpenAPI document from slurmrestd ({last})")

    # --- jobs ----------------------------------------------------------------------------
    def submit(self, spec: SlurmJobSpec) -> int:
        """Submit a batch job; return its id."""
        v = self.version
        resp, body = self._request("POST", f"/slurm/{v}/job/submit", json=submit_body(v, spec))
        job_id = None
        if isinstance(body, dict):
            job_id = body.get("job_id") or (body.get("result") or {}).get("job_id")
        if resp.status_code != 200 or not job_id or _errors(body):
            msg = "; ".join(
                f"{e.get('error', '')} {e.get('description', '')}".strip() for e in _errors(body)
            )
            raise SlurmError(f"job submission failed (HTTP {resp.status_code}): {msg or resp.text}")
        return int(job_id)

    def job(self, job_id: int | str) -> SlurmJobInfo | None:
        """The job's record, or None when slurmctld does not know it (any more)."""
        resp, body = self._request("GET", f"/slurm/{self.version}/job/{job_id}")
        if _is_not_found(resp, body):
            return None
        jobs = body.get("jobs") if isinstance(body, dict) else None
        if resp.status_code != 200 or not isinstance(jobs, list):
            raise SlurmError(f"job {job_id}: HTTP {resp.status_code} {resp.text[:300]}")
        for doc in jobs:
            if isinstance(doc, dict) and str(number(doc.get("job_id"))) == str(job_id):
                return parse_job(doc)
        return None

    def jobs(self) -> list[SlurmJobInfo]:
        """Every job slurmctld holds."""
        resp, body = self._request("GET", f"/slurm/{self.version}/jobs")
        if resp.status_code != 200 or not isinstance(body, dict):
            raise SlurmError(f"jobs: HTTP {resp.status_code} {resp.text[:300]}")
        return [parse_job(d) for d in body.get("jobs") or [] if isinstance(d, dict)]

    def cancel(self, job_id: int | str) -> bool:
        """Cancel (SIGKILL after Slurm's KillWait); False when the job is unknown or over."""
        resp, body = self._request("DELETE", f"/slurm/{self.version}/job/{job_id}")
        if _is_not_found(resp, body):
            return False
        if resp.status_code != 200 or _errors(body):
            msg = "; ".join(str(e.get("error", "")) for e in _errors(body))
            if "already completed" in msg.lower() or "already complete" in msg.lower():
                return False
            raise SlurmError(f"cancel {job_id}: HTTP {resp.status_code} {msg or resp.text[:300]}")
        return True
