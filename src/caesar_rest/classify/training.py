"""Training data for the classifier: finders' rows on simulated fields, labelled by the truth.

Used by ``scripts/train_classifier.py`` and ``benchmarks/classify.py``; the service never
imports it. :func:`field_rows` runs the in-tree finders (the same code as the apps, with their
default options) on one simulated field (:mod:`caesar_rest.classify.simfields`) and labels each
row with the true class at its position (and the radio galaxy it belongs to, the truth of the
grouping). :func:`export_gradient_boosting` turns a trained scikit-learn
``GradientBoostingClassifier`` (multi-class, or two-class for the pair model) into the NumPy
model of :mod:`caesar_rest.classify.model`; :func:`pair_examples` makes the pair model's
training pairs (scikit-learn itself is not imported here).
"""

from __future__ import annotations

import importlib
import pickle
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from astropy.table import Table

from caesar_rest.classify.features import FEATURE_NAMES, find_islands, row_features, stamps
from caesar_rest.classify.grouping import (
    MULTI,
    RowGeometry,
    candidate_pairs,
    pair_features,
    pair_labels,
    row_geometry,
)
from caesar_rest.classify.model import TreeEnsemble
from caesar_rest.classify.simfields import Field, make_field, write_field

#: Finders whose rows train the model: app name -> (app class spec, program module).
FINDERS: dict[str, tuple[str, str]] = {
    "sep": ("caesar_rest.apps.sep_app:SepApp", "caesar_rest.apps.sep_run"),
    "photutils": ("caesar_rest.apps.photutils_app:PhotutilsApp", "caesar_rest.apps.photutils_run"),
    "caesar": ("caesar_rest.apps.caesar_app:CaesarApp", "caesar_rest.apps.caesar_run"),
}
#: Rows the row model gives at least this multi-island probability are pair candidates in
#: training (:func:`pair_examples`).
PAIR_CANDIDATE_P = 0.02
#: The classes the model learns (``flagged`` is a rule, see :mod:`caesar_rest.classify`).
LEARNED = ("compact", "extended", "extended-multisland", "spurious", "diffuse")


@dataclass
class Rows:
    """Labelled rows of one finder on one field.

    Attributes
    ----------
    finder, seed
        The finder and the field.
    table
        Its catalogue.
    features, stamps
        The rows' features and cut-outs.
    labels
        True classes.
    galaxy
        True radio galaxy of each row (0: none).
    geometry
        What the pair features need.
    """

    finder: str
    seed: int
    table: Table
    features: npt.NDArray[np.float64]
    labels: npt.NDArray[np.str_]
    stamps: npt.NDArray[np.float32]
    galaxy: npt.NDArray[np.int64]
    geometry: RowGeometry


def run_finder(name: str, path: Path, options: dict[str, Any] | None = None) -> tuple[Any, Table]:
    """Run an in-tree finder on a FITS file; return the loaded image and its catalogue.

    Parameters
    ----------
    name
        A key of :data:`FINDERS`.
    path
        The image.
    options
        App options (default: the app's defaults).

    Returns
    -------
    image, table
        The :class:`~caesar_rest.imaging.fits_image.FitsImage` and the shared-schema table.
    """
    from caesar_rest.apps.registry import load_app_class

    spec, module = FINDERS[name]
    app = load_app_class(spec)
    finder = importlib.import_module(module).FINDER
    opts = finder.resolve(app, options or {})
    image = finder.load(path, opts)
    with tempfile.TemporaryDirectory() as tmp:
        found = finder.extract(image, opts, Path(tmp))
    return image, found.table


def field_rows(
    seed: int, finders: tuple[str, ...] = tuple(FINDERS), n: int = 1024
) -> tuple[Field, list[Rows]]:
    """Simulate field ``seed``, run the finders on it and label their rows.

    Parameters
    ----------
    seed
        Field seed.
    finders
        Keys of :data:`FINDERS`.
    n
        Field side in pixels.

    Returns
    -------
    field, rows
        The field and one :class:`Rows` per finder.
    """
    field = make_field(seed, n)
    out: list[Rows] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"field_{seed}.fits"
        write_field(field, str(path))
        islands = None
        for name in finders:
            image, table = run_finder(name, path)
            if islands is None:
                islands = find_islands(image)
            feats = row_features(image, table, islands)
            x, y = np.asarray(table["x"]), np.asarray(table["y"])
            out.append(
                Rows(
                    finder=name,
                    seed=seed,
                    table=table,
                    features=feats,
                    labels=field.label_at(x, y),
                    stamps=stamps(image, table, islands),
                    galaxy=field.galaxy_at(x, y),
                    geometry=row_geometry(image, table, islands, feats),
                )
            )
    return field, out


