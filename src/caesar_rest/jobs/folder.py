"""The job folder: ``job.json`` (what to run), ``exit.json`` (how it ended), ``job.log``.

Every backend, the job service and the job wrapper go through this module, so the file names,
their fields and the rule that turns an exit record into an outcome are written once.

Standard library only (and :mod:`caesar_rest.jobs.states`): the job wrapper imports it, and it
must start fast.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from caesar_rest.jobs.states import Reason

__all__ = [
    "CORES_ENV",
    "EXIT_FILE",
    "LIMITS_ENV",
    "LOG_FILE",
    "SPEC_FILE",
    "TIMEOUT_FLAG",
    "ExitRecord",
    "JobLimits",
    "JobSpec",
    "Outcome",
    "clear_exit",
    "lost",
    "outcome_of",
    "read_exit",
    "read_spec",
    "write_exit",
    "write_spec",
]

#: What to run: the app, its options and its argument list (:class:`JobSpec`).
SPEC_FILE = "job.json"
#: How the app ended, written by the job wrapper (:class:`ExitRecord`).
EXIT_FILE = "exit.json"
#: The job log (the app's ``log`` result, ``apps.base.LOG_RESULT``; a test keeps them equal).
LOG_FILE = "job.log"
#: Written by a Slurm batch script that stopped the job at its time limit.
TIMEOUT_FLAG = "timed_out"
#: The job's resource limits, for the wrapper (:meth:`JobLimits.to_env`), on every backend.
LIMITS_ENV = "CAESAR_JOB_LIMITS"
#: The cores the backend granted the job (a positive integer), on every backend: the ``caesar``
#: app's default ``nproc`` (:func:`caesar_rest.apps.grant.granted_cores`).
CORES_ENV = "CAESAR_JOB_CORES"
#: Names of the limits in ``exit.json``'s ``limit`` (the one that ended the app).
MEMORY, CPU_TIME, OPEN_FILES, FILE_SIZE = "memory", "cpu_time", "open_files", "file_size"


def size_text(nbytes: int) -> str:
    """``4 GiB``, ``200 MiB`` or ``1536 KiB``: a limit as people write it."""
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale and nbytes % scale == 0:
            return f"{nbytes // scale} {unit}"
    return f"{nbytes} bytes"


@dataclass(frozen=True)
class JobLimits:
    """Resource limits of a job's app (0: none), set by the wrapper as rlimits.

    ``memory`` is ``RLIMIT_DATA`` (heap and private writable mappings: what a program
    allocates, not its shared libraries), ``cpu_time`` ``RLIMIT_CPU`` in seconds,
    ``open_files`` ``RLIMIT_NOFILE`` and ``file_size`` ``RLIMIT_FSIZE`` (the largest file the
    app may write, its part of job.log included).
    """

    memory: int = 0
    cpu_time: int = 0
    open_files: int = 0
    file_size: int = 0

    def to_env(self) -> str:
        """The :data:`LIMITS_ENV` value: ``memory=4294967296,open_files=4096`` (set ones)."""
        return ",".join(f"{k}={v}" for k, v in asdict(self).items() if v)

    @classmethod
    def from_env(cls, text: str | None) -> JobLimits:
        """Limits from a :data:`LIMITS_ENV` value; unknown or malformed items are ignored."""
        values: dict[str, int] = {}
        for item in (text or "").split(","):
            key, _, value = item.partition("=")
            if key.strip() in cls.__dataclass_fields__ and value.strip().isdigit():
                values[key.strip()] = int(value)
        return cls(**values)

    def describe(self, limit: str) -> str:
        """The message of a job ended by ``limit``: ``memory limit 4 GiB exceeded``."""
        if limit == MEMORY:
            return f"memory limit {size_text(self.memory)} exceeded"
        if limit == CPU_TIME:
            return f"CPU time limit of {self.cpu_time} s exceeded"
        if limit == OPEN_FILES:
            return f"open files limit {self.open_files} exceeded"
        return f"output file size limit {size_text(self.file_size)} exceeded"


@dataclass(frozen=True)
class JobSpec:
    """The content of ``job.json``."""

    job_id: str
    app: str
    #: The validated app options.
    options: dict[str, Any]
    #: Absolute path of the input image, as this service sees it.
    input_file: str
    #: The app's argument list, run in the job folder by the wrapper.
    command: list[str]
    #: The user's name of the input file (display text for previews and VOTables only).
    input_name: str = ""
    #: SHA-256 of the input file as uploaded (for the VOTable provenance).
    input_sha256: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        """A spec from parsed JSON: only ``command`` is required, unknown keys (the
        ``time_limit`` of older specs) are ignored."""
        return cls(
            job_id=str(data.get("job_id", "")),
            app=str(data.get("app", "")),
            options=dict(data.get("options") or {}),
            input_file=str(data.get("input_file", "")),
            command=[str(a) for a in data["command"]],
            input_name=str(data.get("input_name", "")),
            input_sha256=str(data.get("input_sha256", "")),
        )


def write_spec(job_dir: Path, spec: JobSpec) -> None:
    """Write ``job.json`` into ``job_dir``."""
    (job_dir / SPEC_FILE).write_text(json.dumps(asdict(spec), indent=1))


def read_spec(job_dir: Path) -> JobSpec:
    """Read ``job.json`` from ``job_dir`` (raises OSError or ValueError when unreadable)."""
    data = json.loads((job_dir / SPEC_FILE).read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{SPEC_FILE} holds no object")
    return JobSpec.from_dict(data)


@dataclass(frozen=True)
class ExitRecord:
    """The content of ``exit.json``: how the app ended, as the wrapper saw it."""

    #: The app's status (negative: killed by that signal); None when the app never ran.
    exit_code: int | None
    #: The signal that ended the app, if one did.
    signal: int | None = None
    started: float | None = None
    ended: float | None = None
    elapsed: float | None = None
    #: CPU seconds of the app and what it waited for.
    cpu_time: float | None = None
    max_rss_kib: int | None = None
    #: The resource limit that ended the app (``memory``, ``cpu_time``, ``open_files``,
    #: ``file_size``), and its message; None when none did (and in older records).
    limit: str | None = None
    reason: str | None = None

    @property
    def recorded(self) -> bool:
        """Whether the record states an exit code (a half-written record does not)."""
        return self.exit_code is not None

    @property
    def clean(self) -> bool:
        """Whether the app ended by itself (not stopped by a signal from outside)."""
        return self.exit_code is not None and self.signal is None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExitRecord:
        """A record from parsed JSON, tolerant of missing fields."""

        def num(key: str) -> float | None:
            value = data.get(key)
            return None if value is None else float(value)

        def whole(key: str) -> int | None:
            value = data.get(key)
            return None if value is None else int(value)

        return cls(
            exit_code=whole("exit_code"),
            signal=whole("signal"),
            started=num("started"),
            ended=num("ended"),
            elapsed=num("elapsed"),
            cpu_time=num("cpu_time"),
            max_rss_kib=whole("max_rss_kib"),
            limit=None if data.get("limit") is None else str(data["limit"]),
            reason=None if data.get("reason") is None else str(data["reason"]),
        )


def read_exit(job_dir: Path) -> ExitRecord | None:
    """The wrapper's record of how the app ended, if it wrote a readable one."""
    try:
        data = json.loads((job_dir / EXIT_FILE).read_text())
        return ExitRecord.from_dict(data) if isinstance(data, dict) else None
    except (OSError, ValueError, TypeError):
        return None


