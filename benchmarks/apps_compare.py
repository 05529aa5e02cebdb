#!/usr/bin/env python3
"""Run every available app on the real images and compare their catalogues.

For each image and each app of the service's registry that is available here, the app's own job
command (``App.command`` with default options, the argument list a job runs) is started in a
fresh output folder, timed, and its ``catalog.csv`` read. The catalogues of each pair of apps are
then cross-matched with :mod:`caesar_rest.catalogue.compare` (radius: the beam FWHM). Prints
Markdown tables: per app the number of sources, the wall time of the job process (including
imports and the preview) and of the finder itself (from ``summary.json``), the median rms; and
per pair of apps the share of the row app's sources matched by the column app, with the median
flux ratio (column/row).

Run: ``.venv/bin/python benchmarks/apps_compare.py`` (``--apps sep,aegean``, ``--images A.fits``,
``--repeat 3`` for the median of several runs, ``--keep DIR`` to keep the outputs, ``--json``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from caesar_rest.apps.registry import default_registry
from caesar_rest.catalogue.compare import compare_catalogues, read_catalogue
from caesar_rest.imaging import load_image

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
IMAGES = ("ScorpioS17Field.fits", "ScorpioExtendedSourceField.fits")
#: Keys of summary.json timings that are not the finder's own work.
NOT_FINDER = ("load", "write", "catalogue", "preview", "total")
#: S/N cut of the "bright sources" agreement table.
BRIGHT_SNR = 10.0


def run_app(app: Any, image: Path, out: Path, repeat: int) -> dict[str, Any]:
    """Run ``app`` on ``image`` ``repeat`` times; return timings and the last run's outputs."""
    walls: list[float] = []
    finder: list[float] = []
    summary: dict[str, Any] = {}
    rc = 0
    for _ in range(repeat):
        out.mkdir(parents=True, exist_ok=True)
        for old in out.iterdir():
            if old.is_file():
                old.unlink()
        argv = app.command(image, {}, out)
        # A job's value with the default options (one core), on every backend; here even if set.
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
        t0 = time.perf_counter()
        with open(out / "job.log", "wb") as log:
            rc = subprocess.run(
                argv, cwd=out, stdout=log, stderr=subprocess.STDOUT, env=env
            ).returncode
        walls.append(time.perf_counter() - t0)
        if rc != 0:
            break
        summary = json.loads((out / "summary.json").read_text())
        timings = summary.get("timings_s", {})
        finder.append(sum(v for k, v in timings.items() if k not in NOT_FINDER))
    result: dict[str, Any] = {"app": app.name, "rc": rc, "wall_s": statistics.median(walls)}
    if rc != 0:
        tail = (out / "job.log").read_text(errors="replace").strip().splitlines()[-3:]
        result["error"] = " | ".join(tail)
        return result
    result["finder_s"] = statistics.median(finder) if finder else None
    result["n_sources"] = summary.get("n_sources")
    result["n_islands"] = summary.get("n_islands")
    result["rms_median"] = summary.get("rms_median", summary.get("stats", {}).get("median_rms"))
    result["catalog"] = str(out / "catalog.csv")
    return result


def compare_all(
    results: list[dict[str, Any]], beam: float, min_snr: float = 0.0
) -> dict[tuple[str, str], Any]:
    """Pairwise comparisons of the successful runs (both orders).

    With ``min_snr``, only the row app's sources with at least that S/N are matched (against
    all of the column app's sources).
    """
    ok = [r for r in results if r["rc"] == 0]
    tables = {r["app"]: read_catalogue(r["catalog"]) for r in ok}
    pairs: dict[tuple[str, str], Any] = {}
    for a, b in itertools.permutations(tables, 2):
        rows = tables[a][tables[a]["snr"] >= min_snr] if min_snr > 0 else tables[a]
        rep = compare_catalogues(rows, tables[b], beam_arcsec=beam, labels=(a, b)).to_dict()
        pairs[(a, b)] = rep
    return pairs


