"""Train the source classifier and write its weights into the package.

Simulates fields with deterministic seeds (``caesar_rest.classify.simfields``: point and resolved
sources, multi-island radio galaxies, sidelobe rings and spokes around bright sources, diffuse
emission, beam-correlated noise), runs the in-tree finders (sep, photutils, caesar) with their
default options and labels each row by the truth at its position. Then trains, with fixed seeds:

1. the image model, a scikit-learn ``MLPClassifier`` on the rows' cut-outs
   (``caesar_rest.classify.features.stamps``, each row once as it is and once turned by a
   random rotation or reflection); its out-of-fold probabilities (five folds of whole fields)
   are the image features of the trees' training rows;
2. the row model, a ``GradientBoostingClassifier`` on the row features and those probabilities;
3. the pair model, a two-class ``GradientBoostingClassifier`` on pairs of candidate
   multi-island rows (``caesar_rest.classify.grouping``), positive when the simulation puts both
   in one galaxy;

and writes the three as NumPy arrays to ``src/caesar_rest/classify/weights.npz`` (the runtime
needs no scikit-learn). ``--no-image`` leaves the image model out (the row model on the row
features alone).

Needs the ``train`` extra (``pip install -e .[train]``). Seeds 1-30 by default; the benchmark
(``benchmarks/classify.py``) holds out seeds from 1001.

Usage::

    python scripts/train_classifier.py [--seeds 30] [--out PATH] [--no-image] [--cache DIR]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier
from sklearn.neural_network import MLPClassifier

from caesar_rest.classify import model_features
from caesar_rest.classify.features import FEATURE_NAMES, STAMP_SIDE
from caesar_rest.classify.grouping import MULTI, PAIR_FEATURE_NAMES
from caesar_rest.classify.image_model import ImageModel, dihedral, from_sklearn
from caesar_rest.classify.model import WEIGHTS, Classifier, TreeEnsemble, save
from caesar_rest.classify.training import (
    Rows,
    cached_field_rows,
    export_gradient_boosting,
    fit_init,
    pair_examples,
)

#: Folds of whole fields for the image model's out-of-fold probabilities.
FOLDS = 5


def collect(seeds: range, cache: Path | None = None) -> list[Rows]:
    """Every finder's labelled rows on the fields ``seeds`` (kept in ``cache`` if given)."""
    out: list[Rows] = []
    for seed in seeds:
        rows = cached_field_rows(seed, cache)
        out.extend(rows)
        print(f"field {seed}: {sum(len(r.labels) for r in rows)} rows", flush=True)
    return out


def class_weights(y: np.ndarray) -> np.ndarray:
    """Rare classes weigh more (inverse square root of their frequency), mean weight 1."""
    counts = Counter(y.tolist())
    weight = np.array([1.0 / np.sqrt(counts[c]) for c in y])
    return weight * (len(y) / weight.sum())


def fit_image_model(stamps: np.ndarray, y: np.ndarray, weight: np.ndarray, seed: int) -> ImageModel:
    """An MLP on the cut-outs, each once as given and once randomly turned or mirrored."""
    rng = np.random.default_rng(seed)
    turn = rng.integers(1, 8, len(y))
    turned = np.concatenate([dihedral(stamps[turn == k], STAMP_SIDE, int(k)) for k in range(1, 8)])
    order = np.concatenate([np.flatnonzero(turn == k) for k in range(1, 8)])
    xs = np.concatenate([stamps, turned])
    ys = np.concatenate([y, y[order]])
    ws = np.concatenate([weight, weight[order]])
    clf = MLPClassifier(
        hidden_layer_sizes=(64,),
        alpha=1e-3,
        batch_size=256,
        learning_rate_init=1e-3,
        max_iter=40,
        early_stopping=True,
        n_iter_no_change=6,
        random_state=seed,
    )
    clf.fit(xs, ys, sample_weight=ws)
    return from_sklearn(clf, STAMP_SIDE)


