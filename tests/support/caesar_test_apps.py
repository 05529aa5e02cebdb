"""Apps used only by the tests: a job that sleeps (for time limits, cancel and kill tests).

The program is this module: ``python -m caesar_test_apps --seconds S --exit-code N``. It starts
a grandchild ``sleep`` too, so tests can check that the whole process group goes.
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


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--input")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--exit-code", type=int, default=0)
    a = p.parse_args()
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
