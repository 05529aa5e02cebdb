"""Processes as the fork server's tests look at them: children of a pid, waiting for an end."""

from __future__ import annotations

import os
import time
from pathlib import Path


def child_pids(pid: int) -> list[int]:
    """The pids whose parent is ``pid`` (from ``/proc/*/stat``), zombies left out."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        # "pid (comm) state ppid ...": the command may hold spaces and parentheses.
        state, ppid = stat[stat.rindex(")") + 2 :].split()[:2]
        if int(ppid) == pid and state != "Z":
            found.append(int(entry.name))
    return found


def wait_children(pid: int, count: int = 1, timeout: float = 10.0) -> list[int]:
    """The children of ``pid`` once it has ``count`` of them (AssertionError after
    ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        kids = child_pids(pid)
        if len(kids) >= count:
            return kids
        time.sleep(0.02)
    raise AssertionError(f"process {pid} has {child_pids(pid)} as children, wanted {count}")


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether process ``pid`` has ended (or is a zombie) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return True
        if stat[stat.rindex(")") + 2] == "Z":
            return True
        time.sleep(0.02)
    return not os.path.exists(f"/proc/{pid}")
