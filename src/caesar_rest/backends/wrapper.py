"""The job process: runs an app's argument list under its limits and records how it ended.

Usage: ``python -m caesar_rest.backends.wrapper -- PROGRAM ARGS...`` in the job folder. It
writes ``exit.json`` (exit code, signal, times) atomically when the program ends, so the outcome
survives a restart of the service that launched it. Standard library and
:mod:`caesar_rest.jobs.folder` only: it starts fast.

Limits: the job's :class:`~caesar_rest.jobs.folder.JobLimits` come in the environment
(``CAESAR_JOB_LIMITS``, the same on every backend) and are set as rlimits on the app only (in
the child, before its exec), so the wrapper itself can always record the end. When the app
fails, the wrapper tells which limit ended it, from the signal (``SIGXCPU``, ``SIGXFSZ``, a
``SIGKILL`` at the memory limit) or from the error the app printed last (``MemoryError``,
``Too many open files``, ``File too large``), and writes it into ``exit.json`` (``limit``,
``reason``) and the log.

Started by the fork server (:mod:`caesar_rest.backends.forkserver`), the wrapper is a fork of
a process that has the science stack imported already: :func:`main` then gets a ``start``
that forks the app too (a ``python -m module`` command runs with :mod:`runpy` in that fork,
under the same rlimits) instead of executing a new interpreter.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Protocol

from caesar_rest.jobs.folder import (
    CPU_TIME,
    FILE_SIZE,
    LIMITS_ENV,
    LOG_FILE,
    MEMORY,
    OPEN_FILES,
    ExitRecord,
    JobLimits,
    write_exit,
)
from caesar_rest.storage.remote import STORAGE_ENV, RemoteUnavailable, Staging

#: Exit status of a job whose input or results could not be moved to or from the remote
#: (``EX_TEMPFAIL``: run it again once the remote is back).
STAGE_FAILED = 75

#: Seconds of CPU time between SIGXCPU (the soft limit) and SIGKILL (the hard one).
CPU_GRACE = 5
#: How much of the end of job.log is searched for the app's last error.
LOG_TAIL = 64 * 1024
#: What programs print when an allocation fails (Python, numpy, C++, C, Fortran runtimes).
MEMORY_ERRORS = (
    b"MemoryError",
    b"Unable to allocate",
    b"std::bad_alloc",
    b"Cannot allocate memory",
    b"out of memory",
)


class AppProcess(Protocol):
    """The running app, as :func:`main` waits for it (a ``subprocess.Popen`` is one)."""

    @property
    def pid(self) -> int:
        """The app's pid."""

    def wait(self) -> int:
        """Wait for the app; its status (negative: the signal that ended it)."""

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the app (nothing once it has ended)."""


#: Starts the app: its argument list and the function that sets its limits in the child.
Starter = Callable[[list[str], Callable[[], None] | None], AppProcess]


def exec_app(cmd: list[str], limiter: Callable[[], None] | None) -> AppProcess:
    """Start the app as a new program (``fork`` + ``exec``), its limits set before the exec."""
    # Safe: the wrapper runs no other threads.
    return subprocess.Popen(cmd, preexec_fn=limiter)  # noqa: S603, PLW1509 - no shell


def main(
    argv: list[str],
    starter: Starter = exec_app,
    *,
    start: float | None = None,
    logged: bool = False,
) -> int:
    """Run the command after ``--``; return its exit status in shell convention.

    Parameters
    ----------
    argv
        ``["--", PROGRAM, ARGS...]`` (anything before ``--`` is ignored).
    starter
        How the app is started (default: a new program; the fork server forks it).
    start
        When the job started (Unix time; default: now).
    logged
        Whether the log's start lines (:func:`start_lines`) are written already.

    Returns
    -------
    int
        The app's status in shell convention (128 + signal), 2 on a usage error, 75 when
        staging failed, 127 when the app could not be started.
    """
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        print("usage: python -m caesar_rest.backends.wrapper -- PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    cmd = argv[argv.index("--") + 1 :]
    limits = JobLimits.from_env(os.environ.get(LIMITS_ENV))
    start = time.time() if start is None else start
    staging = _staging()
    if staging is not None and not _stage(staging.stage_in, "input not staged in", start):
        return STAGE_FAILED
    rc = _run(cmd, limits, start, starter, logged)
    if staging is not None and not _stage(staging.stage_out, "results not stored", start):
        return STAGE_FAILED
    return rc


def _staging() -> Staging | None:
    """The job's remote staging from :data:`STORAGE_ENV`, if it has one."""
    text = os.environ.get(STORAGE_ENV)
    return Staging.from_env(text) if text else None


def _stage(step: Callable[[Path], None], what: str, start: float) -> bool:
    """Run a staging step in the job folder; on failure record the job as failed with the
    reason (``exit.json``, the log) and return False."""
    try:
        step(Path.cwd())
    except (RemoteUnavailable, OSError, ValueError) as exc:
        reason = f"remote storage unavailable, {what}: {exc}"
        print(f"[caesar-rest] {reason}", flush=True)
        end = time.time()
        record = ExitRecord(
            STAGE_FAILED, started=start, ended=end, elapsed=end - start, reason=reason
        )
        write_exit(Path.cwd(), record)
        return False
    return True


