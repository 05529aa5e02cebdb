"""How well the classifier does (issue 17): held-out simulated fields, reliability, run time.

* Confusion matrix and per-class precision, recall and F1 of the rows of sep, photutils and
  caesar on simulated fields whose seeds the training never saw (training uses 1-30, this uses
  1001 onwards); the truth of a row is the class whose noise-free model is brightest at its
  position (``caesar_rest.classify.simfields``), noise peaks counting as spurious.
* Reliability of sep and photutils on those fields (every one holds bright sources with
  sidelobe rings and spokes): the fraction of their rows that are true sources, before and
  after dropping the rows classified ``spurious``, and the fraction of true-source rows lost.
* Grouping of multi-island rows (``group_id``) on those fields, per finder: of the pairs of
  rows that belong to one simulated galaxy, the fraction put in one group (recall), of the
  pairs put in one group, the fraction of one galaxy (precision), and the galaxies whose
  detected rows form exactly one group. Rows are classified by the model first, so its errors
  count.
* Time the classification adds to a caesar run (``caesar_rest.apps.program.run``, no preview)
  on a 2048^2 simulated field.

``--weights`` evaluates another weights file (for example the one before a change); grouping
is left out when the file has no pair model.

Usage::

    python benchmarks/classify.py [--fields 8] [--no-timing] [--weights PATH] [--cache DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from caesar_rest.classify import CLASSES, model_features, predict
from caesar_rest.classify.grouping import group_rows, grouping_scores
from caesar_rest.classify.model import Classifier, load_classifier, shipped_classifier
from caesar_rest.classify.simfields import make_field, write_field
from caesar_rest.classify.training import Rows, cached_field_rows

FIRST_HELD_OUT = 1001
TARGETS = ("compact", "extended", "extended-multisland", "spurious")


def confusion(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Counts: rows are the true classes, columns the predicted ones (order of CLASSES)."""
    idx = {c: i for i, c in enumerate(CLASSES)}
    m = np.zeros((len(CLASSES), len(CLASSES)), dtype=int)
    for t, p in zip(truth, pred, strict=True):
        m[idx[str(t)], idx[str(p)]] += 1
    return m


def f1_scores(m: np.ndarray) -> dict[str, tuple[float, float, float, int]]:
    """Precision, recall, F1 and support per class of a confusion matrix."""
    out = {}
    for i, c in enumerate(CLASSES):
        tp, support, predicted = m[i, i], m[i].sum(), m[:, i].sum()
        p = tp / predicted if predicted else float("nan")
        r = tp / support if support else float("nan")
        f = 2 * p * r / (p + r) if predicted and support and (p + r) else float("nan")
        out[c] = (p, r, f, int(support))
    return out


def print_matrix(title: str, m: np.ndarray) -> None:
    """Print a confusion matrix and the per-class scores."""
    short = [c[:8] for c in CLASSES]
    print(f"\n{title}: rows = truth, columns = predicted")
    print(" " * 20 + "".join(f"{s:>9}" for s in short))
    for i, c in enumerate(CLASSES):
        print(f"{c:>20}" + "".join(f"{v:>9}" for v in m[i]))
    print(f"{'class':>20}{'precision':>10}{'recall':>8}{'F1':>7}{'rows':>7}")
    for c, (p, r, f, n) in f1_scores(m).items():
        if n:
            print(f"{c:>20}{p:>10.3f}{r:>8.3f}{f:>7.3f}{n:>7}")


def reliability(rows: list[Rows], pred: dict[int, np.ndarray], finder: str) -> None:
    """Print the reliability of one finder before and after dropping spurious rows."""
    true_all, kept_true, kept_all, n_all = 0, 0, 0, 0
    for k, r in enumerate(rows):
        if r.finder != finder:
            continue
        real = r.labels != "spurious"
        keep = pred[k] != "spurious"
        n_all += len(real)
        true_all += int(real.sum())
        kept_all += int(keep.sum())
        kept_true += int((real & keep).sum())
    before = true_all / n_all
    after = kept_true / kept_all
    lost = 1.0 - kept_true / true_all
    print(
        f"{finder:>10}: {n_all} rows, reliability {before:.3f} -> {after:.4f} after dropping "
        f"spurious; true-source rows lost {100 * lost:.2f} %"
    )


