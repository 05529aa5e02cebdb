"""A gradient-boosted tree ensemble evaluated with NumPy alone.

The weights file (``weights.npz``, shipped in this package, written by
``scripts/train_classifier.py`` from a scikit-learn ``GradientBoostingClassifier``) holds every
tree as flat node arrays. A prediction walks all trees at once, one depth level per step:
a node goes left when ``x[feature] <= threshold``, as scikit-learn does (features are rounded to
float32 first, as scikit-learn's trees see them). The class scores are the softmax of
``init + learning_rate * sum of the leaf values`` of each class's trees.

The same file holds, beside the row model, the image model whose probabilities it takes
(:mod:`caesar_rest.classify.image_model`) and the pair model that groups multi-island rows
(:mod:`caesar_rest.classify.grouping`, a two-class tree ensemble), their arrays' names
prefixed ``image_`` and ``pair_`` (:class:`Classifier`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from caesar_rest.classify.image_model import ImageModel
from caesar_rest.classify.image_model import from_arrays as image_from_arrays
from caesar_rest.classify.image_model import to_arrays as image_to_arrays

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: The weights shipped with the package.
WEIGHTS = Path(__file__).with_name("weights.npz")


#: Rows scored at a time by :meth:`TreeEnsemble.raw`.
ROW_CHUNK = 2048


@dataclass(frozen=True)
class TreeEnsemble:
    """Trees of a multi-class gradient-boosting model as flat arrays.

    Attributes
    ----------
    classes
        Class names, in the order of the scores.
    features
        Feature names the model was trained on (checked against the caller's).
    init
        Initial raw score per class.
    learning_rate
        Shrinkage applied to every leaf value.
    roots
        Index of the root node of every tree.
    tree_class
        Class each tree scores.
    feature, threshold, left, right, value
        Per node: the feature tested (-1 at a leaf), the threshold, the children (global node
        indices, the node itself at a leaf) and the leaf value.
    depth
        Depth of the deepest tree (number of steps of a prediction).
    """

    classes: tuple[str, ...]
    features: tuple[str, ...]
    init: F64
    learning_rate: float
    roots: I64
    tree_class: I64
    feature: I64
    threshold: F64
    left: I64
    right: I64
    value: F64
    depth: int

    def raw(self, x: F64) -> F64:
        """Raw (pre-softmax) class scores of the rows of ``x`` (rows x classes), by chunks
        of rows (each step holds rows x trees node indices)."""
        xs = np.asarray(x, dtype=np.float32).astype(np.float64)
        if xs.shape[0] <= ROW_CHUNK:
            return self._raw(xs)
        return np.concatenate(
            [self._raw(xs[a : a + ROW_CHUNK]) for a in range(0, xs.shape[0], ROW_CHUNK)]
        )

    def _raw(self, xs: F64) -> F64:
        n = xs.shape[0]
        nodes = np.broadcast_to(self.roots, (n, self.roots.size)).copy()
        rows = np.arange(n)[:, None]
        for _ in range(self.depth):
            f = self.feature[nodes]
            leaf = f < 0
            go_left = xs[rows, np.maximum(f, 0)] <= self.threshold[nodes]
            nodes = np.where(leaf, nodes, np.where(go_left, self.left[nodes], self.right[nodes]))
        leaves = self.value[nodes]
        out = np.tile(self.init, (n, 1))
        for k in range(len(self.classes)):
            out[:, k] += self.learning_rate * leaves[:, self.tree_class == k].sum(axis=1)
        return out

    def proba(self, x: F64) -> F64:
        """Class probabilities (softmax of :meth:`raw`)."""
        r = self.raw(x)
        r -= r.max(axis=1, keepdims=True)
        e = np.exp(r)
        return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)


def tree_arrays(model: TreeEnsemble, prefix: str = "") -> dict[str, npt.NDArray[np.generic]]:
    """The arrays that store ``model`` in an ``.npz`` (names start with ``prefix``)."""
    arrays: dict[str, npt.NDArray[np.generic]] = {
        "classes": np.asarray(model.classes),
        "features": np.asarray(model.features),
        "init": model.init,
        "learning_rate": np.asarray(np.float64(model.learning_rate)),
        "roots": model.roots.astype(np.int32),
        "tree_class": model.tree_class.astype(np.int8),
        "feature": model.feature.astype(np.int8),
        "threshold": model.threshold,
        "left": model.left.astype(np.int32),
        "right": model.right.astype(np.int32),
        "value": model.value,
        "depth": np.asarray(np.int64(model.depth)),
    }
    return {prefix + k: v for k, v in arrays.items()}


def tree_from(z: Any, prefix: str = "") -> TreeEnsemble | None:
    """The model stored by :func:`tree_arrays` in an open ``.npz`` (None when it holds none)."""
    if prefix + "roots" not in z.files:
        return None
    return TreeEnsemble(
        classes=tuple(str(c) for c in z[prefix + "classes"]),
        features=tuple(str(f) for f in z[prefix + "features"]),
        init=np.asarray(z[prefix + "init"], dtype=np.float64),
        learning_rate=float(z[prefix + "learning_rate"]),
        roots=np.asarray(z[prefix + "roots"], dtype=np.int64),
        tree_class=np.asarray(z[prefix + "tree_class"], dtype=np.int64),
        feature=np.asarray(z[prefix + "feature"], dtype=np.int64),
        threshold=np.asarray(z[prefix + "threshold"], dtype=np.float64),
        left=np.asarray(z[prefix + "left"], dtype=np.int64),
        right=np.asarray(z[prefix + "right"], dtype=np.int64),
        value=np.asarray(z[prefix + "value"], dtype=np.float64),
        depth=int(z[prefix + "depth"]),
    )


@dataclass(frozen=True)
class Classifier:
    """Everything the classifier runs: the row model, the image model whose probabilities
    it takes (when its features name them) and the pair model that groups multi-island rows.

    Attributes
    ----------
    rows
        The tree ensemble that classifies rows.
    image
        The image model (None: the row model takes no image features).
    pairs
        The pair model (:mod:`caesar_rest.classify.grouping`; None: rows are not grouped).
    """

    rows: TreeEnsemble
    image: ImageModel | None = None
    pairs: TreeEnsemble | None = None


#: Name prefixes of the image and pair models' arrays in the weights file.
IMAGE_PREFIX, PAIR_PREFIX = "image_", "pair_"


def save(
    model: TreeEnsemble | Classifier,
    path: Path,
) -> None:
    """Write a model (the row model alone, or with its image and pair models) as a
    compressed ``.npz``.

    Parameters
    ----------
    model
        The model.
    path
        Output file.
    """
    bundle = model if isinstance(model, Classifier) else Classifier(model)
    arrays = tree_arrays(bundle.rows)
    if bundle.image is not None:
        arrays.update(image_to_arrays(bundle.image, IMAGE_PREFIX))
    if bundle.pairs is not None:
        arrays.update(tree_arrays(bundle.pairs, PAIR_PREFIX))
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]


def load_classifier(path: Path = WEIGHTS) -> Classifier:
    """Read the models written by :func:`save`.

    Parameters
    ----------
    path
        The ``.npz`` file.

    Returns
    -------
    Classifier
        The row model and, when the file holds them, the image and pair models.
    """
    with np.load(path, allow_pickle=False) as z:
        rows = tree_from(z)
        if rows is None:
            raise ValueError(f"{path}: no row model")
        return Classifier(rows, image_from_arrays(z, IMAGE_PREFIX), tree_from(z, PAIR_PREFIX))


def load(path: Path = WEIGHTS) -> TreeEnsemble:
    """Read the row model written by :func:`save`.

    Parameters
    ----------
    path
        The ``.npz`` file.

    Returns
    -------
    TreeEnsemble
        The model.
    """
    return load_classifier(path).rows


@lru_cache(maxsize=1)
def shipped_classifier() -> Classifier:
    """The models shipped with the package (read once per process)."""
    return load_classifier(WEIGHTS)


def shipped() -> TreeEnsemble:
    """The row model shipped with the package."""
    return shipped_classifier().rows
