"""A job that reports what it runs with (for the fork server's tests): ``python -m job_probe``.

Writes ``probe.json`` in the working folder: its pid, session and group, parent, open file
descriptors (where they point), threads, signal handlers and mask, rlimits, a few environment
variables, whether numpy was imported before the job's own code ran, and a draw from numpy's
global random state. ``--exit-code N`` ends it with that status.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import sys

#: Whether the process had numpy before this module ran (a warm start).
NUMPY_BEFORE = "numpy" in sys.modules


def _fds() -> dict[str, str]:
    fds = {}
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own descriptor, closed by now
            continue
    return {fd: target for fd, target in fds.items() if not target.startswith("/proc/")}


def _handler(h: object) -> str:
    """``SIG_DFL``, ``SIG_IGN`` or the handler function's name."""
    if h == signal.SIG_DFL:
        return "SIG_DFL"
    if h == signal.SIG_IGN:
        return "SIG_IGN"
    return str(getattr(h, "__name__", h))


def main() -> int:
    code = int(sys.argv[sys.argv.index("--exit-code") + 1]) if "--exit-code" in sys.argv else 0
    import numpy as np

    handlers = {
        name: _handler(signal.getsignal(getattr(signal, name)))
        for name in ("SIGTERM", "SIGINT", "SIGCHLD", "SIGPIPE", "SIGXFSZ", "SIGHUP")
    }
    report = {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        "sid": os.getsid(0),
        "pgid": os.getpgid(0),
        "cwd": os.getcwd(),
        "argv": sys.argv[1:],
        "fds": _fds(),
        "threads": len(os.listdir("/proc/self/task")),
        "handlers": handlers,
        "blocked": sorted(int(s) for s in signal.pthread_sigmask(signal.SIG_BLOCK, [])),
        "nofile": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "CAESAR_JOB_LIMITS", "PROBE")},
        "numpy_before": NUMPY_BEFORE,
        "random": float(np.random.random()),
    }
    with open("probe.json", "w") as fh:
        json.dump(report, fh)
    return code


if __name__ == "__main__":
    sys.exit(main())
