"""Grouping of multi-island rows (caesar_rest.classify.grouping)."""

from __future__ import annotations

import numpy as np

from caesar_rest.classify.grouping import (
    MULTI,
    NEIGHBOURS,
    PAIR_FEATURE_NAMES,
    RowGeometry,
    candidate_pairs,
    group_rows,
    grouping_scores,
    pair_features,
)
from caesar_rest.classify.model import TreeEnsemble

FWHM = 4.0


def _geometry(xy: list[tuple[float, float]], islands: list[int]) -> RowGeometry:
    n = len(xy)
    x = np.array([p[0] for p in xy], dtype=float)
    y = np.array([p[1] for p in xy], dtype=float)
    isl = np.asarray(islands, dtype=np.intp)
    return RowGeometry(
        x=x,
        y=y,
        fwhm=FWHM,
        island=isl,
        theta=np.where(isl > 0, 0.0, np.nan),
        ecc=np.full(n, 0.8),
        log_snr=np.full(n, 1.0),
        log_island_beams=np.full(n, 0.5),
    )


def _distance_stump(beams: float) -> TreeEnsemble:
    """A two-class model that links pairs closer than ``beams`` (feature 0: log distance)."""
    return TreeEnsemble(
        classes=("apart", "linked"),
        features=PAIR_FEATURE_NAMES,
        init=np.zeros(2),
        learning_rate=1.0,
        roots=np.array([0]),
        tree_class=np.array([1]),
        feature=np.array([0, -1, -1]),
        threshold=np.array([np.log10(beams), 0.0, 0.0]),
        left=np.array([1, 1, 2]),
        right=np.array([2, 1, 2]),
        value=np.array([0.0, 5.0, -5.0]),
        depth=1,
    )


# Two galaxies (rows 0-2: core and lobes 10 beams apart; rows 4-5: two lobes), a compact
# source between them (row 3), a lone multi-island row far away (row 6) and a second row in
# the island of row 1 (row 7).
XY = [(100, 100), (60, 100), (140, 100), (200, 100), (300, 100), (340, 100), (800, 800), (62, 104)]
ISLANDS = [1, 2, 3, 4, 5, 6, 7, 2]
CLASSES = np.array([MULTI, MULTI, MULTI, "compact", MULTI, MULTI, MULTI, MULTI])


def test_groups_follow_the_pair_model_and_the_islands() -> None:
    geom = _geometry(XY, ISLANDS)
    groups = group_rows(geom, CLASSES, _distance_stump(12.0))
    # Numbered from 1 in the order of their first row; -1 outside the class.
    assert list(groups) == [1, 1, 1, -1, 2, 2, 3, 1]
    # Without a pair model only rows of one island are joined.
    alone = group_rows(geom, CLASSES, None)
    assert list(alone) == [1, 2, 3, -1, 4, 5, 6, 2]
    # A pair model that links nothing: the same.
    assert list(group_rows(geom, CLASSES, _distance_stump(0.01))) == list(alone)
    # No multi-island rows: no groups.
    assert list(group_rows(geom, np.array(["compact"] * len(XY)), None)) == [-1] * len(XY)


def test_candidate_pairs_are_near_and_ranked() -> None:
    geom = _geometry(XY, ISLANDS)
    cand = np.flatnonzero(CLASSES == MULTI)
    i, j, ri, rj = candidate_pairs(geom, cand)
    pairs = set(zip(i.tolist(), j.tolist(), strict=True))
    # Within 26 beams (104 px): not the far row 6, not row 0 with row 4 (200 px).
    assert (0, 1) in pairs and (0, 2) in pairs and (4, 5) in pairs
    assert all(6 not in p for p in pairs) and (0, 4) not in pairs
    assert np.all(i < j) and len(pairs) == len(i)
    k = list(zip(i.tolist(), j.tolist(), strict=True)).index((1, 7))
    assert ri[k] == rj[k] == 0  # each is the other's nearest
    assert np.all((ri >= 0) & (ri <= NEIGHBOURS))
    feats = pair_features(geom, cand, i, j, ri, rj)
    assert feats.shape == (len(i), len(PAIR_FEATURE_NAMES))
    k02 = list(zip(i.tolist(), j.tolist(), strict=True)).index((1, 2))
    # Lobes 80 px = 20 beams apart, the core at their midpoint; aligned with their axis (+x).
    assert feats[k02, 0] == np.log10(20.0)
    assert feats[k02, 12] == 0.0 and feats[k02, 2] == 1.0


def test_grouping_scores() -> None:
    galaxy = np.array([1, 1, 1, 2, 2, 0, 3])
    groups = np.array([1, 1, 2, 3, 3, 3, -1])
    true_pairs, pred_pairs, right, galaxies, exact = grouping_scores(galaxy, groups)
    assert (true_pairs, pred_pairs, right) == (3 + 1, 1 + 3, 1 + 1)
    # Galaxy 1 is split, 2 shares its group with a row of no galaxy, 3 has no group.
    assert (galaxies, exact) == (3, 0)
    assert grouping_scores(galaxy, np.array([1, 1, 1, 2, 2, -1, 3]))[3:] == (3, 3)
