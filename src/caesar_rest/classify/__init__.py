"""Source classification of every app's catalogue (the "classification" of the service).

:func:`classify` gives each catalogue row a class of :data:`CLASSES` and a score in [0, 1]:

* ``compact``, ``extended``, ``extended-multisland``, ``spurious`` (sidelobes, imaging
  artefacts and noise peaks) and ``diffuse`` (large faint emission) come from a gradient-boosted
  tree model (:mod:`caesar_rest.classify.model`, weights trained by
  ``scripts/train_classifier.py`` on simulated fields) on the row's features
  (:mod:`caesar_rest.classify.features`); the score is the model's probability of that class;
* ``flagged`` (poorly imaged) is a rule: a row the model does not call spurious whose island is
  cut by the image edge or by blank pixels (flag ``FLAG_TRUNCATED``); its score is the model's
  probability of its class.

Runs on the CPU with NumPy and SciPy only.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from astropy.table import Table

from caesar_rest.catalogue.schema import CLASSES, FLAG_TRUNCATED
from caesar_rest.classify.features import FEATURE_NAMES, Islands, row_features
from caesar_rest.classify.model import TreeEnsemble, shipped
from caesar_rest.imaging.fits_image import FitsImage

__all__ = ["CLASSES", "classify", "classify_table", "predict"]


def classify(
    image: FitsImage,
    table: Table,
    *,
    islands: Islands | None = None,
    model: TreeEnsemble | None = None,
) -> tuple[npt.NDArray[np.str_], npt.NDArray[np.float64]]:
    """Class and score of every row of a shared-schema catalogue.

    Parameters
    ----------
    image
        The image the catalogue was made from.
    table
        The catalogue.
    islands
        The image's islands (computed when not given; several catalogues of one image can
        share them).
    model
        The model (default: the one shipped in the package).

    Returns
    -------
    classes, scores
        One class name and one score per row.
    """
    mdl = model if model is not None else shipped()
    if mdl.features != FEATURE_NAMES:
        raise RuntimeError("the classifier's weights do not match its features; retrain it")
    n = len(table)
    if n == 0:
        return np.zeros(0, dtype="U19"), np.zeros(0)
    feats = row_features(image, table, islands)
    flags = np.asarray(table["flags"], dtype=np.int64) if "flags" in table.colnames else None
    return predict(feats, flags, mdl)


def predict(
    features: npt.NDArray[np.float64],
    flags: npt.NDArray[np.int64] | None,
    model: TreeEnsemble | None = None,
) -> tuple[npt.NDArray[np.str_], npt.NDArray[np.float64]]:
    """Classes and scores from a feature matrix and the rows' flags (the rule of ``flagged``).

    Parameters
    ----------
    features
        Rows x :data:`~caesar_rest.classify.features.FEATURE_NAMES`.
    flags
        The rows' ``flags`` column (None: no flags).
    model
        The model (default: the shipped one).

    Returns
    -------
    classes, scores
        One class name and one score (rounded to 4 decimals) per row.
    """
    mdl = model if model is not None else shipped()
    n = features.shape[0]
    if n == 0:
        return np.zeros(0, dtype="U19"), np.zeros(0)
    proba = mdl.proba(features)
    best = proba.argmax(axis=1)
    names = np.asarray(mdl.classes, dtype="U19")[best]
    scores = proba[np.arange(n), best]
    if flags is not None:
        truncated = (np.asarray(flags, dtype=np.int64) & FLAG_TRUNCATED) != 0
        names = np.where(truncated & (names != "spurious"), "flagged", names)
    return names, np.round(scores, 4)


def classify_table(image: FitsImage, table: Table, *, islands: Islands | None = None) -> Table:
    """The catalogue with its ``class`` and ``class_score`` columns (added or replaced).

    Parameters
    ----------
    image
        The image the catalogue was made from.
    table
        The catalogue (changed in place and returned).
    islands
        The image's islands, as for :func:`classify`.

    Returns
    -------
    astropy.table.Table
        ``table``.
    """
    from caesar_rest.catalogue.schema import CLASS_COLUMNS

    names, scores = classify(image, table, islands=islands)
    for col, values in zip(CLASS_COLUMNS, (names, scores), strict=True):
        table[col.name] = np.asarray(values, dtype=col.dtype)
        table[col.name].unit = None
        table[col.name].description = col.description
        table[col.name].meta["ucd"] = col.ucd
    return table
