"""Extended sources: active contours (spec 5.4, ``extsfinder=ACTIVE-CONTOUR``).

Like the other methods, it runs on the block means of the search image (the background-
subtracted image without its bright compact sources, reduced by ``2**(wtscalemin - 1)``).

1. Image: the block means in units of their robust noise, smoothed by a Gaussian of
   :data:`SMOOTH_SIGMA` reduced pixels and brought back to unit noise, clipped to
   ``[0, 10]`` (so that neither a few bright structures nor the negative side of the
   noise sets a mean alone) and scaled
   to ``[0, 255]`` (the predecessor's contours run on images rescaled to 8 bits; its default
   time step is for that range).
2. Initial contour (``ac-levelset``): ``SALIENCY``, the seeds, i.e. the mask of the wavelet
   search (:func:`caesar_rest.sourcefinder.extended.wavelet_mask_reduced`; the default
   here: the predecessor's binarised saliency map is replaced by the search map it trusts
   most); ``CIRCLE``, a centred disk of radius ``ac-levelsetsize`` x the smaller side (the
   predecessor's default); ``CHECKERBOARD``, squares of that side.
3. Evolution (``activecontour``):

   * ``CHANVESE``: the Chan-Vese level set, semi-implicit scheme of Getreuer (IPOL 2012, as
     scikit-image's ``chan_vese``, which lacks the area term, the length exponent and the grid
     step, hence this implementation): ``cv-nitersinner`` steps of time step
     ``cv-timestep`` per outer iteration, weights ``cv-lambda1`` (inside), ``cv-lambda2``
     (outside), ``cv-mu`` (length, to the power ``cv-p``), ``cv-nu`` (area), grid step
     ``cv-wsize``; every ``cv-nitersreinit`` outer iterations the level set is reset to the
     signed distance to its contour (clipped at 3 px).
   * ``LRAC``: a localised region-based contour (Lankton and Tannenbaum 2008) in the
     morphological form of Marquez-Neila et al. (scikit-image's ``morphological_chan_vese``,
     with the inside and outside means taken in a window of :data:`LRAC_RADIUS` reduced
     pixels around each boundary pixel instead of over the whole image): a boundary pixel goes
     inside when ``cv-lambda1 (I - c_in)^2 < cv-lambda2 (I - c_out)^2``, then one 3 x 3
     majority smoothing. Local means follow a faint structure next to a bright one, which one
     pair of global means cannot.

   Both stop after ``ac-niters`` steps, or when fewer pixels than ``ac-tolerance`` x the
   boundary length change side in an outer iteration. The steps are also capped by a work
   budget (:data:`MAX_WORK` pixel-steps, :func:`step_budget`: about 1,900 steps on the
   512 x 512 block means of a 2048 x 2048 image), so ``ac-niters`` (up to 100,000) cannot make
   a job spend unbounded CPU; a capped run logs a warning.
4. The inside, back at full resolution, in 4-connected parts; a part is kept when its
   significance ``sum(z) / sqrt(n)`` (block-mean noise units) reaches ``seedthr`` and the peak
   of the smoothed significance (in units of its own noise) :data:`PEAK_FACTOR` x ``seedthr``,
   which drops the noise the contour takes in without refusing a large faint structure.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from caesar_rest.sourcefinder._types import F32, F64, B
from caesar_rest.sourcefinder.extended import expand, reduction, wavelet_mask_reduced
from caesar_rest.sourcefinder.options import ContourSettings, FinderOptions

#: Clip of the noise-unit image before scaling to [0, 255].
Z_LO, Z_HI = 0.0, 10.0
#: Top of the scaled image.
SCALE = 255.0
#: Gaussian smoothing (reduced pixels) of the image the contour runs on.
SMOOTH_SIGMA = 2.0
#: Window radius (reduced pixels) of the LRAC local means.
LRAC_RADIUS = 8
#: Clip of the re-initialised signed distance (pixels).
REINIT_CLIP = 3.0
#: A kept part's peak of the smoothed significance is at least this times ``seedthr``.
PEAK_FACTOR = 0.7
#: Steps of one LRAC outer iteration.
LRAC_INNER = 1
#: Work budget of one contour evolution, in pixel-steps (steps x reduced pixels).
MAX_WORK = 500_000_000

_log = logging.getLogger(__name__)


def step_budget(n_iters: int, npix: int, max_work: int = MAX_WORK) -> int:
    """The steps allowed: ``n_iters`` capped by the work budget (at least 1).

    Parameters
    ----------
    n_iters
        Steps asked for (``ac-niters``).
    npix
        Pixels of the image the contour runs on.
    max_work
        Budget in pixel-steps.

    Returns
    -------
    int
        ``min(n_iters, max(1, max_work // npix))``.
    """
    return min(n_iters, max(1, max_work // max(npix, 1)))


def robust_sigma(vals: npt.NDArray[np.floating]) -> float:
    """Robust standard deviation (1.4826 x median absolute deviation)."""
    med = float(np.median(vals))
    return 1.4826 * float(np.median(np.abs(vals - med)))


def noise_units(small: F32) -> tuple[F64, B]:
    """The block means in units of their robust noise (median removed), NaN -> 0.

    Parameters
    ----------
    small
        Block means of the search image (NaN = blank).

    Returns
    -------
    z, valid
        Significance image and its valid pixels.
    """
    valid = np.isfinite(small)
    z = np.zeros(small.shape, dtype=np.float64)
    if np.count_nonzero(valid) < 16:
        return z, valid
    vals = small[valid].astype(np.float64)
    med, sig = float(np.median(vals)), robust_sigma(vals)
    if sig > 0:
        z[valid] = (vals - med) / sig
    return z, valid


def smoothed_significance(z: F64, valid: B, sigma: float = SMOOTH_SIGMA) -> F64:
    """``z`` smoothed by a Gaussian of ``sigma`` px, brought back to unit noise.

    Parameters
    ----------
    z
        Block means in noise units (:func:`noise_units`).
    valid
        Their valid pixels.
    sigma
        Gaussian sigma in reduced pixels.

    Returns
    -------
    numpy.ndarray
        The smoothed significance (its own robust noise is 1, whatever the noise correlation).
    """
    zs = np.asarray(ndimage.gaussian_filter(z, sigma), dtype=np.float64)
    if np.count_nonzero(valid) >= 16:
        sig = robust_sigma(zs[valid])
        if sig > 0:
            zs /= sig
    return zs


def contour_image(zs: F64, valid: B) -> F64:
    """The image the contour runs on (module notes, step 1).

    Parameters
    ----------
    zs
        Smoothed significance (:func:`smoothed_significance`).
    valid
        Its valid pixels.

    Returns
    -------
    numpy.ndarray
        Clipped image scaled to ``[0, SCALE]`` (0 on blanks).
    """
    img = SCALE * (np.clip(zs, Z_LO, Z_HI) - Z_LO) / (Z_HI - Z_LO)
    img[~valid] = 0.0
    return np.asarray(img, dtype=np.float64)


def initial_mask(shape: tuple[int, int], s: ContourSettings, seeds: B) -> B:
    """The initial inside (``ac-levelset``).

    Parameters
    ----------
    shape
        Reduced image shape.
    s
        Settings.
    seeds
        The seed mask (used by ``SALIENCY``).

    Returns
    -------
    numpy.ndarray
        Boolean inside.
    """
    ny, nx = shape
    size = max(1.0, s.init_size * min(ny, nx))
    if s.init == "SALIENCY":
        return seeds.copy()
    yy, xx = np.mgrid[0:ny, 0:nx]
    if s.init == "CIRCLE":
        return np.asarray((yy - (ny - 1) / 2) ** 2 + (xx - (nx - 1) / 2) ** 2 <= size**2)
    if s.init == "CHECKERBOARD":
        sq = max(1, round(size))
        return np.asarray(((yy // sq) + (xx // sq)) % 2 == 0)
    raise ValueError(f"unknown initial contour ac-levelset={s.init!r}")


def signed_distance(inside: B) -> F64:
    """Signed distance to the contour, positive inside, clipped at :data:`REINIT_CLIP`."""
    d_in = ndimage.distance_transform_edt(inside)
    d_out = ndimage.distance_transform_edt(~inside)
    phi = np.where(inside, d_in - 0.5, 0.5 - d_out)
    return np.asarray(np.clip(phi, -REINIT_CLIP, REINIT_CLIP), dtype=np.float64)


def boundary(inside: B) -> B:
    """Pixels of either side that have a 4-neighbour on the other side."""
    return np.asarray(
        ndimage.binary_dilation(inside) & ~ndimage.binary_erosion(inside, border_value=1)
    )


def chan_vese_step(phi: F64, img: F64, s: ContourSettings) -> F64:
    """One semi-implicit Chan-Vese step (Getreuer's scheme, Jacobi form).

    Parameters
    ----------
    phi
        Level set (inside where positive).
    img
        Image in [0, 255].
    s
        Settings (``dt``, ``h``, ``lambda1``, ``lambda2``, ``mu``, ``nu``, ``p``).

    Returns
    -------
    numpy.ndarray
        The new level set.
    """
    eta, h = 1e-16, max(s.h, 1e-6)
    pp = np.pad(phi, 1, mode="edge")
    c = pp[1:-1, 1:-1]
    xp, xn = pp[1:-1, 2:], pp[1:-1, :-2]
    yp, yn = pp[2:, 1:-1], pp[:-2, 1:-1]
    phix0, phiy0 = (xp - xn) / (2 * h), (yp - yn) / (2 * h)
    c1 = 1.0 / np.sqrt(eta + ((xp - c) / h) ** 2 + phiy0**2)
    c2 = 1.0 / np.sqrt(eta + ((c - xn) / h) ** 2 + phiy0**2)
    c3 = 1.0 / np.sqrt(eta + phix0**2 + ((yp - c) / h) ** 2)
    c4 = 1.0 / np.sqrt(eta + phix0**2 + ((c - yn) / h) ** 2)
    delta = h / (math.pi * (h * h + phi * phi))
    mu = s.mu
    if s.p != 1.0:
        # Length**p: the length term's weight is mu * p * length**(p - 1).
        length = float(np.sum(delta * np.hypot(phix0, phiy0))) * h * h
        mu = s.mu * s.p * max(length, 1e-6) ** (s.p - 1.0)
    inside = phi > 0
    n_in = int(np.count_nonzero(inside))
    m_in = float(img[inside].mean()) if n_in else 0.0
    m_out = float(img[~inside].mean()) if n_in < img.size else 0.0
    force = -s.lambda1 * (img - m_in) ** 2 + s.lambda2 * (img - m_out) ** 2 - s.nu
    k = mu / (h * h)
    num = phi + s.dt * delta * (k * (c1 * xp + c2 * xn + c3 * yp + c4 * yn) + force)
    return np.asarray(num / (1.0 + s.dt * delta * k * (c1 + c2 + c3 + c4)))


def lrac_step(inside: B, img: F64, s: ContourSettings) -> B:
    """One morphological localised region-based step (see the module notes).

    Parameters
    ----------
    inside
        Current inside.
    img
        Image in [0, 255].
    s
        Settings (``lambda1``, ``lambda2``).

    Returns
    -------
    numpy.ndarray
        The new inside.
    """
    size = 2 * LRAC_RADIUS + 1
    fin = inside.astype(np.float64)
    w_in = ndimage.uniform_filter(fin, size, mode="constant")
    w_out = ndimage.uniform_filter(1.0 - fin, size, mode="constant")
    s_in = ndimage.uniform_filter(img * fin, size, mode="constant")
    s_out = ndimage.uniform_filter(img * (1.0 - fin), size, mode="constant")
    with np.errstate(invalid="ignore", divide="ignore"):
        c_in = np.where(w_in > 0, s_in / np.maximum(w_in, 1e-12), 1.0)
        c_out = np.where(w_out > 0, s_out / np.maximum(w_out, 1e-12), 0.0)
    go_in = s.lambda1 * (img - c_in) ** 2 < s.lambda2 * (img - c_out) ** 2
    edge = boundary(inside)
    out = np.where(edge, go_in, inside)
    # 3 x 3 majority vote: the morphological curvature smoothing.
    votes = ndimage.uniform_filter(out.astype(np.float64), 3, mode="nearest")
    return np.asarray(votes > 0.5)


def evolve(img: F64, init: B, s: ContourSettings) -> tuple[B, int]:
    """Evolve the contour from ``init`` until it settles or ``n_iters`` steps are spent.

    Parameters
    ----------
    img
        Image in [0, 255].
    init
        Initial inside.
    s
        Settings.

    Returns
    -------
    inside, steps
        Final inside and the steps made (at most ``s.n_iters`` capped by
        :func:`step_budget`).
    """
    inside = init.copy()
    steps, outer = 0, 0
    n_iters = step_budget(s.n_iters, img.size, MAX_WORK)
    if n_iters < s.n_iters:
        _log.warning(
            "active contour: ac-niters=%d capped at %d steps (work budget of %d pixel-steps "
            "on %d pixels)",
            s.n_iters,
            n_iters,
            MAX_WORK,
            img.size,
        )
    phi = signed_distance(inside) if s.method == "CHANVESE" else None
    inner = max(1, s.cv_inner) if s.method == "CHANVESE" else LRAC_INNER
    while steps < n_iters:
        before = inside
        for _ in range(min(inner, n_iters - steps)):
            if phi is not None:
                phi = chan_vese_step(phi, img, s)
            else:
                inside = lrac_step(inside, img, s)
            steps += 1
        outer += 1
        if phi is not None:
            inside = phi > 0
            if s.cv_reinit > 0 and outer % s.cv_reinit == 0:
                phi = signed_distance(inside)
        changed = int(np.count_nonzero(inside != before))
        if changed <= s.tolerance * max(int(np.count_nonzero(boundary(inside))), 1):
            break
    return inside, steps


def significant_parts(inside: B, z: F64, zs: F64, thr: float) -> B:
    """The 4-connected parts of ``inside`` whose ``sum(z) / sqrt(n)`` reaches ``thr`` and whose
    peak of the smoothed significance reaches :data:`PEAK_FACTOR` x ``thr``.

    The first test keeps a large faint structure; the second drops the noise blobs that pass
    the first because the noise of neighbouring block means is correlated (the smoothed map is
    in units of its own measured noise, so its peak test holds whatever the correlation).

    Parameters
    ----------
    inside
        Mask.
    z
        Significance image (noise units per pixel).
    zs
        Smoothed significance (:func:`smoothed_significance`).
    thr
        Threshold.

    Returns
    -------
    numpy.ndarray
        The kept parts.
    """
    lab, n = ndimage.label(inside)
    if n == 0:
        return np.zeros(inside.shape, dtype=bool)
    idx = np.arange(1, n + 1)
    total = ndimage.sum_labels(z, lab, idx)
    npix = ndimage.sum_labels(np.ones_like(z), lab, idx)
    peak = ndimage.maximum(zs, lab, idx)
    keep = np.zeros(n + 1, dtype=bool)
    keep[1:] = (total / np.sqrt(np.maximum(npix, 1.0)) >= thr) & (
        np.asarray(peak) >= PEAK_FACTOR * thr
    )
    return np.asarray(keep[lab])


def seed_mask(small: F32, shape: tuple[int, int], blank: B, opts: FinderOptions) -> B:
    """The seeds: the wavelet search's mask on the block-mean grid.

    Parameters
    ----------
    small
        Block means of the search image, block ``2**(wtscalemin - 1)``.
    shape
        Full image shape.
    blank
        Blank pixels of the full image.
    opts
        Finder options (wavelet scales, ``seedthr``, ``mergethr``).

    Returns
    -------
    numpy.ndarray
        Boolean mask of ``small``'s shape.
    """
    ext = opts.extended
    f = reduction(ext.wt_scale_min)
    full, _ = wavelet_mask_reduced(
        small,
        shape,
        blank,
        ext.wt_scale_min,
        ext.wt_scale_max,
        opts.compact.seed_thr,
        opts.compact.merge_thr,
        want_saliency=False,
    )
    return np.asarray(full[::f, ::f][: small.shape[0], : small.shape[1]], dtype=bool)


def contour_mask_reduced(
    small: F32,
    shape: tuple[int, int],
    blank: B,
    opts: FinderOptions,
    want_map: bool = True,
) -> tuple[B, F32 | None]:
    """Full-resolution mask of the active-contour search (and its map when wanted).

    Parameters
    ----------
    small
        Block means of the search image (``extended.block_mean_rows``), block
        ``2**(wtscalemin - 1)``.
    shape
        Full image shape.
    blank
        Blank pixels of the full image.
    opts
        Finder options (``contour``, the wavelet scales and thresholds for the seeds).
    want_map
        Also return the map (the scaled image the contour ran on, full resolution).

    Returns
    -------
    mask, map
        As :func:`caesar_rest.sourcefinder.extended.wavelet_mask_reduced`.
    """
    s, ext = opts.contour, opts.extended
    if s.method not in ("CHANVESE", "LRAC"):
        raise ValueError(f"unknown active contour activecontour={s.method!r}")
    f = reduction(ext.wt_scale_min)
    z, valid = noise_units(small)
    zs = smoothed_significance(z, valid)
    img = contour_image(zs, valid)
    seeds = np.zeros(small.shape, dtype=bool)
    if s.init == "SALIENCY":
        seeds = seed_mask(small, shape, blank, opts) & valid
    inside, _ = evolve(img, initial_mask(small.shape, s, seeds) & valid, s)
    inside &= valid
    kept = significant_parts(inside, z, zs, opts.compact.seed_thr)
    out = expand(kept, f, shape)
    out[blank] = False
    return out, (expand(img.astype(np.float32), f, shape) if want_map else None)
