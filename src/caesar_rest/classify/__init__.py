"""Source classification of every app's catalogue (the "classification" of the service).

:func:`classify` gives each catalogue row a class of :data:`CLASSES`, a score in [0, 1] and a
group:

* ``compact``, ``extended``, ``extended-multisland``, ``spurious`` (sidelobes, imaging
  artefacts and noise peaks) and ``diffuse`` (large faint emission) come from a gradient-boosted
  tree model (:mod:`caesar_rest.classify.model`, weights trained by
  ``scripts/train_classifier.py`` on simulated fields) on the row's features
  (:mod:`caesar_rest.classify.features`) and the probabilities of a small image model on its
  cut-out (:mod:`caesar_rest.classify.image_model`); the score is the model's probability of
  that class;
* ``flagged`` (poorly imaged) is a rule: a row the model does not call spurious whose island is
  cut by the image edge or by blank pixels (flag ``FLAG_TRUNCATED``); its score is the model's
  probability of its class;
* ``group_id``: the ``extended-multisland`` rows that form one object (core and lobes) share a
  number 1, 2, ...; other rows have -1 (:mod:`caesar_rest.classify.grouping`).

Runs on the CPU with NumPy and SciPy only.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from astropy.table import Table

from caesar_rest.catalogue.schema import CLASSES, FLAG_TRUNCATED
from caesar_rest.classify.features import FEATURE_NAMES, Islands, find_islands, row_features
from caesar_rest.classify.features import stamps as cutout_stamps
from caesar_rest.classify.grouping import group_rows, row_geometry
from caesar_rest.classify.model import Classifier, TreeEnsemble, shipped_classifier
from caesar_rest.imaging.fits_image import FitsImage

__all__ = ["CLASSES", "classify", "classify_table", "model_features", "predict"]


def model_features(
    model: Classifier, features: npt.NDArray[np.float64], stamps: npt.NDArray[np.float32]
) -> npt.NDArray[np.float64]:
    """The row model's input: the row features, then the image model's probabilities when the
    row model takes them.

    Parameters
    ----------
    model
        The models.
    features
        Rows x :data:`~caesar_rest.classify.features.FEATURE_NAMES`.
    stamps
        The rows' cut-outs (:func:`~caesar_rest.classify.features.stamps`).

    Returns
    -------
    numpy.ndarray
        Rows x ``model.rows.features``.

    Raises
    ------
    RuntimeError
        When the weights' features are not these.
    """
    names = model.rows.features
    if names == FEATURE_NAMES:
        return features
    if model.image is None or names != FEATURE_NAMES + model.image.feature_names:
        raise RuntimeError("the classifier's weights do not match its features; retrain it")
    return np.column_stack([features, model.image.proba(stamps)])


def classify(
    image: FitsImage,
    table: Table,
    *,
    islands: Islands | None = None,
    model: Classifier | None = None,
) -> tuple[npt.NDArray[np.str_], npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """Class, score and group of every row of a shared-schema catalogue.

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
        The models (default: the ones shipped in the package).

    Returns
    -------
    classes, scores, groups
        One class name, one score and one ``group_id`` per row.
    """
    mdl = model if model is not None else shipped_classifier()
    n = len(table)
    if n == 0:
        return np.zeros(0, dtype="U19"), np.zeros(0), np.zeros(0, dtype=np.int64)
    isl = islands if islands is not None else find_islands(image)
    feats = row_features(image, table, isl)
    cut = cutout_stamps(image, table, isl) if mdl.image is not None else np.zeros((n, 0))
    x = model_features(mdl, feats, cut.astype(np.float32))
    flags = np.asarray(table["flags"], dtype=np.int64) if "flags" in table.colnames else None
    names, scores = predict(x, flags, mdl.rows)
    groups = group_rows(row_geometry(image, table, isl, feats), names, mdl.pairs)
    return names, scores, groups


def predict(
    features: npt.NDArray[np.float64],
    flags: npt.NDArray[np.int64] | None,
    model: TreeEnsemble | None = None,
) -> tuple[npt.NDArray[np.str_], npt.NDArray[np.float64]]:
    """Classes and scores from the row model's input and the rows' flags (the rule of
    ``flagged``).

    Parameters
    ----------
    features
        Rows x the model's features (:func:`model_features`).
    flags
        The rows' ``flags`` column (None: no flags).
    model
        The row model (default: the shipped one).

    Returns
    -------
    classes, scores
        One class name and one score (rounded to 4 decimals) per row.
    """
    mdl = model if model is not None else shipped_classifier().rows
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
    """The catalogue with its ``class``, ``class_score`` and ``group_id`` columns (added or
    replaced).

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

    names, scores, groups = classify(image, table, islands=islands)
    for col, values in zip(CLASS_COLUMNS, (names, scores, groups), strict=True):
        table[col.name] = np.asarray(values, dtype=col.dtype)
        table[col.name].unit = None
        table[col.name].description = col.description
        table[col.name].meta["ucd"] = col.ucd
    return table
