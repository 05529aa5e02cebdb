"""Memory of a benchmark's child process tree, read from ``/proc`` (Linux).

Shared by ``finders.py`` and ``large.py``: both sample the tree of the finder they started
every 0.1 s and keep the peak.
"""

from __future__ import annotations

import os


def tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (breadth first; processes gone meanwhile are skipped)."""
    out = [pid]
    i = 0
    while i < len(out):
        p = out[i]
        i += 1
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as fh:
                    out.extend(int(c) for c in fh.read().split())
        except OSError:
            continue
    return out


def rollup(pid: int) -> tuple[int, int]:
    """``(Rss, Pss)`` of a process in KiB (0 when it is gone)."""
    rss = pss = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss
