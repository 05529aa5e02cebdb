"""Warm job starts: a fork server that has the science stack imported, and its client.

A cold job start runs ``python -m caesar_rest.backends.wrapper`` and then ``python -m <app>``:
two interpreters, and the app imports numpy, scipy, astropy and the finder (about 0.8 s of CPU
on these machines) before it reads a pixel. The fork server is one long-lived process per
launching process (an API process's local runner, a Celery pool process) that has imported
them once (``job_fork_server_preload``) and forks a child per job:

* the child has its own session (so its process group id is its pid and
  :func:`~caesar_rest.backends.process.kill_group` stops the job), runs in the job folder with
  standard output and error on ``job.log``, standard input ``/dev/null``, the job's
  environment and no other file descriptor, and the signal handlers of a new interpreter;
* that child is the job's wrapper (:func:`caesar_rest.backends.wrapper.main`), as on the cold
  path: it stages files to a remote if the job has one, forks the app (:func:`fork_app`: a
  ``python -m module`` command runs there with :mod:`runpy` under the job's rlimits; another
  program is executed), waits for it and writes ``exit.json`` and the last lines of
  ``job.log``. So each job records its own end in its own session, whatever becomes of the
  server and the service: a service killed outright (with its process group, the server in
  it) leaves its jobs running, and the next service process adopts them or finishes them from
  ``exit.json``, as cold ones. The outcome rule (:func:`~caesar_rest.jobs.folder.outcome_of`)
  is unchanged;
* both forks happen before the job comes: the server keeps one spare wrapper
  (:meth:`_Server._spare_child`), in its session already, which has forked its app
  (:class:`SpareApp`); a request goes to the spare, which hands a ``python -m`` app its
  command before anything else (the job log's start lines written first: the log reads the
  same), answers the launcher itself, and then sets itself up as the job's wrapper; the
  server forks the next one. The app's signal handlers and random state are set before its
  job comes. An unused spare dies with the server (``PR_SET_PDEATHSIG``, the
  end of its socket).

Safety of the fork: the server forks only while it runs one thread. It is a fresh interpreter
(``python -m caesar_rest.backends.forkserver``, started by :class:`ForkServer`) whose BLAS and
OpenMP thread pools are set to one thread before the preload (OpenBLAS starts its threads at
import otherwise); it counts its threads (``/proc/self/task``) after the preload and before
every fork, and refuses (the launcher then starts the job cold) when there is more than one.
It opens no database connection and configures no logging: it imports only the preload list
and the wrapper. The job's BLAS threads are set in the app from its ``OMP_NUM_THREADS``
(threadpoolctl), and numpy's global random state is seeded afresh, as a new process would.

Protocol: the launcher holds one end of a ``SOCK_SEQPACKET`` socket pair (the server's
``--fd``). A request is a JSON message (argument list, folder, environment, whether the job
dies with the launcher) with two file descriptors: the job's own socket and ``job.log``. The
server answers on the job's socket with ``{"pid", "ticks"}`` (or ``{"error"}``) and, when the
wrapper ends, ``{"status"}`` (its exit status, negative: the signal). When the launcher closes
a job's socket (it died), a job that dies with its launcher (Celery) gets SIGTERM in its whole
group; it also has ``PR_SET_PDEATHSIG`` on the server. When the control socket closes (or on
SIGTERM) the server takes no more jobs and exits once no launcher waits for a job's status;
local jobs go on (adopted by the next service process, as today).

When the fork server is off (``job_fork_server``), cannot start, has died or refuses, the
launcher starts the job cold (:func:`caesar_rest.backends.process.launch`) and logs why once.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["ForkServer", "ForkServerUnavailable", "WarmProcess", "fork_app", "python_module"]

MODULE = "caesar_rest.backends.forkserver"
#: Largest request (argument list and environment) in bytes.
MAX_MESSAGE = 1 << 20
#: Seconds a launch waits for a starting server to finish its imports.
START_TIMEOUT = 60.0
#: Seconds after the server died before a launch starts a new one.
RESTART_AFTER = 30.0
#: Thread-pool variables set to 1 in the server (its children get the job's own values).
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
PR_SET_PDEATHSIG = 1


class ForkServerUnavailable(Exception):
    """The fork server cannot start this job (the reason is the message): start it cold."""


def python_module(cmd: Sequence[str]) -> tuple[str, list[str]] | None:
    """``(module, args)`` of ``[sys.executable, "-m", module, *args]``, else None."""
    if len(cmd) >= 3 and cmd[0] == sys.executable and cmd[1] == "-m":
        return cmd[2], list(cmd[3:])
    return None


def thread_count() -> int:
    """Threads of this process (Linux ``/proc/self/task``)."""
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return threading.active_count()


# --- the app in the wrapper's fork ---------------------------------------------------------
@dataclass
class ForkedApp:
    """An app forked by the wrapper (:func:`fork_app`); the wrapper's only child."""

    pid: int
    returncode: int | None = None

    def wait(self) -> int:
        """Wait for the app; its status (negative: the signal that ended it)."""
        if self.returncode is None:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        """Send ``sig`` to the app (a zombie until :meth:`wait`, so the pid is still ours)."""
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)