def matrix(names: list[str], pairs: dict, title: str) -> list[str]:
    """A Markdown matrix: share of the row app's sources matched by the column app."""
    lines = ["", title, "", "| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for a in names:
        cells = []
        for b in names:
            if a == b:
                cells.append("–")
                continue
            rep = pairs[(a, b)]
            frac = rep["matched_fraction_a"]
            ratio = rep["flux_ratio_b_over_a"]["median"]
            cell = "n/a" if frac is None else f"{100 * frac:.0f}%"
            if ratio is not None:
                cell += f" ({ratio:.2f})"
            cells.append(cell)
        n_rows = pairs[(a, next(b for b in names if b != a))]["n_a"] if len(names) > 1 else 0
        lines.append(f"| **{a}** ({n_rows}) | " + " | ".join(cells) + " |")
    return lines


def markdown(
    image: str, beam: float, results: list[dict[str, Any]], pairs: dict, bright: dict
) -> str:
    """Tables for one image."""
    lines = [f'#### {image} (match radius {beam:.3g}" = beam FWHM)', ""]
    lines += [
        "| app | sources | islands | median rms (µJy/beam) | job wall time (s) | finder (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        if r["rc"] != 0:
            lines.append(f"| {r['app']} | failed (exit {r['rc']}): {r['error'][:80]} | | | | |")
            continue
        rms = "" if r["rms_median"] is None else f"{r['rms_median'] * 1e6:.0f}"
        islands = "" if r["n_islands"] is None else r["n_islands"]
        lines.append(
            f"| {r['app']} | {r['n_sources']} | {islands} | {rms} | {r['wall_s']:.1f} "
            f"| {r['finder_s']:.1f} |"
        )
    names = [r["app"] for r in results if r["rc"] == 0]
    lines += matrix(
        names,
        pairs,
        "All sources: share of the row app's sources (count in brackets) matched by the column "
        "app, and the median integrated-flux ratio column/row:",
    )
    lines += matrix(
        names,
        bright,
        f"Bright sources only (row app's S/N >= {BRIGHT_SNR:g}), against all of the column "
        "app's sources:",
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--apps", help="comma-separated app names (default: every available app)")
    p.add_argument("--images", nargs="*", help=f"FITS images (default: {', '.join(IMAGES)})")
    p.add_argument("--repeat", type=int, default=1, help="runs per app and image (median time)")
    p.add_argument("--keep", help="keep the outputs in this folder")
    p.add_argument("--json", action="store_true", help="print JSON instead of Markdown")
    args = p.parse_args(argv)

    registry = default_registry()
    wanted = args.apps.split(",") if args.apps else registry.names()
    apps = []
    skipped = []
    for name in wanted:
        app = registry.get(name)
        if app is None:
            p.error(f"unknown app {name!r}; apps: {', '.join(registry.names())}")
        ok, why = app.availability()
        if ok:
            apps.append(app)
        else:
            skipped.append(f"{name} ({why})")
    images = [Path(i) for i in args.images] if args.images else [DATA / i for i in IMAGES]
    keep = Path(args.keep) if args.keep else None
    tmp = tempfile.TemporaryDirectory(prefix="apps-compare-")
    root = keep or Path(tmp.name)
    report: dict[str, Any] = {"images": {}, "skipped": skipped}
    sections = []
    for image in images:
        beam = load_image(image).beam[0]
        results = [
            run_app(app, image.resolve(), root / image.stem / app.name, args.repeat) for app in apps
        ]
        pairs = compare_all(results, beam)
        bright = compare_all(results, beam, BRIGHT_SNR)
        report["images"][image.name] = {
            "beam_arcsec": beam,
            "runs": results,
            "pairs": {f"{a}->{b}": rep for (a, b), rep in pairs.items()},
            "pairs_bright": {f"{a}->{b}": rep for (a, b), rep in bright.items()},
        }
        sections.append(markdown(image.name, beam, results, pairs, bright))
    tmp.cleanup()
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    cpu = os.cpu_count()
    print(
        f"Machine: {platform.machine()}, {cpu} CPUs, Python {platform.python_version()}; "
        f"default options; {args.repeat} run(s) per app and image, median shown."
    )
    if skipped:
        print(f"Not available here: {'; '.join(skipped)}.")
    print()
    print("\n\n".join(sections))
    return 0 if all(r["rc"] == 0 for i in report["images"].values() for r in i["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
