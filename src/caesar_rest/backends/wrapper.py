"""The job process: runs an app's argument list and records how it ended.

Usage: ``python -m caesar_rest.backends.wrapper -- PROGRAM ARGS...`` in the job folder. It
writes ``exit.json`` (exit code, signal, times) atomically when the program ends, so the outcome
survives a restart of the service that launched it. Standard library and
:mod:`caesar_rest.jobs.folder` only: it starts fast.
"""

from __future__ import annotations

import resource
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from caesar_rest.jobs.folder import ExitRecord, write_exit


def main(argv: list[str]) -> int:
    """Run the command after ``--``; return its exit status in shell convention."""
    if "--" not in argv or argv.index("--") == len(argv) - 1:
        print("usage: python -m caesar_rest.backends.wrapper -- PROGRAM [ARGS...]", file=sys.stderr)
        return 2
    cmd = argv[argv.index("--") + 1 :]
    start = time.time()
    print(f"[caesar-rest] running: {cmd!r}", flush=True)
    try:
        proc = subprocess.Popen(cmd)  # noqa: S603 - an argument list, never a shell
    except OSError as exc:
        print(f"[caesar-rest] cannot start {cmd[0]}: {exc}", file=sys.stderr, flush=True)
        _write(127, None, start)
        return 127

    def forward(signum: int, _frame: FrameType | None) -> None:
        # The whole process group usually gets the signal; forwarding covers a lone kill.
        if proc.poll() is None:
            proc.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    rc = proc.wait()
    _write(rc, -rc if rc < 0 else None, start)
    print(f"[caesar-rest] exit code {rc}, {time.time() - start:.2f} s", flush=True)
    return rc if rc >= 0 else 128 - rc


def _write(rc: int, sig: int | None, start: float) -> None:
    end = time.time()
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # the app and what it waited for
    record = ExitRecord(
        exit_code=rc,
        signal=sig,
        started=start,
        ended=end,
        elapsed=end - start,
        cpu_time=round(usage.ru_utime + usage.ru_stime, 3),
        max_rss_kib=usage.ru_maxrss,
    )
    write_exit(Path.cwd(), record)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