def fork_app(cmd: list[str], limiter: Callable[[], None] | None) -> Any:
    """The wrapper's starter in a fork-server child: fork a ``python -m`` app, exec others.

    Parameters
    ----------
    cmd
        The app's argument list.
    limiter
        Sets the job's rlimits (in the app's process, first).

    Returns
    -------
    ForkedApp or subprocess.Popen
        The started app.
    """
    from caesar_rest.backends.wrapper import exec_app

    target = python_module(cmd)
    if target is None:
        return exec_app(cmd, limiter)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid:
        return ForkedApp(pid)
    code = 1
    try:
        if limiter is not None:
            limiter()
        code = _run_module(*target)
    finally:
        os._exit(code)


def _fork_paired(
    child: Callable[[socket.socket], None], close: Sequence[socket.socket] = ()
) -> tuple[int, socket.socket] | None:
    """Fork a child that runs ``child`` on its end of a new socket pair (closing ``close``
    first); the child's pid and this process's end, or None when the fork fails."""
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        pid = os.fork()
    except OSError:
        mine.close()
        theirs.close()
        return None
    if pid == 0:
        for sock in (mine, *close):
            sock.close()
        child(theirs)  # never returns
    theirs.close()
    return pid, mine


@dataclass
class SpareApp:
    """The app's process, forked by a spare wrapper before its job came (in the job's session
    already): it waits on :attr:`sock` for its command (:func:`_spare_app_main`), so a job's
    start costs no fork at all. It dies with the wrapper until then (``PR_SET_PDEATHSIG``,
    and the end of its socket)."""

    pid: int
    #: The wrapper's end of the app's socket.
    sock: socket.socket

    @classmethod
    def fork(cls, close: Sequence[socket.socket] = ()) -> SpareApp | None:
        """Fork the spare app (in a process that runs one thread), which closes ``close``
        (the wrapper's own sockets); None when it cannot."""
        forked = _fork_paired(_spare_app_main, close)
        return None if forked is None else cls(*forked)

    def start(self, cmd: list[str], limiter: Callable[[], None] | None) -> Any:
        """The wrapper's starter: a ``python -m`` app runs in this process; another program
        (or, when this process has died, any app) is started as :func:`fork_app` does.

        The app sets its limits itself, from the environment (``CAESAR_JOB_LIMITS``) as the
        wrapper does (``limiter`` is the wrapper's own function and cannot travel).
        """
        target = python_module(cmd)
        if target is not None:
            sys.stdout.flush()
            sys.stderr.flush()
            if self.hand(target, os.getcwd(), dict(os.environ), sys.stdout.fileno()):
                return ForkedApp(self.pid)
        self.sock.close()  # it ends at the end of its socket
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.pid, 0)
        return fork_app(cmd, limiter)

    def started(self, cmd: list[str], limiter: Callable[[], None] | None) -> ForkedApp:
        """The wrapper's starter once the app has its command (:meth:`hand`): it runs
        already."""
        return ForkedApp(self.pid)

    def hand(
        self, target: tuple[str, list[str]], cwd: str, env: dict[str, str], log_fd: int
    ) -> bool:
        """Send the app its job, ``python -m`` ``target`` (module, arguments) in ``cwd`` with
        ``env``, this process's import path and ``log_fd`` as its output; it runs it at once.
        Whether it took it (False: it has gone)."""
        msg = {"module": target[0], "args": target[1], "cwd": cwd, "env": env}
        msg["path"] = sys.path[1:]
        try:
            socket.send_fds(self.sock, [json.dumps(msg).encode()], [log_fd], socket.MSG_NOSIGNAL)
        except OSError:
            return False
        self.sock.close()
        return True


