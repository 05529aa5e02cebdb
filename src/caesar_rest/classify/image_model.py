"""The small image model: a multi-layer perceptron on a row's significance cut-out, in NumPy.

Its input is :func:`caesar_rest.classify.features.stamps` (15 x 15 points half a beam apart
around the row's peak, over the peak's significance); its output, one probability per learned
class, enters the tree ensemble as :data:`IMAGE_FEATURE_PREFIX` features (stacking: the trees are
trained on out-of-fold probabilities, see ``scripts/train_classifier.py``). The weights come from
a scikit-learn ``MLPClassifier`` (ReLU hidden layers, softmax output) and are shipped in the
package's ``weights.npz`` beside the trees. A prediction averages the eight rotations and
reflections of the cut-out (the sky has no preferred orientation).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]

#: Names of the image model's features in the tree ensemble: this prefix and a class name.
IMAGE_FEATURE_PREFIX = "image_p_"
#: Rows put through the network at a time (bounded memory on large catalogues).
ROW_CHUNK = 4096


def image_feature_names(classes: tuple[str, ...]) -> tuple[str, ...]:
    """The tree ensemble's names of the image model's probabilities of ``classes``."""
    return tuple(IMAGE_FEATURE_PREFIX + c for c in classes)


def dihedral(x: F32, side: int, k: int) -> F32:
    """Cut-outs (rows x ``side**2``) rotated by ``k % 4`` quarter turns, mirrored when
    ``k >= 4``.

    Parameters
    ----------
    x
        Flattened square cut-outs.
    side
        Their side.
    k
        Transform 0-7 (0: unchanged).

    Returns
    -------
    numpy.ndarray
        The transformed cut-outs, flattened.
    """
    sq = x.reshape(-1, side, side)
    if k >= 4:
        sq = sq[:, :, ::-1]
    sq = np.rot90(sq, k % 4, axes=(1, 2))
    return np.ascontiguousarray(sq).reshape(x.shape)


@dataclass(frozen=True)
class ImageModel:
    """A fitted multi-layer perceptron (ReLU hidden layers, softmax output).

    Attributes
    ----------
    classes
        Class names, in the order of the outputs.
    weights, biases
        Per layer, the ``(inputs, outputs)`` matrix and the bias vector.
    side
        Side of the square cut-out it takes.
    """

    classes: tuple[str, ...]
    weights: tuple[F64, ...]
    biases: tuple[F64, ...]
    side: int

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of its outputs as features of the tree ensemble."""
        return image_feature_names(self.classes)

    def _forward(self, x: F64) -> F64:
        h = x
        for w, b in zip(self.weights[:-1], self.biases[:-1], strict=True):
            h = np.maximum(h @ w + b, 0.0)
        z = h @ self.weights[-1] + self.biases[-1]
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return np.asarray(e / e.sum(axis=1, keepdims=True), dtype=np.float64)

    def proba_plain(self, x: F32) -> F64:
        """Class probabilities of cut-outs as given (no rotations), as scikit-learn's
        ``predict_proba``."""
        xs = np.asarray(x, dtype=np.float64)
        if xs.shape[0] == 0:
            return np.zeros((0, len(self.classes)))
        return np.concatenate(
            [self._forward(xs[a : a + ROW_CHUNK]) for a in range(0, xs.shape[0], ROW_CHUNK)]
        )

    def proba(self, x: F32) -> F64:
        """Class probabilities of cut-outs (rows x ``side**2``): the mean over the eight
        rotations and reflections."""
        xs = np.asarray(x, dtype=np.float32)
        total = np.zeros((xs.shape[0], len(self.classes)))
        for k in range(8):
            total += self.proba_plain(dihedral(xs, self.side, k))
        return total / 8.0


def from_sklearn(clf: Any, side: int) -> ImageModel:
    """The NumPy model of a fitted scikit-learn ``MLPClassifier`` (``activation="relu"``,
    three classes or more).

    Parameters
    ----------
    clf
        The fitted classifier.
    side
        Side of the cut-outs it was trained on.

    Returns
    -------
    ImageModel
        The same network.
    """
    if getattr(clf, "activation", None) != "relu" or getattr(clf, "out_activation_", "") != (
        "softmax"
    ):
        raise ValueError("only ReLU networks with a softmax output are exported")
    return ImageModel(
        classes=tuple(str(c) for c in clf.classes_),
        weights=tuple(np.asarray(w, dtype=np.float64) for w in clf.coefs_),
        biases=tuple(np.asarray(b, dtype=np.float64) for b in clf.intercepts_),
        side=side,
    )


def to_arrays(model: ImageModel, prefix: str = "image_") -> dict[str, npt.NDArray[np.generic]]:
    """The arrays that store ``model`` in an ``.npz`` (names start with ``prefix``)."""
    out: dict[str, npt.NDArray[np.generic]] = {
        prefix + "classes": np.asarray(model.classes),
        prefix + "layers": np.asarray(len(model.weights)),
        prefix + "side": np.asarray(model.side),
    }
    for i, (w, b) in enumerate(zip(model.weights, model.biases, strict=True)):
        out[f"{prefix}w{i}"] = w.astype(np.float32)
        out[f"{prefix}b{i}"] = b.astype(np.float32)
    return out


def from_arrays(z: Any, prefix: str = "image_") -> ImageModel | None:
    """The model stored by :func:`to_arrays` in an open ``.npz`` (None when it holds none)."""
    if prefix + "layers" not in z.files:
        return None
    get = z.__getitem__
    layers = int(get(prefix + "layers"))
    return ImageModel(
        classes=tuple(str(c) for c in get(prefix + "classes")),
        weights=tuple(np.asarray(get(f"{prefix}w{i}"), dtype=np.float64) for i in range(layers)),
        biases=tuple(np.asarray(get(f"{prefix}b{i}"), dtype=np.float64) for i in range(layers)),
        side=int(get(prefix + "side")),
    )
