"""The finder process's allocator setting (glibc's fixed mmap threshold)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

glibc_only = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's (CI and these machines run it)"
)


# In a fresh interpreter: allocate, fill and free a 6 MiB array (above glibc's initial 128 KiB
# threshold, so by default its own mapping), with the heap top pinned by a small block; print
# how much of it the process still holds.
_KEEP_PROBE = """
import sys
import numpy as np
from caesar_rest.sourcefinder.allocator import keep_freed_blocks

def rss_kib():
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))

if sys.argv[1] == "keep":
    assert keep_freed_blocks()
before = rss_kib()
b = np.ones(6 * 2**20, dtype=np.uint8)
pin = np.ones(64 * 1024, dtype=np.uint8)
del b
print(rss_kib() - before)
"""


@glibc_only
def test_kept_blocks_stay_for_reuse() -> None:
    # By default the first 6 MiB block is a mapping, given back when freed; with
    # keep_freed_blocks it comes from the heap and its pages stay for the next allocation.
    def held(mode: str) -> int:
        out = subprocess.run(
            [sys.executable, "-c", _KEEP_PROBE, mode], capture_output=True, text=True, check=True
        )
        return int(out.stdout.strip())

    assert held("default") < 1024
    assert held("keep") > 5 * 1024
