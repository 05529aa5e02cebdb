"""Clean masks of extended sources: boundaries that follow the emission (issue 16).

Either extended method (:mod:`.extended`'s wavelet thresholding or :mod:`.saliency`) gives
*seeds*: the parts of the image where some structure is significant. Their outline is not
the outline of the emission: the wavelet mask of a scale ``2**n`` is as wide as that scale,
and the saliency mask claims whole superpixels. :func:`search` turns the seeds into masks:

1. **Background of its own.** The search runs on block means (``2**(wtscalemin-1)``
   pixels, the reduced image both methods search) of the image with the bright compact
   islands left out, minus a background estimated in boxes at least 4 times the largest
   searched scale (the compact search's boxes, 20 beams, swallow a blob of 50 beams), then
   estimated again with the regions found masked (``bkg_iters``).
2. **Denoised image.** The block means are decomposed with the a-trous transform; each
   detail plane of the searched scales is kept on its significant support (coefficients
   above ``plane_lo`` connected to one above ``plane_thr``, in units of the plane's robust
   noise, widened by the scale) and the planes are summed: an estimate of the emission with
   the noise removed, in image units, which can be cut at a *surface brightness*.
3. **Hysteresis.** The mask is the part of ``denoised >= grow x rms`` (``rms`` the pixel noise)
   connected to a seed pixel where ``denoised >= seed x rms``; a part without a seed is kept
   only if its integrated signal-to-noise ratio reaches ``unseeded_snr`` (a faint shell).
4. **Cleaning.** An opening (``open_size`` block pixels) cuts the thin bridges between close
   structures and the spurs along edges; a region is kept only if it covers ``min_beams``
   beams and its integrated signal-to-noise ratio (sum of the block means over the region
   against the noise of such a sum) reaches ``min_snr``.
5. **Outline.** At full resolution the boundary follows the denoised image interpolated
   bilinearly, cut at the same level, within one block of the block mask.

The cost is a few filters of an image 16 times smaller than the input (``wtscalemin`` 3) and
one interpolation at full resolution.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from caesar_rest.sourcefinder import background
from caesar_rest.sourcefinder._types import F32
from caesar_rest.sourcefinder.extended import Planes, expand, fold_blocks

#: 3 x 3 structuring element (8-connected opening, 4-connected labels below).
_SQUARE = np.ones((3, 3), dtype=bool)
_CROSS = ndimage.generate_binary_structure(2, 1)


@dataclass(frozen=True)
class MaskSettings:
    """Parameters of the mask refinement (see the module docstring).

    Attributes
    ----------
    plane_thr, plane_lo
        Significance (in units of each plane's noise) of the coefficients that seed and grow
        the support of the denoised image.
    seed, grow
        Hysteresis levels of the denoised image, in units of the pixel noise.
    min_beams
        Smallest region kept, in beams.
    min_snr
        Smallest integrated signal-to-noise ratio of a region kept.
    unseeded_snr
        Integrated signal-to-noise ratio from which a region is kept without a seed of the
        method (a faint shell has no coefficient above the seed threshold at any scale, but
        thousands of pixels at 1-2 sigma).
    open_size
        Side (block pixels) of the opening; 0 or 1 for none.
    bkg_iters
        Re-estimates of the background with the regions found masked.
    inpaint
        Blocks emptied by a removed compact source are filled with a Gaussian average (this
        sigma, in blocks) of their neighbours, so that the emission under it stays one
        region; 0 for none (they are then background).
    refine
        Refine the method's mask (steps 2-5); else the method's own mask, on the
        background of step 1.
    """

    plane_thr: float = 2.0
    plane_lo: float = 0.5
    seed: float = 1.0
    grow: float = 0.4
    min_beams: float = 3.0
    min_snr: float = 5.0
    unseeded_snr: float = 20.0
    open_size: int = 2
    bkg_iters: int = 1
    inpaint: float = 1.0
    refine: bool = True


@dataclass(frozen=True)
class SearchGrid:
    """The block grid of the extended search.

    Attributes
    ----------
    f
        Block size (full-resolution pixels).
    shape
        Full-resolution shape.
    n0, n1
        Detail planes of the searched scales (block-grid units).
    box
        Background box (block pixels).
    grid_fraction, estimator, local
        Background grid step, estimator and local (else global) estimate, as the compact
        search's.
    rms
        Pixel noise of the full-resolution image.
    beam_area
        Beam area in block pixels.
    """

    f: int
    shape: tuple[int, int]
    n0: int
    n1: int
    box: float
    grid_fraction: float
    estimator: str
    local: bool
    rms: float
    beam_area: float


#: The extended method on block means (and their decomposition, which the refinement
#: reuses): full-resolution mask and its search map (or None).
Method = Callable[[F32, Planes], tuple[npt.NDArray[np.bool_], F32 | None]]


def search(
    raw: F32,
    gone: npt.NDArray[np.bool_],
    method: Method,
    grid: SearchGrid,
    settings: MaskSettings,
) -> tuple[npt.NDArray[np.bool_], F32 | None, F32]:
    """Extended emission: the method's seeds, refined, with its own background.

    The background is estimated on the block means in boxes of ``grid.box`` blocks, then
    again (``settings.bkg_iters`` times) with the regions found masked, so that a large
    faint structure is not taken for background.

    Parameters
    ----------
    raw
        Block means of the image (NaN = no valid pixel) with the bright compact islands
        left out.
    gone
        Blocks whose every valid pixel belonged to a removed compact island (searched as
        background).
    method
        The extended method on the background-subtracted block means.
    grid
        Geometry, scales and noise.
    settings
        Levels and cleaning.

    Returns
    -------
    mask, search_map, bkg
        Full-resolution mask, the method's last search map, and the background of the
        block grid.
    """
    blank = ~np.isfinite(raw) & ~gone
    found = np.zeros(raw.shape, dtype=bool)
    seeds = np.zeros(grid.shape, dtype=bool)
    sal: F32 | None = None
    bkg = np.zeros(raw.shape, dtype=np.float32)
    d = bkg
    # The method and the refinement decompose the same block means of a pass.
    shared = Planes()
    for k in range(settings.bkg_iters + 1):
        masked = raw.copy()
        masked[found] = np.nan
        bkg = _block_background(masked, blank, grid)
        small = np.subtract(raw, bkg, dtype=np.float32)
        if settings.inpaint > 0:
            small = _inpaint(small, gone, settings.inpaint)
        small[gone & ~np.isfinite(small)] = 0.0
        small[blank] = np.nan
        if not settings.refine:
            seeds, sal = method(small, shared)
            found = reduce_mask(seeds, grid.f, raw.shape)
            continue
        if k == 0:
            # The method seeds once; the later passes refine what is found. Its
            # full-resolution mask is not needed beyond its blocks.
            first, sal = method(small, shared)
            found = reduce_mask(first, grid.f, raw.shape)
            del first
        found, d = refine(
            small, found, grid.rms, grid.n0, grid.n1, grid.beam_area, settings, shared
        )
    if not settings.refine:
        return seeds, sal, bkg
    return outline(found, d, settings.grow * grid.rms, grid.f, grid.shape), sal, bkg


def _inpaint(small: F32, gone: npt.NDArray[np.bool_], sigma: float) -> F32:
    """``small`` with the ``gone`` blocks filled by a normalised Gaussian average of their
    valid neighbours (the emission under a removed compact source)."""
    if not gone.any():
        return small
    ok = np.isfinite(small) & ~gone
    num = ndimage.gaussian_filter(np.where(ok, small, np.float32(0.0)), sigma)
    den = ndimage.gaussian_filter(ok.astype(np.float32), sigma)
    out = small.copy()
    with np.errstate(divide="ignore", invalid="ignore"):
        fill = np.where(den > 0.05, num / den, np.float32(0.0))
    out[gone] = fill[gone]
    return out


def _block_background(masked: F32, blank: npt.NDArray[np.bool_], grid: SearchGrid) -> F32:
    try:
        bk = background.estimate(
            masked,
            grid.box,
            max(grid.grid_fraction, 0.5),
            grid.estimator,
            grid.local,
            False,
            grid.box,
            blank=blank,
        )
    except ValueError:  # nothing left to estimate from
        return np.zeros(masked.shape, dtype=np.float32)
    return np.nan_to_num(bk.bkg, nan=0.0)


def denoised(
    small: F32,
    n0: int,
    n1: int,
    plane_thr: float,
    plane_lo: float,
    shared: Planes | None = None,
) -> F32:
    """Sum of the wavelet coefficients of planes ``n0..n1`` on their significant support.

    The support of plane ``n`` is the set of coefficients above ``plane_lo`` connected to one
    above ``plane_thr`` (in units of the plane's robust noise), widened by ``2**(n-1)``
    pixels so that the coefficients of either sign around a structure enter together (the
    positive ones alone would bias the sum upwards at the edges).

    Parameters
    ----------
    small
        Block-averaged search image (NaN = blank).
    n0, n1
        First and last detail plane (scales ``2**n`` block pixels).
    plane_thr, plane_lo
        Seed and growth thresholds of the support, in units of each plane's robust noise.
    shared
        The decomposition of ``small`` to use and keep (the wavelet method's, when it
        searched the same array).

    Returns
    -------
    numpy.ndarray
        The denoised image (image units; NaN where ``small`` is blank).
    """
    valid = np.isfinite(small)
    dec = shared if shared is not None else Planes()
    dec.planes(small, n1 + 1)
    out = np.zeros(small.shape, dtype=np.float32)
    for n in range(max(n0, 0), n1 + 1):
        # The plane's robust noise is robust_sigma of its valid values.
        w, _, sig = dec.detail(small, n, valid)
        if sig > 0:
            sup = _plane_support(w / sig, plane_thr, plane_lo)
            if n >= 1:
                sup = ndimage.maximum_filter(sup, size=2**n + 1)
            out += np.where(sup, w, np.float32(0.0))
    np.maximum(out, 0.0, out=out)
    out[~valid] = np.nan
    return out


def _plane_support(z: F32, hi: float, lo: float) -> npt.NDArray[np.bool_]:
    """Coefficients above ``lo`` connected to one above ``hi`` (per-plane hysteresis)."""
    grow = z > lo
    if lo >= hi:
        return grow
    lab, n = ndimage.label(grow, structure=_CROSS)
    if n == 0:
        return grow
    keep = np.zeros(n + 1, dtype=bool)
    keep[np.unique(lab[z > hi])] = True
    keep[0] = False
    return np.asarray(keep[lab], dtype=bool)


def robust_sigma(vals: npt.NDArray[np.floating]) -> float:
    """1.4826 x the median absolute deviation (0 for fewer than 16 values)."""
    if vals.size < 16:
        return 0.0
    med = float(np.median(vals))
    return 1.4826 * float(np.median(np.abs(vals - med)))


def refine(
    small: F32,
    seeds: npt.NDArray[np.bool_],
    rms: float,
    n0: int,
    n1: int,
    beam_area_blocks: float,
    settings: MaskSettings,
    shared: Planes | None = None,
) -> tuple[npt.NDArray[np.bool_], F32]:
    """The clean mask of the extended emission, on the block grid.

    Parameters
    ----------
    small
        Block-averaged search image (compact sources removed, background subtracted).
    seeds
        The method's mask on the same grid.
    rms
        Pixel noise of the full-resolution image (image units).
    n0, n1
        Detail planes of the searched scales.
    beam_area_blocks
        Beam area in block pixels.
    settings
        Levels and cleaning.
    shared
        The decomposition of ``small`` to use (:func:`denoised`), dropped once used.

    Returns
    -------
    mask, denoised
        Boolean mask and the denoised image (:func:`denoised`), on the block grid.
    """
    d = np.nan_to_num(
        denoised(small, n0, n1, settings.plane_thr, settings.plane_lo, shared), nan=0.0
    )
    if shared is not None:
        shared.clear()  # its last use: the planes would stay alive with the arrays below
    if not rms > 0:
        return np.zeros(small.shape, dtype=bool), d
    grow = d >= settings.grow * rms
    if settings.open_size > 1:
        grow = ndimage.binary_opening(grow, structure=np.ones((settings.open_size,) * 2, bool))
    hi = seeds & (d >= settings.seed * rms)
    lab, n = ndimage.label(grow, structure=_CROSS)
    if n == 0:
        return np.zeros(small.shape, dtype=bool), d
    keep = np.zeros(n + 1, dtype=bool)
    keep[np.unique(lab[hi])] = True
    keep[0] = False
    idx = np.arange(n + 1)
    npix = ndimage.sum_labels(np.ones_like(d), lab, idx)
    flux = ndimage.sum_labels(np.nan_to_num(small, nan=0.0), lab, idx)
    noise = robust_sigma(small[np.isfinite(small) & ~grow]) * np.sqrt(np.maximum(npix, 1.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        snr = np.where(noise > 0, flux / noise, 0.0)
    keep |= snr >= settings.unseeded_snr
    keep &= npix >= settings.min_beams * beam_area_blocks
    keep &= snr >= settings.min_snr
    return np.asarray(keep[lab], dtype=bool), d


def outline(
    found: npt.NDArray[np.bool_], d: F32, level: float, f: int, shape: tuple[int, int]
) -> npt.NDArray[np.bool_]:
    """The block mask at full resolution, its boundary following the denoised image.

    The denoised image is interpolated bilinearly to full resolution and cut at ``level``
    within one block of the block mask; the parts not connected to the block mask are
    dropped.

    Parameters
    ----------
    found
        Mask on the block grid.
    d
        Denoised image on the block grid.
    level
        Cut level (image units).
    f
        Block size.
    shape
        Full-resolution shape.

    Returns
    -------
    numpy.ndarray
        Full-resolution mask.
    """
    ny, nx = shape
    out = np.zeros(shape, dtype=bool)
    near = ndimage.binary_dilation(found, structure=_SQUARE)
    core = ndimage.binary_erosion(found, structure=_CROSS)
    lab, _ = ndimage.label(near, structure=_SQUARE)
    # Region by region (bounding box and one block of margin): the full-resolution arrays
    # cover the regions only.
    for sl in ndimage.find_objects(lab):
        if sl is None:
            continue
        y0, y1 = max(sl[0].start - 1, 0), min(sl[0].stop + 1, found.shape[0])
        x0, x1 = max(sl[1].start - 1, 0), min(sl[1].stop + 1, found.shape[1])
        h, w = min(ny, y1 * f) - y0 * f, min(nx, x1 * f) - x0 * f
        up = ndimage.zoom(d[y0:y1, x0:x1], f, order=1, mode="nearest", grid_mode=True)
        box = (slice(y0, y1), slice(x0, x1))
        cut = expand(near[box], f, (h, w)) & (up[:h, :w] >= level)
        seed = expand(core[box], f, (h, w)) & cut
        parts, n = ndimage.label(cut, structure=_CROSS)
        keep = np.zeros(n + 1, dtype=bool)
        keep[np.unique(parts[seed])] = True
        keep[0] = False
        out[y0 * f : y0 * f + h, x0 * f : x0 * f + w] |= keep[parts]
    return out


def reduce_mask(
    mask: npt.NDArray[np.bool_], f: int, shape: tuple[int, int]
) -> npt.NDArray[np.bool_]:
    """A full-resolution mask on the block grid of ``f`` pixels (a block is set when any
    of its pixels is).

    Parameters
    ----------
    mask
        Full-resolution mask.
    f
        Block size.
    shape
        Shape of the block grid.

    Returns
    -------
    numpy.ndarray
        Boolean mask of ``shape``.
    """
    ny, nx = mask.shape
    oy, ox = shape
    if (ny, nx) == (oy * f, ox * f):
        pad = np.ascontiguousarray(mask, dtype=bool)
    else:
        pad = np.zeros((oy * f, ox * f), dtype=bool)
        pad[:ny, :nx] = mask
    # The blocks' bytes OR-ed (many times faster than any() over two strided axes).
    u = pad.view(np.uint8).reshape(oy, f, ox, f)
    out: npt.NDArray[np.bool_] = fold_blocks(u, np.bitwise_or, np.uint8).view(bool)
    return out