def out_of_fold(rows: list[Rows], stamps: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The image model's probabilities of every row from a model that never saw its field."""
    seeds = np.concatenate([np.full(len(r.labels), r.seed) for r in rows])
    fold = np.unique(seeds, return_inverse=True)[1] % FOLDS
    oof: np.ndarray | None = None
    for k in range(FOLDS):
        held = fold == k
        mdl = fit_image_model(stamps[~held], y[~held], w[~held], seed=k)
        p = mdl.proba(stamps[held])
        if oof is None:
            oof = np.zeros((len(y), p.shape[1]))
        oof[held] = p
        print(f"image model fold {k}: {int(held.sum())} rows held out", flush=True)
    assert oof is not None
    return oof


def fit_trees(
    x: np.ndarray, y: np.ndarray, w: np.ndarray, stages: int
) -> GradientBoostingClassifier:
    """The row model (scikit-learn's)."""
    clf = GradientBoostingClassifier(
        n_estimators=stages, max_depth=4, learning_rate=0.1, subsample=0.8, random_state=0
    )
    clf.fit(x, y, sample_weight=w)
    return clf


def fit_pairs(
    rows: list[Rows], bundle: Classifier
) -> tuple[GradientBoostingClassifier, np.ndarray, np.ndarray]:
    """The pair model, trained on the pairs of every catalogue (candidates: the rows the row
    model calls multi-island and those that are)."""
    from caesar_rest.classify import predict

    feats, labels = [], []
    for r in rows:
        x = model_features(bundle, r.features, r.stamps)
        names, _ = predict(x, None, bundle.rows)
        p_multi = bundle.rows.proba(x)[:, bundle.rows.classes.index(MULTI)]
        f, lab = pair_examples(r, names, p_multi)
        feats.append(f)
        labels.append(lab)
    px, py = np.concatenate(feats), np.concatenate(labels).astype(int)
    clf = GradientBoostingClassifier(
        n_estimators=100, max_depth=3, learning_rate=0.1, subsample=0.8, random_state=0
    )
    clf.fit(px, py)
    return clf, px, py


def export(clf: GradientBoostingClassifier, names: tuple[str, ...], x: np.ndarray) -> TreeEnsemble:
    """The NumPy model of a fitted ensemble, checked against scikit-learn's probabilities."""
    mdl = fit_init(export_gradient_boosting(clf, names), clf, x)
    diff = float(np.abs(mdl.proba(x) - clf.predict_proba(x)).max())
    print(f"NumPy model vs scikit-learn: max probability difference {diff:.2e}")
    if diff > 1e-6:
        raise SystemExit("the exported model does not reproduce scikit-learn's")
    return mdl


def main() -> None:
    """Command line (see the module notes)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=30, help="training fields (seeds 1..N)")
    ap.add_argument("--out", type=Path, default=WEIGHTS)
    ap.add_argument("--stages", type=int, default=150)
    ap.add_argument("--no-image", action="store_true", help="no image model")
    ap.add_argument(
        "--cache", type=Path, help="folder keeping each field's rows between runs (your own)"
    )
    a = ap.parse_args()
    t0 = time.perf_counter()
    rows = collect(range(1, a.seeds + 1), a.cache)
    x = np.concatenate([r.features for r in rows])
    y = np.concatenate([r.labels for r in rows])
    stamps = np.concatenate([r.stamps for r in rows])
    print("rows per class:", dict(sorted(Counter(y.tolist()).items())))
    weight = class_weights(y)
    t1 = time.perf_counter()
    image: ImageModel | None = None
    names = FEATURE_NAMES
    if not a.no_image:
        oof = out_of_fold(rows, stamps, y, weight)
        image = fit_image_model(stamps, y, weight, seed=FOLDS)
        names = FEATURE_NAMES + image.feature_names
        x = np.column_stack([x, oof])
    t2 = time.perf_counter()
    clf = fit_trees(x, y, weight, a.stages)
    row_model = export(clf, names, x)
    acc = float((clf.predict(x) == y).mean())
    bundle = Classifier(row_model, image)
    t3 = time.perf_counter()
    pclf, px, py = fit_pairs(rows, bundle)
    pairs = export(pclf, PAIR_FEATURE_NAMES, px)
    bundle = Classifier(row_model, image, pairs)
    save(bundle, a.out)
    print(
        f"{len(y)} rows, training accuracy {acc:.3f}; {len(py)} pairs ({int(py.sum())} of one "
        f"galaxy); simulation+finders {t1 - t0:.0f} s, image model {t2 - t1:.0f} s, trees "
        f"{t3 - t2:.0f} s, pairs {time.perf_counter() - t3:.0f} s; wrote {a.out} "
        f"({a.out.stat().st_size} bytes)"
    )


if __name__ == "__main__":
    main()