def cached_field_rows(seed: int, cache: Path | None) -> list[Rows]:
    """:func:`field_rows` of field ``seed``, kept in (and read back from) ``cache``.

    The cache is a local folder of this function's own output (``rows_<seed>.pkl``, Python
    pickles: only for folders this process or its user wrote); it must be emptied when the
    simulation, the finders or the features change.

    Parameters
    ----------
    seed
        Field seed.
    cache
        Folder (None: no cache).

    Returns
    -------
    list of Rows
        One per finder.
    """
    path = cache / f"rows_{seed}.pkl" if cache is not None else None
    if path is not None and path.exists():
        with path.open("rb") as fh:
            rows: list[Rows] = pickle.load(fh)  # noqa: S301 - the user's own cache
        return rows
    rows = field_rows(seed)[1]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as fh:
            pickle.dump(rows, fh)
    return rows


def export_gradient_boosting(clf: Any, features: tuple[str, ...] = FEATURE_NAMES) -> TreeEnsemble:
    """The NumPy model of a fitted multi-class ``GradientBoostingClassifier``.

    Parameters
    ----------
    clf
        The fitted classifier (``loss="log_loss"``, three classes or more).
    features
        Names of its features.

    Returns
    -------
    TreeEnsemble
        The same model: its :meth:`~TreeEnsemble.proba` matches ``clf.predict_proba`` (a
        two-class model's trees score the second class, the first one's raw score staying 0).
    """
    feature, threshold, left, right, value, roots, tree_class = [], [], [], [], [], [], []
    offset, depth = 0, 0
    binary = len(clf.classes_) == 2
    for stage in clf.estimators_:
        for k0, est in enumerate(stage):
            k = 1 if binary else k0
            t = est.tree_
            idx = np.arange(t.node_count)
            leaf = t.children_left < 0
            roots.append(offset)
            tree_class.append(k)
            feature.append(np.where(leaf, -1, t.feature))
            threshold.append(np.where(leaf, 0.0, t.threshold))
            left.append(np.where(leaf, idx, t.children_left) + offset)
            right.append(np.where(leaf, idx, t.children_right) + offset)
            value.append(t.value[:, 0, 0])
            depth = max(depth, int(t.max_depth))
            offset += t.node_count
    model = TreeEnsemble(
        classes=tuple(str(c) for c in clf.classes_),
        features=tuple(features),
        init=np.zeros(len(clf.classes_)),
        learning_rate=float(clf.learning_rate),
        roots=np.asarray(roots, dtype=np.int64),
        tree_class=np.asarray(tree_class, dtype=np.int64),
        feature=np.concatenate(feature).astype(np.int64),
        threshold=np.concatenate(threshold).astype(np.float64),
        left=np.concatenate(left).astype(np.int64),
        right=np.concatenate(right).astype(np.int64),
        value=np.concatenate(value).astype(np.float64),
        depth=depth,
    )
    return model


def fit_init(model: TreeEnsemble, clf: Any, x: npt.NDArray[np.float64]) -> TreeEnsemble:
    """``model`` with the classifier's initial raw scores (from its decision function).

    Parameters
    ----------
    model
        From :func:`export_gradient_boosting` (initial scores zero).
    clf
        The classifier.
    x
        One row or more of features.

    Returns
    -------
    TreeEnsemble
        The completed model.
    """
    from dataclasses import replace

    decision = np.asarray(clf.decision_function(x[:1]), dtype=np.float64)
    first = np.concatenate([[0.0], decision]) if decision.ndim == 1 else decision[0]
    return replace(model, init=first - model.raw(x[:1])[0])


def pair_examples(
    rows: Rows, predicted: npt.NDArray[np.str_], p_multi: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """Training pairs of one catalogue for the pair model.

    The candidates are the rows predicted ``extended-multisland``, those that truly are, and
    those the row model gives a multi-island probability of :data:`PAIR_CANDIDATE_P` or more
    (the model's training rows are classified better than new ones: these stand for the
    neighbours it will wrongly call multi-island); a pair is positive when both rows belong to
    one simulated galaxy.

    Parameters
    ----------
    rows
        The catalogue's labelled rows.
    predicted
        The classes the row model gives them.
    p_multi
        Its probability of ``extended-multisland`` for each.

    Returns
    -------
    features, labels
        Pairs x :data:`~caesar_rest.classify.grouping.PAIR_FEATURE_NAMES`, and their truth.
    """
    maybe = (predicted == MULTI) | (rows.labels == MULTI) | (p_multi >= PAIR_CANDIDATE_P)
    cand = np.flatnonzero(maybe).astype(np.int64)
    i, j, ri, rj = candidate_pairs(rows.geometry, cand)
    return pair_features(rows.geometry, cand, i, j, ri, rj), pair_labels(rows.galaxy, i, j)
