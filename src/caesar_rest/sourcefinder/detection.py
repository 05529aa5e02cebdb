"""Compact source detection: seeded flood fill and its iterations (spec section 3.1, 3.4).

A seeded 4-connected flood fill (seeds at ``Z >= seed``, growth over ``Z >= merge``) equals
"label the 4-connected components of ``Z >= merge`` and keep those holding a seed pixel and at
least ``min_npix`` pixels", which is what :func:`find_islands` does with one
:func:`scipy.ndimage.label` call and a few vectorised reductions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from caesar_rest.sourcefinder._types import F32, I32
from caesar_rest.sourcefinder.bands import row_bands

#: 4-connectivity (the flood fill of the spec).
CROSS = ndimage.generate_binary_structure(2, 1)


def label_counts(labels: I32, n: int) -> npt.NDArray[np.int64]:
    """Pixels per label ``0..n`` (``np.bincount`` by blocks of rows).

    Parameters
    ----------
    labels
        Label image.
    n
        Largest label.

    Returns
    -------
    numpy.ndarray
        ``n + 1`` counts.
    """
    counts = np.zeros(n + 1, dtype=np.int64)
    # By bands: np.bincount copies int32 labels as int64.
    for a, b in row_bands(*labels.shape):
        counts += np.bincount(labels[a:b].ravel(), minlength=n + 1)
    return counts


def relabel(labels: I32, keep: npt.NDArray[np.bool_]) -> tuple[I32, int]:
    """Keep the labels flagged in ``keep`` (index = label) and number them 1..n.

    Parameters
    ----------
    labels
        Label image (0 = background).
    keep
        Boolean array over labels ``0..max``; ``keep[0]`` is ignored.

    Returns
    -------
    labels, n
        The new label image and the number of labels kept.
    """
    keep = keep.copy()
    keep[0] = False
    lut = np.zeros(keep.size, dtype=np.int32)
    n = int(np.count_nonzero(keep))
    lut[keep] = np.arange(1, n + 1, dtype=np.int32)
    # In place, by blocks: the label image is the largest array of the step.
    for a, b in row_bands(*labels.shape):
        labels[a:b] = lut[labels[a:b]]
    return labels, n


def label_mask(mask: npt.NDArray[np.bool_], min_npix: int) -> tuple[I32, int]:
    """Connected regions (4-connected) of a mask with at least ``min_npix`` pixels.

    Parameters
    ----------
    mask
        Boolean image.
    min_npix
        Minimum number of pixels of a region.

    Returns
    -------
    labels, n
        int32 label image (0 = outside) and the number of regions.
    """
    labels = np.zeros(mask.shape, dtype=np.int32)
    n = int(ndimage.label(mask, structure=CROSS, output=labels))
    if n == 0:
        return labels, 0
    return relabel(labels, label_counts(labels, n) >= max(1, min_npix))


def find_islands(
    z: F32,
    seed_thr: float,
    merge_thr: float,
    min_npix: int,
    negative: bool = False,
) -> tuple[I32, int]:
    """Islands of a significance map.

    Parameters
    ----------
    z
        Significance map (NaN = blank, never part of an island).
    seed_thr
        Seed threshold (sigma).
    merge_thr
        Growth threshold (sigma); pixels at or above it join the island of a touching seed.
    min_npix
        Minimum number of pixels of an island.
    negative
        Search negative excesses instead (``Z <= -seed`` grown over ``Z <= -merge``).

    Returns
    -------
    labels, n
        int32 label image (0 = no island) and the number of islands.
    """
    zz = -z if negative else z
    return find_islands_banded([(0, z.shape[0], zz)], z.shape, seed_thr, merge_thr, min_npix)


def find_islands_banded(
    bands: Iterable[tuple[int, int, F32]],
    shape: tuple[int, int],
    seed_thr: float,
    merge_thr: float,
    min_npix: int,
) -> tuple[I32, int]:
    """:func:`find_islands` of a significance map given by bands of rows.

    Only the growth mask is image-sized; seed pixels are kept as flat indices (few), so the
    significance map never needs to exist whole.

    Parameters
    ----------
    bands
        ``(y0, y1, z)`` for consecutive row ranges covering the image.
    shape
        Image shape.
    seed_thr, merge_thr, min_npix
        As for :func:`find_islands`.

    Returns
    -------
    labels, n
        As for :func:`find_islands`.
    """
    grow = np.zeros(shape, dtype=bool)
    seeds: list[npt.NDArray[np.intp]] = []
    lo = min(merge_thr, seed_thr)
    nx = shape[1]
    with np.errstate(invalid="ignore"):
        for y0, y1, z in bands:
            np.greater_equal(z, lo, out=grow[y0:y1])
            seeds.append(np.flatnonzero(z >= seed_thr) + y0 * nx)
    labels = np.zeros(shape, dtype=np.int32)
    n = int(ndimage.label(grow, structure=CROSS, output=labels))
    del grow
    if n == 0:
        return labels, 0
    seeded = np.zeros(n + 1, dtype=bool)
    seeded[np.unique(labels.ravel()[np.concatenate(seeds)])] = True
    return relabel(labels, seeded & (label_counts(labels, n) >= max(1, min_npix)))


def iterative_search(
    data: F32,
    z: F32,
    seed_thr: float,
    merge_thr: float,
    min_npix: int,
    n_iters: int = 1,
    seed_step: float = 0.5,
    recompute_z: Callable[[F32], F32] | None = None,
) -> tuple[I32, int]:
    """Compact search with ``n_iters`` iterations (spec 3.4).

    After each iteration the islands found are blanked in a working copy, the significance is
    recomputed on it (``recompute_z``) and the seed threshold lowered by ``seed_step`` (never
    to or below the merge threshold). The union of all islands is then split into 4-connected
    components of at least ``min_npix`` pixels.

    Parameters
    ----------
    data
        The image (NaN = blank).
    z
        Significance map of the first iteration.
    seed_thr, merge_thr, min_npix
        Flood-fill parameters.
    n_iters
        Number of iterations (1 = a single search).
    seed_step
        Seed decrease per iteration.
    recompute_z
        Function giving the significance map of a masked image (background re-estimated);
        required when ``n_iters > 1``.

    Returns
    -------
    labels, n
        The final islands.
    """
    labels, n = find_islands(z, seed_thr, merge_thr, min_npix)
    if n_iters <= 1 or n == 0 or recompute_z is None:
        return labels, n
    union = labels > 0
    work = data.copy()
    seed = seed_thr
    for _ in range(1, n_iters):
        if seed - seed_step > merge_thr:
            seed -= seed_step
        # Upstream masks with 0; NaN keeps the found pixels out of every statistic (spec 2.1).
        work[union] = np.nan
        zk = recompute_z(work)
        lab_k, n_k = find_islands(zk, seed, merge_thr, min_npix)
        del zk
        if n_k == 0:
            break
        union |= lab_k > 0
    return label_mask(union, min_npix)
