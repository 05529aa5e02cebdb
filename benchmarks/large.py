"""Large simulated fields through the ``caesar`` app: wall time, peak memory, pixels/s (issue 19).

``python benchmarks/large.py --sizes 8192,16384,32768 --workdir /tmp/large`` makes each field
band by band on disk (so the generator holds one band, not the image), then runs the app's
program (``python -m caesar_rest.apps.caesar_run``, the app's defaults, ``--no-preview`` off)
in a child process and reports:

* wall time of the program, start-up included, and pixels per second;
* peak memory: the largest of the program's maximum RSS (``wait4``) and the summed PSS of its
  process tree (``/proc/<pid>/smaps_rollup`` every 0.1 s), and that over the image's bytes
  (float32);
* the catalogue's rows and a digest of its rounded positions and fluxes (equal digests: equal
  catalogues).

``--mpi 1,2`` also runs each size under ``mpiexec -n <ranks>`` (OpenMPI, loopback only) and
prints the speed-up over the single-rank run. ``--nproc`` is passed to the app (default: not
given, so the app uses the cores the job was granted). Fields are kept in ``--workdir`` and
reused when present.

The field (per 2048^2 pixels like ``benchmarks/simulate.py``): beam-correlated noise of rms
1e-4 Jy/beam (white noise under a circular Gaussian of the beam's mean sigma, per band of rows
with a margin), the plane-and-ripple background, ~525 point sources (S/N 3-200, dN/dS ~ S^-2)
and 5 % resolved sources (1.5-3 beams), all at seeded positions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from scipy import ndimage

from caesar_rest.imaging.synthetic import field_header, pix_sigma
from proctree import rollup, tree

RMS = 1e-4
PIX = 1.5
BEAM = (6.0, 5.0, 30.0)
#: Rows generated at a time.
BAND = 512
#: Point sources per pixel (8400 on 8192^2, as the finder benchmark).
DENSITY = 8400 / 8192**2
REPO = Path(__file__).resolve().parents[1]


def _sources(n: int, seed: int) -> np.ndarray:
    """``(k, 6)`` rows ``x, y, amp, sx, sy, theta`` sorted by ``y``."""
    rng = np.random.default_rng(seed)
    k = int(round(DENSITY * n * n))
    x = rng.uniform(10, n - 10, k)
    y = rng.uniform(10, n - 10, k)
    a, b = 1 / 3.0, 1 / 200.0
    snr = 1.0 / (a - rng.uniform(size=k) * (a - b))
    sx, sy, th = pix_sigma(*BEAM, PIX)
    out = np.empty((k, 6))
    out[:, 0], out[:, 1], out[:, 2] = x, y, snr * RMS
    out[:, 3], out[:, 4], out[:, 5] = sx, sy, th
    res = rng.uniform(size=k) < 0.05
    f = rng.uniform(1.5, 3.0, k)
    out[res, 3] *= f[res]
    out[res, 4] *= f[res] * rng.uniform(0.6, 1.0, int(res.sum()))
    out[res, 2] = rng.uniform(10, 60, int(res.sum())) * RMS
    return out[np.argsort(out[:, 1])]


def _add(band: np.ndarray, y0: int, src: np.ndarray) -> None:
    ny, nx = band.shape
    for x, y, amp, sx, sy, th in src:
        r = int(math.ceil(6.0 * max(sx, sy)))
        x0, x1 = max(int(x) - r, 0), min(int(x) + r + 1, nx)
        a0, a1 = max(int(y) - r, y0), min(int(y) + r + 1, y0 + ny)
        if a0 >= a1:
            continue
        yy, xx = np.mgrid[a0:a1, x0:x1]
        c, s = math.cos(th), math.sin(th)
        u = (xx - x) * c + (yy - y) * s
        w = -(xx - x) * s + (yy - y) * c
        g = amp * np.exp(-0.5 * ((u / sx) ** 2 + (w / sy) ** 2))
        band[a0 - y0 : a1 - y0, x0:x1] += g.astype(np.float32)


def make_field(n: int, path: Path, seed: int = 1) -> int:
    """Write an ``n x n`` simulated field band by band; the number of sources.

    Parameters
    ----------
    n
        Side in pixels.
    path
        FITS file to write.
    seed
        Random seed.

    Returns
    -------
    int
        Sources placed.
    """
    src = _sources(n, seed)
    sx, sy, _ = pix_sigma(*BEAM, PIX)
    sigma = math.sqrt(sx * sy)
    # A normalised 2-D Gaussian filter scales white noise by 1 / (2 sqrt(pi) sigma).
    gain = np.float32(RMS * 2.0 * math.sqrt(math.pi) * sigma)
    m = int(math.ceil(4 * sigma))
    h = fits.Header([("SIMPLE", True), ("BITPIX", -32), ("NAXIS", 2), ("NAXIS1", n), ("NAXIS2", n)])
    h.extend(field_header(n, PIX, BEAM, freq=1.4e9))
    tmp = path.with_suffix(".part")
    hdu = fits.StreamingHDU(tmp, h)
    xv = np.arange(n, dtype=np.float32) / np.float32(n)
    reach = 6.0 * float(src[:, 3:5].max()) + 2
    for y0 in range(0, n, BAND):
        y1 = min(n, y0 + BAND)
        rng = np.random.default_rng([seed, y0])
        white = rng.standard_normal((y1 - y0 + 2 * m, n), dtype=np.float32)
        band = ndimage.gaussian_filter(white, sigma, mode="wrap")[m : m + y1 - y0] * gain
        del white
        yv = (np.arange(y0, y1, dtype=np.float32) / np.float32(n))[:, None]
        band += 3e-4 * (xv - 0.5) + 2e-4 * (yv - 0.5)
        band += 1e-4 * np.sin(2 * np.pi * xv) * np.cos(np.pi * yv)
        lo, hi = np.searchsorted(src[:, 1], [y0 - reach, y1 + reach])
        _add(band, y0, src[lo:hi])
        hdu.write(band.astype(np.float32))
    hdu.close()
    tmp.rename(path)
    return int(src.shape[0])


def digest(catalog: Path) -> tuple[int, str]:
    """Rows of a ``catalog.csv`` and a digest of its rows (positions, fluxes) sorted."""
    tab = np.genfromtxt(catalog, delimiter=",", names=True, ndmin=1, dtype=None, encoding="utf-8")
    cols = [c for c in ("x", "y", "flux", "peak_flux", "ra", "dec") if c in tab.dtype.names]
    rows = sorted(tuple(round(float(r[c]), 6) for c in cols) for r in tab)
    return len(rows), hashlib.sha256(repr(rows).encode()).hexdigest()[:16]


def run_app(image: Path, out: Path, nproc: int | None, ranks: int) -> dict[str, Any]:
    """Run the caesar app on ``image``; wall time, peak memory, catalogue digest."""
    cmd = [sys.executable, "-m", "caesar_rest.apps.caesar_run", "--input", str(image)]
    cmd += ["--outdir", str(out)]
    if nproc is not None:
        cmd.append(f"--nproc={nproc}")
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    if ranks:
        env.update(OMPI_MCA_btl_tcp_if_include="lo", OMPI_MCA_oob_tcp_if_include="lo")
        mpi = [os.environ.get("MPIEXEC", "mpiexec"), "--allow-run-as-root", "--oversubscribe"]
        cmd = [*mpi, "-n", str(ranks), *cmd]
    t0 = time.perf_counter()
    log = (out.parent / f"{out.name}.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    peak_pss = peak_rss = 0
    status = None
    while status is None:
        mem = [rollup(p) for p in tree(proc.pid)]
        peak_pss = max(peak_pss, sum(p for _, p in mem))
        peak_rss = max([peak_rss, *(r for r, _ in mem)])
        pid, st, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            status = os.waitstatus_to_exitcode(st)
            peak_rss = max(peak_rss, usage.ru_maxrss)
            break
        time.sleep(0.1)
    proc.returncode = status
    wall = time.perf_counter() - t0
    log.close()
    if status != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({status}); see {out}.log")
    summary = json.loads((out / "summary.json").read_text())
    rows, dig = digest(out / "catalog.csv")
    return {
        "wall_s": wall,
        "max_rss_mib": peak_rss / 1024.0,
        "tree_pss_mib": peak_pss / 1024.0,
        "peak_mib": max(peak_rss, peak_pss) / 1024.0,
        "rows": rows,
        "digest": dig,
        "timings": summary.get("timings_s", {}),
        "n_tiles": summary.get("n_tiles"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="8192,16384,32768")
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/caesar-large"))
    ap.add_argument("--nproc", type=int, default=None, help="the app's nproc (default: not given)")
    ap.add_argument("--mpi", default="", help="comma-separated rank counts to run as well")
    ap.add_argument("--no-plain", action="store_true", help="only the MPI runs")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    results: list[dict[str, Any]] = []
    for n in (int(s) for s in args.sizes.split(",")):
        image = args.workdir / f"field{n}.fits"
        if not image.exists():
            t0 = time.perf_counter()
            k = make_field(n, image)
            print(f"made {image} ({k} sources) in {time.perf_counter() - t0:.1f} s", flush=True)
        runs = [0] if not args.no_plain else []
        runs += [int(r) for r in args.mpi.split(",") if r]
        for ranks in runs:
            out = args.workdir / f"out{n}-{'mpi' + str(ranks) if ranks else 'plain'}"
            r = run_app(image, out, args.nproc, ranks)
            r.update(side=n, ranks=ranks, image_mib=n * n * 4 / 2**20)
            r["ratio"] = r["peak_mib"] / r["image_mib"]
            r["mpix_s"] = n * n / r["wall_s"] / 1e6
            results.append(r)
            print(json.dumps(r), flush=True)
    print()
    head = (
        "side | ranks | tiles | wall (s) | Mpix/s | max RSS (MiB) | tree PSS (MiB) | peak / image"
    )
    print(f"| {head} | rows | digest |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['side']} | {r['ranks'] or '-'} | {r['n_tiles']} | {r['wall_s']:.1f} | "
            f"{r['mpix_s']:.2f} | {r['max_rss_mib']:.0f} | {r['tree_pss_mib']:.0f} | "
            f"{r['ratio']:.2f} | {r['rows']} | {r['digest']} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