def _spare_app_main(sock: socket.socket) -> None:
    """In the spare app: wait for the command; then the job's descriptors, folder,
    environment, import path and limits, and run it (as :func:`fork_app`'s child does)."""
    code = 0
    try:
        wrapper = os.getppid()
        _die_with_parent(signal.SIGKILL)
        if os.getppid() != wrapper:
            os._exit(0)
        # What a new interpreter's start does, done before the job comes: its signal
        # handlers, numpy's own random state (this process is the job's already).
        _python_signals()
        _fresh_random()
        # While it waits, SIGINT ends it quietly too (SIGTERM does: default already).
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 1)
        sock.close()
        if not data or len(fds) != 1:
            os._exit(0)  # not needed (another program), or the wrapper has gone
        code = 1
        signal.signal(signal.SIGINT, signal.default_int_handler)
        _die_with_parent(0)  # as a forked app: it does not die with its wrapper
        msg = json.loads(data)
        _own_fds(fds[0])
        os.chdir(msg["cwd"])
        os.environ.clear()
        os.environ.update(msg["env"])
        sys.path[1:] = msg["path"]
        from caesar_rest.backends.wrapper import limiter
        from caesar_rest.jobs.folder import LIMITS_ENV, JobLimits

        limit = limiter(JobLimits.from_env(os.environ.get(LIMITS_ENV)))
        if limit is not None:
            limit()
        code = _run_module(msg["module"], [str(a) for a in msg["args"]], prepared=True)
    finally:
        _flush_and_exit(code)


def _run_module(module: str, args: list[str], prepared: bool = False) -> int:
    """In the app's process: run ``python -m module args`` as a new interpreter would
    (``prepared``: its signal handlers and random state are new already)."""
    import runpy

    code = 1
    try:
        if not prepared:
            _python_signals()
            _fresh_random()
        _job_threads()
        sys.argv = [module, *args]
        sys.path[0] = os.getcwd()  # as `python -m` puts the working folder first
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        code = _exit_status(exc.code)
    except BaseException:
        traceback.print_exc()
        code = 1
    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()  # the app's own (logging's flush among them)
    with contextlib.suppress(BaseException):
        sys.stdout.flush()
        sys.stderr.flush()
    return code


def _exit_status(value: object) -> int:
    """The status of ``SystemExit(value)``, as the interpreter maps it."""
    if value is None:
        return 0
    if isinstance(value, int):
        return value & 0xFF
    print(value, file=sys.stderr)
    return 1


def _python_signals() -> None:
    """Signal handlers of a fresh interpreter: SIGINT raises, SIGPIPE and SIGXFSZ ignored."""
    for sig in signal.valid_signals():
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        with contextlib.suppress(OSError, ValueError, RuntimeError):
            signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_SETMASK, set())


def _fresh_random() -> None:
    """What a new interpreter would not share with its siblings: numpy's global random
    state."""
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed()


def _job_threads() -> None:
    """The BLAS thread count of the job (from its environment)."""
    threads = next((os.environ[v] for v in THREAD_VARS[::-1] if v in os.environ), "")
    if threads.isdigit() and int(threads) > 1:  # the server's BLAS runs one thread already
        try:
            from threadpoolctl import threadpool_limits
        except ImportError:  # optional: BLAS then keeps the server's one thread
            return
        threadpool_limits(limits=max(1, int(threads)))


# --- the server ------------------------------------------------------------------------------
@dataclass
class _Job:
    """A job the server forked (its wrapper) and its launcher's socket."""

    pid: int
    sock: socket.socket | None
    die_with_launcher: bool


@dataclass
class _Spare:
    """A wrapper forked in advance (:meth:`_Server._spare_child`), waiting for its job."""

    pid: int
    #: The server's end of the spare's socket (the job's request goes there).
    sock: socket.socket


