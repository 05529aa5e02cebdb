"""CPU and wall time of the ``mrcnn`` app's native detection on one simulated 1024^2 field.

The whole :func:`caesar_rest.apps.mrcnn_run.detect` (twice: the first run reads the weights),
the previous model (:func:`~caesar_rest.apps.mrcnn_run.detect_islands`), then the phases of
``detect``: noise maps and islands, the network (``class_maps``), the objects. CPU time is
``time.process_time`` (this process, all threads), wall ``time.perf_counter``; the machine's
load is printed. ``--profile`` adds a cProfile of ``detect`` on CPU time.

Usage::

    OPENBLAS_NUM_THREADS=1 python benchmarks/mrcnn_profile.py [--seed 1001] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from caesar_rest.apps import mrcnn_net
from caesar_rest.apps.mrcnn_run import detect, detect_islands
from caesar_rest.apps.mrcnn_sim import truth_field
from caesar_rest.classify.features import beam_fwhm_pix, find_islands
from caesar_rest.classify.simfields import write_field
from caesar_rest.imaging.fits_image import load_image

OPTS = {"scoreThr": 0.7, "iouThr": 0.6}


def timed(label: str, fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)``, print its CPU and wall time, return its result."""
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn(*args)
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    print(f"{label:>16}: cpu {cpu:6.2f} s  wall {wall:6.2f} s", flush=True)
    return out


def main() -> None:
    """Command line (see the module notes)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=1001)
    ap.add_argument("--profile", action="store_true", help="cProfile of detect (CPU time)")
    a = ap.parse_args()
    tf = truth_field(a.seed)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "field.fits"
        write_field(tf.field, str(path))
        image = load_image(path)
    print(f"seed {a.seed}, 1024^2; load {os.getloadavg()}")
    for k in (1, 2):
        table, _, n_cand = timed(f"detect ({k})", detect, image, OPTS)
    timed("detect_islands", detect_islands, image, OPTS)
    isl = timed("find_islands", find_islands, image)
    fwhm = beam_fwhm_pix(image)
    maps = timed("class_maps", mrcnn_net.class_maps, isl.sig, fwhm)
    timed("objects", mrcnn_net.objects, *maps, fwhm, isl.sig)
    print(f"{len(table)} rows of {n_cand} candidates")
    if a.profile:
        prof = cProfile.Profile(time.process_time)
        prof.runcall(detect, image, OPTS)
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
    print(f"load at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
