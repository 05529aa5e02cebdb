"""The job process, for every launcher: argument list, environment, process group, kill.

The local runner and the Celery worker start ``python -m caesar_rest.backends.wrapper -- <app
argv>`` with :func:`launch`; the Slurm batch script and the Kubernetes pod run the same
:func:`wrapper_argv` (paths rewritten for the engine) with the same :func:`job_environment`.
A job runs in its own session, so its process group id is its pid: :func:`kill_group` stops
the app and whatever it spawned. A pid is only ever trusted together with its start time
(:func:`process_alive`), so a reused pid is never taken for the job.

Every backend hands the job's resource limits (:func:`job_limits`, from the settings) to the
wrapper in the environment (:func:`job_environment`), and the wrapper sets them as rlimits on
the app: the local runner and the Celery worker (per child: each job process) through
:func:`launch`, Slurm and Kubernetes through the job's environment, beside their own memory
limits (``--mem``, ``resources.limits``).

With a fork server (:mod:`caesar_rest.backends.forkserver`, the ``job_fork_server`` setting)
:func:`launch` starts the job warm, from a process that has the science stack imported, with the
same session, limits, environment, ``job.log`` and ``exit.json``; when the server cannot, the
job starts cold as above and the reason is logged once.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from caesar_rest.backends.pids import process_alive, process_start_ticks
from caesar_rest.jobs.folder import CORES_ENV, LIMITS_ENV, LOG_FILE, JobLimits, clear_exit

if TYPE_CHECKING:
    from caesar_rest.backends.forkserver import ForkServer
    from caesar_rest.settings import Settings

__all__ = [
    "WRAPPER_MODULE",
    "JobProcess",
    "Launched",
    "die_with_parent",
    "fork_server",
    "hostname",
    "job_environment",
    "job_limits",
    "kill_group",
    "launch",
    "launch_environment",
    "process_alive",
    "process_start_ticks",
    "reap_group",
    "remap",
    "wrapper_argv",
]

MIB = 1024 * 1024

#: Module that every backend runs in the job folder.
WRAPPER_MODULE = "caesar_rest.backends.wrapper"


def wrapper_argv(
    command: Sequence[str],
    python: str | None = None,
    mapping: Sequence[tuple[str, str]] = (),
) -> list[str]:
    """The wrapper command for an engine whose paths and interpreter may differ from ours.

    Parameters
    ----------
    command
        The app's argument list (``job.json``'s ``command``).
    python
        Replaces this interpreter (also where the app command starts with it).
    mapping
        (our prefix, engine prefix) pairs for path arguments.

    Returns
    -------
    list of str
        ``[python, "-m", WRAPPER_MODULE, "--", *command]``.
    """
    py = python or sys.executable
    cmd = [remap(a, mapping) for a in command]
    if cmd and cmd[0] == sys.executable:
        cmd[0] = py
    return [py, "-m", WRAPPER_MODULE, "--", *cmd]


def remap(arg: str, mapping: Sequence[tuple[str, str]]) -> str:
    """Replace a leading path prefix of ``arg`` (or of the value in ``--opt=value``)."""
    for src, dst in mapping:
        if src == dst:
            continue
        if arg == src:
            return dst
        if arg.startswith(src.rstrip("/") + "/"):
            return dst.rstrip("/") + arg[len(src.rstrip("/")) :]
    if arg.startswith("-") and "=" in arg:
        key, _, value = arg.partition("=")
        mapped = remap(value, mapping)
        if mapped != value:
            return f"{key}={mapped}"
    return arg


def job_limits(settings: Settings) -> JobLimits:
    """The resource limits of every job, from the ``job_*_limit`` settings (0: none)."""
    return JobLimits(
        memory=settings.job_memory_limit_mib * MIB,
        cpu_time=settings.job_cpu_time_limit,
        open_files=settings.job_open_files_limit,
        file_size=settings.job_file_size_limit_mib * MIB,
    )


def job_environment(cores: int, limits: JobLimits | None = None) -> dict[str, str]:
    """The variables every job gets, on every backend.

    One rule: ``OMP_NUM_THREADS`` and ``CAESAR_JOB_CORES`` are the job's cores (the app asked
    for them; the second one is the grant an app sizes its worker pool by, which an operator's
    ``OMP_NUM_THREADS`` does not override), and matplotlib draws without a display. With
    ``limits``, ``CAESAR_JOB_LIMITS`` tells the wrapper the rlimits to set on the app.
    """
    n = str(max(1, cores))
    env = {"OMP_NUM_THREADS": n, CORES_ENV: n, "MPLBACKEND": "Agg"}
    if limits is not None and limits.to_env():
        env[LIMITS_ENV] = limits.to_env()
    return env


def launch_environment(cores: int, limits: JobLimits | None = None) -> dict[str, str]:
    """This process's environment for a job started here: without the service's own
    ``CAESAR_REST_*`` settings (secrets among them) and any inherited job limits, and with
    :func:`job_environment` (an ``OMP_NUM_THREADS`` set by the operator is kept)."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("CAESAR_REST_") and k != LIMITS_ENV
    }
    job = job_environment(cores, limits)
    env.setdefault("OMP_NUM_THREADS", job.pop("OMP_NUM_THREADS"))
    env.update(job)
    return env


class JobProcess(Protocol):
    """A started wrapper as its launcher waits for it: a ``subprocess.Popen`` (cold) or a
    :class:`~caesar_rest.backends.forkserver.WarmProcess` (forked by the fork server)."""

    @property
    def pid(self) -> int:
        """The wrapper's pid."""

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the end (``subprocess.TimeoutExpired`` after ``timeout`` seconds); the
        status (negative: the signal; None when it cannot be known)."""

    def poll(self) -> int | None:
        """The status if ended, else None."""


@dataclass(frozen=True)
class Launched:
    """A started job process."""

    proc: JobProcess
    #: Start time in clock ticks since boot (:func:`process_start_ticks`).
    start_ticks: int | None
    #: Unix time of the start.
    started: float
    #: Whether the fork server started it.
    warm: bool = False

    @property
    def pid(self) -> int:
        """The wrapper's pid, also the job's process group id."""
        return self.proc.pid


def launch(
    job_dir: Path,
    command: Sequence[str],
    cores: int,
    preexec: Callable[[], None] | None = None,
    limits: JobLimits | None = None,
    extra_env: dict[str, str] | None = None,
    warm: ForkServer | None = None,
) -> Launched:
    """Start the wrapper for ``command`` in ``job_dir``, in a new session, logging to job.log.

    Parameters
    ----------
    job_dir
        The job folder (the working directory).
    command
        The app's argument list.
    cores
        The job's cores (sets ``OMP_NUM_THREADS``).
    preexec
        Run in the child before the exec (only where the parent runs no other threads).
    limits
        The job's resource limits (:func:`job_limits`), set by the wrapper on the app.
    extra_env
        More variables for the job (its remote staging,
        :meth:`~caesar_rest.jobs.service.JobService.staging_env`).
    warm
        The fork server to start the job from (None, or unavailable: a new interpreter).

    Returns
    -------
    Launched
        The process and its start time.
    """
    clear_exit(job_dir)
    env = {**launch_environment(cores, limits), **(extra_env or {})}
    if warm is not None:
        from caesar_rest.backends.forkserver import ForkServerUnavailable

        try:
            wp = warm.launch(job_dir, command, env)
            return Launched(wp, wp.ticks, time.time(), warm=True)
        except ForkServerUnavailable as exc:
            warm.report_cold(str(exc))
    with open(job_dir / LOG_FILE, "ab") as logf:
        proc = subprocess.Popen(  # noqa: S603 - argument list, no shell
            wrapper_argv(command),
            cwd=job_dir,
            stdin=subprocess.DEVNULL,
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            close_fds=True,
            env=env,
            preexec_fn=preexec,
        )
    return Launched(proc, process_start_ticks(proc.pid), time.time())


def fork_server(settings: Settings, *, die_with_launcher: bool) -> ForkServer | None:
    """A fork server for this launching process per the ``job_fork_server*`` settings (not
    started: it starts on first use or with ``start()``); None when the setting is off."""
    if settings.job_fork_server == "off":
        return None
    from caesar_rest.backends.forkserver import ForkServer

    return ForkServer(
        settings.job_fork_server_preload,
        die_with_launcher=die_with_launcher,
        env=launch_environment(1),
    )


def die_with_parent() -> None:
    """In the child: get SIGTERM when the parent dies (Linux ``PR_SET_PDEATHSIG``)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM, 0, 0, 0)


def kill_group(pid: int, pid_start: int | None, grace: float, *, wait: bool = True) -> None:
    """SIGTERM the job's process group, SIGKILL it after ``grace`` seconds.

    Nothing happens when the process that started at ``pid_start`` is gone already. With
    ``wait=False`` the SIGKILL comes from a background thread and the call returns at once.
    """
    if not process_alive(pid, pid_start):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)

    def finish() -> None:
        end = time.time() + grace
        while time.time() < end and process_alive(pid, pid_start):
            time.sleep(0.05)
        reap_group(pid)

    if wait:
        finish()
    else:
        threading.Thread(target=finish, name=f"kill-{pid}", daemon=True).start()


def reap_group(pid: int) -> None:
    """SIGKILL what is left of a job's process group (children the app may have spawned)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def hostname() -> str:
    """This machine's name (recorded with a job's pid)."""
    return os.uname().nodename
