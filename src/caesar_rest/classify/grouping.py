"""Grouping of multi-island rows into objects (the ``group_id`` column).

Rows classified ``extended-multisland`` are the parts of radio galaxies: a core and lobes in
separate islands, a few to about 25 beams apart. :func:`group_rows` joins them into objects:

1. candidate pairs: each such row and its :data:`NEIGHBOURS` nearest such rows within
   :data:`MAX_PAIR_BEAMS` beams;
2. a pair model (a two-class gradient-boosted tree ensemble, trained by
   ``scripts/train_classifier.py`` on pairs of rows of simulated fields whose truth says which
   lobes belong to which galaxy) scores each pair from :data:`PAIR_FEATURE_NAMES`: distance,
   how well each island's axis points at the other, S/N and size of the two, whether either
   has nearer candidates, and whether a third candidate lies near the midpoint (a core);
3. pairs scoring at least :data:`LINK_SCORE`, and rows of one island, are linked; an object is
   a connected set of linked rows.

Objects are numbered 1, 2, ... in the order of their first row; every ``extended-multisland``
row has a group (alone when nothing is linked to it) and rows of the other classes have
:data:`NO_GROUP` (-1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from astropy.table import Table
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from caesar_rest.catalogue.schema import NO_GROUP
from caesar_rest.classify.features import (
    FEATURE_NAMES,
    MISSING,
    Islands,
    beam_fwhm_pix,
    row_islands,
    row_pixels,
)
from caesar_rest.classify.model import TreeEnsemble
from caesar_rest.imaging.fits_image import FitsImage

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: The class whose rows are grouped.
MULTI = "extended-multisland"
#: Pairs are looked for within this many beams.
MAX_PAIR_BEAMS = 26.0
#: Candidate partners per row (the nearest ones).
NEIGHBOURS = 6
#: Pairs scoring at least this are linked.
LINK_SCORE = 0.5

PAIR_FEATURE_NAMES: tuple[str, ...] = (
    "log_distance_beams",
    "same_island",
    "alignment_min",
    "alignment_max",
    "island_eccentricity_min",
    "island_eccentricity_max",
    "log_snr_min",
    "log_snr_ratio",
    "log_island_beams_min",
    "log_island_beams_max",
    "rank_min",
    "rank_max",
    "midpoint_gap",
    "log_candidates_near",
)


@dataclass
class RowGeometry:
    """What the pair features need of every row of a catalogue.

    Attributes
    ----------
    x, y
        Position, 0-based image pixels.
    fwhm
        Beam FWHM in pixels.
    island
        The row's island (0: none).
    theta
        Angle of the island's moment ellipse from +x (radians; NaN without island).
    ecc
        The island's eccentricity (:data:`~caesar_rest.classify.features.MISSING` without).
    log_snr, log_island_beams
        Those row features.
    """

    x: F64
    y: F64
    fwhm: float
    island: npt.NDArray[np.intp]
    theta: F64
    ecc: F64
    log_snr: F64
    log_island_beams: F64


def row_geometry(image: FitsImage, table: Table, islands: Islands, features: F64) -> RowGeometry:
    """The geometry of a catalogue's rows.

    Parameters
    ----------
    image
        The image.
    table
        The catalogue.
    islands
        The image's islands (the ones ``features`` were computed with).
    features
        The rows' features (:func:`~caesar_rest.classify.features.row_features`).

    Returns
    -------
    RowGeometry
        One entry per row.
    """
    x, y, xi, yi = row_pixels(image, table)
    own = row_islands(islands, xi, yi)
    col = FEATURE_NAMES.index
    return RowGeometry(
        x=x,
        y=y,
        fwhm=beam_fwhm_pix(image),
        island=own,
        theta=np.where(own > 0, islands.theta[own], np.nan),
        ecc=features[:, col("island_eccentricity")].astype(np.float64),
        log_snr=features[:, col("log_snr")].astype(np.float64),
        log_island_beams=features[:, col("log_island_beams")].astype(np.float64),
    )


def candidate_pairs(geom: RowGeometry, cand: I64) -> tuple[I64, I64, I64, I64]:
    """Pairs of candidate rows: each one's :data:`NEIGHBOURS` nearest within
    :data:`MAX_PAIR_BEAMS` beams, each pair once.

    Parameters
    ----------
    geom
        The rows' geometry.
    cand
        Indices of the candidate rows.

    Returns
    -------
    i, j, rank_i, rank_j
        Row indices of the pairs (``i < j``) and the rank of each in the other's list of
        neighbours (0: the nearest; :data:`NEIGHBOURS` when not in it).
    """
    empty = np.zeros(0, dtype=np.int64)
    if cand.size < 2:
        return empty, empty, empty, empty
    pts = np.column_stack([geom.x[cand], geom.y[cand]])
    k = min(NEIGHBOURS + 1, cand.size)
    d, nb = cKDTree(pts).query(pts, k=k, distance_upper_bound=MAX_PAIR_BEAMS * geom.fwhm)
    d, nb = d.reshape(cand.size, k), nb.reshape(cand.size, k)
    a = np.repeat(np.arange(cand.size), k - 1)
    b = nb[:, 1:].ravel()
    ok = np.isfinite(d[:, 1:].ravel()) & (b < cand.size) & (b != a)
    a, b, r = a[ok], b[ok], np.tile(np.arange(k - 1), cand.size)[ok]
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    key = lo * cand.size + hi
    uniq = np.unique(key)
    rank_lo = np.full(uniq.size, NEIGHBOURS, dtype=np.int64)
    rank_hi = np.full(uniq.size, NEIGHBOURS, dtype=np.int64)
    pos = np.searchsorted(uniq, key)
    from_lo = a == lo
    rank_lo[pos[from_lo]] = r[from_lo]
    rank_hi[pos[~from_lo]] = r[~from_lo]
    return cand[uniq // cand.size], cand[uniq % cand.size], rank_lo, rank_hi


def pair_features(geom: RowGeometry, cand: I64, i: I64, j: I64, rank_i: I64, rank_j: I64) -> F64:
    """The features (:data:`PAIR_FEATURE_NAMES`) of pairs of rows.

    Parameters
    ----------
    geom
        The rows' geometry.
    cand
        Indices of the candidate rows (for the midpoint and crowding features).
    i, j, rank_i, rank_j
        From :func:`candidate_pairs`.

    Returns
    -------
    numpy.ndarray
        pairs x features.
    """
    if i.size == 0:
        return np.zeros((0, len(PAIR_FEATURE_NAMES)))
    dx, dy = geom.x[j] - geom.x[i], geom.y[j] - geom.y[i]
    dist = np.maximum(np.hypot(dx, dy), 1e-6)
    phi = np.arctan2(dy, dx)
    al_i = np.abs(np.cos(geom.theta[i] - phi))
    al_j = np.abs(np.cos(geom.theta[j] - phi))
    al_i, al_j = np.nan_to_num(al_i, nan=MISSING), np.nan_to_num(al_j, nan=MISSING)
    pts = np.column_stack([geom.x[cand], geom.y[cand]])
    tree = cKDTree(pts)
    mid = np.column_stack([(geom.x[i] + geom.x[j]) / 2, (geom.y[i] + geom.y[j]) / 2])
    k = min(3, cand.size)
    dm, nm = tree.query(mid, k=k)
    dm, nm = dm.reshape(i.size, k), cand[nm.reshape(i.size, k)]
    other = (nm != i[:, None]) & (nm != j[:, None])
    gap = np.where(other, dm, np.inf).min(axis=1) / dist
    near = np.array([len(c) for c in tree.query_ball_point(mid, r=dist)], dtype=np.float64)
    snr_i, snr_j = geom.log_snr[i], geom.log_snr[j]
    beams_i, beams_j = geom.log_island_beams[i], geom.log_island_beams[j]
    same = (geom.island[i] == geom.island[j]) & (geom.island[i] > 0)
    feats = np.column_stack(
        [
            np.log10(dist / geom.fwhm),
            same.astype(np.float64),
            np.minimum(al_i, al_j),
            np.maximum(al_i, al_j),
            np.minimum(geom.ecc[i], geom.ecc[j]),
            np.maximum(geom.ecc[i], geom.ecc[j]),
            np.minimum(snr_i, snr_j),
            np.abs(snr_i - snr_j),
            np.minimum(beams_i, beams_j),
            np.maximum(beams_i, beams_j),
            np.minimum(rank_i, rank_j),
            np.maximum(rank_i, rank_j),
            np.minimum(gap, 2.0),
            np.log10(np.maximum(near - 2.0, 0.0) + 1.0),
        ]
    )
    return np.where(np.isfinite(feats), feats, MISSING)


def link_groups(n: int, cand: I64, i: I64, j: I64, linked: npt.NDArray[np.bool_]) -> I64:
    """``group_id`` of ``n`` rows from the candidates and their linked pairs.

    Parameters
    ----------
    n
        Rows.
    cand
        Candidate rows (each gets a group).
    i, j
        Pairs of rows.
    linked
        Which pairs are linked.

    Returns
    -------
    numpy.ndarray
        1, 2, ... per object in the order of its first row; :data:`NO_GROUP` for the others.
    """
    out = np.full(n, NO_GROUP, dtype=np.int64)
    if cand.size == 0:
        return out
    g = coo_matrix((np.ones(int(linked.sum())), (i[linked], j[linked])), shape=(n, n))
    _, comp = connected_components(g, directed=False)
    comp_c = comp[cand]
    # Renumber the candidates' components 1, 2, ... in the order of their first row.
    _, first, inverse = np.unique(comp_c, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    out[cand] = order[inverse] + 1
    return out


def group_rows(geom: RowGeometry, classes: npt.NDArray[np.str_], pairs: TreeEnsemble | None) -> I64:
    """The ``group_id`` of every row (see the module notes).

    Parameters
    ----------
    geom
        The rows' geometry.
    classes
        Their classes.
    pairs
        The pair model (None: rows of one island only are joined).

    Returns
    -------
    numpy.ndarray
        One group number per row, :data:`NO_GROUP` outside ``extended-multisland``.
    """
    n = len(classes)
    cand = np.flatnonzero(np.asarray(classes) == MULTI).astype(np.int64)
    i, j, ri, rj = candidate_pairs(geom, cand)
    # Rows of one island are one object whatever the pair model says.
    isl = geom.island[cand]
    order = np.argsort(isl, kind="stable")
    same = (isl[order][1:] == isl[order][:-1]) & (isl[order][1:] > 0)
    si, sj = cand[order][:-1][same], cand[order][1:][same]
    linked = np.zeros(i.size, dtype=bool)
    if pairs is not None and i.size:
        score = pairs.proba(pair_features(geom, cand, i, j, ri, rj))[:, -1]
        linked = score >= LINK_SCORE
    all_i = np.concatenate([i, si])
    all_j = np.concatenate([j, sj])
    all_linked = np.concatenate([linked, np.ones(si.size, dtype=bool)])
    return link_groups(n, cand, all_i, all_j, all_linked)


def pair_labels(galaxy: I64, i: I64, j: I64) -> npt.NDArray[np.bool_]:
    """Truth of pairs: both rows in one galaxy (``galaxy`` > 0, from the simulation)."""
    return np.asarray((galaxy[i] == galaxy[j]) & (galaxy[i] > 0), dtype=bool)


def grouping_scores(galaxy: I64, groups: I64) -> tuple[int, int, int, int, int]:
    """How well rows are grouped, against the truth.

    Parameters
    ----------
    galaxy
        The true galaxy of each row (0: none).
    groups
        The predicted ``group_id`` (:data:`NO_GROUP`: none).

    Returns
    -------
    true_pairs, predicted_pairs, right_pairs, galaxies, exact
        Row pairs of one galaxy, pairs of one predicted group, pairs that are both; galaxies
        with rows, and those whose rows are exactly one predicted group.
    """
    g = np.asarray(galaxy, dtype=np.int64)
    p = np.asarray(groups, dtype=np.int64)

    def pairs_in(labels: I64) -> int:
        counts = np.unique(labels, return_counts=True)[1]
        return int((counts * (counts - 1) // 2).sum())

    in_g, in_p = g > 0, p > 0
    both = in_g & in_p
    true_pairs = pairs_in(g[in_g])
    pred_pairs = pairs_in(p[in_p])
    right = pairs_in(g[both] * (int(p.max()) + 2) + p[both]) if both.any() else 0
    exact = 0
    galaxies = np.unique(g[in_g])
    for gal in galaxies:
        rows = g == gal
        ids = np.unique(p[rows])
        if ids.size == 1 and ids[0] > 0 and bool(np.all(rows == (p == ids[0]))):
            exact += 1
    return true_pairs, pred_pairs, right, int(galaxies.size), exact
