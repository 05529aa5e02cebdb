"""Extended sources: multi-resolution saliency thresholding (spec 5.2, ``extsfinder`` 4).

The spec's default extended method. Ours is the wavelet method (:mod:`.extended`), chosen on
the measured comparison in ``docs/sourcefinder.md`` ("Extended-source methods"); this one runs
when ``extsfinder=SALIENCY-THRESH`` is asked for.

Steps (on the block means of the search image, like the wavelet search; region sizes and
filter radii are divided by the block size):

0. Pre-smoothing (spec 5, on by default): the self-guided filter of He et al., radius
   ``guidedfilter-radius``, regularisation ``guidedfilter-eps x 255^2`` on the image rescaled
   to [1, 256]. ``smoothfilter=GAUSSIAN`` adds nothing: the block means already smooth more
   than the predecessor's 5 x 5, sigma 1 blur.
1. For each region size ``r`` in ``saliency-minreso..saliency-maxreso`` (step
   ``saliency-resostep``): SLIC superpixels of the image rescaled to [1, 256] (scikit-image's
   ``slic``). The regularisation ``sp-beta`` weighs the spatial distance in units of the
   region size against intensity differences in units of the image's range (compactness
   ``sqrt(beta)`` in scikit-image, which rescales intensities to [0, 1]). The predecessor
   (VLFeat) weighs it against intensities in [1, 256] units, i.e. 255^2 times less: on a
   residual image, whose range is small, that gives superpixels of a pixel or two instead of
   regions of size ``r``. For every region: its mean (median with
   ``saliency-userobustpars``) and centroid. For every pair: ``d = d_c / (1 + d_s)`` with the
   intensity distance divided by its largest value and the centroid distance by the diagonal
   of the centroids' bounding box (at least the largest pair distance, at most 1.42 times
   it), and
   ``D = exp(-100 d)``. A region's score is the mean of its ``K`` smallest ``D``
   (``K = max(10, round(saliency-nn x N))``): the regions least like the others score low.
   Saliency ``1 - (S - min S) / (max S - min S)``, painted on the region and rescaled to
   [1, 256]; its threshold ``saliency-thr x median`` (or the optimal one below). SLIC runs
   scikit-image's 10 iterations (the predecessor: up to 100, stopping on a 1e-5 relative
   energy change).
2. The maps are combined per pixel: where at least ``round(0.7 n)`` resolutions are above
   their threshold, the largest value if the pixel is above the image median, else the
   smallest of the mean map; elsewhere the smallest value over the resolutions.
3. The combined map (rescaled to [1, 256]) is cut at ``max(min(Otsu, valley),
   saliency-thr x median)`` from its 100-bin histogram (``saliency-nooptimalthr``: at
   ``saliency-thr x median``). Its 4-connected parts of at least ``npixmin`` pixels are the
   extended islands.

The all-pairs score costs ``N^2`` for ``N`` regions. Up to :data:`MAX_PARTNERS` regions it is
exact; beyond, each region is compared with a fixed random sample of that many regions (the
mean of the ``K`` smallest then estimates the same quantity with ``K`` scaled to the sample).
Blank pixels take no part (the spec's "I = 0" pixels: zeros mark blanks there). The pixels of
the removed compact sources are 0 in the background-subtracted search image, the background
value, and take part like any other (spec 5.1).

The block size is the wavelet search's, ``2**(wtscalemin - 1)``: both methods run on the
same block means. On a tiled image each tile has its own maps and thresholds, which are
relative to the tile's content, so the result depends on the tiling (the wavelet method's
thresholds are in units of the noise and do not).
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from caesar_rest.sourcefinder._types import F32, F64, B
from caesar_rest.sourcefinder.extended import expand
from caesar_rest.sourcefinder.options import SaliencySettings

#: Regions compared with each region at most (see the module notes).
MAX_PARTNERS = 4096
#: Decay of the dissimilarity (the spec's ``saliencyDissExpFalloffPar``).
ALPHA = 100.0
#: Weight of the spatial distance (``saliencySpatialDistRegPar``).
SPATIAL_REG = 1.0
#: Fraction of resolutions that must agree (``saliencyMultiResoCombThrFactor``).
COMB_THR = 0.7
#: Image threshold factor of the combination (``saliencyImgThrFactor``).
IMG_THR = 1.0


def rescale(img: F32, valid: B, lo: float = 1.0, hi: float = 256.0) -> F32:
    """Linear rescale of the valid pixels to ``[lo, hi]``.

    Parameters
    ----------
    img
        Image.
    valid
        Pixels to rescale (the others are set to ``lo``).
    lo, hi
        Output range.

    Returns
    -------
    numpy.ndarray
        The rescaled image (float32).
    """
    out = np.full(img.shape, lo, dtype=np.float32)
    if not valid.any():
        return out
    v = img[valid]
    vmin, vmax = float(v.min()), float(v.max())
    span = vmax - vmin
    out[valid] = lo if span <= 0 else lo + (hi - lo) * (v - vmin) / span
    return out


def guided_filter(img: F32, use: B, radius: float, eps: float) -> F32:
    """Self-guided filter of He et al. (edge-preserving smoothing), spec 5 pre-smoothing.

    The used pixels are rescaled to [1, 256] first; ``eps`` is in those units squared times
    ``255**2`` (the spec's 0.04 means ``0.04 * 255**2``). The result keeps the image's units.

    Parameters
    ----------
    img
        Image (NaN = blank).
    use
        Pixels taking part (others are left as they are).
    radius
        Window radius in pixels.
    eps
        Regularisation, as a fraction of ``255**2``.

    Returns
    -------
    numpy.ndarray
        The smoothed image.
    """
    if not use.any():
        return img
    v = img[use]
    vmin, vmax = float(v.min()), float(v.max())
    span = (vmax - vmin) or 1.0
    w = use.astype(np.float64)
    p = np.where(use, 1.0 + 255.0 * (img - vmin) / span, 0.0).astype(np.float64)
    size = max(1, int(round(2 * radius + 1)))
    # Box means over the used pixels only, so that blank neighbours do not pull them down.
    norm = np.asarray(ndimage.uniform_filter(w, size, mode="reflect"), dtype=np.float64)
    norm[norm <= 0] = 1.0

    def box(a: F64) -> F64:
        return np.asarray(ndimage.uniform_filter(a * w, size, mode="reflect")) / norm

    mean = box(p)
    var = np.maximum(box(p * p) - mean * mean, 0.0)
    den = var + eps * 255.0**2
    # eps = 0 on a flat window: keep the pixel (a = 1), not 0 / 0.
    a = np.divide(var, den, out=np.ones_like(var), where=den > 0)
    q = box(a) * p + box(mean - a * mean)
    out = img.copy()
    out[use] = (vmin + (q[use] - 1.0) * span / 255.0).astype(np.float32)
    return out


def superpixels(img: F32, size: int, beta: float, min_area: int) -> npt.NDArray[np.intp]:
    """SLIC superpixels of ``img`` (already in [1, 256]) of about ``size`` pixels a side.

    Parameters
    ----------
    img
        Image in [1, 256].
    size
        Region size in pixels.
    beta
        Regularisation (see the module notes).
    min_area
        Smallest region in pixels.

    Returns
    -------
    numpy.ndarray
        Labels ``0..n-1``. Blank pixels (set to 1 by :func:`rescale`) are segmented like the
        others and left out of the region statistics by the caller: scikit-image's masked SLIC
        seeds with k-means and a dense distance matrix of the regions, quadratic in their
        number.
    """
    from skimage.segmentation import slic

    ny, nx = img.shape
    n_seg = max(1, math.ceil(ny / size) * math.ceil(nx / size))
    labels = slic(
        img.astype(np.float64),
        n_segments=n_seg,
        compactness=math.sqrt(beta),
        channel_axis=None,
        start_label=0,
        enforce_connectivity=True,
        min_size_factor=min(1.0, min_area / float(size * size)),
        max_num_iter=10,
    )
    return np.asarray(labels, dtype=np.intp)


def region_scores(
    mu: F64, cy: F64, cx: F64, nn_factor: float, rng: np.random.Generator | None = None
) -> F64:
    """Score ``S_i``: mean of the ``K`` smallest dissimilarities ``D_ij`` of each region.

    Parameters
    ----------
    mu, cy, cx
        Per-region intensity and centroid.
    nn_factor
        ``K = max(10, round(nn_factor N))``, at most ``N``.
    rng
        Sampler of partners when ``N > MAX_PARTNERS`` (default: fixed seed).

    Returns
    -------
    numpy.ndarray
        ``S`` per region.
    """
    n = mu.size
    k = min(n, max(10, round(nn_factor * n)))
    partners = np.arange(n)
    if n > MAX_PARTNERS:
        rng = rng or np.random.default_rng(12345)
        partners = np.sort(rng.choice(n, MAX_PARTNERS, replace=False))
        k = max(1, round(k * MAX_PARTNERS / n))
    # Normalisation over all pairs: the smallest distance is 0 (a region with itself).
    dc_max = float(mu.max() - mu.min()) or 1.0
    span = math.hypot(float(cy.max() - cy.min()), float(cx.max() - cx.min())) or 1.0
    pm, py, px = mu[partners], cy[partners], cx[partners]
    scores = np.empty(n)
    chunk = max(1, 1_000_000 // partners.size)  # ~8 MB per pair array
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        dc = np.abs(mu[a:b, None] - pm[None, :]) / dc_max
        ds = np.hypot(cy[a:b, None] - py[None, :], cx[a:b, None] - px[None, :]) / span
        d = np.exp(-ALPHA * dc / (1.0 + SPATIAL_REG * ds))
        if k < partners.size:
            d = np.partition(d, k - 1, axis=1)[:, :k]
        scores[a:b] = d.mean(axis=1)
    return scores


def _region_stats(
    img: F32, labels: npt.NDArray[np.intp], use: B, robust: bool
) -> tuple[npt.NDArray[np.intp], F64, F64, F64]:
    """Regions with used pixels: their ids, intensity (mean or median) and centroid."""
    n = int(labels.max()) + 1
    lab = labels[use]
    counts = np.bincount(lab, minlength=n)
    ids = np.flatnonzero(counts)
    yy, xx = np.nonzero(use)
    cy = np.bincount(lab, weights=yy, minlength=n)[ids] / counts[ids]
    cx = np.bincount(lab, weights=xx, minlength=n)[ids] / counts[ids]
    vals = img[use]
    if robust:
        mu = np.asarray(ndimage.median(vals, lab, ids), dtype=np.float64)
    else:
        mu = np.bincount(lab, weights=vals, minlength=n)[ids] / counts[ids]
    return ids, mu, cy, cx


def saliency_at(
    img: F32, use: B, size: int, s: SaliencySettings, min_area: int
) -> tuple[F32, float]:
    """Saliency map of one resolution and its threshold.

    Parameters
    ----------
    img
        Search image (block means).
    use
        Pixels taking part.
    size
        Region size in pixels of ``img``.
    s
        Settings.
    min_area
        Smallest region in pixels of ``img``.

    Returns
    -------
    saliency, threshold
        The map in [1, 256] (0 where unused) and its threshold (inf when there are fewer than
        two regions).
    """
    scaled = rescale(img, use)
    labels = superpixels(scaled, size, s.beta, min_area)
    ids, mu, cy, cx = _region_stats(scaled, labels, use, s.robust)
    out = np.zeros(img.shape, dtype=np.float32)
    if ids.size < 2:
        return out, math.inf
    score = region_scores(mu, cy, cx, s.nn_factor)
    smin, smax = float(score.min()), float(score.max())
    sal = np.zeros(int(labels.max()) + 1)
    sal[ids] = 1.0 - (score - smin) / (smax - smin) if smax > smin else 0.0
    painted = sal[labels[use]]
    pmin, pmax = float(painted.min()), float(painted.max())
    out[use] = 1.0 + 255.0 * (painted - pmin) / (pmax - pmin) if pmax > pmin else 1.0
    thr = (
        optimal_threshold(out[use], s.thr_factor)
        if s.optimal_thr
        else s.thr_factor * float(np.median(out[use]))
    )
    return out, thr


def optimal_threshold(values: F32, thr_factor: float) -> float:
    """``max(min(Otsu, valley), thr_factor x median)`` from a smoothed 100-bin histogram.

    Parameters
    ----------
    values
        Map values (valid pixels).
    thr_factor
        Factor on the median (the lowest threshold allowed).

    Returns
    -------
    float
        The threshold.
    """
    floor = thr_factor * float(np.median(values))
    hist, edges = np.histogram(values, bins=100)
    h = np.convolve(hist.astype(np.float64), np.ones(3) / 3.0, mode="same")
    centres = 0.5 * (edges[:-1] + edges[1:])
    # Otsu: the cut that maximises the between-class variance.
    w0 = np.cumsum(h)
    w1 = w0[-1] - w0
    m0 = np.cumsum(h * centres)
    mu0 = np.divide(m0, w0, out=np.zeros_like(m0), where=w0 > 0)
    mu1 = np.divide(m0[-1] - m0, w1, out=np.zeros_like(m0), where=w1 > 0)
    between = w0 * w1 * (mu0 - mu1) ** 2
    otsu = float(edges[int(np.argmax(between)) + 1])
    # Valley: the first bin after the third that is a minimum within +-1, +-2 and +-3 bins.
    valley = math.inf
    for i in range(3, h.size):
        if all(h[i] <= h[max(0, i - w) : i + w + 1].min() for w in (1, 2, 3)):
            valley = float(centres[i])
            break
    return max(min(otsu, valley), floor)


def saliency_map(img: F32, block: int, s: SaliencySettings) -> tuple[F32, B]:
    """Combined multi-resolution saliency of ``img`` (block means of the search image).

    Parameters
    ----------
    img
        The search image reduced by ``block`` (NaN = blank).
    block
        Block size (region sizes and areas are divided by it).
    s
        Settings.

    Returns
    -------
    saliency, use
        The map in [1, 256] (0 where unused) and the pixels that took part.
    """
    use = np.isfinite(img)
    out = np.zeros(img.shape, dtype=np.float32)
    if np.count_nonzero(use) < 16:
        return out, use
    if s.guided is not None and s.guided[0] > 0:
        img = guided_filter(img, use, s.guided[0] / block, s.guided[1])
    sizes = range(s.reso_min, s.reso_max + 1, max(1, s.reso_step))
    min_area = max(1, round(s.min_area / block**2))
    maps: list[F32] = []
    above = np.zeros(img.shape, dtype=np.int16)
    for r in sizes:
        m, thr = saliency_at(img, use, max(2, round(r / block)), s, min_area)
        above += m > thr
        maps.append(m)
    stack = np.stack(maps)
    mean_floor = float(stack.mean(axis=0)[use].min())
    bright = img > IMG_THR * float(np.median(img[use]))
    agreed = above >= round(COMB_THR * len(maps))
    comb = np.where(agreed, np.where(bright, stack.max(axis=0), mean_floor), stack.min(axis=0))
    vals = comb[use]
    vmin, vmax = float(vals.min()), float(vals.max())
    out[use] = 1.0 + 255.0 * (vals - vmin) / (vmax - vmin) if vmax > vmin else 1.0
    return out, use


def saliency_mask_reduced(
    small: F32,
    shape: tuple[int, int],
    blank: B,
    block: int,
    s: SaliencySettings,
    want_map: bool = True,
) -> tuple[B, F32 | None]:
    """Full-resolution mask of the salient pixels (and the map, when wanted).

    Parameters
    ----------
    small
        Block means of the search image (``extended.block_mean_rows``).
    shape
        Full image shape.
    blank
        Blank pixels of the full image.
    block
        Block size.
    s
        Settings.
    want_map
        Also return the full-resolution saliency map.

    Returns
    -------
    mask, saliency
        As :func:`caesar_rest.sourcefinder.extended.wavelet_mask_reduced`.
    """
    sal, use = saliency_map(small, block, s)
    if np.count_nonzero(use) >= 16:
        vals = sal[use]
        thr = (
            optimal_threshold(vals, s.thr_factor)
            if s.optimal_thr
            else s.thr_factor * float(np.median(vals))
        )
        mask = use & (sal >= thr)
    else:
        mask = np.zeros(small.shape, dtype=bool)
    full = expand(mask, block, shape)
    full[blank] = False
    return full, (expand(sal, block, shape) if want_map else None)
