"""Processes by pid and start time: a pid is only ever trusted with the time it started, so a
reused pid is never taken for a job's. Standard library only (the fork server imports it);
:mod:`caesar_rest.backends.process` offers the same names."""

from __future__ import annotations

__all__ = ["process_alive", "process_start_ticks"]


def process_start_ticks(pid: int) -> int | None:
    """Start time of a process in clock ticks since boot (Linux), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read().decode()
    except OSError:
        return None
    # The command name may hold spaces and parentheses: split after the last ')'.
    rest = stat[stat.rfind(")") + 2 :].split()
    try:
        if rest[0] == "Z":  # a zombie has ended
            return None
        return int(rest[19])
    except (IndexError, ValueError):
        return None


def process_alive(pid: int | None, start: int | None) -> bool:
    """Whether the process ``pid`` that started at ``start`` still runs."""
    if not pid:
        return False
    ticks = process_start_ticks(pid)
    return ticks is not None and (start is None or ticks == start)