class _Server:
    """The fork server's loop (single-threaded): requests, forks, reaping."""

    def __init__(self, ctl: socket.socket):
        self.ctl: socket.socket | None = ctl
        self.jobs: dict[int, _Job] = {}
        #: The next job's wrapper, forked in advance (a job's start then costs no fork).
        self.spare: _Spare | None = None
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno())
        signal.signal(signal.SIGCHLD, lambda _s, _f: None)
        self._stopping = False
        signal.signal(signal.SIGTERM, self._on_sigterm)

    def _on_sigterm(self, _signum: int, _frame: Any) -> None:
        # Only a flag: the loop shuts down after select (which the wakeup fd ends).
        self._stopping = True

    def serve(self) -> None:
        """Serve until the launcher closes the control socket and no launcher waits for the
        status of a job any more (the jobs themselves go on: they record their own end)."""
        while self.ctl is not None or any(j.sock is not None for j in self.jobs.values()):
            if self.spare is None and self.ctl is not None:
                self._fork_spare()  # between requests: off the next job's way
            socks = [s for s in (j.sock for j in self.jobs.values()) if s is not None]
            listen = [self.wake_r, *socks] + ([self.ctl] if self.ctl is not None else [])
            ready, _, _ = select.select(listen, [], [], 5.0)
            self._reap()
            if self._stopping:
                self._shutdown()
                continue
            for s in ready:
                if s is self.ctl:
                    self._request()
                elif s is self.wake_r:
                    with contextlib.suppress(OSError):
                        self.wake_r.recv(4096)
                else:
                    self._launcher_gone(s)

    def _request(self) -> None:
        assert self.ctl is not None
        try:
            data, fds, _, _ = socket.recv_fds(self.ctl, MAX_MESSAGE, 2)
        except OSError:
            data, fds = b"", []
        if not data:
            self._shutdown()
            return
        if len(fds) != 2:
            for fd in fds:
                os.close(fd)
            return
        job_sock = socket.socket(fileno=fds[0])
        log_fd = fds[1]
        try:
            req = json.loads(data)
            threads = thread_count()
            if threads != 1:
                self._reply(job_sock, {"error": f"fork server runs {threads} threads"})
                job_sock.close()
                return
            if not self._hand_to_spare(data, req, job_sock, log_fd):
                self._fork(req, job_sock, log_fd)
        except Exception as exc:
            self._reply(job_sock, {"error": f"{type(exc).__name__}: {exc}"})
            job_sock.close()
        finally:
            os.close(log_fd)

    def _fork_spare(self) -> None:
        """Fork the next job's wrapper in advance (while this process runs one thread)."""
        if thread_count() != 1:
            return
        forked = _fork_paired(self._spare_child)
        if forked is not None:
            self.spare = _Spare(*forked)

    def _hand_to_spare(
        self, data: bytes, req: dict[str, Any], job_sock: socket.socket, log_fd: int
    ) -> bool:
        """Give the request to the spare wrapper (it answers the launcher itself); False
        when there is none or it has gone (the job is then forked now)."""
        spare, self.spare = self.spare, None
        if spare is None:
            return False
        try:
            socket.send_fds(spare.sock, [data], [job_sock.fileno(), log_fd], socket.MSG_NOSIGNAL)
        except OSError:
            return False  # it died: the reaper collects it
        finally:
            spare.sock.close()
        self.jobs[spare.pid] = _Job(spare.pid, job_sock, bool(req.get("die_with_launcher")))
        return True

    def _fork(self, req: dict[str, Any], job_sock: socket.socket, log_fd: int) -> None:
        """Fork the job's wrapper and answer its pid and start time."""
        from caesar_rest.backends.pids import process_start_ticks

        argv = [str(a) for a in req["argv"]]
        env = {str(k): str(v) for k, v in req["env"].items()}
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            self._child(req, argv, env, job_sock, log_fd)  # never returns
        die = bool(req.get("die_with_launcher"))
        self.jobs[pid] = _Job(pid, job_sock, die)
        self._reply(job_sock, {"pid": pid, "ticks": process_start_ticks(pid)})

    @staticmethod
    def _reply(sock: socket.socket, msg: dict[str, Any]) -> None:
        with contextlib.suppress(OSError):
            sock.send(json.dumps(msg).encode(), socket.MSG_NOSIGNAL)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if self.spare is not None and self.spare.pid == pid:  # it died unused
                self.spare.sock.close()
                self.spare = None
            job = self.jobs.pop(pid, None)
            if job is not None and job.sock is not None:
                self._reply(job.sock, {"status": os.waitstatus_to_exitcode(status)})
                job.sock.close()

    def _launcher_gone(self, sock: socket.socket) -> None:
        """A job's launcher closed its socket: it died (or gave the job up)."""
        with contextlib.suppress(OSError):
            if sock.recv(64, socket.MSG_DONTWAIT):
                return  # launchers send nothing: ignore
        job = next((j for j in self.jobs.values() if j.sock is sock), None)
        if job is None:
            return
        job.sock = None
        sock.close()
        if job.die_with_launcher:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(job.pid, signal.SIGTERM)

    def _shutdown(self) -> None:
        """The launcher has gone (or SIGTERM): stop taking jobs; end the jobs that die with
        the launcher; stay while a launcher still waits for a job's status."""
        if self.ctl is not None:
            self.ctl.close()
            self.ctl = None
        if self.spare is not None:  # it ends on the end of its socket
            self.spare.sock.close()
            self.spare = None
        for job in self.jobs.values():
            if job.die_with_launcher:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(job.pid, signal.SIGTERM)

    # --- in the child ------------------------------------------------------------------
    def _child(
        self,
        req: dict[str, Any],
        argv: list[str],
        env: dict[str, str],
        job_sock: socket.socket,
        log_fd: int,
    ) -> None:
        """The forked job: isolate it (its own session), then be its wrapper, which forks the
        app, waits for it and records its end in the job folder."""
        code = 1
        try:
            server = os.getppid()
            os.setsid()
            if req.get("die_with_launcher"):
                _die_with_parent(signal.SIGTERM)
                if os.getppid() != server:  # the server died before the prctl
                    os._exit(1)
            job_sock.close()
            self._leave_server()
            _write_warm_line(log_fd, server)
            code = self._be_wrapper(req, argv, env, log_fd)
        except BaseException:
            with contextlib.suppress(BaseException):
                traceback.print_exc()
        finally:
            _flush_and_exit(code)

    def _spare_child(self, sock: socket.socket) -> None:
        """A wrapper forked in advance: it waits for one request on ``sock``, then becomes
        that job (answering the launcher its pid), as :meth:`_child` does.

        It takes its session (the job's) at once and forks the job's app in advance too
        (:class:`SpareApp`), so that a job's start costs no fork. Until its request comes it
        gets SIGKILL when the server dies (``PR_SET_PDEATHSIG``; its app the same when it
        dies) and ends at the end of ``sock`` (the server closed it, or exited): an unused
        spare never outlives its server.
        """
        code = 0
        try:
            server = os.getppid()
            _die_with_parent(signal.SIGKILL)
            if os.getppid() != server:  # the server died before the prctl
                os._exit(0)
            self._leave_server()
            _python_signals()
            _reset_logging()
            for sig in (signal.SIGINT, signal.SIGTERM):  # while it waits: end quietly
                signal.signal(sig, signal.SIG_DFL)
            # The job's session now, so that the app forked in advance is in it too.
            os.setsid()
            app = SpareApp.fork(close=[sock])
            data, fds, _, _ = socket.recv_fds(sock, MAX_MESSAGE, 2)
            sock.close()
            if not data or len(fds) != 2:
                os._exit(0)  # the server has gone, or closed it: no job
            code = 1
            job_sock = socket.socket(fileno=fds[0])
            req = json.loads(data)
            # The job's own fate from here: a local job outlives the server, a Celery one
            # dies with it (SIGTERM, as :meth:`_child`).
            _die_with_parent(signal.SIGTERM if req.get("die_with_launcher") else 0)
            if os.getppid() != server:  # the server died meanwhile: the launcher, without an
                os._exit(1)  # answer, starts the job cold
            start = time.time()  # the job's start, as the wrapper records it
            argv = [str(a) for a in req["argv"]]
            env = {str(k): str(v) for k, v in req["env"].items()}
            _write_warm_line(fds[1], server)
            logged, handed = self._hand_early(app, req, argv, env, fds[1])
            self._reply(job_sock, {"pid": os.getpid(), "ticks": _own_start_ticks()})
            job_sock.close()
            code = self._be_wrapper(req, argv, env, fds[1], app, logged, handed, start)
        except BaseException:
            with contextlib.suppress(BaseException):
                traceback.print_exc()
        finally:
            _flush_and_exit(code)

    def _leave_server(self) -> None:
        """In a child: close the server's sockets, its signal wake-up and handlers."""
        signal.set_wakeup_fd(-1)
        for s in (self.ctl, self.wake_r, self.wake_w):
            if s is not None:
                s.close()
        for job in self.jobs.values():
            if job.sock is not None:
                job.sock.close()
        self.jobs.clear()
        if self.spare is not None:
            self.spare.sock.close()
            self.spare = None

    @staticmethod
    def _hand_early(
        app: SpareApp | None,
        req: dict[str, Any],
        argv: list[str],
        env: dict[str, str],
        log_fd: int,
    ) -> tuple[bool, bool]:
        """In a spare wrapper: start a ``python -m`` app before the wrapper's own set-up, the
        log's start lines written first (the log reads as when the wrapper starts it).
        Whether the lines are written, and whether the app has its command (False: the
        wrapper starts it). Not for a job that stages its files from a remote: that comes
        before the app."""
        from caesar_rest.storage.remote import STORAGE_ENV

        target = python_module(argv)
        if app is None or target is None or env.get(STORAGE_ENV):
            return False, False
        from caesar_rest.backends.wrapper import start_lines
        from caesar_rest.jobs.folder import LIMITS_ENV, JobLimits

        limits = JobLimits.from_env(env.get(LIMITS_ENV))
        os.write(log_fd, start_lines(argv, limits).encode())
        _job_path(env.get("PYTHONPATH", ""))  # the app's import path is the wrapper's
        return True, app.hand(target, str(req["cwd"]), env, log_fd)

    @staticmethod
    def _be_wrapper(
        req: dict[str, Any],
        argv: list[str],
        env: dict[str, str],
        log_fd: int,
        app: SpareApp | None = None,
        logged: bool = False,
        handed: bool = False,
        start: float | None = None,
    ) -> int:
        """In the job's session: its descriptors, folder and environment; then the wrapper
        (which starts the app, ``app`` when forked in advance, running already when
        ``handed`` its command, and records its end); its status. ``logged``: the log's
        start lines are written; ``start``: when the job came (default: now)."""
        _python_signals()
        _own_fds(log_fd, app.sock.fileno() if app is not None else None)
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(env)
        _job_path(os.environ.get("PYTHONPATH", ""))
        _reset_logging()
        from caesar_rest.backends.wrapper import main

        starter: Any = fork_app
        if app is not None:
            starter = app.started if handed else app.start
        return main(["--", *argv], starter=starter, start=start, logged=logged)


