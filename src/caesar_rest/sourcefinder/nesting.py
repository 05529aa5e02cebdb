"""Nested sources: multi-scale Laplacian-of-Gaussian blobs inside large islands (spec 4).

For each island larger than ``nested_beams_thr`` beams, the scale-normalised LoG response
``-sigma^2 * LoG`` of the image is computed on a cut-out around it for every scale
``sigma_min .. sigma_max`` (spec 4.1). The response is turned into a significance with the
local noise map times a factor that converts image noise into LoG-response noise for
beam-correlated noise (computed once, deterministically, on simulated noise, so that every tile
of a large image uses the same value). Peaks above ``nested_peak_zthr`` are grouped across
scales (keeping the strongest response), grown over ``nested_merge_zthr`` and intersected with
the island: the 4-connected pieces of at least ``min_npix`` pixels are the nested sources
(spec 4.3, with the single-candidate rule).

Deviation: the LoG comes from :func:`scipy.ndimage.gaussian_laplace` (separable, truncated at
>= 4 sigma) instead of an explicit zero-sum kernel of ``nested_kern_factor * sigma`` pixels; a
kernel narrower than +-3 sigma would truncate the LoG.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import lru_cache

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from caesar_rest.sourcefinder._types import F32, F64, FWHM
from caesar_rest.sourcefinder.detection import CROSS
from caesar_rest.sourcefinder.islands import MORPH_COMPACT, IslandSet

#: ``read(x0, x1, y0, y1)`` returns the image (NaN = blank) in full-image pixel ranges.
Reader = Callable[[int, int, int, int], F32]


def blob_scales(
    beam_pix_min: float, min_scale: float, max_scale: float, step: float
) -> list[float]:
    """LoG scales (sigma, pixels) of spec 4.1.

    Parameters
    ----------
    beam_pix_min
        Beam minor FWHM in pixels.
    min_scale, max_scale
        Scale range in units of the beam FWHM.
    step
        Step in pixels of sigma.

    Returns
    -------
    list of float
        The scales.
    """
    smin = max(min_scale * beam_pix_min / FWHM, 0.5)
    smax = max(max_scale * beam_pix_min / FWHM, smin)
    if step <= 0:
        return [smin]
    n = int((smax - smin) / step)
    return [smin + i * step for i in range(n + 1)]


def _beam_kernel(sx: float, sy: float, th: float) -> F64:
    half = int(math.ceil(4.0 * max(sx, sy)))
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    c, s = math.cos(th), math.sin(th)
    u = xx * c + yy * s
    w = -xx * s + yy * c
    k = np.exp(-0.5 * ((u / sx) ** 2 + (w / sy) ** 2))
    return np.asarray(k / math.sqrt((k * k).sum()))


@lru_cache(maxsize=32)
def log_noise_factor(sx: float, sy: float, th: float, scale: float, truncate: float) -> float:
    """Standard deviation of the LoG response to unit-rms beam-correlated noise.

    Parameters
    ----------
    sx, sy, th
        Beam sigma (pixels) and angle (radians from +x).
    scale
        LoG sigma (pixels).
    truncate
        LoG truncation (in sigma).

    Returns
    -------
    float
        The factor (deterministic: fixed random seed).
    """
    noise = beam_noise(sx, sy, th)
    # The factor is the spread of the response's centre (48 pixels in from every edge), which
    # depends only on the noise within the LoG's radius of it: the response is made on that
    # part alone (the same values, its correlations never reaching the part's edges there).
    a = max(_FACTOR_EDGE - int(truncate * float(scale) + 0.5), 0)
    part = noise[a : noise.shape[0] - a, a : noise.shape[1] - a]
    resp = -(scale**2) * ndimage.gaussian_laplace(part, scale, truncate=truncate)
    c = _FACTOR_EDGE - a
    return float(resp[c:-c, c:-c].std())


#: Pixels left out on every edge of the noise's LoG response by :func:`log_noise_factor`.
_FACTOR_EDGE = 48


@lru_cache(maxsize=4)
def beam_noise(sx: float, sy: float, th: float) -> F64:
    """Unit-rms beam-correlated noise, 256 x 256 (fixed seed): the input of
    :func:`log_noise_factor`, made once per beam for all the scales (the convolution is most
    of the factor's cost).

    Parameters
    ----------
    sx, sy, th
        Beam sigma (pixels) and angle (radians from +x).

    Returns
    -------
    numpy.ndarray
        The noise (read-only: it is shared by the scales).
    """
    n = 256
    rng = np.random.default_rng(20240130)
    white = rng.standard_normal((n, n))
    # Direct convolution with zero fill (equal to an FFT "same" convolution for this odd
    # kernel); scipy.signal would cost ~40 MiB and 0.7 s of import in every job.
    noise: F64 = ndimage.convolve(white, _beam_kernel(sx, sy, th), mode="constant", cval=0.0)
    noise /= noise[32:-32, 32:-32].std()
    noise.flags.writeable = False
    return noise


def log_response(cut: F32, scale: float, truncate: float) -> F32:
    """Scale-normalised, negated LoG (bright blobs give positive values); blanks are 0.

    Parameters
    ----------
    cut
        Image cut-out (NaN = blank).
    scale
        Sigma in pixels.
    truncate
        Truncation in sigma.

    Returns
    -------
    numpy.ndarray
        The response, 0 where the input is blank.
    """
    blank = ~np.isfinite(cut)
    return _filled_log_response(
        np.where(blank, 0.0, cut).astype(np.float32), blank, scale, truncate
    )


def _filled_log_response(
    filled: F32, blank: npt.NDArray[np.bool_], scale: float, truncate: float
) -> F32:
    """:func:`log_response` of a cut-out whose blanks (``blank``) are already 0 in ``filled``."""
    resp = -(scale**2) * gaussian_laplace(filled, scale, truncate)
    resp[blank] = 0.0
    return np.asarray(resp, dtype=np.float32)


@lru_cache(maxsize=64)
def _correlation_weights(sigma: float, order: int, truncate: float) -> F64:
    """The weights :func:`scipy.ndimage.gaussian_filter1d` correlates with: its filter of a
    unit impulse (one product of each weight with 1, the others with 0: the weights' bits),
    reversed."""
    radius = int(truncate * float(sigma) + 0.5)
    impulse = np.zeros(2 * radius + 1)
    impulse[radius] = 1.0
    kernel = ndimage.gaussian_filter1d(
        impulse, sigma, order=order, mode="constant", truncate=truncate
    )
    weights: F64 = np.ascontiguousarray(kernel[::-1])
    weights.flags.writeable = False
    return weights


def gaussian_laplace(image: F32, sigma: float, truncate: float) -> F32:
    """:func:`scipy.ndimage.gaussian_laplace` of a 2-D float32 image (mode ``reflect``), with
    the 1-D kernels made once per scale instead of at every call: the same four
    correlations in the same order, so the same values.

    Parameters
    ----------
    image
        The image.
    sigma
        Gaussian sigma (pixels).
    truncate
        Truncation in sigma.

    Returns
    -------
    numpy.ndarray
        The Laplacian of the Gaussian-smoothed image (float32).
    """
    w0 = _correlation_weights(sigma, 0, truncate)
    w2 = _correlation_weights(sigma, 2, truncate)
    out = np.zeros(image.shape, dtype=image.dtype)
    ndimage.correlate1d(image, w2, 0, out, "reflect", 0.0, 0)
    ndimage.correlate1d(out, w0, 1, out, "reflect", 0.0, 0)
    tmp = np.zeros(image.shape, dtype=image.dtype)
    ndimage.correlate1d(image, w0, 0, tmp, "reflect", 0.0, 0)
    ndimage.correlate1d(tmp, w2, 1, tmp, "reflect", 0.0, 0)
    out += tmp
    return out


def _blob_mask(
    sub: F32,
    inside: npt.NDArray[np.bool_],
    rms_cut: F32,
    scales: list[float],
    factors: list[float],
    truncate: float,
    peak_zthr: float,
    merge_zthr: float,
    min_npix: int,
    blob_thr: float,
) -> npt.NDArray[np.bool_] | None:
    """Blobs of a cut-out (spec 4.3): LoG peaks of every scale, grouped across scales, grown
    in their scale's significance map; None when no scale has a peak."""
    blob = np.zeros(sub.shape, dtype=bool)
    peaks: list[tuple[float, int, int, int]] = []
    zmaps: list[F32] = []
    blank = ~np.isfinite(sub)
    filled = np.where(blank, 0.0, sub).astype(np.float32)  # once for every scale
    for k, (s, f) in enumerate(zip(scales, factors, strict=True)):
        resp = _filled_log_response(filled, blank, s, truncate)
        if blob_thr > 0:
            pos = resp[resp > 0]
            if pos.size:
                resp[resp < blob_thr * float(np.median(pos))] = 0.0
        zs = np.where(inside, resp / (f * rms_cut), 0.0).astype(np.float32)
        zmaps.append(zs)
        mx = ndimage.maximum_filter(zs, size=3, mode="constant", cval=0.0)
        pk = (zs == mx) & (zs >= peak_zthr) & inside
        pk[0, :] = pk[-1, :] = pk[:, 0] = pk[:, -1] = False
        for py, px in zip(*np.nonzero(pk), strict=True):
            peaks.append((float(resp[py, px]), int(px), int(py), k))
    if not peaks:
        return None
    # Cross-scale grouping: peaks within 2 px in x and y; keep the strongest response.
    peaks.sort(reverse=True)
    kept: list[tuple[float, int, int, int]] = []
    for p in peaks:
        if all(abs(p[1] - q[1]) > 2 or abs(p[2] - q[2]) > 2 for q in kept):
            kept.append(p)
    for _, px, py, k in kept:
        grow = zmaps[k] >= max(0.0, merge_zthr)
        lab, _ = ndimage.label(grow, structure=CROSS)
        if lab[py, px] == 0:
            continue
        region = lab == lab[py, px]
        if np.count_nonzero(region) >= min_npix:
            blob |= region
    return blob


def nested_sources(
    isl: IslandSet,
    eligible: npt.NDArray[np.bool_],
    read: Reader,
    beam_sigma: tuple[float, float, float],
    scales: list[float],
    peak_zthr: float = 5.0,
    merge_zthr: float = 2.5,
    min_npix: int = 5,
    min_mother_dist: float = 2.0,
    max_pix_match: float = 0.5,
    blob_thr: float = 0.0,
    kern_factor: float = 1.0,
) -> IslandSet:
    """Nested sources of the eligible islands.

    Parameters
    ----------
    isl
        Islands (measured; pixel coordinates in full-image pixels).
    eligible
        Islands to search.
    read
        Image reader (full-image pixel ranges).
    beam_sigma
        Beam (sigma_major, sigma_minor, theta) in pixels/radians.
    scales
        LoG scales (pixels).
    peak_zthr, merge_zthr
        Peak and growth significance in the LoG map.
    min_npix
        Minimum pixels of a nested source.
    min_mother_dist, max_pix_match
        Single-candidate rule (spec 4.3.5).
    blob_thr
        Response threshold factor (times the median positive response).
    kern_factor
        LoG kernel size in sigma (at least 8 is used: +-4 sigma).

    Returns
    -------
    IslandSet
        Nested sources, ``parent`` = index of the mother in ``isl``.
    """
    truncate = max(kern_factor / 2.0, 4.0)
    factors = [log_noise_factor(*beam_sigma, s, truncate) for s in scales]
    margin = int(math.ceil(truncate * max(scales))) + 1
    out_x: list[npt.NDArray[np.int32]] = []
    out_y: list[npt.NDArray[np.int32]] = []
    out_f: list[F32] = []
    out_b: list[F32] = []
    out_r: list[F32] = []
    sizes: list[int] = []
    parents: list[int] = []
    for i in np.flatnonzero(eligible):
        sl = isl.pixels(int(i))
        xs, ys = isl.xs[sl], isl.ys[sl]
        x0, x1 = int(isl.xmin[i]) - margin, int(isl.xmax[i]) + margin + 1
        y0, y1 = int(isl.ymin[i]) - margin, int(isl.ymax[i]) + margin + 1
        cut = read(x0, x1, y0, y1)
        # The reader clips to the image; keep track of the actual origin.
        cx0, cy0 = max(x0, 0), max(y0, 0)
        ly, lx = ys - cy0, xs - cx0
        inside = np.zeros(cut.shape, dtype=bool)
        inside[ly, lx] = True
        bkg_cut = np.zeros(cut.shape, dtype=np.float32)
        rms_cut = np.ones(cut.shape, dtype=np.float32)
        bkg_cut[ly, lx] = isl.bkg[sl]
        rms_cut[ly, lx] = isl.rms[sl]
        # Subtract the island's mean background everywhere, the local one on the island.
        sub = cut - np.float32(isl.bkg_sum[i] / isl.npix[i])
        sub[ly, lx] = isl.flux[sl] - isl.bkg[sl]
        blob = _blob_mask(
            sub,
            inside,
            rms_cut,
            scales,
            factors,
            truncate,
            peak_zthr,
            merge_zthr,
            min_npix,
            blob_thr,
        )
        if blob is None:
            continue
        cand, nc = ndimage.label(blob & inside, structure=CROSS)
        if nc == 0:
            continue
        counts = np.bincount(cand.ravel(), minlength=nc + 1)
        good = [j for j in range(1, nc + 1) if counts[j] >= min_npix]
        if len(good) == 1:
            j = good[0]
            cy, cx = np.nonzero(cand == j)
            far = (
                abs(float(cx.mean()) + cx0 - isl.x0[i]) > min_mother_dist
                or abs(float(cy.mean()) + cy0 - isl.y0[i]) > min_mother_dist
            )
            if not (far or counts[j] / isl.npix[i] < max_pix_match):
                continue
        for j in good:
            cy, cx = np.nonzero(cand == j)
            out_x.append((cx + cx0).astype(np.int32))
            out_y.append((cy + cy0).astype(np.int32))
            out_f.append((sub[cy, cx] + bkg_cut[cy, cx]).astype(np.float32))
            out_b.append(bkg_cut[cy, cx])
            out_r.append(rms_cut[cy, cx])
            sizes.append(int(cx.size))
            parents.append(int(i))
    n = len(sizes)
    res = IslandSet(
        offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        xs=np.concatenate(out_x) if n else np.zeros(0, dtype=np.int32),
        ys=np.concatenate(out_y) if n else np.zeros(0, dtype=np.int32),
        flux=np.concatenate(out_f) if n else np.zeros(0, dtype=np.float32),
        bkg=np.concatenate(out_b) if n else np.zeros(0, dtype=np.float32),
        rms=np.concatenate(out_r) if n else np.zeros(0, dtype=np.float32),
        morph=np.full(n, MORPH_COMPACT, dtype=np.int64),
        parent=np.array(parents, dtype=np.int64),
        border=isl.border[np.array(parents, dtype=np.int64)] if n else np.zeros(0, dtype=bool),
        good=np.ones(n, dtype=bool),
    )
    return res.measure()
