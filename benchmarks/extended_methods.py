"""Compare the caesar finder's extended-source methods on simulated faint extended emission.

The question (issue 3, item 6): is the wavelet method (``extsfinder=WT-THRESH``, our default)
better than the spec's default, multi-resolution saliency (``SALIENCY-THRESH``)? Each image is
the finder benchmark's simulation (``simulate.py``: correlated noise, background gradient,
point sources, close pairs, resolved sources, a few bright blobs) plus faint extended blobs
that the compact search cannot see: elliptical Gaussians of FWHM 40-120" (27-80 px) with a
peak of 0.7-2.5 sigma per pixel. Every image runs the whole pipeline (fits off) with each
method, and without any extended search for reference.

Printed per method, over all images:

* faint blobs found: the blob's centre pixel lies in an island;
* false islands: islands that hold no true object of any kind (no truth position inside, and
  none within 4 px of the island's peak);
* seconds of the extended-search step (``timings["extended"]``).

Usage::

    python benchmarks/extended_methods.py                 # 3 images of 2048^2
    python benchmarks/extended_methods.py --size 1024 --images 2
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import simulate  # noqa: E402

#: Configurations compared: label and legacy options.
CONFIGS: dict[str, dict[str, Any]] = {
    "no extended search": {"no-extendedsearch": True},
    "WT-THRESH (default)": {"extsfinder": "WT-THRESH"},
    "SALIENCY-THRESH (defaults)": {"extsfinder": "SALIENCY-THRESH"},
    "ACTIVE-CONTOUR (Chan-Vese)": {"extsfinder": "ACTIVE-CONTOUR"},
    "ACTIVE-CONTOUR (LRAC)": {"extsfinder": "ACTIVE-CONTOUR", "activecontour": "LRAC"},
    "SP-HIERCLUST": {"extsfinder": "SP-HIERCLUST"},
}


def add_faint_blobs(
    img: np.ndarray, truth: list[dict[str, float]], count: int, seed: int
) -> list[tuple[float, float]]:
    """Add ``count`` faint blobs away from the other objects; return their centres."""
    rng = np.random.default_rng(seed + 1000)
    n = img.shape[0]
    taken = np.array([(t["x"], t["y"]) for t in truth]) if truth else np.zeros((0, 2))
    centres: list[tuple[float, float]] = []
    tries = 0
    while len(centres) < count and tries < 10_000:
        tries += 1
        fwhm = rng.uniform(40.0, 120.0)  # arcsec
        x, y = rng.uniform(0.1 * n, 0.9 * n, size=2)
        clear = 1.2 * fwhm / simulate.PIX
        if taken.size and np.min(np.hypot(taken[:, 0] - x, taken[:, 1] - y)) < 0.5 * clear:
            continue
        if centres and min(math.hypot(cx - x, cy - y) for cx, cy in centres) < 2 * clear:
            continue
        sig = fwhm / simulate.PIX / (2.0 * math.sqrt(2.0 * math.log(2.0)))
        ratio = rng.uniform(0.5, 1.0)
        simulate._add(
            img,
            x,
            y,
            rng.uniform(0.7, 2.5) * simulate.RMS,
            sig,
            sig * ratio,
            rng.uniform(0, math.pi),
        )
        centres.append((float(x), float(y)))
    return centres


def island_masks(result: Any) -> list[tuple[np.ndarray, np.ndarray, int, int]]:
    """Pixels (xs, ys) and peak of each island (nested sources excluded)."""
    isl = result.sources.isl
    out = []
    for i in range(len(isl.npix)):
        if isl.parent.size and isl.parent[i] >= 0:
            continue
        a, b = isl.offsets[i], isl.offsets[i + 1]
        out.append((isl.xs[a:b], isl.ys[a:b], int(isl.xpk[i]), int(isl.ypk[i])))
    return out


def evaluate(
    result: Any, blobs: list[tuple[float, float]], others: np.ndarray
) -> tuple[int, int, int]:
    """(blobs found, false islands, islands)."""
    found = np.zeros(len(blobs), dtype=bool)
    truth_px = {(int(round(y)), int(round(x))) for x, y in others}
    truth_px |= {(int(round(y)), int(round(x))) for x, y in blobs}
    allpos = np.vstack([others, np.array(blobs).reshape(-1, 2)]) if blobs else others
    false = 0
    islands = island_masks(result)
    for xs, ys, xp, yp in islands:
        pix = set(zip(ys.tolist(), xs.tolist(), strict=True))
        for k, (bx, by) in enumerate(blobs):
            if (int(round(by)), int(round(bx))) in pix:
                found[k] = True
        holds = bool(pix & truth_px)
        near = bool(np.min(np.hypot(allpos[:, 0] - xp, allpos[:, 1] - yp)) <= 4.0)
        if not (holds or near):
            false += 1
    return int(found.sum()), false, len(islands)


def main() -> int:
    """Run the comparison and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--images", type=int, default=3)
    p.add_argument("--blobs", type=int, default=10, help="faint blobs per image")
    p.add_argument(
        "--saliency-thr",
        default="4,6,8",
        help="further SALIENCY-THRESH runs with these saliency-thr values (default 4,6,8)",
    )
    args = p.parse_args()
    configs = dict(CONFIGS)
    for v in filter(None, args.saliency_thr.split(",")):
        configs[f"SALIENCY-THRESH, saliency-thr {v}"] = {
            "extsfinder": "SALIENCY-THRESH",
            "saliency-thr": float(v),
        }

    from caesar_rest.sourcefinder import find_sources, from_legacy

    nsrc = max(20, round(500 * (args.size / 2048) ** 2))
    rows: dict[str, list[float]] = {m: [0, 0, 0, 0.0, 0] for m in configs}
    n_blobs = 0
    with tempfile.TemporaryDirectory(prefix="extmethods-") as tmp:
        for seed in range(1, args.images + 1):
            img, truth = simulate.make_image(args.size, nsrc, seed=seed)
            blobs = add_faint_blobs(img, truth, args.blobs, seed)
            n_blobs += len(blobs)
            path = Path(tmp) / f"img{seed}.fits"
            from astropy.io import fits

            fits.PrimaryHDU(img.astype(np.float32), header=simulate.header(args.size)).writeto(path)
            others = np.array([(t["x"], t["y"]) for t in truth])
            for m, legacy in configs.items():
                opts = from_legacy(legacy)
                t0 = time.perf_counter()
                res = find_sources(path, opts)
                wall = time.perf_counter() - t0
                found, false, nisl = evaluate(res, blobs, others)
                r = rows[m]
                r[0] += found
                r[1] += false
                r[2] += nisl
                r[3] += res.timings.get("extended", 0.0)
                r[4] += wall
                print(
                    f"image {seed} {m}: blobs {found}/{len(blobs)}, false islands {false}, "
                    f"islands {nisl}, {wall:.1f} s",
                    file=sys.stderr,
                )
    print(
        f"**{args.images} images of {args.size}x{args.size}, {nsrc} sources and "
        f"{n_blobs // max(1, args.images)} faint blobs each**\n"
    )
    print("| method | faint blobs found | false islands | islands | extended step (s) | run (s) |")
    print("|---|---:|---:|---:|---:|---:|")
    for m in configs:
        found, false, nisl, ext_s, wall = rows[m]
        print(
            f"| {m} | {int(found)}/{n_blobs} ({100 * found / max(1, n_blobs):.0f} %) | "
            f"{int(false)} | {int(nisl)} | {ext_s:.2f} | {wall:.1f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
