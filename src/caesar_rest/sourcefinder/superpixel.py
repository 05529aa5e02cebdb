"""Extended sources: superpixels merged hierarchically (spec 5.3, ``extsfinder=SP-HIERCLUST``).

Like the other methods, it runs on the block means of the search image (reduced by
``2**(wtscalemin - 1)``; sizes in full-image pixels are divided by the block size).

1. The block means in units of their robust noise (``z``), smoothed by a Gaussian of
   :data:`SMOOTH` reduced pixels (back to unit noise), clipped to ``[0, 10]`` and rescaled
   to [1, 256], are cut in SLIC superpixels of about ``sp-size`` pixels a side, regularisation
   ``sp-beta``, smallest region ``sp-minarea`` (scikit-image's ``slic``, as the saliency
   search: :func:`caesar_rest.sourcefinder.saliency.superpixels`). The region statistics
   below use the unsmoothed ``z``.
2. Hierarchical merging, level by level (the spec's scheme, with a dissimilarity that has a
   statistical meaning): for every pair of adjacent regions, ``D = |mean_i - mean_j| /
   sqrt(1/n_i + 1/n_j)``, the difference of their mean ``z`` in units of its noise. Each
   region proposes its least dissimilar neighbour; pairs that propose each other and have
   ``D <`` :data:`MERGE_THR` merge. Levels go on until one merges nothing (at most
   :data:`MAX_LEVELS`). Background regions merge into a few large ones; a structure stays
   apart as long as its mean differs significantly from its surroundings'.
3. A merged region is signal when its mean is at least :data:`SIGNAL_MEAN` (noise units of a
   block mean) and its significance ``mean x sqrt(n)`` reaches ``seedthr``, or when at least
   :data:`SEED_SHARE` of its pixels are seeds (the spec's markers by majority vote; the seeds
   are the wavelet search's mask, as for the active contours, in place of the thresholded
   saliency map). Their union, back at full resolution, in 4-connected parts, gives the
   extended islands.

The spec's version also tags background markers, weighs in curvature and edge maps and
ranks regions by PageRank; none of those has an option in the predecessor's app
(only ``sp-size``, ``sp-beta``, ``sp-minarea``), and the test of step 2 replaces its
arbitrary-unit dissimilarity thresholds.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from caesar_rest.sourcefinder._types import F32, F64, B
from caesar_rest.sourcefinder.activecontour import (
    Z_HI,
    Z_LO,
    noise_units,
    seed_mask,
    smoothed_significance,
)
from caesar_rest.sourcefinder.extended import expand, reduction
from caesar_rest.sourcefinder.options import FinderOptions
from caesar_rest.sourcefinder.saliency import superpixels

#: Adjacent regions merge while their means differ by less than this many noise units.
MERGE_THR = 3.0
#: Most merging levels.
MAX_LEVELS = 200
#: Smallest mean (noise units of a block mean) of a signal region.
SIGNAL_MEAN = 0.7
#: Gaussian smoothing (reduced pixels) of the image the superpixels are cut in.
SMOOTH = 1.0
#: Share of seed pixels that makes a merged region signal (the spec's majority vote).
SEED_SHARE = 0.5

Ints = npt.NDArray[np.intp]


def adjacent_pairs(labels: Ints) -> Ints:
    """Unique pairs ``(a, b)``, ``a < b``, of 4-adjacent labels.

    Parameters
    ----------
    labels
        Label image.

    Returns
    -------
    numpy.ndarray
        ``(n, 2)`` pairs.
    """
    a = np.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()])
    b = np.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()])
    diff = a != b
    return _unique_pairs(a[diff], b[diff])


def _unique_pairs(a: Ints, b: Ints) -> Ints:
    """Unique ``(min, max)`` pairs of two label arrays, as an ``(n, 2)`` array."""
    if a.size == 0:
        return np.zeros((0, 2), dtype=np.intp)
    lo, hi = np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)
    n = int(hi.max()) + 1
    code = np.unique(lo * n + hi)
    return np.stack([code // n, code % n], axis=1).astype(np.intp)


def merge_regions(sums: F64, counts: F64, pairs: Ints, thr: float = MERGE_THR) -> Ints:
    """Hierarchical merging of adjacent regions (module notes, step 2).

    Parameters
    ----------
    sums, counts
        Per region: sum of ``z`` and number of pixels.
    pairs
        Adjacent region pairs.
    thr
        Merge threshold (noise units of the difference of the means).

    Returns
    -------
    numpy.ndarray
        Per region: the label of the merged region it belongs to (a representative region).
    """
    n = sums.size
    root = np.arange(n)
    s, c = sums.astype(np.float64).copy(), counts.astype(np.float64).copy()
    for _ in range(MAX_LEVELS):
        a, b = root[pairs[:, 0]], root[pairs[:, 1]]
        keep = (a != b) & (c[a] > 0) & (c[b] > 0)
        a, b = a[keep], b[keep]
        if a.size == 0:
            break
        ab = _unique_pairs(a, b)
        a, b = ab[:, 0], ab[:, 1]
        d = np.abs(s[a] / c[a] - s[b] / c[b]) / np.sqrt(1.0 / c[a] + 1.0 / c[b])
        best_d = np.full(n, np.inf)
        np.minimum.at(best_d, a, d)
        np.minimum.at(best_d, b, d)
        best = np.full(n, -1)
        # Each region's least dissimilar neighbour (ties: the last written wins, the same
        # way for both ends).
        at_a, at_b = d == best_d[a], d == best_d[b]
        best[a[at_a]] = b[at_a]
        best[b[at_b]] = a[at_b]
        mutual = (best[a] == b) & (best[b] == a) & (d < thr)
        if not mutual.any():
            break
        ma, mb = a[mutual], b[mutual]
        s[ma] += s[mb]
        c[ma] += c[mb]
        c[mb] = 0.0
        target = np.arange(n)
        target[mb] = ma
        root = target[root]
    return root


def superpixel_mask_reduced(
    small: F32,
    shape: tuple[int, int],
    blank: B,
    opts: FinderOptions,
    want_map: bool = True,
) -> tuple[B, F32 | None]:
    """Full-resolution mask of the superpixel search (and its map when wanted).

    Parameters
    ----------
    small
        Block means of the search image, block ``2**(wtscalemin - 1)``.
    shape
        Full image shape.
    blank
        Blank pixels of the full image.
    opts
        Finder options (``superpixel.size``, ``saliency.beta``, ``saliency.min_area``,
        ``compact.seed_thr``, ``extended.wt_scale_min``).
    want_map
        Also return the map: the mean ``z`` of each merged region (full resolution).

    Returns
    -------
    mask, map
        As :func:`caesar_rest.sourcefinder.extended.wavelet_mask_reduced`.
    """
    f = reduction(opts.extended.wt_scale_min)
    z, valid = noise_units(small)
    mask = np.zeros(small.shape, dtype=bool)
    means = np.zeros(small.shape, dtype=np.float32)
    if np.count_nonzero(valid) >= 16:
        zs = smoothed_significance(z, valid, SMOOTH)
        img = (1.0 + 255.0 * (np.clip(zs, Z_LO, Z_HI) - Z_LO) / (Z_HI - Z_LO)).astype(np.float32)
        size = max(2, round(opts.superpixel.size / f))
        min_area = max(1, round(opts.saliency.min_area / f**2))
        labels = superpixels(img, size, opts.saliency.beta, min_area)
        nlab = int(labels.max()) + 1
        zv = np.where(valid, z, 0.0)
        sums = np.bincount(labels.ravel(), weights=zv.ravel(), minlength=nlab).astype(np.float64)
        counts = np.bincount(
            labels.ravel(), weights=valid.ravel().astype(np.float64), minlength=nlab
        ).astype(np.float64)
        root = merge_regions(sums, counts, adjacent_pairs(labels))
        msum = np.bincount(root, weights=sums, minlength=nlab)
        mcnt = np.bincount(root, weights=counts, minlength=nlab)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(mcnt > 0, msum / np.maximum(mcnt, 1.0), 0.0)
        signal = (mean >= SIGNAL_MEAN) & (mean * np.sqrt(mcnt) >= opts.compact.seed_thr)
        # The spec's markers: a merged region whose pixels are mostly seeds is signal too.
        seeds = seed_mask(small, shape, blank, opts) & valid
        nseed = np.bincount(
            labels.ravel(), weights=seeds.ravel().astype(np.float64), minlength=nlab
        )
        mseed = np.bincount(root, weights=nseed, minlength=nlab)
        signal |= (mcnt > 0) & (mseed >= SEED_SHARE * mcnt)
        region = root[labels]
        mask = signal[region] & valid
        means = mean[region].astype(np.float32)
    out = expand(mask, f, shape)
    out[blank] = False
    return out, (expand(means, f, shape) if want_map else None)
