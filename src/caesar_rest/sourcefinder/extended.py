"""Extended sources: multi-scale wavelet thresholding (spec 5.5, chosen as the default method).

Why not the saliency method (spec 5.2, :mod:`.saliency`, run with ``extsfinder=
SALIENCY-THRESH``)? It thresholds in arbitrary rescaled units (``2.8 x median`` of a map in
[1, 256]), so it flags the most "salient" parts of any image, noise included. The wavelet method
works in units of the noise of each scale, costs a few linear filters, and has no free
parameter besides the scale range, so its false-detection rate is controlled by the same
``seedthr``/``mergethr`` as the compact search. Measured (``benchmarks/extended_methods.py``,
``docs/sourcefinder.md``): at the same share of faint blobs found, saliency gives tens of times
more false islands.

Steps:

1. Search image: the background-subtracted image with the compact sources removed (their
   pixels, dilated by ``dilatekernsize``, set to 0 = background), spec 5.1 "dilation"; or the
   image minus the fitted models (``FITMODEL``).
2. The search image is block-averaged by ``2**(wtscalemin - 1)`` (structures of the searched
   scales are much larger than a pixel), then an undecimated a-trous transform with the B3
   spline kernel gives the detail planes ``W_n = F_n - F_(n+1)`` for scales
   ``wtscalemin..wtscalemax`` (2**n pixels of the full image).
3. Each plane is thresholded in units of its own robust noise (median absolute deviation over
   the plane, which also absorbs background-map errors): seeds at ``seedthr``, growth at
   ``mergethr``. The union over scales, back at full resolution and restricted to valid pixels,
   split in 4-connected parts of at least ``npixmin`` pixels, gives the extended islands.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from caesar_rest.sourcefinder._types import F32, I32
from caesar_rest.sourcefinder.bands import row_bands
from caesar_rest.sourcefinder.detection import find_islands

B3 = np.array([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0


def block_mean(img: F32, f: int) -> F32:
    """Mean of ``f x f`` blocks (NaN ignored; the image is padded with NaN).

    Parameters
    ----------
    img
        Image.
    f
        Block size.

    Returns
    -------
    numpy.ndarray
        The reduced image (NaN where a block has no valid pixel).
    """
    return block_mean_rows(lambda y0, y1: img[y0:y1], img.shape, f)


def block_mean_rows(rows: Callable[[int, int], F32], shape: tuple[int, int], f: int) -> F32:
    """:func:`block_mean` of an image given by bands of rows (never whole).

    Parameters
    ----------
    rows
        ``rows(y0, y1)`` gives rows ``y0:y1`` of the image (float32, NaN = blank).
    shape
        Image shape.
    f
        Block size.

    Returns
    -------
    numpy.ndarray
        The reduced image (NaN where a block has no valid pixel).
    """
    ny, nx = shape
    f = max(f, 1)
    oy, ox = -(-ny // f), -(-nx // f)
    out = np.empty((oy, ox), dtype=np.float32)
    # By bands of block rows, so that the temporaries stay small (the image may be large).
    for r0, r1 in row_bands(oy, f * nx):
        a = rows(r0 * f, min(ny, r1 * f))
        if f == 1:
            out[r0:r1] = a
            continue
        py, px = (r1 - r0) * f - a.shape[0], ox * f - nx
        if py or px:
            a = np.pad(a, ((0, py), (0, px)), constant_values=np.nan)
        a = a.reshape(r1 - r0, f, ox, f)
        valid = np.isfinite(a)
        s = np.where(valid, a, np.float32(0.0)).sum(axis=(1, 3), dtype=np.float64)
        c = _block_counts(valid)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[r0:r1] = s / c
    return out


def _block_counts(valid: npt.NDArray[np.bool_]) -> npt.NDArray[np.integer]:
    """``valid.sum(axis=(1, 3))`` of a ``(rows, f, cols, f)`` array (:func:`fold_blocks`)."""
    f = valid.shape[1]
    out: npt.NDArray[np.integer] = fold_blocks(valid, np.add, np.uint8 if f * f < 256 else np.int64)
    return out


def fold_blocks(blocks: npt.NDArray[Any], op: np.ufunc, dtype: npt.DTypeLike) -> npt.NDArray[Any]:
    """``op`` over the pixels of each block of a ``(rows, f, cols, f)`` array, as ``dtype``:
    the rows of each block row first, then the columns of each block, ``f - 1`` passes over
    contiguous memory each (a reduction over two strided axes is many times slower; for
    operations whose order does not change the result: counts, OR).

    Parameters
    ----------
    blocks
        The blocks.
    op
        A binary ufunc (``np.add``, ``np.bitwise_or``).
    dtype
        The type the values are folded in.

    Returns
    -------
    numpy.ndarray
        ``(rows, cols)``.
    """
    rows = blocks[:, 0].astype(dtype)
    for i in range(1, blocks.shape[1]):
        op(rows, blocks[:, i], out=rows)
    out = rows[:, :, 0].copy()
    for j in range(1, blocks.shape[3]):
        op(out, rows[:, :, j], out=out)
    return out


def atrous(img: F32, n_scales: int) -> list[F32]:
    """Smoothed planes ``F_0 .. F_n_scales`` of the a-trous transform (B3 spline).

    Parameters
    ----------
    img
        Image (NaN treated as 0).
    n_scales
        Number of smoothing steps.

    Returns
    -------
    list of numpy.ndarray
        ``n_scales + 1`` planes.
    """
    f = np.nan_to_num(img.astype(np.float32), nan=0.0)
    planes = [f]
    for n in range(n_scales):
        g = _b3_smooth(planes[-1], 2**n, axis=0)
        g = _b3_smooth(g, 2**n, axis=1)
        planes.append(g)
    return planes


class Planes:
    """The a-trous decomposition of one search image and the robust noise of its detail
    planes, made once for both users of the same block means: the wavelet method
    (:func:`wavelet_mask_reduced`) and the mask refinement (:func:`.masks.denoised`).

    It keeps the last image it was asked about (by identity: the search makes a new array
    for every pass) and decomposes again for any other.
    """

    def __init__(self) -> None:
        self._img: F32 | None = None
        self._planes: list[F32] = []
        self._noise: dict[int, tuple[float, float]] = {}

    def clear(self) -> None:
        """Drop the decomposition (its planes are as many block-grid arrays)."""
        self._img, self._planes, self._noise = None, [], {}

    def planes(self, img: F32, n_scales: int) -> list[F32]:
        """:func:`atrous` of ``img`` (the planes of the last call when ``img`` is its image).

        Parameters
        ----------
        img
            The search image (NaN treated as 0).
        n_scales
            Number of smoothing steps.

        Returns
        -------
        list of numpy.ndarray
            ``n_scales + 1`` planes.
        """
        if self._img is not img or len(self._planes) < n_scales + 1:
            self.clear()  # freed before the next
            self._img, self._planes = img, atrous(img, n_scales)
        return self._planes[: n_scales + 1]

    def detail(self, img: F32, n: int, valid: npt.NDArray[np.bool_]) -> tuple[F32, float, float]:
        """Detail plane ``n`` of ``img`` and the median and 1.4826 MAD of its ``valid`` values.

        The planes are those of the last :meth:`planes` call on ``img`` when it made plane
        ``n + 1`` (callers ask for all their planes first), else ``n + 1`` planes anew.

        Parameters
        ----------
        img
            The search image.
        n
            Plane (``W_n = F_n - F_(n+1)``).
        valid
            The finite pixels of ``img``.

        Returns
        -------
        w, med, sigma
            The plane, and (0, 0) below 16 valid values.
        """
        planes = self.planes(img, n + 1)
        w = planes[n] - planes[n + 1]
        got = self._noise.get(n)
        if got is None:
            vals = w[valid]
            med = sig = 0.0
            if vals.size >= 16:
                # vals is a copy: partitioned in place (order statistics do not depend
                # on the order, so neither do both medians).
                med = float(np.median(vals, overwrite_input=True))
                dev = np.abs(vals - med)
                sig = 1.4826 * float(np.median(dev, overwrite_input=True))
            got = self._noise[n] = (med, sig)
        return w, got[0], got[1]


def _b3_smooth(a: F32, step: int, axis: int) -> F32:
    """The B3 spline with holes ``step`` apart along ``axis`` (mirrored edges).

    The same sums as ``ndimage.correlate1d`` with the kernel's zeros (in the same order for
    a symmetric kernel: centre, then each pair of taps added before the weight, in double
    precision), so the result is identical, but 5 taps instead of ``4 step + 1``.
    """
    n = a.shape[axis]
    if 2 * step >= n:
        k = np.zeros(4 * step + 1)
        k[::step] = B3
        return np.asarray(ndimage.correlate1d(a, k, axis=axis, mode="mirror"), dtype=np.float32)
    pad = [(0, 0), (0, 0)]
    pad[axis] = (2 * step, 2 * step)
    p = np.pad(a, pad, mode="reflect").astype(np.float64)

    def tap(j: int) -> npt.NDArray[np.float64]:
        sl = [slice(None), slice(None)]
        sl[axis] = slice(2 * step + j, 2 * step + j + n)
        return p[tuple(sl)]

    acc = tap(0) * B3[2]
    acc += (tap(-step) + tap(step)) * B3[3]
    acc += (tap(-2 * step) + tap(2 * step)) * B3[4]
    return np.asarray(acc, dtype=np.float32)


def reduction(scale_min: int) -> int:
    """Block size of the reduced image the wavelet search runs on: ``2**(scale_min-1)``."""
    return int(2 ** max(scale_min - 1, 0))


def wavelet_mask_reduced(
    small: F32,
    shape: tuple[int, int],
    blank: npt.NDArray[np.bool_],
    scale_min: int,
    scale_max: int,
    seed_thr: float,
    merge_thr: float,
    want_saliency: bool = True,
    shared: Planes | None = None,
) -> tuple[npt.NDArray[np.bool_], F32 | None]:
    """Union of significant wavelet structures at scales ``scale_min..scale_max``.

    Runs on the block means of the search image, so the caller may free the full-resolution
    search image (or never build it) once it has ``small`` and ``blank``.

    Parameters
    ----------
    small
        ``block_mean(search, reduction(scale_min))``.
    shape
        Shape of the search image.
    blank
        Its non-finite pixels.
    scale_min, scale_max
        Scale range (structures of ``2**n`` pixels).
    seed_thr, merge_thr
        Thresholds in units of each plane's robust noise.
    want_saliency
        Also return the full-resolution significance map (otherwise None: it is an
        image-sized float array that only the saved maps need).
    shared
        The decomposition of ``small`` to use and keep (the mask refinement decomposes the
        same block means).

    Returns
    -------
    mask, zmax
        Full-resolution mask and the maximum plane significance (full resolution), used as
        the "saliency" map.
    """
    f = reduction(scale_min)
    valid = np.isfinite(small)
    n0 = scale_min - int(round(math.log2(f)))
    n1 = scale_max - int(round(math.log2(f)))
    dec = shared if shared is not None else Planes()
    dec.planes(small, n1 + 1)
    mask = np.zeros(small.shape, dtype=bool)
    zmax = np.full(small.shape, -np.inf, dtype=np.float32)
    for n in range(max(n0, 0), n1 + 1):
        w, med, sig = dec.detail(small, n, valid)
        if not sig > 0:
            continue
        z = ((w - med) / sig).astype(np.float32)
        z[~valid] = np.nan
        lab, nl = find_islands(z, seed_thr, merge_thr, 2)
        if nl:
            mask |= lab > 0
        np.fmax(zmax, z, out=zmax)
    full = expand(mask, f, shape)
    full[blank] = False
    return full, (expand(zmax, f, shape) if want_saliency else None)


def expand(small: npt.NDArray[Any], f: int, shape: tuple[int, int]) -> npt.NDArray[Any]:
    """A block-reduced array back at full resolution (each value repeated ``f x f``, cropped).

    Parameters
    ----------
    small
        Array of block values (``block_mean`` layout).
    f
        Block size.
    shape
        Full shape.

    Returns
    -------
    numpy.ndarray
        A new array of ``shape``.
    """
    ny, nx = shape
    return np.repeat(np.repeat(small, f, axis=0), f, axis=1)[:ny, :nx]


def removal_mask(labels: I32, remove: npt.NDArray[np.bool_], dilate: int) -> npt.NDArray[np.bool_]:
    """Pixels of the removed islands, dilated by a disk of diameter ``dilate``.

    Parameters
    ----------
    labels
        Island labels (1..n).
    remove
        Per label ``0..n``: whether to remove the island.
    dilate
        Dilation kernel size (pixels, odd).

    Returns
    -------
    numpy.ndarray
        Boolean image.
    """
    # remove[labels] by blocks of rows (fancy indexing copies the labels as int64).
    m = np.empty(labels.shape, dtype=bool)
    for a, b in row_bands(*labels.shape):
        m[a:b] = remove[labels[a:b]]
    if dilate > 1:
        r = dilate // 2
        yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
        disk = (xx**2 + yy**2) <= r * r
        ys, xs = np.nonzero(m)
        if ys.size * int(disk.sum()) > m.size // 2:
            return np.asarray(ndimage.binary_dilation(m, structure=disk), dtype=bool)
        # Few removed pixels (the usual case): the same dilation as the union of the shifted
        # pixel sets, several times faster than a pass of the disk over the whole image.
        out = m.copy()
        ny, nx = labels.shape
        oy, ox = np.nonzero(disk)
        for dy, dx in zip(oy.tolist(), ox.tolist(), strict=True):
            y, x = ys + (dy - r), xs + (dx - r)
            ok = (y >= 0) & (y < ny) & (x >= 0) & (x < nx)
            out[y[ok], x[ok]] = True
        m = out
    return np.asarray(m, dtype=bool)