def write_exit(job_dir: Path, record: ExitRecord) -> None:
    """Write ``exit.json`` atomically (a reader never sees half a record)."""
    tmp = job_dir / f"{EXIT_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(asdict(record)))
    os.replace(tmp, job_dir / EXIT_FILE)


def clear_exit(job_dir: Path) -> None:
    """Remove an earlier run's ``exit.json`` before a (re)launch."""
    with contextlib.suppress(FileNotFoundError):
        (job_dir / EXIT_FILE).unlink()


@dataclass
class Outcome:
    """How a job process ended, as :meth:`JobService.finish` records it."""

    exit_code: int | None
    elapsed: float | None
    timed_out: bool = False
    message: str = ""
    reason: Reason = Reason.FAILED
    cpu_time: float | None = field(default=None)


def outcome_of(
    record: ExitRecord | None,
    *,
    exit_code: int | None = None,
    elapsed: float | None = None,
    seen_elapsed: float | None = None,
    timed_out: bool = False,
    message: str = "",
    reason: Reason = Reason.FAILED,
) -> Outcome:
    """THE rule that turns what a launcher saw, and the wrapper's record, into an outcome.

    Parameters
    ----------
    record
        ``exit.json``, if the wrapper wrote one.
    exit_code
        The status the launcher or engine saw (the wrapper's own): used when the record states
        none, i.e. the wrapper itself was killed.
    elapsed
        Wall time measured by the launcher from the job's start: wins over the record's.
    seen_elapsed
        Wall time the engine reports: used when neither ``elapsed`` nor the record has one.
    timed_out, message, reason
        Passed on to the :class:`Outcome`.

    Returns
    -------
    Outcome
        The app's exit code (the record's first), the elapsed time rounded to the millisecond
        and the record's CPU time. A record that names a resource limit gives the message
        (``memory limit 4 GiB exceeded``); the CPU-time limit ends the job TIMED-OUT.
    """
    code = exit_code
    cpu = None
    if record is not None and record.recorded:
        code = record.exit_code
        cpu = record.cpu_time
        if record.reason and not message:
            message = record.reason
            timed_out = timed_out or record.limit == CPU_TIME
        if elapsed is None:
            elapsed = record.elapsed or seen_elapsed
    elif elapsed is None:
        elapsed = seen_elapsed
    return Outcome(
        code,
        None if elapsed is None else round(elapsed, 3),
        timed_out=timed_out,
        message=message,
        reason=reason,
        cpu_time=cpu,
    )


def lost(message: str) -> Outcome:
    """The outcome of a job that nobody can account for: no exit record (ERROR, reason lost)."""
    return Outcome(None, None, message=message, reason=Reason.LOST)