def grouping(rows: list[Rows], pred: dict[int, np.ndarray], model: Classifier) -> None:
    """Print how well each finder's multi-island rows are grouped."""
    print("\ngrouping of multi-island rows (pairs of rows of one galaxy; galaxies exactly grouped)")
    for finder in ("sep", "photutils", "caesar"):
        tot = np.zeros(5, dtype=int)
        for k, r in enumerate(rows):
            if r.finder == finder:
                groups = group_rows(r.geometry, pred[k], model.pairs)
                tot += np.asarray(grouping_scores(r.galaxy, groups))
        true_pairs, pred_pairs, right, galaxies, exact = (int(v) for v in tot)
        rec = right / true_pairs if true_pairs else float("nan")
        prec = right / pred_pairs if pred_pairs else float("nan")
        f1 = 2 * prec * rec / (prec + rec) if prec + rec else float("nan")
        print(
            f"{finder:>10}: pairs precision {prec:.3f} recall {rec:.3f} F1 {f1:.3f} "
            f"({true_pairs} true pairs); galaxies exactly grouped {exact}/{galaxies} "
            f"= {exact / max(galaxies, 1):.3f}"
        )


def timing(n: int = 2048) -> None:
    """Print the time classification adds to a caesar run on an ``n x n`` field."""
    from caesar_rest.apps.caesar_app import CaesarApp
    from caesar_rest.apps.caesar_run import FINDER
    from caesar_rest.apps.program import run

    field = make_field(FIRST_HELD_OUT + 500, n)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "field.fits"
        write_field(field, str(path))
        totals = {}
        for on in (False, True, False, True):
            t0 = time.perf_counter()
            s = run(
                CaesarApp(), FINDER, path, Path(tmp) / f"out{on}", {"classify": on}, preview=False
            )
            wall = time.perf_counter() - t0
            totals.setdefault(on, []).append((wall, s["timings_s"].get("classify", 0.0)))
    off = min(w for w, _ in totals[False])
    on_wall = min(w for w, _ in totals[True])
    cls = min(c for _, c in totals[True])
    print(
        f"\ncaesar run on {n}^2 ({s['n_sources']} rows): {off:.2f} s without, {on_wall:.2f} s "
        f"with classification; classification step {cls:.2f} s = {100 * cls / off:.1f} % of "
        "the run (best of 2 each)"
    )


def main() -> None:
    """Command line (see the module notes)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--fields", type=int, default=8, help="held-out fields (seeds 1001...)")
    ap.add_argument("--no-timing", action="store_true")
    ap.add_argument("--weights", type=Path, help="weights file (default: the shipped one)")
    ap.add_argument("--cache", type=Path, help="folder keeping each field's rows (your own)")
    a = ap.parse_args()
    model = load_classifier(a.weights) if a.weights else shipped_classifier()
    rows: list[Rows] = []
    for seed in range(FIRST_HELD_OUT, FIRST_HELD_OUT + a.fields):
        rows.extend(cached_field_rows(seed, a.cache))
    pred = {
        k: predict(
            model_features(model, r.features, r.stamps), np.asarray(r.table["flags"]), model.rows
        )[0]
        for k, r in enumerate(rows)
    }
    truth = np.concatenate([r.labels for r in rows])
    allp = np.concatenate([pred[k] for k in range(len(rows))])
    print(
        f"{a.fields} held-out 1024^2 fields "
        f"(seeds {FIRST_HELD_OUT}-{FIRST_HELD_OUT + a.fields - 1})"
    )
    print_matrix("all finders", confusion(truth, allp))
    for finder in ("sep", "photutils", "caesar"):
        sel = [k for k, r in enumerate(rows) if r.finder == finder]
        m = confusion(
            np.concatenate([rows[k].labels for k in sel]), np.concatenate([pred[k] for k in sel])
        )
        scores = f1_scores(m)
        print(f"{finder:>10} F1: " + ", ".join(f"{c} {scores[c][2]:.3f}" for c in TARGETS))
    print("\nreliability on fields with artefacts (true source: any class but spurious)")
    for finder in ("sep", "photutils"):
        reliability(rows, pred, finder)
    if model.pairs is not None:
        grouping(rows, pred, model)
    if not a.no_timing:
        timing()


if __name__ == "__main__":
    main()