def _run(
    cmd: list[str],
    limits: JobLimits,
    start: float,
    starter: Starter = exec_app,
    logged: bool = False,
) -> int:
    """Run the app under its limits; write ``exit.json``; its status in shell convention."""
    if not logged:
        print(start_lines(cmd, limits), end="", flush=True)
    try:
        proc = starter(cmd, limiter(limits))
    except OSError as exc:
        print(f"[caesar-rest] cannot start {cmd[0]}: {exc}", file=sys.stderr, flush=True)
        _write(127, start, limits)
        return 127

    def forward(signum: int, _frame: FrameType | None) -> None:
        # The whole process group usually gets the signal; forwarding covers a lone kill.
        proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    rc = proc.wait()
    record = _write(rc, start, limits)
    print(end_lines(record), end="", flush=True)
    return shell_status(rc)


def shell_status(rc: int) -> int:
    """An app's status in shell convention (a signal ``n`` as ``128 + n``)."""
    return rc if rc >= 0 else 128 - rc


def start_lines(cmd: list[str], limits: JobLimits) -> str:
    """The job log's lines when the app starts: its command and limits."""
    text = f"[caesar-rest] running: {cmd!r}\n"
    if limits.to_env():
        text += f"[caesar-rest] limits: {limits.to_env()}\n"
    return text


def end_lines(record: ExitRecord) -> str:
    """The job log's lines when the app has ended: the limit that ended it, the status."""
    text = f"[caesar-rest] {record.reason}\n" if record.reason else ""
    return text + f"[caesar-rest] exit code {record.exit_code}, {record.elapsed or 0:.2f} s\n"


def limiter(limits: JobLimits) -> Callable[[], None] | None:
    """The function the app's child process runs before its exec: set the rlimits."""
    wanted = [
        (resource.RLIMIT_DATA, limits.memory, 0),
        (resource.RLIMIT_CPU, limits.cpu_time, CPU_GRACE),
        (resource.RLIMIT_NOFILE, limits.open_files, 0),
        (resource.RLIMIT_FSIZE, limits.file_size, 0),
    ]
    wanted = [w for w in wanted if w[1] > 0]
    if not wanted:
        return None

    def apply() -> None:
        for which, soft, extra in wanted:
            _, hard_now = resource.getrlimit(which)
            hard = soft + extra
            if hard_now != resource.RLIM_INFINITY:  # never above what we may set
                hard = min(hard, hard_now)
                soft = min(soft, hard)
            resource.setrlimit(which, (soft, hard))

    return apply


def limit_hit(
    rc: int, limits: JobLimits, cpu_time: float, max_rss_kib: int, log_tail: bytes
) -> str | None:
    """Which limit ended an app that failed with status ``rc``, if one did.

    Parameters
    ----------
    rc
        The app's status (negative: the signal that ended it).
    limits
        The job's limits.
    cpu_time, max_rss_kib
        What the app used.
    log_tail
        The end of the job log (the app's last error message).

    Returns
    -------
    str or None
        ``memory``, ``cpu_time``, ``open_files`` or ``file_size``; None when no limit is to
        blame (or none was set).
    """
    if rc == 0:
        return None
    sig = -rc if rc < 0 else None
    if limits.cpu_time and (
        sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_time >= limits.cpu_time)
    ):
        return CPU_TIME
    if limits.file_size and (sig == signal.SIGXFSZ or b"File too large" in log_tail):
        return FILE_SIZE
    if limits.memory and (
        any(m in log_tail for m in MEMORY_ERRORS)
        or (sig == signal.SIGKILL and max_rss_kib * 1024 >= 0.9 * limits.memory)
    ):
        return MEMORY
    if limits.open_files and b"Too many open files" in log_tail:
        return OPEN_FILES
    return None


def _log_tail(path: Path) -> bytes:
    """The last :data:`LOG_TAIL` bytes of ``path`` (nothing when it cannot be read)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - LOG_TAIL))
            return fh.read(LOG_TAIL)
    except OSError:
        return b""


def _write(rc: int, start: float, limits: JobLimits) -> ExitRecord:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the app and what it waited for
    return record_exit(Path.cwd(), rc, start, limits, usage)


def record_exit(
    folder: Path, rc: int, start: float, limits: JobLimits, usage: resource.struct_rusage
) -> ExitRecord:
    """Write the ``exit.json`` of an app that ended with status ``rc``; the record.

    Parameters
    ----------
    folder
        The job folder (its ``job.log`` tells which limit ended the app).
    rc
        The app's status (negative: the signal that ended it).
    start
        When the job started (Unix time).
    limits
        The job's limits.
    usage
        What the app and the processes it waited for used (``getrusage``, ``wait4``).

    Returns
    -------
    ExitRecord
        The record written.
    """
    end = time.time()
    cpu = round(usage.ru_utime + usage.ru_stime, 3)
    hit = None
    if rc != 0 and limits.to_env():
        hit = limit_hit(rc, limits, cpu, usage.ru_maxrss, _log_tail(folder / LOG_FILE))
    record = ExitRecord(
        exit_code=rc,
        signal=-rc if rc < 0 else None,
        started=start,
        ended=end,
        elapsed=end - start,
        cpu_time=cpu,
        max_rss_kib=usage.ru_maxrss,
        limit=hit,
        reason=limits.describe(hit) if hit else None,
    )
    write_exit(folder, record)
    return record


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
