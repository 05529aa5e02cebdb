"""Train the source classifier and write its weights into the package.

Simulates fields with deterministic seeds (``caesar_rest.classify.simfields``: point and resolved
sources, multi-island radio galaxies, sidelobe rings and spokes around bright sources, diffuse
emission, beam-correlated noise), runs the in-tree finders (sep, photutils, caesar) with their
default options, labels each row by the truth at its position, trains a scikit-learn
``GradientBoostingClassifier`` and writes it as NumPy arrays to
``src/caesar_rest/classify/weights.npz`` (the runtime needs no scikit-learn).

Needs the ``train`` extra (``pip install -e .[train]``). Seeds 1-24 by default; the benchmark
(``benchmarks/classify.py``) holds out seeds from 1001.

Usage::

    python scripts/train_classifier.py [--seeds 24] [--out PATH]
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.ensemble import GradientBoostingClassifier

from caesar_rest.classify.features import FEATURE_NAMES
from caesar_rest.classify.model import WEIGHTS, save
from caesar_rest.classify.training import export_gradient_boosting, field_rows, fit_init


def collect(seeds: range) -> tuple[np.ndarray, np.ndarray]:
    """Features and labels of every finder's rows on the fields ``seeds``."""
    xs, ys = [], []
    for seed in seeds:
        _, rows = field_rows(seed)
        for r in rows:
            xs.append(r.features)
            ys.append(r.labels)
        print(f"field {seed}: {sum(len(r.labels) for r in rows)} rows", flush=True)
    return np.concatenate(xs), np.concatenate(ys)


def main() -> None:
    """Command line (see the module notes)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=24, help="training fields (seeds 1..N)")
    ap.add_argument("--out", type=Path, default=WEIGHTS)
    ap.add_argument("--stages", type=int, default=150)
    a = ap.parse_args()
    t0 = time.perf_counter()
    x, y = collect(range(1, a.seeds + 1))
    counts = Counter(y.tolist())
    print("rows per class:", dict(sorted(counts.items())))
    # Rare classes weigh more (inverse square root of their frequency).
    weight = np.array([1.0 / np.sqrt(counts[c]) for c in y])
    weight *= len(y) / weight.sum()
    t1 = time.perf_counter()
    clf = GradientBoostingClassifier(
        n_estimators=a.stages, max_depth=4, learning_rate=0.1, subsample=0.8, random_state=0
    )
    clf.fit(x, y, sample_weight=weight)
    model = fit_init(export_gradient_boosting(clf, FEATURE_NAMES), clf, x)
    diff = float(np.abs(model.proba(x) - clf.predict_proba(x)).max())
    print(f"NumPy model vs scikit-learn: max probability difference {diff:.2e}")
    if diff > 1e-6:
        raise SystemExit("the exported model does not reproduce scikit-learn's")
    save(model, a.out)
    acc = float((clf.predict(x) == y).mean())
    print(
        f"{len(y)} rows, training accuracy {acc:.3f}; simulation+finders {t1 - t0:.0f} s, "
        f"fit {time.perf_counter() - t1:.0f} s; wrote {a.out} ({a.out.stat().st_size} bytes)"
    )


if __name__ == "__main__":
    main()