def _write_warm_line(log_fd: int, server: int) -> None:
    """Begin the job's log with the line that tells a warm start (before the wrapper's)."""
    os.write(log_fd, f"[caesar-rest] warm start (fork server {server})\n".encode())


def _flush_and_exit(code: int) -> None:
    with contextlib.suppress(BaseException):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def _own_start_ticks() -> int | None:
    from caesar_rest.backends.pids import process_start_ticks

    return process_start_ticks(os.getpid())


def _die_with_parent(sig: int) -> None:
    """Get ``sig`` when the parent (the server) dies; 0: no longer."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0)


def _own_fds(log_fd: int, keep: int | None = None) -> None:
    """Standard input ``/dev/null``, output and error on ``job.log``, nothing else open but
    ``keep`` (the wrapper's socket to its spare app)."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    top = os.sysconf("SC_OPEN_MAX") if os.sysconf("SC_OPEN_MAX") > 0 else 65536
    if keep is None or keep < 3:
        os.closerange(3, top)
    else:
        os.closerange(3, keep)
        os.closerange(keep + 1, top)


def _job_path(pythonpath: str) -> None:
    """Put the job's ``PYTHONPATH`` entries the server lacks in front of ``sys.path``."""
    for entry in reversed([e for e in pythonpath.split(os.pathsep) if e]):
        if entry not in sys.path:
            sys.path.insert(1, entry)


def _reset_logging() -> None:
    """No logging handler of the server survives in a job (the server sets none up)."""
    import logging

    for logger in [logging.root, *logging.root.manager.loggerDict.values()]:
        if isinstance(logger, logging.Logger):
            for handler in list(logger.handlers):
                if not isinstance(handler, logging.StreamHandler) or isinstance(
                    handler, logging.FileHandler
                ):
                    logger.removeHandler(handler)


def serve_main(argv: Sequence[str]) -> int:
    """``python -m caesar_rest.backends.forkserver --fd N [--preload a,b]``: preload, then serve.

    Prints one JSON line on standard output: ``{"ready": true, "pid", "preloaded", "failed"}``,
    or ``{"ready": false, "why"}`` when forking would not be safe.
    """
    import argparse

    p = argparse.ArgumentParser(prog=MODULE)
    p.add_argument("--fd", type=int, required=True)
    p.add_argument("--preload", default="")
    args = p.parse_args(argv)
    for var in THREAD_VARS:
        os.environ[var] = "1"
    ctl = socket.socket(fileno=args.fd)
    failed: dict[str, str] = {}
    loaded: list[str] = []
    for name in [m for m in args.preload.split(",") if m] + [
        "caesar_rest.backends.wrapper",
        "caesar_rest.backends.pids",
    ]:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except Exception as exc:
            failed[name] = f"{type(exc).__name__}: {exc}"
    threads = thread_count()
    if threads != 1:
        why = f"{threads} threads after the preload (forking is unsafe)"
        print(json.dumps({"ready": False, "why": why}), flush=True)
        return 3
    import gc

    gc.collect()
    gc.freeze()  # the children's collections then leave the preloaded objects' pages shared
    print(
        json.dumps({"ready": True, "pid": os.getpid(), "preloaded": loaded, "failed": failed}),
        flush=True,
    )
    _Server(ctl).serve()
    return 0


# --- the launcher's side ---------------------------------------------------------------------
def _readable(fd: int, timeout: float | None) -> bool:
    """Whether ``fd`` has something to read (or its end) within ``timeout`` seconds (``poll``:
    an API process may hold descriptors past ``select``'s 1024)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(None if timeout is None else int(timeout * 1000)))


class WarmProcess:
    """A job started by the fork server, as the launcher waits for it (like ``Popen``).

    Its exit status comes on the job's socket. When the server has gone (the socket closed
    without a status) the process is watched by pid and start time; its status is then
    unknown (None: the outcome comes from ``exit.json``).
    """

    def __init__(self, sock: socket.socket, pid: int, ticks: int | None):
        self._sock: socket.socket | None = sock
        self.pid = pid
        self.ticks = ticks
        self.returncode: int | None = None
        self._done = False

    def poll(self) -> int | None:
        """The status if the job has ended, else None."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self.wait(0)
        return None

    def wait(self, timeout: float | None = None) -> int | None:
        """Wait for the job's end; its status (None when unknown).

        Raises
        ------
        subprocess.TimeoutExpired
            When it still runs after ``timeout`` seconds.
        """
        from caesar_rest.backends.pids import process_alive

        end = None if timeout is None else time.monotonic() + timeout
        while not self._done:
            left = None if end is None else max(0.0, end - time.monotonic())
            if self._sock is not None:
                if _readable(self._sock.fileno(), left):
                    self._receive()
                    continue
            elif not process_alive(self.pid, self.ticks):
                self._done = True
                continue
            elif left is None or left > 0:
                time.sleep(min(0.1, left if left is not None else 0.1))
                continue
            raise subprocess.TimeoutExpired([f"job {self.pid}"], timeout or 0.0)
        return self.returncode

    def _receive(self) -> None:
        assert self._sock is not None
        try:
            data = self._sock.recv(4096)
        except OSError:
            data = b""
        if data:
            msg = json.loads(data)
            if "status" in msg:
                self.returncode = int(msg["status"])
                self._done = True
            else:
                return
        self._sock.close()  # a status, or the server has gone: watch the pid
        self._sock = None

    def close(self) -> None:
        """Stop listening (the job goes on; a die-with-launcher job is then stopped)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class ForkServer:
    """The launcher's fork server: started on first use, restarted after a death, or off.

    Parameters
    ----------
    preload
        Modules the server imports before it serves.
    die_with_launcher
        Whether its jobs die with the launching process (Celery), or go on (the local runner:
        the next service process adopts them).
    env
        The server's environment (without the service's settings; the thread-pool variables
        are set to 1 in it).
    """

    def __init__(
        self,
        preload: Sequence[str],
        *,
        die_with_launcher: bool = False,
        env: dict[str, str] | None = None,
    ):
        self.preload = list(preload)
        self.die_with_launcher = die_with_launcher
        self.env = env
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._sock: socket.socket | None = None
        self._ready = False
        #: Why the server cannot be used (None while it can).
        self.why: str | None = None
        self._died_at = 0.0
        #: What the server reported when ready (pid, preloaded, failed).
        self.info: dict[str, Any] = {}
        self._reported: str | None = None

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def start(self) -> None:
        """Start the server (it imports the preload in the background)."""
        with self._lock:
            self._start()

    def _start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        self._drop()
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        env = dict(self.env if self.env is not None else os.environ)
        env.update(dict.fromkeys(THREAD_VARS, "1"))
        cmd = [sys.executable, "-m", MODULE, "--fd", str(child.fileno())]
        cmd += ["--preload", ",".join(self.preload)]
        try:
            self._proc = subprocess.Popen(  # noqa: S603 - argument list, no shell
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                pass_fds=[child.fileno()],
                env=env,
                cwd="/",
            )
        except OSError as exc:
            parent.close()
            self._fail(f"cannot start: {exc}")
            return
        finally:
            child.close()
        self._sock = parent
        self._ready = False
        self.why = None

    def wait_ready(self, timeout: float = START_TIMEOUT) -> bool:
        """Wait for a starting server's preload; whether it serves."""
        with self._lock:
            return self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> bool:
        if self._ready:
            if self._proc is not None and self._proc.poll() is None:
                return True
            self._fail(f"exited with status {self._proc.returncode if self._proc else None}")
            return False
        proc = self._proc
        if proc is None or proc.stdout is None:
            return False
        if not _readable(proc.stdout.fileno(), timeout):
            self._fail(f"not ready after {timeout:.0f} s")
            return False
        line = proc.stdout.readline()
        proc.stdout.close()
        try:
            info = json.loads(line)
        except ValueError:
            info = {"ready": False, "why": f"exited with status {proc.wait(5)}"}
        if not info.get("ready"):
            self._fail(str(info.get("why")), restart=False)
            return False
        self.info = info
        self._ready = True
        return True

    def serving(self) -> bool:
        """Whether a launch now would start its job warm without waiting: the server runs
        and has reported ready, and no other launch holds it. Never waits itself."""
        if not self._lock.acquire(blocking=False):
            return False
        try:
            proc = self._proc
            if self.why is not None or proc is None:
                return False
            if not self._ready and (proc.stdout is None or not _readable(proc.stdout.fileno(), 0)):
                return False  # still importing its preload
            return self._wait_ready(0)
        finally:
            self._lock.release()

    def launch(self, job_dir: Path, argv: Sequence[str], env: dict[str, str]) -> WarmProcess:
        """Start the wrapper for ``argv`` in ``job_dir`` through the server.

        Parameters
        ----------
        job_dir
            The job folder (``job.log`` is opened here, for appending).
        argv
            The app's argument list.
        env
            The job's whole environment.

        Returns
        -------
        WarmProcess
            The started job.

        Raises
        ------
        ForkServerUnavailable
            When the server is off, not ready, gone or refuses (the reason is the message).
        """
        with self._lock:
            first = self._proc is None and self.why is None
            if first or (self.why is not None and self._restartable()):
                self._start()
            if self.why is not None or not self._wait_ready(START_TIMEOUT):
                raise ForkServerUnavailable(self.why or "not started")
            return self._send(job_dir, argv, env)

    def _restartable(self) -> bool:
        return self._died_at > 0 and time.monotonic() - self._died_at >= RESTART_AFTER

    def _send(self, job_dir: Path, argv: Sequence[str], env: dict[str, str]) -> WarmProcess:
        from caesar_rest.jobs.folder import LOG_FILE

        assert self._sock is not None
        req = {
            "argv": list(argv),
            "cwd": str(job_dir),
            "env": env,
            "die_with_launcher": self.die_with_launcher,
        }
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        logfd = os.open(job_dir / LOG_FILE, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            socket.send_fds(self._sock, [json.dumps(req).encode()], [theirs.fileno(), logfd])
        except OSError as exc:
            mine.close()
            self._fail(f"gone ({exc})")
            raise ForkServerUnavailable(self.why or "gone") from None
        finally:
            theirs.close()
            os.close(logfd)
        mine.settimeout(10.0)
        try:
            data = mine.recv(4096)
        except OSError:
            data = b""
        if not data:
            mine.close()
            self._fail("gone (no answer)")
            raise ForkServerUnavailable(self.why or "gone")
        msg = json.loads(data)
        if "error" in msg or "pid" not in msg:
            mine.close()
            # A status first: the spare wrapper died before it answered (nothing ran).
            why = msg.get("error", f"the job's process ended before it started: {msg}")
            raise ForkServerUnavailable(str(why))
        mine.settimeout(None)
        return WarmProcess(mine, int(msg["pid"]), msg.get("ticks"))

    def _fail(self, why: str, restart: bool = True) -> None:
        self.why = why
        self._ready = False
        self._died_at = time.monotonic() if restart else 0.0
        self._drop()

    def _drop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        proc, self._proc = self._proc, None
        if proc is not None:
            if proc.stdout is not None:
                proc.stdout.close()
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(5)

    def report_cold(self, why: str) -> None:
        """Log (once per reason) that a job starts cold, and why."""
        if why == self._reported:
            return
        self._reported = why
        from caesar_rest.logconfig import get_logger

        get_logger(__name__).warning("fork_server_unavailable", reason=why, start="cold")

    def close(self) -> None:
        """Stop the server taking jobs. It exits once no launcher waits for a job's status
        (jobs that die with the launcher get SIGTERM; local jobs go on and record their own
        end): it is not waited for longer than a moment, nor killed."""
        with self._lock:
            proc, sock = self._proc, self._sock
            self._proc, self._sock, self._ready = None, None, False
            self.why = "closed"
            if sock is not None:
                sock.close()  # the server stops on the end of its control socket
            if proc is not None:
                if proc.stdout is not None:
                    proc.stdout.close()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(0.5)


if __name__ == "__main__":
    sys.exit(serve_main(sys.argv[1:]))
