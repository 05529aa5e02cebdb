"""How well the ``mrcnn`` app's native network detects and classifies objects (issue 17).

Held-out simulated 1024^2 fields (:func:`caesar_rest.apps.mrcnn_sim.truth_field`, seeds from
1001: ``scripts/train_mrcnn.py`` trains on seeds 1-48 and monitors on 901-902), the app's
default options (``scoreThr`` 0.7, ``iouThr`` 0.6). Compared in the same run with the previous
native model (:func:`caesar_rest.apps.mrcnn_run.detect_islands`: 3-sigma islands peaking above
5 sigma and the tree classifier, no network).

* Detection: each detection is matched to at most one true object and each true object to at
  most one detection (greedy by IoU), when their masks overlap with IoU >= 0.5 or the
  detection's brightest pixel lies in the object's mask. Per class: precision (matched and of
  the right class / detections of that class), recall (matched and found with the right class
  / true objects of that class), F1. True objects whose noise-free peak is below 5 sigma
  (diffuse ones excepted: they are 3-8 sigma by design) are left out, and so are the
  detections matched to them;
  ``dup`` counts detections whose brightest pixel lies in an already matched object (pieces of
  one object: counted as false detections). A true object cut by the image edge is
  ``flagged``, as the app's rule has it.
* Pixels: confusion of the true class of each pixel with the class of the kept detection whose
  mask covers it (background elsewhere).
* Time of each model's detection step per field (the machine's load is printed).

Usage::

    python benchmarks/mrcnn.py [--fields 4]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from caesar_rest.apps.mrcnn_net import NET_CLASSES
from caesar_rest.apps.mrcnn_run import detect, detect_islands
from caesar_rest.apps.mrcnn_sim import TruthField, truth_field
from caesar_rest.catalogue.schema import CLASSES
from caesar_rest.classify.simfields import RMS, write_field
from caesar_rest.imaging.fits_image import load_image

FIRST_HELD_OUT = 1001
OPTS = {"scoreThr": 0.7, "iouThr": 0.6}
MODELS: dict[str, Callable[..., Any]] = {"network": detect, "islands (before)": detect_islands}
#: Pixel columns: background, then the catalogue's classes.
PIX_CLASSES = ("background", *CLASSES)


def truth_objects(tf: TruthField) -> tuple[np.ndarray, np.ndarray]:
    """Class name and noise-free peak S/N of each true object (index 0 unused)."""
    n = int(tf.objects.max())
    names = np.asarray(NET_CLASSES, dtype="U19")[tf.object_class]
    ny, nx = tf.objects.shape
    edge = np.unique(
        np.concatenate([tf.objects[0], tf.objects[-1], tf.objects[:, 0], tf.objects[:, -1]])
    )
    names[edge[edge > 0]] = "flagged"
    peak = ndimage.maximum(tf.field.models.max(axis=0), tf.objects, np.arange(n + 1)) / RMS
    return names, np.asarray(peak, dtype=np.float64)


def match(
    tf: TruthField, masks: np.ndarray, peak_pix: np.ndarray
) -> tuple[dict[int, int], np.ndarray]:
    """One-to-one matches detection row -> true object, and the duplicate flags of the rows."""
    n_det, n_true = int(masks.max()), int(tf.objects.max())
    both = (masks > 0) & (tf.objects > 0)
    pair = masks[both].astype(np.int64) * (n_true + 1) + tf.objects[both]
    keys, inter = np.unique(pair, return_counts=True)
    d, t = keys // (n_true + 1), keys % (n_true + 1)
    area_d = np.bincount(masks.ravel(), minlength=n_det + 1)
    area_t = np.bincount(tf.objects.ravel(), minlength=n_true + 1)
    iou = inter / (area_d[d] + area_t[t] - inter)
    at_peak = tf.objects.ravel()[peak_pix]
    ok = (iou >= 0.5) | (at_peak[d - 1] == t)
    order = np.argsort(-iou[ok], kind="stable")
    pairs: dict[int, int] = {}
    taken: set[int] = set()
    for di, ti in zip(d[ok][order], t[ok][order], strict=True):
        if int(di) - 1 not in pairs and int(ti) not in taken:
            pairs[int(di) - 1] = int(ti)
            taken.add(int(ti))
    dup = np.array([k not in pairs and at_peak[k] in taken for k in range(n_det)], dtype=bool)
    return pairs, dup


def peak_pixels(image: Any, masks: np.ndarray) -> np.ndarray:
    """Flat index of the brightest pixel of each detection's mask."""
    n = int(masks.max())
    if not n:
        return np.zeros(0, dtype=np.int64)
    pos = ndimage.maximum_position(np.nan_to_num(image.data), masks, np.arange(1, n + 1))
    return np.array([y * masks.shape[1] + x for y, x in pos], dtype=np.int64)


