"""Compare source finders on simulated images (issue 3): caesar (ours), sep, photutils, Aegean
(BANE + aegean), PyBDSF and cutex (issue 17).

Each finder runs in its own process (``finders.py --run-one NAME IMAGE OUT.csv``), which
loads the image, finds and measures the sources and writes a small CSV (x, y, peak, flux).
The parent measures the process wall time and samples the peak PSS of the whole process tree
(every 0.1 s, ``/proc/<pid>/smaps_rollup``); the child reports the time of the finder call
itself (load + background + detection + measurement + catalogue). Then detections are matched
to the truth within 4 px (one beam FWHM):

* completeness per true S/N bin (point sources, pair members included);
* completeness (true S/N >= 5) and reliability (detections with measured peak >= 5 sigma that
  lie within 4 px of a true source or on an extended blob, where the blob model >= 2 sigma);
* median integrated flux ratio (measured / true) and its robust scatter (1.4826 MAD) for
  point sources above 10 sigma; median position error (px) above 10 sigma.

Usage::

    python benchmarks/finders.py                       # 2048^2 and 8192^2, all finders
    python benchmarks/finders.py --sizes 2048 --finders caesar,aegean --quick
    python benchmarks/finders.py --sizes 2048 --scenarios crowded --finders caesar,caesar_nofit

Scenarios (``--scenarios``): ``standard`` (500 point sources per 2048^2, at least 12 px apart,
5 % close pairs 6-10 px apart) and ``crowded`` (1500 per 2048^2, 8 px, 15 % pairs 5-9 px).
``caesar`` runs with the app's defaults (fitting on; 3-sigma clipped noise with the detected
sources masked), ``caesar_nofit`` with ``no-fitsources`` (the predecessor's default),
``caesar_median`` with the predecessor's background (``bkgestimator=Median``,
``no-bkgskipoutliers``).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from proctree import rollup, tree

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

RMS = 1e-4
FINDERS = ("caesar", "sep", "photutils", "aegean", "pybdsf", "cutex")
#: Simulated scenarios (``simulate.STANDARD`` and ``simulate.CROWDED``), and the image stem.
SCENARIOS = {"standard": "", "crowded": "_crowded"}
#: Point sources per 2048^2 of each scenario.
DENSITY = {"standard": 500, "crowded": 1500}
BINS = ((3, 5), (5, 10), (10, 50), (50, 1e9))
CORES = 2


# --------------------------------------------------------------------------------------------
# Finders (run in the child process); each returns rows (x, y, peak_jy, flux_jy)
# --------------------------------------------------------------------------------------------


def run_caesar(path: str, out_dir: Path) -> list[tuple[float, float, float, float]]:
    # The caesar app's defaults (fitting on).
    return _caesar(path, out_dir, {"nproc": CORES})


def run_caesar_nofit(path: str, out_dir: Path) -> list[tuple[float, float, float, float]]:
    # The predecessor's default: no fits, one row per island or nested source.
    return _caesar(path, out_dir, {"nproc": CORES, "no-fitsources": True})


def run_caesar_median(path: str, out_dir: Path) -> list[tuple[float, float, float, float]]:
    # The defaults with the predecessor's background: Median/MAD boxes, sources not masked.
    values = {"nproc": CORES, "bkgestimator": "Median", "no-bkgskipoutliers": True}
    return _caesar(path, out_dir, values)


def _caesar(
    path: str, out_dir: Path, values: dict[str, Any]
) -> list[tuple[float, float, float, float]]:
    from caesar_rest.apps.coldstart import loading

    # As caesar-rest find loads the caesar program: without the collector's passes.
    with loading():
        from caesar_rest.catalogue.writers import write_csv
        from caesar_rest.sourcefinder import build_catalogues, find_sources, from_legacy

    opts = from_legacy(values)
    res = find_sources(path, opts)
    cats = build_catalogues(res)
    write_csv(cats.components[cats.components.colnames[:25]], out_dir / "caesar_catalog.csv")
    t = cats.components
    return list(zip(t["x"], t["y"], t["peak_flux"], t["flux"], strict=True))


def run_sep(path: str, out_dir: Path) -> list[tuple[float, float, float, float]]:
    import sep
    from astropy.io import fits

    d = fits.getdata(path).astype(np.float32)
    d = np.ascontiguousarray(d)
    bkg = sep.Background(d, bw=64, bh=64, fw=3, fh=3)
    sub = d - bkg.back()
    rms = bkg.rms()
    sep.set_extract_pixstack(5_000_000)
    obj = sep.extract(
        sub, 3.0, err=rms, minarea=3, filter_kernel=None, deblend_nthresh=32, deblend_cont=0.005
    )
    keep = obj["peak"] >= 5 * rms[obj["ypeak"], obj["xpeak"]]
    obj = obj[keep]
    area = _beam_area(path)
    return list(zip(obj["x"], obj["y"], obj["peak"], obj["flux"] / area, strict=True))


def run_photutils(path: str, out_dir: Path) -> list[tuple[float, float, float, float]]:
    from astropy.io import fits
    from photutils.background import Background2D, MedianBackground
    from photutils.segmentation import SourceCatalog, detect_sources

    d = fits.getdata(path).astype(np.float32)
    bkg = Background2D(d, (64, 64), filter_size=(3, 3), bkg_estimator=MedianBackground())
    sub = d - bkg.background
    seg = detect_sources(sub, 3 * bkg.background_rms, n_pixels=3)
    cat = SourceCatalog(sub, seg)
    x = np.asarray(cat.x_centroid)
    y = np.asarray(cat.y_centroid)
    mx = np.asarray(cat.max_value)
    pos = np.asarray(cat.max_value_index, dtype=int).reshape(-1, 2)  # (row, column)
    rms = bkg.background_rms[pos[:, 0], pos[:, 1]]
    keep = mx >= 5 * rms
    area = _beam_area(path)
    flux = np.asarray(cat.segment_flux) / area
    return list(zip(x[keep], y[keep], mx[keep], flux[keep], strict=True))


#: The ``aegean`` program, with NumPy 2's ``numpy.linalg.linalg`` restored: AegeanTools 2.3's
#: ``covar_errors`` names it in an ``except`` clause, so a singular covariance (a few islands
#: of the crowded scenario) ended the whole run with an AttributeError.
AEGEAN_SHIM = (
    "import sys, numpy; numpy.linalg.linalg = numpy.linalg; "
    "from AegeanTools.CLI.aegean import main; sys.argv[0] = 'aegean'; sys.exit(main())"
)


def run_aegean(path: str, out_dir: Path) -> list[tuple[float, float, float, float]]:
    # The two command-line programs, as in the platform notes (the Python API's process pool
    # hung on the 8192^2 image here).
    bindir = Path(sys.executable).parent
    base = out_dir / Path(path).stem
    subprocess.run(
        [str(bindir / "BANE"), "--cores", str(CORES), "--out", str(base), path],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    table_file = out_dir / "aegean_cli.fits"
    subprocess.run(
        [
            sys.executable,
            "-c",
            AEGEAN_SHIM,
            "--cores",
            str(CORES),
            "--background",
            f"{base}_bkg.fits",
            "--noise",
            f"{base}_rms.fits",
            "--table",
            str(table_file),
            path,
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    from astropy.table import Table

    t = Table.read(out_dir / "aegean_cli_comp.fits")
    from astropy.io import fits
    from astropy.wcs import WCS

    w = WCS(fits.getheader(path)).celestial
    x, y = w.world_to_pixel_values(np.asarray(t["ra"]), np.asarray(t["dec"]))
    return list(zip(x, y, t["peak_flux"], t["int_flux"], strict=True))


def run_pybdsf(path: str, out_dir: Path) -> list[tuple[float, float, float, float]]:
    import bdsf

    img = bdsf.process_image(
        path,
        thresh_pix=5.0,
        thresh_isl=3.0,
        rms_map=True,
        mean_map="map",
        rms_box=(100, 30),
        quiet=True,
        ncores=CORES,
        output_opts=False,
        frequency=1.4e9,
    )
    out = out_dir / "pybdsf.fits"
    img.write_catalog(outfile=str(out), format="fits", catalog_type="srl", clobber=True)
    from astropy.io import fits
    from astropy.table import Table
    from astropy.wcs import WCS

    t = Table.read(out)
    w = WCS(fits.getheader(path)).celestial
    x, y = w.world_to_pixel_values(np.asarray(t["RA"]), np.asarray(t["DEC"]))
    return list(zip(x, y, t["Peak_flux"], t["Total_flux"], strict=True))


def _beam_area(path: str) -> float:
    from astropy.io import fits

    h = fits.getheader(path)
    pix = abs(h["CDELT2"])
    return math.pi / (4 * math.log(2)) * h["BMAJ"] * h["BMIN"] / pix**2


def run_cutex(path: str, out_dir: Path) -> list[tuple[float, float, float, float]]:
    from caesar_rest.apps.cutex_app import CutexApp
    from caesar_rest.apps.cutex_run import extract_sources
    from caesar_rest.apps.program import resolve_options
    from caesar_rest.imaging import load_image

    opts = resolve_options(CutexApp(), {"classify": False})
    t = extract_sources(load_image(path), opts).table
    return list(zip(t["x"], t["y"], t["peak_flux"], t["flux"], strict=True))


def run_one(name: str, image: str, out_csv: str) -> None:
    """Child process: run one finder, write its detections and timing."""
    from caesar_rest.apps.coldstart import skip_exit_collection

    # The harness's own exit, alike for every finder: without the interpreter's final
    # collections of the loaded stack (~0.08 s with astropy and SciPy), as the caesar program.
    skip_exit_collection()
    out_dir = Path(out_csv).parent
    t0 = time.perf_counter()
    rows = globals()[f"run_{name}"](image, out_dir)
    dt = time.perf_counter() - t0
    with open(out_csv, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["x", "y", "peak", "flux"])
        w.writerows(rows)
    Path(out_csv).with_suffix(".time").write_text(f"{dt}\n")


# --------------------------------------------------------------------------------------------
# Parent: run, sample memory, score
# --------------------------------------------------------------------------------------------


def measure(name: str, image: Path, work: Path, reuse: bool = False) -> dict[str, Any]:
    """Run one finder in a child process; wall time, finder time and peak tree PSS."""
    out_csv = work / f"{name}_{image.stem}.csv"
    saved = out_csv.with_suffix(".run.json")
    if reuse and saved.exists():
        r = json.loads(saved.read_text())
        r["det"] = np.genfromtxt(out_csv, delimiter=",", names=True, ndmin=1)
        return dict(r)
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--run-one",
        name,
        str(image),
        str(out_csv),
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # The wall time ends when the child does (a thread waits for it), not at the next 0.1 s
    # sample, which added 0-0.1 s to every finder's time.
    ended: list[float] = []

    def reap() -> None:
        proc.wait()
        ended.append(time.perf_counter())

    reaper = threading.Thread(target=reap)
    reaper.start()
    peak = 0
    while reaper.is_alive():
        peak = max(peak, sum(rollup(p)[1] for p in tree(proc.pid)))
        reaper.join(0.1)
    wall = ended[0] - t0
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise RuntimeError(f"{name} failed ({proc.returncode}): {err[-2000:]}")
    det = np.genfromtxt(out_csv, delimiter=",", names=True, ndmin=1)
    t_find = float(out_csv.with_suffix(".time").read_text())
    r = {"name": name, "wall": wall, "time": t_find, "mem_mib": peak / 1024.0}
    saved.write_text(json.dumps(r))
    return {**r, "det": det}


def _blob_model(truth: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    val = np.zeros(x.size)
    for t in truth[truth["type"] == "blob"]:
        sx = t["maj"] / 2.35482 / 1.5
        sy = t["min"] / 2.35482 / 1.5
        th = math.radians(90 + t["pa"])
        c, s = math.cos(th), math.sin(th)
        u = (x - t["x"]) * c + (y - t["y"]) * s
        w = -(x - t["x"]) * s + (y - t["y"]) * c
        val += t["peak_jy"] * np.exp(-0.5 * ((u / sx) ** 2 + (w / sy) ** 2))
    return val


def score(det: np.ndarray, truth: np.ndarray, radius: float = 4.0) -> dict[str, Any]:
    """Completeness, reliability, flux ratio and position error (see the module doc)."""
    from scipy.spatial import cKDTree

    pts = truth[np.isin(truth["type"], ["point", "pair"])]
    real_src = truth[truth["type"] != "blob"]
    dx = np.asarray(det["x"], float)
    dy = np.asarray(det["y"], float)
    out: dict[str, Any] = {"n_det": int(dx.size)}
    tree = cKDTree(np.column_stack([dx, dy])) if dx.size else None
    d_pt = np.full(len(pts), np.inf)
    j_pt = np.zeros(len(pts), dtype=int)
    if tree is not None:
        d_pt, j_pt = tree.query(np.column_stack([pts["x"], pts["y"]]))
    found = d_pt <= radius
    snr = pts["snr"]
    for lo, hi in BINS:
        sel = (snr >= lo) & (snr < hi)
        out[f"c{lo}"] = (int(found[sel].sum()), int(sel.sum()))
    ge5 = snr >= 5
    out["compl5"] = float(found[ge5].mean())
    # Reliability of detections with measured peak >= 5 sigma.
    ttree = cKDTree(np.column_stack([real_src["x"], real_src["y"]]))
    dd, _ = ttree.query(np.column_stack([dx, dy])) if dx.size else (np.zeros(0), None)
    real = (dd <= radius) | (_blob_model(truth, dx, dy) >= 2 * RMS)
    strong = np.asarray(det["peak"], float) >= 5 * RMS
    out["rel5"] = float(real[strong].mean()) if strong.any() else float("nan")
    out["false5"] = int((~real & strong).sum())
    bright = found & (snr >= 10)
    if bright.any():
        j = j_pt[bright]
        ratio = np.asarray(det["flux"], float)[j] / pts["flux_jy"][bright]
        med = float(np.median(ratio))
        out["flux_ratio"] = med
        out["flux_scatter"] = float(1.4826 * np.median(np.abs(ratio - med)))
        out["pos_err"] = float(np.median(d_pt[bright]))
    return out


def table(image: str, results: list[dict[str, Any]]) -> str:
    """Markdown table of one image."""
    head = (
        "| finder | finder time (s) | process wall (s) | peak tree PSS (MiB) | n det | "
        "compl 3-5 | compl 5-10 | compl 10-50 | compl >50 | compl >=5 | rel >=5 (false) | "
        "flux ratio >10 | scatter >10 | pos err >10 (px) |"
    )
    lines = [f"**{image}**", "", head, "|" + "---|" * 14]
    for r in results:
        s = r["score"]
        bins = [f"{s[f'c{lo}'][0]}/{s[f'c{lo}'][1]}" for lo, _ in BINS]
        lines.append(
            f"| {r['name']} | {r['time']:.2f} | {r['wall']:.2f} | {r['mem_mib']:.0f} | "
            f"{s['n_det']} | {' | '.join(bins)} | {100 * s['compl5']:.1f}% | "
            f"{100 * s['rel5']:.1f}% ({s['false5']}) | {s.get('flux_ratio', float('nan')):.3f} | "
            f"{s.get('flux_scatter', float('nan')):.3f} | {s.get('pos_err', float('nan')):.2f} |"
        )
    return "\n".join(lines)


def main() -> None:
    """Command line."""
    if len(sys.argv) > 1 and sys.argv[1] == "--run-one":
        run_one(sys.argv[2], sys.argv[3], sys.argv[4])
        return
    ap = argparse.ArgumentParser(description="Compare source finders on simulated images.")
    ap.add_argument("--sizes", default="2048,8192", help="image sides, comma-separated")
    ap.add_argument(
        "--finders", default=",".join(FINDERS), help="also: caesar_nofit, caesar_median"
    )
    ap.add_argument("--scenarios", default="standard,crowded", help=", ".join(SCENARIOS))
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/caesar-bench"))
    ap.add_argument("--quick", action="store_true", help="skip the 8192 image unless asked")
    ap.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    ap.add_argument("--reuse", action="store_true", help="reuse earlier runs in the workdir")
    a = ap.parse_args()
    # One BLAS thread per process for every finder: with CORES worker processes each also
    # starting BLAS threads, the 2 cores are oversubscribed (Aegean's fits ran 3x slower).
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    from simulate import write as simulate

    a.workdir.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in a.sizes.split(",")]
    if a.quick:
        sizes = [s for s in sizes if s <= 2048] or sizes[:1]
    every: dict[str, Any] = {}
    runs = [(n, sc) for sc in a.scenarios.split(",") for n in sizes]
    for n, sc in runs:
        image = a.workdir / f"sim{n}{SCENARIOS[sc]}.fits"
        tpath = image.with_name(image.stem + "_truth.csv")
        if not (image.exists() and tpath.exists()):
            simulate(n, image, round(DENSITY[sc] * (n / 2048) ** 2), crowded=sc == "crowded")
        truth = np.genfromtxt(tpath, delimiter=",", names=True, dtype=None, encoding="utf-8")
        results = []
        for name in a.finders.split(","):
            r = measure(name, image, a.workdir, a.reuse)
            r["score"] = score(r.pop("det"), truth)
            results.append(r)
            print(f"{n} {sc}: {name} done in {r['wall']:.1f} s", file=sys.stderr)
        npts = int(np.isin(truth["type"], ["point", "pair"]).sum())
        print(table(f"{n}x{n} {sc} ({npts} point sources)", results))
        print()
        every[f"{n}{SCENARIOS[sc]}"] = results
    if a.json:
        a.json.write_text(json.dumps(every, indent=1, default=str))


if __name__ == "__main__":
    main()
