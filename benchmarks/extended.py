"""Extended and diffuse emission: each extended method of the caesar finder and PyBDSF.

The field is ``tests/support/diffuse_fields.py``'s: shells, partial arcs, large faint blobs
and filaments at 1-6 sigma per pixel plus point sources, with truth footprints (model >= 1
sigma). A finder's mask is every pixel of its islands (PyBDSF: its island mask, with
``atrous_do=True``). Printed per method: structures found (recall >= 0.3), mean recall, flux
recovered, mask precision (share of the claimed pixels where some true source is >= 0.25
sigma) and the run's wall time.

Usage::

    python benchmarks/extended.py                       # 2048^2, 16 structures, 300 points
    python benchmarks/extended.py --size 1024 --structures 12 --points 100 --no-pybdsf
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support import diffuse_fields as df  # noqa: E402

#: Configurations compared: label and legacy options of the caesar app.
CONFIGS: dict[str, dict[str, Any]] = {
    "caesar defaults (WT-THRESH)": {},
    "caesar SALIENCY-THRESH": {"extsfinder": "SALIENCY-THRESH"},
    "caesar ACTIVE-CONTOUR (Chan-Vese)": {"extsfinder": "ACTIVE-CONTOUR"},
    "caesar ACTIVE-CONTOUR (LRAC)": {"extsfinder": "ACTIVE-CONTOUR", "activecontour": "LRAC"},
    "caesar SP-HIERCLUST": {"extsfinder": "SP-HIERCLUST"},
    "caesar no-extendedsearch": {"no-extendedsearch": True},
}


def run_pybdsf(path: Path, tmp: Path) -> tuple[npt.NDArray[np.bool_], float]:
    """PyBDSF with ``atrous_do=True``: its island mask and wall time."""
    import bdsf
    from astropy.io import fits

    t0 = time.perf_counter()
    img = bdsf.process_image(str(path), atrous_do=True, quiet=True, ncores=1)
    wall = time.perf_counter() - t0
    out = tmp / "isl.fits"
    img.export_image(outfile=str(out), img_type="island_mask", clobber=True)
    data = np.squeeze(fits.getdata(out))
    return np.asarray(data > 0, dtype=bool), wall


def _row(label: str, s: df.Score, wall: float) -> str:
    return (
        f"| {label} | {s.found}/{s.total} | {s.mean_recall:.2f} | {s.flux_recovered:.2f} | "
        f"{s.precision:.3f} | {wall:.1f} |"
    )


def main() -> int:
    """Run every method on one field and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=2048)
    p.add_argument("--structures", type=int, default=16)
    p.add_argument("--points", type=int, default=300)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--no-pybdsf", action="store_true")
    p.add_argument("--only", default="", help="comma-separated labels (substring) to run")
    args = p.parse_args()
    from caesar_rest.sourcefinder import find_sources, from_legacy

    f = df.make_field(args.size, args.structures, args.points, args.seed)
    print(
        f"**{args.size}x{args.size} field, seed {args.seed}: {len(f.structures)} structures "
        f"({', '.join(s.kind for s in f.structures)}), {len(f.points)} point sources**\n"
    )
    print(
        "| method | structures found | mean recall | flux recovered | mask precision | time (s) |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory(prefix="extended-") as tmp:
        path = f.write(Path(tmp) / "field.fits")
        only = [o for o in args.only.split(",") if o]
        for label, legacy in CONFIGS.items():
            if only and not any(o in label for o in only):
                continue
            try:
                opts = from_legacy(legacy)
                t0 = time.perf_counter()
                res = find_sources(path, opts)
                wall = time.perf_counter() - t0
            except Exception as exc:  # a method this version lacks: say so, go on
                print(f"| {label} | failed: {type(exc).__name__}: {exc} | | | | |")
                continue
            print(_row(label, df.score(f, df.finder_mask(res, f.image.shape)), wall), flush=True)
        if not args.no_pybdsf:
            mask, wall = run_pybdsf(path, Path(tmp))
            print(_row("PyBDSF atrous_do=True (island mask)", df.score(f, mask), wall))
    return 0


if __name__ == "__main__":
    sys.exit(main())