class Score:
    """Counts of one model over the fields."""

    def __init__(self) -> None:
        self.tp: dict[str, int] = dict.fromkeys(CLASSES, 0)
        self.det: dict[str, int] = dict.fromkeys(CLASSES, 0)
        self.true: dict[str, int] = dict.fromkeys(CLASSES, 0)
        self.dup: dict[str, int] = dict.fromkeys(CLASSES, 0)
        self.pix = np.zeros((len(NET_CLASSES), len(PIX_CLASSES)), dtype=np.int64)
        self.seconds: list[float] = []

    def add(self, tf: TruthField, image: Any, table: Any, masks: np.ndarray) -> None:
        """Count one field's detections."""
        names, peak = truth_objects(tf)
        seen = (peak >= 5.0) | (names == "diffuse")
        seen[0] = False
        for c in names[seen]:
            self.true[str(c)] += 1
        cls = np.asarray(table["class"], dtype="U19") if len(table) else np.zeros(0, "U19")
        pairs, dup = match(tf, masks, peak_pixels(image, masks))
        for k, c in enumerate(cls):
            t = pairs.get(k)
            if t is not None and not seen[t]:
                continue  # matched to an object below 5 sigma: left out
            self.det[str(c)] += 1
            self.dup[str(c)] += int(dup[k])
            if t is not None and names[t] == c:
                self.tp[str(c)] += 1
        lut = np.array([PIX_CLASSES.index(str(c)) for c in ["background", *cls]], dtype=np.int64)
        pred = lut[masks]
        self.pix += np.bincount(
            tf.classes.ravel().astype(np.int64) * len(PIX_CLASSES) + pred.ravel(),
            minlength=self.pix.size,
        ).reshape(self.pix.shape)

    def report(self, name: str) -> None:
        """Print the per-class table and the pixel confusion."""
        print(f"\n{name}: detection (objects with a true peak >= 5 sigma, and diffuse ones)")
        print(
            f"{'class':>20}{'true':>7}{'det':>7}{'TP':>6}{'dup':>6}{'prec':>7}{'recall':>8}{'F1':>7}"
        )
        for c in CLASSES:
            t, d, tp = self.true[c], self.det[c], self.tp[c]
            p = tp / d if d else float("nan")
            r = tp / t if t else float("nan")
            f = 2 * p * r / (p + r) if d and t and p + r else float("nan")
            print(f"{c:>20}{t:>7}{d:>7}{tp:>6}{self.dup[c]:>6}{p:>7.3f}{r:>8.3f}{f:>7.3f}")
        print(f"{name}: pixels, rows = truth, columns = predicted (% of the row)")
        print(" " * 20 + "".join(f"{c[:9]:>10}" for c in PIX_CLASSES))
        for i, c in enumerate(NET_CLASSES):
            row = self.pix[i] / max(int(self.pix[i].sum()), 1) * 100
            print(f"{c:>20}" + "".join(f"{v:>10.1f}" for v in row) + f"  ({self.pix[i].sum()} px)")
        print(f"{name}: detection time per field {np.mean(self.seconds):.2f} s (mean)")


def main() -> None:
    """Command line (see the module notes)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fields", type=int, default=4, help="held-out fields (seeds 1001...)")
    a = ap.parse_args()
    scores = {name: Score() for name in MODELS}
    seeds = range(FIRST_HELD_OUT, FIRST_HELD_OUT + a.fields)
    print(
        f"{a.fields} held-out 1024^2 fields (seeds {seeds[0]}-{seeds[-1]}); load {os.getloadavg()}"
    )
    for seed in seeds:
        tf = truth_field(seed)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "field.fits"
            write_field(tf.field, str(path))
            image = load_image(path)
        for name, fn in MODELS.items():
            t0 = time.perf_counter()
            table, masks, _ = fn(image, OPTS)
            scores[name].seconds.append(time.perf_counter() - t0)
            scores[name].add(tf, image, table, masks)
        print(f"field {seed}: {int(tf.objects.max())} true objects", flush=True)
    for name, sc in scores.items():
        sc.report(name)
    print(f"load at the end {os.getloadavg()}")


if __name__ == "__main__":
    main()
