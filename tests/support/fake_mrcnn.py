"""A stand-in for caesar-mrcnn's ``run_mrcnn.sh --runmode=detect`` (tests of the converter).

It takes the predecessor's command line, finds objects with a plain threshold (islands of
pixels above 3 robust sigma holding a peak above 5) and writes them where and as caesar-mrcnn's
``Analyzer.write_json_results`` does: ``out_<image id>.json`` in the working folder, objects
under ``objs`` with box, class, score, mask pixels ``[y, x]``, contours and edge flag. Class
names are the first caesar-mrcnn's (``source``, ``sidelobe``, ``galaxy_C2``) and the newer ones
(``extended``), so that the mapping is exercised. It also writes a tile file that a whole-image
file must take precedence over. ``FAKE_MRCNN_FAIL=1`` makes it fail (exit 1).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from astropy.io import fits
from scipy import ndimage


def classify(npix: int, snr: float) -> tuple[str, int]:
    """The fake's class name and id of an object."""
    if snr < 8.0:
        return "sidelobe", 1
    if npix > 400:
        return "galaxy_C2", 3
    if npix > 60:
        return "extended", 4
    return "source", 2


def main() -> int:
    parser = argparse.ArgumentParser(prog="run_mrcnn.sh")
    parser.add_argument("--runmode", required=True)
    parser.add_argument("--weights", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--scoreThr", type=float, default=0.7)
    parser.add_argument("--iouThr", type=float, default=0.6)
    args = parser.parse_args()
    print("fake_mrcnn:", " ".join(sys.argv[1:]), flush=True)
    if os.environ.get("FAKE_MRCNN_FAIL"):
        print("fake_mrcnn: failing as asked", file=sys.stderr)
        return 1
    if args.runmode != "detect":
        return 2
    data = np.squeeze(fits.getdata(args.image)).astype(np.float64)
    good = np.isfinite(data)
    med = float(np.median(data[good]))
    sigma = 1.4826 * float(np.median(np.abs(data[good] - med)))
    snr = np.where(good, (data - med) / sigma, 0.0)
    labels, n = ndimage.label(snr > 3.0, structure=np.ones((3, 3)))
    ny, nx = data.shape
    objs = []
    for i, sl in enumerate(ndimage.find_objects(labels), start=1):
        mask = labels[sl] == i
        npix = int(mask.sum())
        peak = float(snr[sl][mask].max())
        if npix < 5 or peak < 5.0:
            continue
        score = round(min(0.99, 0.5 + peak / 40.0), 3)
        if score < args.scoreThr:
            continue
        name, class_id = classify(npix, peak)
        ys, xs = np.nonzero(mask)
        ys, xs = ys + sl[0].start, xs + sl[1].start
        x1, x2, y1, y2 = int(xs.min()), int(xs.max()), int(ys.min()), int(ys.max())
        edge = x1 <= 0 or y1 <= 0 or x2 >= nx - 1 or y2 >= ny - 1
        box = [[x1, y1], [x2, y1], [x2, y2], [x1, y2]]
        objs.append(
            {
                "name": f"S{len(objs) + 1}_",
                "x1": x1, "x2": x2, "y1": y1, "y2": y2,
                "class_id": class_id, "class_name": name, "score": score,
                "pixels": np.column_stack([ys, xs]).tolist(),
                "vertexes": [box], "edge": edge,
            }
        )  # fmt: skip
    image_id = Path(args.image).stem
    Path(f"out_{image_id}.json").write_text(json.dumps({"image_id": image_id, "objs": objs}))
    tile = {"objs": [{"name": "T", "x1": 0, "x2": 1, "y1": 0, "y2": 1, "class_name": "source",
                      "score": 0.9}]}  # fmt: skip
    Path(f"catalog_{image_id}_tid0.json").write_text(json.dumps(tile))
    print(f"fake_mrcnn: {len(objs)} objects", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
