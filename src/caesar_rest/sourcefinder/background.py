"""Background and noise maps (spec section 2).

A grid of boxes (``bkgbox`` beams on a side, centres every ``bkggrid`` box) is laid on the
image; in each box a robust estimator gives a background level and a noise scale; the grid is
interpolated bilinearly to every pixel (clamped beyond the outer box centres). A second pass
estimates the noise again on the background-subtracted image. Everything is vectorised over
boxes.

Speed: radio noise is correlated over a beam, so neighbouring pixels carry little independent
information. Each box is sampled on a regular sub-grid with a stride of about
``box / sqrt(500)`` pixels (never more than the beam width), which keeps ~400 nearly
independent pixels per box and makes the estimate ~10x cheaper. The sub-grid is aligned to
global pixel coordinates, so a tile of a larger image gets exactly the values of the untiled run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from numpy.lib.stride_tricks import sliding_window_view
from scipy import ndimage

from caesar_rest.sourcefinder._types import F32, F64
from caesar_rest.sourcefinder.bands import assemble, row_bands

MAD_TO_SIGMA = 1.4826
C128 = npt.NDArray[np.complex128]
#: Number of sub-sampled pixels aimed at in each box.
TARGET_BOX_SAMPLES = 500
#: A box with fewer finite samples than this is "missing" and filled from its neighbours.
MIN_BOX_SAMPLES = 10
#: Maximum number of samples used for the global statistics.
GLOBAL_MAX_SAMPLES = 2_000_000
#: Number of box values processed at once (bounds the temporary memory to ~10 MB).
CHUNK_VALUES = 500_000


@dataclass
class GridSpec:
    """Geometry of the background grid of one image or tile.

    Attributes
    ----------
    box
        Box side in pixels (a multiple of ``stride``).
    step
        Distance between box centres in pixels (a multiple of ``stride``).
    stride
        Sub-sampling stride inside the boxes.
    origin
        ``(x0, y0)`` of the array in the full image (grids are aligned on full-image pixels).
    full_shape
        ``(ny, nx)`` of the full image.
    """

    box: int
    step: int
    stride: int
    origin: tuple[int, int] = (0, 0)
    full_shape: tuple[int, int] | None = None


class _AxisInterp:
    """Bilinear interpolation of one grid quantity, evaluated by rows or at given pixels.

    Interpolation along x first, in float32, so that a band or a set of pixels gets exactly
    the values of the full map (:func:`interpolate_grid`).
    """

    def __init__(
        self,
        grid_values: F64,
        cx: npt.NDArray[np.int64],
        cy: npt.NDArray[np.int64],
        shape: tuple[int, int],
        offset: tuple[int, int] = (0, 0),
        stride: int = 1,
    ):
        ny, nx = shape
        ix, wx = _axis_weights(nx, cx, offset[0], stride)
        self.iy, self.wy = _axis_weights(ny, cy, offset[1], stride)
        g = grid_values.astype(np.float32)
        # Values of every grid row at every image column: (len(cy), nx), small.
        self.xrows = (
            np.repeat(g[:, :1], nx, axis=1)
            if cx.size == 1
            else g[:, ix] * (1.0 - wx) + g[:, ix + 1] * wx
        )
        self.single_row = cy.size == 1

    def rows(self, y0: int, y1: int) -> F32:
        if self.single_row:
            return np.repeat(self.xrows[:1], y1 - y0, axis=0)
        w = self.wy[y0:y1, None]
        iy = self.iy[y0:y1]
        out: F32 = np.empty((iy.size, self.xrows.shape[1]), dtype=np.float32)
        if iy.size == 0:
            return out
        # Rows between the same two grid rows at once, from those rows themselves (the
        # values of gathering both for every row, without the gathered copies).
        cut = np.flatnonzero(np.diff(iy)) + 1
        starts, ends = [0, *cut.tolist()], [*cut.tolist(), iy.size]
        tmp = np.empty(
            (max(e - a for a, e in zip(starts, ends, strict=True)), out.shape[1]), out.dtype
        )
        for a, b in zip(starts, ends, strict=True):
            g = int(iy[a])
            np.multiply(self.xrows[g], 1.0 - w[a:b], out=out[a:b])
            out[a:b] += np.multiply(self.xrows[g + 1], w[a:b], out=tmp[: b - a])
        return out

    def at(self, ys: npt.NDArray[np.intp], xs: npt.NDArray[np.intp]) -> F32:
        if self.single_row:
            row: F32 = self.xrows[0, xs]
            return row
        w = self.wy[ys]
        iy = self.iy[ys]
        out: F32 = np.multiply(self.xrows[iy, xs], 1.0 - w)
        out += self.xrows[iy + 1, xs] * w
        return out


@dataclass
class Background:
    """Background and noise of an image.

    The full-resolution maps are interpolated from the grid only when asked for (``bkg``,
    ``rms``, then kept); the pipeline reads them by bands of rows (:meth:`rows`,
    :meth:`significance`) or at island pixels (:meth:`at`), which give the same values
    without holding two image-sized arrays.

    Attributes
    ----------
    global_bkg, global_rms
        Estimates over the whole image.
    shape
        ``(ny, nx)`` of the image or tile.
    blank
        Pixels whose map values are NaN.
    grid
        Grid geometry, or None when a global estimate is used.
    grid_bkg, grid_rms
        The values at the box centres.
    cx, cy
        Box centres (local pixel coordinates).
    """

    global_bkg: float
    global_rms: float
    shape: tuple[int, int]
    blank: npt.NDArray[np.bool_]
    grid: GridSpec | None = None
    grid_bkg: F64 | None = None
    grid_rms: F64 | None = None
    cx: npt.NDArray[np.int64] | None = None
    cy: npt.NDArray[np.int64] | None = None
    _maps: dict[str, F32] = field(default_factory=dict, repr=False)
    _interp: dict[str, _AxisInterp] = field(default_factory=dict, repr=False)
    #: The box estimates, for an estimate of the same image with some pixels changed.
    _passes: _Passes | None = field(default=None, repr=False)

    def _of(self, which: str) -> _AxisInterp | None:
        if self.grid is None or self.cx is None or self.cy is None:
            return None
        it = self._interp.get(which)
        if it is None:
            values = self.grid_bkg if which == "bkg" else self.grid_rms
            assert values is not None
            it = self._interp[which] = _AxisInterp(values, self.cx, self.cy, self.shape)
        return it

    def rows(self, y0: int, y1: int) -> tuple[F32, F32]:
        """Background and noise of rows ``y0:y1`` (NaN where blank).

        Parameters
        ----------
        y0, y1
            Row range.

        Returns
        -------
        bkg, rms
            float32 arrays of shape ``(y1 - y0, nx)``.
        """
        return self._rows("bkg", y0, y1), self._rows("rms", y0, y1)

    def bkg_rows(self, y0: int, y1: int) -> F32:
        """Background of rows ``y0:y1`` (NaN where blank)."""
        return self._rows("bkg", y0, y1)

    def _rows(self, which: str, y0: int, y1: int) -> F32:
        if which in self._maps:
            return self._maps[which][y0:y1]
        it = self._of(which)
        const = self.global_bkg if which == "bkg" else self.global_rms
        band = (
            np.full((y1 - y0, self.shape[1]), const, dtype=np.float32)
            if it is None
            else it.rows(y0, y1)
        )
        band[self.blank[y0:y1]] = np.nan
        return band

    def at(self, flat_index: npt.NDArray[np.integer]) -> tuple[F32, F32]:
        """Background and noise at pixels given by flat (row-major) indices.

        Parameters
        ----------
        flat_index
            Pixel indices into the ``shape`` array.

        Returns
        -------
        bkg, rms
            float32 values (NaN where blank).
        """
        ys, xs = np.divmod(np.asarray(flat_index, dtype=np.intp), self.shape[1])
        blank = self.blank[ys, xs]
        out = []
        for which, const in (("bkg", self.global_bkg), ("rms", self.global_rms)):
            it = self._of(which)
            v = np.full(ys.size, const, dtype=np.float32) if it is None else it.at(ys, xs)
            v[blank] = np.nan
            out.append(v)
        return out[0], out[1]

    def _full(self, which: str) -> F32:
        m = self._maps.get(which)
        if m is None:
            m = self._maps[which] = assemble(self.shape, lambda a, b: self._rows(which, a, b))
        return m

    @property
    def bkg(self) -> F32:
        """Full background map (float32, NaN where blank), built on first use."""
        return self._full("bkg")

    @property
    def rms(self) -> F32:
        """Full noise map (float32, NaN where blank), built on first use."""
        return self._full("rms")

    def significance(self, data: F32) -> F32:
        """Significance map ``(I - B) / sigma`` (NaN where blank or sigma <= 0), by bands.

        Parameters
        ----------
        data
            The image the maps belong to.

        Returns
        -------
        numpy.ndarray
            float32 map, equal to :func:`significance` of the full maps.
        """
        return assemble(data.shape, lambda a, b: significance(data[a:b], *self.rows(a, b)))

    def significance_bands(self, data: F32) -> Iterator[tuple[int, int, F32]]:
        """The significance map by bands of rows, never whole.

        Parameters
        ----------
        data
            The image the maps belong to.

        Yields
        ------
        y0, y1, z
            Row range and the significance of those rows.
        """
        for a, b in row_bands(*data.shape):
            yield a, b, significance(data[a:b], *self.rows(a, b))


# --------------------------------------------------------------------------------------------
# Estimators on rows of values (NaN = excluded)
# --------------------------------------------------------------------------------------------


def _median_rows(v: npt.NDArray[np.floating]) -> F64:
    bad = np.isnan(v).any(axis=1)
    out = np.empty(v.shape[0], dtype=np.float64)
    if (~bad).any():
        out[~bad] = np.median(v[~bad], axis=1)
    if bad.any():
        with np.errstate(all="ignore"):
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out[bad] = np.nanmedian(v[bad], axis=1)
    return out


def estimate_rows(
    values: npt.NDArray[np.floating],
    estimator: str = "Median",
    scratch: Scratch | None = None,
    overwrite_input: bool = False,
) -> tuple[F64, F64, npt.NDArray[np.int64]]:
    """Location and scale of each row of ``values`` (NaN values are ignored).

    Parameters
    ----------
    values
        2-D array, one sample per row.
    estimator
        ``"Median"`` (median and 1.4826 MAD), ``"Mean"`` (mean and standard deviation,
        ddof 1), ``"BiWeight"`` (iterated Tukey biweight, c = 6) or ``"ClippedMedian"``
        (3-sigma clipped median and standard deviation).
    scratch
        Work arrays to reuse (``ClippedMedian``), when the caller estimates chunk after
        chunk; the results do not depend on it.
    overwrite_input
        ``values`` may be reordered within its rows (``ClippedMedian`` sorts it in place).

    Returns
    -------
    loc, scale, count
        Per row; NaN where a row has no finite value.
    """
    v = np.asarray(values)
    count = np.count_nonzero(np.isfinite(v), axis=1)
    import warnings

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        if estimator == "Mean":
            loc = np.nanmean(v, axis=1, dtype=np.float64)
            scale = np.nanstd(v, axis=1, ddof=1, dtype=np.float64)
        elif estimator == "Median":
            loc = _median_rows(v)
            scale = MAD_TO_SIGMA * _median_rows(np.abs(v - loc[:, None].astype(v.dtype)))
        elif estimator == "BiWeight":
            loc, scale = _biweight_rows(v.astype(np.float64))
        elif estimator == "ClippedMedian":
            loc, scale = _clipped_rows(v, scratch=scratch, overwrite_input=overwrite_input)
        else:
            raise ValueError(f"unknown background estimator {estimator!r}")
    loc = np.asarray(loc, dtype=np.float64)
    scale = np.asarray(scale, dtype=np.float64)
    loc[count == 0] = np.nan
    scale[count == 0] = np.nan
    return loc, scale, count.astype(np.int64)


def _biweight_rows(v: F64, c: float = 6.0, max_iter: int = 10) -> tuple[F64, F64]:
    # Spec 2.2.3: location and scale updated together, at most 10 iterations.
    t = np.nanmedian(v, axis=1)
    s = MAD_TO_SIGMA * np.nanmedian(np.abs(v - t[:, None]), axis=1)
    active = np.isfinite(t) & (s > 0)
    for _ in range(max_iter):
        if not active.any():
            break
        u = (v[active] - t[active, None]) / (c * s[active, None])
        w = np.where(np.abs(u) < 1.0, (1.0 - u**2) ** 2, 0.0)
        w[~np.isfinite(u)] = 0.0
        vv = np.where(np.isfinite(v[active]), v[active], 0.0)
        t_new = (vv * w).sum(axis=1) / np.maximum(w.sum(axis=1), 1e-300)
        done = np.abs(t_new / np.where(t[active] != 0, t[active], 1.0) - 1.0) < 1e-4
        inside = np.isfinite(u) & (np.abs(u) < 1.0)
        n = np.count_nonzero(np.isfinite(u), axis=1)
        d = np.where(inside, (1.0 - u**2) * (1.0 - 5.0 * u**2), 0.0).sum(axis=1)
        num = np.where(inside, (vv - t_new[:, None]) ** 2 * (1.0 - u**2) ** 4, 0.0).sum(axis=1)
        s_new = np.sqrt(np.where(d > 1.0, n * num / np.maximum(d * (d - 1.0), 1e-300), 0.0))
        idx = np.flatnonzero(active)
        t[idx] = t_new
        upd = (~done) & (d > 1.0)
        s[idx[upd]] = s_new[upd]
        active[idx[done]] = False
    return t, s


class Scratch:
    """Work arrays of the clipped estimator, reused from one chunk of boxes to the next.

    A fresh array costs a page fault and the zeroing of each of its 4 KiB pages when first
    written, about as much as the arithmetic done on it here.
    """

    def __init__(self) -> None:
        self._arrays: dict[str, npt.NDArray[Any]] = {}

    def get(self, name: str, shape: tuple[int, int], dtype: npt.DTypeLike) -> npt.NDArray[Any]:
        """An uninitialised array of ``shape`` (the memory of the last one of this name)."""
        size = shape[0] * shape[1]
        buf = self._arrays.get(name)
        if buf is None or buf.size < size or buf.dtype != np.dtype(dtype):
            buf = self._arrays[name] = np.empty(size, dtype=dtype)
        return buf[:size].reshape(shape)


def _clipped_rows(
    v: npt.NDArray[np.floating],
    k: float = 3.0,
    max_iter: int = 100,
    scratch: Scratch | None = None,
    overwrite_input: bool = False,
) -> tuple[F64, F64]:
    # Spec 2.2.4: clip around the previous median at k * previous std until the std settles.
    # Each row is sorted once: the values kept are then a contiguous run [lo, hi) of the
    # sorted row (every clip intersects the previous run with an interval), whose median is
    # read at its middle and whose std comes from prefix sums, so an iteration costs a binary
    # search per row instead of a NaN-aware median (the same kept sets as clipping the
    # unsorted values). float32 rows are sorted as float32 (the same order and values as
    # their float64 upcast, for half the work) and every value read is upcast first, so the
    # results are those of the float64 rows.
    nrow, ncol = v.shape
    if nrow == 1 and ncol > LONG_ROW:
        return _clipped_long_row(v, k, max_iter, overwrite_input)
    work = scratch if scratch is not None else Scratch()
    srt = v if overwrite_input else work.get("sorted", (nrow, ncol), v.dtype)
    fin = work.get("finite", (nrow, ncol), np.bool_)
    sums = work.get("sums", (nrow, ncol + 1), np.complex128)
    lo = np.zeros(nrow, dtype=np.int64)
    hi = np.empty(nrow, dtype=np.int64)
    med = np.empty(nrow)
    _prepare(v, srt, fin, sums, hi, med, overwrite_input)

    def prefix(rows: npt.NDArray[np.int64], at: npt.NDArray[np.int64]) -> C128:
        got: C128 = sums[rows, at]
        return got

    return _clip(srt, lo, hi, med, prefix, k, max_iter)


#: A row longer than this (the global sample of an image) keeps its prefix sums only at
#: every ROW_BLOCK-th value (:class:`_BlockSums`): all of them would take 16 bytes a value.
LONG_ROW = 1 << 16
ROW_BLOCK = 1 << 14


class _BlockSums:
    """Prefix sums of one sorted row (the values minus ``centre`` in the real part, their
    squares in the imaginary part, non-finite values as 0), kept at every ROW_BLOCK-th
    position. A sum elsewhere is its block's cumulative sum again, started from the kept
    sum before it: the same additions in the same order as one cumulative sum of the row.
    """

    def __init__(self, srt: npt.NDArray[np.floating], centre: float) -> None:
        self.srt, self.centre = srt, centre
        nb = -(-srt.size // ROW_BLOCK)
        self.marks = np.zeros(nb + 1, dtype=np.complex128)
        self._blocks: dict[int, C128] = {}
        for b in range(nb):
            self.marks[b + 1] = self._block(b)[-1]
            self._blocks.clear()

    def _block(self, b: int) -> C128:
        got = self._blocks.get(b)
        if got is not None:
            return got
        a = b * ROW_BLOCK
        vals = self.srt[a : a + ROW_BLOCK]
        z = np.empty(vals.size, dtype=np.complex128)
        np.subtract(vals, self.centre, out=z.real, dtype=np.float64)
        z.real[~np.isfinite(vals)] = 0.0
        np.multiply(z.real, z.real, out=z.imag)
        if b:
            z[0] += self.marks[b]
        np.cumsum(z, out=z)
        if len(self._blocks) >= 4:  # the blocks of the current bounds, kept
            self._blocks.pop(next(iter(self._blocks)))
        self._blocks[b] = z
        return z

    def take(self, at: npt.NDArray[np.int64]) -> C128:
        """The prefix sums (sums of the first ``p`` values) at the positions ``at``."""
        out = np.zeros(at.size, dtype=np.complex128)
        for i, p in enumerate(at.tolist()):
            if p > 0:
                b, j = divmod(p - 1, ROW_BLOCK)
                out[i] = self._block(b)[j]
        return out


def _clipped_long_row(
    v: npt.NDArray[np.floating], k: float, max_iter: int, overwrite_input: bool
) -> tuple[F64, F64]:
    # _clipped_rows of one long row, with its prefix sums by blocks (the same values).
    srt = v if overwrite_input else v.copy()
    srt.sort(axis=1)
    count = np.array([np.count_nonzero(np.isfinite(srt))], dtype=np.int64)
    lo = np.zeros(1, dtype=np.int64)
    med = _run_median(srt, np.zeros(1, dtype=np.int64), lo, count)
    sums = _BlockSums(srt[0], float(med[0]) if np.isfinite(med[0]) else 0.0)

    def prefix(rows: npt.NDArray[np.int64], at: npt.NDArray[np.int64]) -> C128:
        return sums.take(at)

    return _clip(srt, lo, count, med, prefix, k, max_iter)


def _clip(
    srt: npt.NDArray[np.floating],
    lo: npt.NDArray[np.int64],
    hi: npt.NDArray[np.int64],
    med: F64,
    prefix: Callable[[npt.NDArray[np.int64], npt.NDArray[np.int64]], C128],
    k: float,
    max_iter: int,
) -> tuple[F64, F64]:
    # The clipping iterations on the sorted rows from their first run [lo, hi) and median;
    # prefix(rows, p) gives the prefix sums of the given rows at positions p.
    rows = np.arange(srt.shape[0])
    std = _run_std(prefix, rows, lo, hi)
    active = np.isfinite(std) & (std > 0)
    for _ in range(max_iter):
        if not active.any():
            break
        idx = np.flatnonzero(active)
        a = med[idx] - k * std[idx]
        b = med[idx] + k * std[idx]
        # Kept: a < value < b. Within the current run (sorted, finite) the first value > a
        # (the first >= the next float above a) and the first value >= b, in one search; a
        # count outside the run is clamped to it, which changes only rows whose new run is
        # empty (n <= 1 either way).
        m = idx.size
        found = _first_at_least(
            srt,
            np.concatenate([idx, idx]),
            np.concatenate([lo[idx], lo[idx]]),
            np.concatenate([hi[idx], hi[idx]]),
            np.concatenate([np.nextafter(a, np.inf), b]),
        )
        new_lo, new_hi = found[:m], found[m:]
        n = new_hi - new_lo
        ok = n > 1
        oi = idx[ok]
        nlo, nhi = new_lo[ok], new_hi[ok]
        new_med = _run_median(srt, oi, nlo, nhi)
        new_std = _run_std(prefix, oi, nlo, nhi)
        conv = np.abs(new_std - std[oi]) / np.maximum(std[oi], 1e-300) <= 0.1
        med[oi], std[oi] = new_med, new_std
        lo[oi], hi[oi] = nlo, nhi
        active[oi[conv]] = False
        active[idx[~ok]] = False
    return med, std


def _prepare(
    v: npt.NDArray[np.floating],
    srt: npt.NDArray[np.floating],
    fin: npt.NDArray[np.bool_],
    sums: npt.NDArray[np.complex128],
    count: npt.NDArray[np.int64],
    med: F64,
    in_place: bool,
) -> None:
    # Rows v sorted into srt (NaN last; srt is v when in_place), their finite flags, finite
    # counts, medians and prefix sums, written into the given arrays.
    if not in_place:
        srt[...] = v
    srt.sort(axis=1)
    np.isfinite(srt, out=fin)
    count[...] = np.count_nonzero(fin, axis=1)
    rows = np.arange(srt.shape[0])
    med[...] = _run_median(srt, rows, np.zeros_like(count), count)
    # Prefix sums of the values centred on the first median (fewer cancellations) and of
    # their squares, as the real and imaginary parts of one complex cumulative sum: each
    # part is the same sequence of float64 additions as a cumulative sum of its own, and
    # the two run side by side (half the time of two sums). A leading zero column.
    sums[:, 0] = 0.0
    c = sums[:, 1:]
    np.subtract(srt, np.where(np.isfinite(med), med, 0.0)[:, None], out=c.real, dtype=np.float64)
    if count.size and int(count.min()) < srt.shape[1]:
        c.real[~fin] = 0.0  # rows with blanks (NaN last) or infinities
    np.multiply(c.real, c.real, out=c.imag)
    np.cumsum(c, axis=1, out=c)


def _first_at_least(
    srt: npt.NDArray[np.floating],
    rows: npt.NDArray[np.int64],
    lo: npt.NDArray[np.int64],
    hi: npt.NDArray[np.int64],
    bound: F64,
) -> npt.NDArray[np.int64]:
    # Per row, the first index i in [lo, hi) of the sorted run with srt[row, i] >= bound
    # (compared in float64), else hi: a vectorised binary search, about log2(hi - lo) steps
    # of one gather per row. It equals the count of values < bound whenever that count lies
    # in [lo, hi].
    pos = lo.copy()
    span = int((hi - lo).max(initial=0))
    step = 1 << max(0, span.bit_length() - 1) if span else 0
    last = srt.shape[1] - 1
    while step:
        cand = pos + step
        x = srt[rows, np.minimum(cand - 1, last)].astype(np.float64)
        pos += step * ((cand <= hi) & (x < bound))
        step >>= 1
    return pos


def _run_median(
    srt: npt.NDArray[np.floating],
    rows: npt.NDArray[np.int64],
    lo: npt.NDArray[np.int64],
    hi: npt.NDArray[np.int64],
) -> F64:
    # Median of the sorted runs srt[rows, lo:hi] (NaN for an empty run), in float64.
    n = hi - lo
    last = srt.shape[1] - 1
    # minimum/maximum rather than np.clip: the same indices, without its overhead per call.
    a = np.minimum(np.maximum(lo + (n - 1) // 2, 0), last)
    b = np.minimum(np.maximum(lo + n // 2, 0), last)
    out = 0.5 * (srt[rows, a].astype(np.float64) + srt[rows, b].astype(np.float64))
    return np.where(n > 0, out, np.nan)


def _run_std(
    prefix: Callable[[npt.NDArray[np.int64], npt.NDArray[np.int64]], C128],
    rows: npt.NDArray[np.int64],
    lo: npt.NDArray[np.int64],
    hi: npt.NDArray[np.int64],
) -> F64:
    # Standard deviation (ddof 1) of the runs from the prefix sums (values in the real
    # part, squares in the imaginary part; NaN below 2 values).
    n = (hi - lo).astype(np.float64)
    t = prefix(rows, hi) - prefix(rows, lo)
    t1, t2 = t.real, t.imag
    with np.errstate(invalid="ignore", divide="ignore"):
        var = (t2 - t1 * t1 / n) / (n - 1.0)
    return np.where(n > 1, np.sqrt(np.maximum(var, 0.0)), np.nan)


# --------------------------------------------------------------------------------------------
# Grid geometry
# --------------------------------------------------------------------------------------------


def make_grid(
    box_px: float,
    grid_fraction: float,
    beam_width_px: float,
    origin: tuple[int, int] = (0, 0),
    full_shape: tuple[int, int] | None = None,
) -> GridSpec:
    """Choose box size, grid step and sampling stride.

    Parameters
    ----------
    box_px
        Requested box side in pixels.
    grid_fraction
        Grid step as a fraction of the box (``bkggrid``).
    beam_width_px
        Beam size in pixels; the stride never exceeds it.
    origin, full_shape
        Placement of the array in the full image.

    Returns
    -------
    GridSpec
        The geometry (box and step rounded to multiples of the stride).
    """
    box = max(2, int(box_px))
    stride = int(round(box / math.sqrt(TARGET_BOX_SAMPLES)))
    stride = max(1, min(stride, int(max(1.0, math.floor(beam_width_px)))))
    box = max(stride * 2, stride * int(round(box / stride)))
    step = max(stride, stride * int(round(max(1.0, grid_fraction * box) / stride)))
    return GridSpec(box=box, step=step, stride=stride, origin=origin, full_shape=full_shape)


def _centres(n_full: int, box: int, step: int, lo: int, hi: int) -> npt.NDArray[np.int64]:
    # Global box centres B//2 + k*step whose boxes lie inside [lo, hi) and inside the image.
    half = box // 2
    span = n_full - 1 - 2 * half
    if span < 0 or n_full < box:
        return np.empty(0, dtype=np.int64)
    k = np.arange(0, span // step + 1, dtype=np.int64)
    c = half + k * step
    start = c - half
    ok = (start >= lo) & (start + box <= hi)
    return c[ok]


# --------------------------------------------------------------------------------------------
# Maps
# --------------------------------------------------------------------------------------------


def global_stats(data: F32, estimator: str = "Median") -> tuple[float, float]:
    """Background and noise of the finite pixels (every k-th pixel beyond 2 million pixels).

    Parameters
    ----------
    data
        Image (NaN = blank).
    estimator
        As for :func:`estimate_rows`.

    Returns
    -------
    bkg, rms
        The estimates.
    """
    # Every k-th pixel first, then its finite values: no image-sized temporary (the
    # estimates work in place on one float64 copy of the sample).
    flat = data.reshape(-1)
    sample = flat[:: max(1, int(math.ceil(flat.size / GLOBAL_MAX_SAMPLES)))]
    finite = sample[np.isfinite(sample)]
    del flat, sample
    if finite.size == 0:
        return math.nan, math.nan
    if estimator == "ClippedMedian":
        # Sorted as they are (float32): the same values as their float64 upcast.
        cl_loc, cl_scale, _ = estimate_rows(finite[None, :], estimator, overwrite_input=True)
        return float(cl_loc[0]), float(cl_scale[0])
    vals = finite.astype(np.float64)
    del finite
    if estimator == "Median":
        loc = float(np.median(vals, overwrite_input=True))
        np.subtract(vals, loc, out=vals)
        np.abs(vals, out=vals)
        return loc, MAD_TO_SIGMA * float(np.median(vals, overwrite_input=True))
    loc_, scale_, _ = estimate_rows(vals[None, :], estimator)
    return float(loc_[0]), float(scale_[0])


def _box_values(
    data: F32, grid: GridSpec, sub_bkg: F32 | None
) -> tuple[F32, npt.NDArray[np.int64], npt.NDArray[np.int64], int, int]:
    """Sub-sampled image (minus ``sub_bkg``) and the box centres (local coordinates)."""
    ny, nx = data.shape
    ox, oy = grid.origin
    fy, fx = grid.full_shape if grid.full_shape is not None else (ny, nx)
    s = grid.stride
    i0 = (-ox) % s
    j0 = (-oy) % s
    sub = data[j0::s, i0::s]
    if sub_bkg is not None:
        sub = sub - sub_bkg
    cx = _centres(fx, grid.box, grid.step, ox, ox + nx) - ox
    cy = _centres(fy, grid.box, grid.step, oy, oy + ny) - oy
    return np.asarray(sub, dtype=np.float32), cx, cy, i0, j0


@dataclass
class _BoxPass:
    """Per-box estimates of one pass, before the missing boxes are filled."""

    loc: F64
    scale: F64
    count: npt.NDArray[np.int64]


@dataclass
class _Passes:
    """What :func:`estimate` keeps so that an estimate of a changed image can reuse it.

    ``key`` names the geometry and settings; ``first`` and ``second`` are the unfilled box
    estimates of both passes and ``loc`` the filled background the second pass subtracted.
    """

    key: tuple[object, ...]
    first: _BoxPass
    loc: F64
    second: _BoxPass | None


def _box_stats(
    sub: F32,
    sx: npt.NDArray[np.int64],
    sy: npt.NDArray[np.int64],
    bs: int,
    estimator: str,
    todo: npt.NDArray[np.bool_] | None = None,
    prev: _BoxPass | None = None,
    scratch: Scratch | None = None,
) -> _BoxPass:
    """Estimates of the boxes starting at ``(sy, sx)`` (sub-sampled pixels) of side ``bs``.

    With ``todo`` only the flagged boxes are estimated and the others are copied from
    ``prev``: every row of :func:`estimate_rows` is estimated on its own, so a box gets the
    same values alone or among others. ``scratch`` holds the work arrays (one for every
    chunk and pass of an estimate).
    """
    view = sliding_window_view(sub, (bs, bs))
    shape = (sy.size, sx.size)
    # The clipped estimator holds the gathered float32 values (sorted in place), their
    # finite flags and complex prefix sums of a chunk (about 21 bytes a value): half the
    # chunk keeps it near the others' temporary memory. Its work arrays serve every chunk.
    chunk = CHUNK_VALUES // 2 if estimator == "ClippedMedian" else CHUNK_VALUES
    scratch = scratch if scratch is not None else Scratch()
    if todo is None or prev is None:
        loc = np.empty(shape)
        scale = np.empty(shape)
        count = np.empty(shape, dtype=np.int64)
        rows_per_chunk = max(1, chunk // max(1, sx.size * bs * bs))
        for a in range(0, sy.size, rows_per_chunk):
            b = min(sy.size, a + rows_per_chunk)
            vals = view[np.ix_(sy[a:b], sx)].reshape(-1, bs * bs)
            lo_, sc_, n_ = estimate_rows(vals, estimator, scratch, overwrite_input=True)
            loc[a:b] = lo_.reshape(b - a, sx.size)
            scale[a:b] = sc_.reshape(b - a, sx.size)
            count[a:b] = n_.reshape(b - a, sx.size)
        return _BoxPass(loc, scale, count)
    out = _BoxPass(prev.loc.copy(), prev.scale.copy(), prev.count.copy())
    ry, rx = np.nonzero(todo)
    per_chunk = max(1, chunk // max(1, bs * bs))
    for a in range(0, ry.size, per_chunk):
        ya, xa = ry[a : a + per_chunk], rx[a : a + per_chunk]
        vals = view[sy[ya], sx[xa]].reshape(-1, bs * bs)
        lo_, sc_, n_ = estimate_rows(vals, estimator, scratch, overwrite_input=True)
        out.loc[ya, xa], out.scale[ya, xa], out.count[ya, xa] = lo_, sc_, n_
    return out


def _filled(p: _BoxPass) -> tuple[F64, F64]:
    # Recommended fix of spec 2.3: missing boxes take the values of the nearest valid one
    # (all NaN when no box is valid).
    loc, scale, count = p.loc, p.scale, p.count
    bad = (count < MIN_BOX_SAMPLES) | ~np.isfinite(scale) | (scale <= 0) | ~np.isfinite(loc)
    if bad.all():
        return np.full_like(loc, np.nan), np.full_like(scale, np.nan)
    if bad.any():
        _, (iy, ix) = ndimage.distance_transform_edt(bad, return_indices=True)
        return loc[iy, ix], scale[iy, ix]
    return loc.copy(), scale.copy()


def _box_sums(
    flags: npt.NDArray[np.bool_],
    y0: npt.NDArray[np.int64],
    y1: npt.NDArray[np.int64],
    x0: npt.NDArray[np.int64],
    x1: npt.NDArray[np.int64],
) -> npt.NDArray[np.bool_]:
    # Whether any of flags[y0[r]:y1[r], x0[c]:x1[c]] is set, for every (r, c): summed areas.
    t = np.zeros((flags.shape[0] + 1, flags.shape[1] + 1), dtype=np.int64)
    np.cumsum(np.cumsum(flags, axis=0), axis=1, out=t[1:, 1:])
    y0c, y1c = y0[:, None], y1[:, None]
    total = t[y1c, x1] - t[y0c, x1] - t[y1c, x0] + t[y0c, x0]
    out: npt.NDArray[np.bool_] = total > 0
    return out


def _axis_weights(
    n: int, centres: npt.NDArray[np.int64], offset: int = 0, stride: int = 1
) -> tuple[npt.NDArray[np.intp], F32]:
    pos = offset + stride * np.arange(n, dtype=np.float64)
    if centres.size == 1:
        return np.zeros(n, dtype=np.intp), np.zeros(n, dtype=np.float32)
    step = float(centres[1] - centres[0])
    f = np.clip((pos - centres[0]) / step, 0.0, centres.size - 1)
    i = np.minimum(np.floor(f).astype(np.intp), centres.size - 2)
    return i, (f - i).astype(np.float32)


def interpolate_grid(
    grid_values: F64,
    cx: npt.NDArray[np.int64],
    cy: npt.NDArray[np.int64],
    shape: tuple[int, int],
    offset: tuple[int, int] = (0, 0),
    stride: int = 1,
) -> F32:
    """Bilinear interpolation of grid values at pixel positions, clamped outside the centres.

    Parameters
    ----------
    grid_values
        ``(len(cy), len(cx))`` values at the box centres.
    cx, cy
        Box centres (pixels).
    shape
        Output shape.
    offset, stride
        Output pixel ``(j, i)`` sits at ``(offset[1] + stride*j, offset[0] + stride*i)``.

    Returns
    -------
    numpy.ndarray
        float32 map.
    """
    return assemble(shape, _AxisInterp(grid_values, cx, cy, shape, offset, stride).rows)


def estimate(
    data: F32,
    box_px: float,
    grid_fraction: float = 0.2,
    estimator: str = "Median",
    local: bool = True,
    second_pass: bool = True,
    beam_width_px: float = 1.0,
    origin: tuple[int, int] = (0, 0),
    full_shape: tuple[int, int] | None = None,
    blank: npt.NDArray[np.bool_] | None = None,
    reuse: tuple[Background, F32] | None = None,
    scratch: Scratch | None = None,
) -> Background:
    """Estimate background and noise maps.

    Parameters
    ----------
    data
        Image, float32, NaN where blank (masked pixels may be set to NaN by the caller).
    box_px
        Box side in pixels.
    grid_fraction
        Grid step as a fraction of the box.
    estimator
        ``Median`` (default), ``Mean``, ``BiWeight`` or ``ClippedMedian``.
    local
        False for one global background and noise.
    second_pass
        Estimate the noise again on the background-subtracted image (spec 2.4).
    beam_width_px
        Beam size in pixels (limits the sampling stride).
    origin, full_shape
        Placement of ``data`` in the full image; grids are aligned on full-image pixels so that
        tiles reproduce the untiled maps.
    blank
        Pixels whose map values are NaN (default: the non-finite pixels of ``data``). A
        second pass gives the image's own blanks here, so that pixels it masked out of the
        statistics still get interpolated map values.
    reuse
        ``(earlier, image)``: an estimate made by this function on ``image`` (the same shape,
        placement and settings), typically before sources were masked. Only the boxes whose
        sampled pixels differ from ``image``'s (and, in the second pass, those whose
        subtracted background changed) are estimated again; the others keep the earlier
        values, which are what estimating them again would give. The result is that of a
        call without ``reuse``.
    scratch
        Work arrays of the box estimates, for a caller that estimates several times (the
        results do not depend on it; default: new ones, shared by both passes).

    Returns
    -------
    Background
        Maps and global values.

    Raises
    ------
    ValueError
        When no finite pixel is left.
    """
    ny, nx = data.shape
    gbkg, grms = global_stats(data, estimator)
    if not (math.isfinite(gbkg) and math.isfinite(grms) and grms > 0):
        raise ValueError("cannot estimate the noise: no valid pixels or constant image")
    if blank is None:
        blank = ~np.isfinite(data)
    fshape = full_shape if full_shape is not None else (ny, nx)
    grid = make_grid(box_px, grid_fraction, beam_width_px, origin, fshape)
    s, half, bs = grid.stride, grid.box // 2, grid.box // grid.stride
    i0, j0 = (-origin[0]) % s, (-origin[1]) % s
    sub, cx, cy, _, _ = _box_values(data, grid, None)
    if not local or grid.box >= min(fshape) or cx.size == 0 or cy.size == 0:
        # Box larger than the image (spec 2.3): global estimate.
        return Background(gbkg, grms, (ny, nx), blank)
    # Box starts in sub-sampled coordinates (exact: starts and stride are aligned).
    sx = (cx - half - i0) // s
    sy = (cy - half - j0) // s
    key = (grid.box, grid.step, s, origin, fshape, (ny, nx), estimator, second_pass)
    prev, changed = _reusable(reuse, key, sub, grid)
    todo = None if changed is None else _box_sums(changed, sy, sy + bs, sx, sx + bs)
    work = scratch if scratch is not None else Scratch()
    first = _box_stats(sub, sx, sy, bs, estimator, todo, prev.first if prev else None, work)
    del sub
    loc, scale = _filled(first)
    if not np.isfinite(loc).all():
        # No valid box: global estimate.
        return Background(gbkg, grms, (ny, nx), blank)
    second = None
    if second_pass:
        sny, snx = data[j0::s, i0::s].shape
        sub_bkg = interpolate_grid(loc, cx, cy, (sny, snx), (i0, j0), s)
        sub, _, _, _, _ = _box_values(data, grid, sub_bkg)
        del sub_bkg
        todo2 = None
        if prev is not None and prev.second is not None and todo is not None:
            # A box's subtracted background is interpolated from the grid nodes around its
            # sampled pixels: where none of those changed, nor its pixels, nothing changed.
            iy, _ = _axis_weights(sny, cy, j0, s)
            ix, _ = _axis_weights(snx, cx, i0, s)
            top = cy.size - 1
            right = cx.size - 1
            todo2 = todo | _box_sums(
                loc != prev.loc,
                iy[sy],
                np.minimum(iy[sy + bs - 1] + 1, top) + 1,
                ix[sx],
                np.minimum(ix[sx + bs - 1] + 1, right) + 1,
            )
        second = _box_stats(
            sub, sx, sy, bs, estimator, todo2, prev.second if prev is not None else None, work
        )
        del sub
        _, scale = _filled(second)
    bk = Background(gbkg, grms, (ny, nx), blank, grid, loc, scale, cx, cy)
    bk._passes = _Passes(key, first, loc, second)
    return bk


def _reusable(
    reuse: tuple[Background, F32] | None, key: tuple[object, ...], sub: F32, grid: GridSpec
) -> tuple[_Passes | None, npt.NDArray[np.bool_] | None]:
    # The earlier estimate's boxes and the sampled pixels that differ (bit for bit) from the
    # image it was made on, when it was made with the same geometry and settings.
    if reuse is None:
        return None, None
    bk, old = reuse
    p = bk._passes
    if p is None or p.key != key:
        return None, None
    old_sub, _, _, _, _ = _box_values(old, grid, None)
    if old_sub.shape != sub.shape:
        return None, None
    changed = old_sub.view(np.uint32) != sub.view(np.uint32)
    return p, changed


def significance(data: F32, bkg: F32, rms: F32) -> F32:
    """Significance map ``(I - B) / sigma`` (NaN where blank or sigma <= 0).

    Parameters
    ----------
    data, bkg, rms
        Image and maps of the same shape.

    Returns
    -------
    numpy.ndarray
        float32 map.
    """
    z = np.subtract(data, bkg, dtype=np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        z /= rms
    z[~(rms > 0)] = np.nan
    return z
