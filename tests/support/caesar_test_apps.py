"""Apps used only by the tests: a job that sleeps (for time limits, cancel and kill tests),
and one that goes over a resource limit (for the job limits).

The program is this module: ``python -m caesar_test_apps --seconds S --exit-code N``. It starts
a grandchild ``sleep`` too, so tests can check that the whole process group goes. With
``--hog=memory|cpu|file|files --amount N`` it allocates N MiB, burns N CPU seconds, writes a
file of N MiB or opens N files instead, then exits 0.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caesar_rest.apps.base import App, Option, ResultSpec, python_module_command


def _options() -> tuple[Option, ...]:
    return (
        Option("seconds", "float", "how long to sleep", default=30.0, min=0, max=3600),
        Option("exit-code", "int", "exit code at the end", default=0, min=0, max=255),
    )


@dataclass
class SleepApp(App):
    """Sleeps, writes a small result, exits with the asked code."""

    name: str = "sleep"
    description: str = "test app: sleeps"
    options: tuple[Option, ...] = field(default_factory=_options)
    results: tuple[ResultSpec, ...] = (ResultSpec("result", "result.txt", "text/plain"),)

    def command(self, input_path: Path, options: Mapping[str, Any], out_dir: Path) -> list[str]:
        return python_module_command(
            "caesar_test_apps", "--input", str(input_path), *self.option_args(options)
        )


HOGS = ("memory", "cpu", "file", "files")


def _hog_options() -> tuple[Option, ...]:
    return (
        Option("hog", "str", "what to use", default="memory", allowed_values=HOGS),
        Option("amount", "int", "MiB, CPU seconds or files", default=1, min=0, max=4096),
    )


@dataclass
class HogApp(App):
    """Uses too much of one resource: memory, CPU time, a file's size, open files."""

    name: str = "hog"
    description: str = "test app: goes over a resource limit"
    options: tuple[Option, ...] = field(default_factory=_hog_options)
    results: tuple[ResultSpec, ...] = (ResultSpec("result", "result.txt", "text/plain"),)

    def command(self, input_path: Path, options: Mapping[str, Any], out_dir: Path) -> list[str]:
        return python_module_command(
            "caesar_test_apps", "--input", str(input_path), *self.option_args(options)
        )


def hog(what: str, amount: int) -> None:
    """Use ``amount`` of ``what`` (bounded: the tests set small limits)."""
    if what == "memory":
        block = bytearray(amount * 1024 * 1024)  # fails at once under a smaller limit
        print(f"allocated {len(block)} bytes", flush=True)
    elif what == "cpu":
        end = time.process_time() + amount
        while time.process_time() < end:
            pass
    elif what == "file":
        with open("big.out", "wb") as fh:
            for _ in range(amount):
                fh.write(bytes(1024 * 1024))
    else:
        held = [open(os.devnull, "rb") for _ in range(amount)]  # noqa: SIM115
        print(f"opened {len(held)} files", flush=True)


def main() -> int:
    # When the app's own code began (the job benchmark's submit-to-running).
    Path("started.txt").write_text(f"{time.time():.6f}\n")
    p = argparse.ArgumentParser()
    p.add_argument("--input")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--exit-code", type=int, default=0)
    p.add_argument("--hog", choices=HOGS)
    p.add_argument("--amount", type=int, default=1)
    a = p.parse_args()
    if a.hog:
        hog(a.hog, a.amount)
        Path("result.txt").write_text("done\n")
        return 0
    child = subprocess.Popen(["sleep", str(max(a.seconds, 0) + 60)])  # noqa: S603, S607
    # Written whole then renamed: tests poll for this file while the job starts.
    Path("pids.tmp").write_text(f"{os.getpid()} {child.pid}\n")
    os.replace("pids.tmp", "pids.txt")
    print(f"sleeping {a.seconds} s (pid {os.getpid()}, child {child.pid})", flush=True)
    time.sleep(a.seconds)
    child.kill()
    Path("result.txt").write_text("done\n")
    return a.exit_code


if __name__ == "__main__":
    sys.exit(main())
