"""Islands as pixel lists and their parameters (spec section 3.2), fully vectorised.

An :class:`IslandSet` stores the pixels of all islands in one set of flat arrays, grouped by
island (``offsets`` delimits each island, like a CSR matrix). Every per-island quantity is a
``numpy.add.reduceat`` (or ``maximum``/``minimum``) over those groups, so no Python loop runs
over islands or pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from caesar_rest.sourcefinder._types import F32, F64, I32, I64

if TYPE_CHECKING:
    from caesar_rest.sourcefinder.background import Background


#: Morphology codes of the CAESAR catalogues.
MORPH_UNKNOWN, MORPH_COMPACT, MORPH_POINTLIKE, MORPH_EXTENDED, MORPH_COMPACT_EXTENDED = (
    0,
    1,
    2,
    3,
    4,
)
MORPH_NAMES = {0: "UNKNOWN", 1: "COMPACT", 2: "POINT-LIKE", 3: "EXTENDED", 4: "COMPACT-EXTENDED"}


@dataclass
class IslandSet:
    """Pixels and parameters of a set of islands (or nested sources).

    Pixel arrays (length = total pixels, grouped by island): ``xs``, ``ys`` (full-image pixel
    coordinates), ``flux`` (image value), ``bkg``, ``rms``.
    Island arrays (length n): everything computed by :meth:`measure`.
    """

    offsets: I64
    xs: I32
    ys: I32
    flux: F32
    bkg: F32
    rms: F32
    #: Morphology code per island.
    morph: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: Index of the mother island (nested sources), else -1.
    parent: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: Island touches the image (or tile) border or a blank pixel.
    border: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))
    #: Passed the selection ("good source").
    good: npt.NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))
    # Measured (see measure())
    npix: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    sum: F64 = field(default_factory=lambda: np.zeros(0))
    sum_sub: F64 = field(default_factory=lambda: np.zeros(0))
    smax: F64 = field(default_factory=lambda: np.zeros(0))
    smin: F64 = field(default_factory=lambda: np.zeros(0))
    xpk: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    ypk: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    zmax: F64 = field(default_factory=lambda: np.zeros(0))
    x0: F64 = field(default_factory=lambda: np.zeros(0))
    y0: F64 = field(default_factory=lambda: np.zeros(0))
    xw: F64 = field(default_factory=lambda: np.zeros(0))
    yw: F64 = field(default_factory=lambda: np.zeros(0))
    cxx: F64 = field(default_factory=lambda: np.zeros(0))
    cyy: F64 = field(default_factory=lambda: np.zeros(0))
    cxy: F64 = field(default_factory=lambda: np.zeros(0))
    xmin: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    xmax: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    ymin: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    ymax: I64 = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    bkg_sum: F64 = field(default_factory=lambda: np.zeros(0))
    rms_sum: F64 = field(default_factory=lambda: np.zeros(0))

    @property
    def n(self) -> int:
        """Number of islands."""
        return int(self.offsets.size - 1)

    def island_index(self) -> I64:
        """Island index of every pixel."""
        return np.repeat(np.arange(self.n, dtype=np.int64), np.diff(self.offsets))

    def pixels(self, i: int) -> slice:
        """Slice of island ``i`` in the pixel arrays."""
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def measure(self) -> IslandSet:
        """Compute the island parameters from the pixel arrays (in place).

        Returns
        -------
        IslandSet
            ``self``.
        """
        n = self.n
        if n == 0:
            self.npix = np.zeros(0, dtype=np.int64)
            for name in ("morph", "parent", "xpk", "ypk", "xmin", "xmax", "ymin", "ymax"):
                setattr(self, name, np.zeros(0, dtype=np.int64))
            for name in ("border", "good"):
                if getattr(self, name).size != 0:
                    setattr(self, name, np.zeros(0, dtype=bool))
            return self
        start = self.offsets[:-1]
        npix = np.diff(self.offsets)
        s = self.flux.astype(np.float64)
        b = self.bkg.astype(np.float64)
        r = self.rms.astype(np.float64)
        sub = s - b
        x = self.xs.astype(np.float64)
        y = self.ys.astype(np.float64)
        add = np.add.reduceat
        self.npix = npix
        self.sum = add(s, start)
        self.sum_sub = add(sub, start)
        self.bkg_sum = add(b, start)
        self.rms_sum = add(r, start)
        self.smax = np.maximum.reduceat(s, start)
        self.smin = np.minimum.reduceat(s, start)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = sub / r
        self.zmax = np.maximum.reduceat(np.where(np.isfinite(z), z, -np.inf), start)
        # First pixel reaching the maximum of each island.
        at_max = s == np.repeat(self.smax, npix)
        pos = np.where(at_max, np.arange(s.size), s.size)
        ipk = np.minimum.reduceat(pos, start)
        self.xpk = self.xs[ipk].astype(np.int64)
        self.ypk = self.ys[ipk].astype(np.int64)
        self.x0 = add(x, start) / npix
        self.y0 = add(y, start) / npix
        # Flux-weighted moments with background-subtracted, non-negative weights.
        w = np.clip(sub, 0.0, None)
        wsum = add(w, start)
        ok = wsum > 0
        wsafe = np.where(ok, wsum, 1.0)
        xw = np.where(ok, add(w * x, start) / wsafe, self.x0)
        yw = np.where(ok, add(w * y, start) / wsafe, self.y0)
        dx = x - np.repeat(xw, npix)
        dy = y - np.repeat(yw, npix)
        self.xw, self.yw = xw, yw
        self.cxx = np.where(ok, add(w * dx * dx, start) / wsafe, 0.0)
        self.cyy = np.where(ok, add(w * dy * dy, start) / wsafe, 0.0)
        self.cxy = np.where(ok, add(w * dx * dy, start) / wsafe, 0.0)
        self.xmin = np.minimum.reduceat(self.xs, start).astype(np.int64)
        self.xmax = np.maximum.reduceat(self.xs, start).astype(np.int64)
        self.ymin = np.minimum.reduceat(self.ys, start).astype(np.int64)
        self.ymax = np.maximum.reduceat(self.ys, start).astype(np.int64)
        if self.morph.size != n:
            self.morph = np.full(n, MORPH_COMPACT, dtype=np.int64)
        if self.parent.size != n:
            self.parent = np.full(n, -1, dtype=np.int64)
        if self.border.size != n:
            self.border = np.zeros(n, dtype=bool)
        if self.good.size != n:
            self.good = np.ones(n, dtype=bool)
        return self

    def subset(self, keep: npt.NDArray[np.bool_] | I64) -> IslandSet:
        """A new set with the islands selected by ``keep`` (mask or indices), measured.

        Parameters
        ----------
        keep
            Boolean mask over islands or integer indices (kept in the given order).

        Returns
        -------
        IslandSet
            The selection.
        """
        idx = np.flatnonzero(keep) if keep.dtype == bool else np.asarray(keep, dtype=np.int64)
        npix = np.diff(self.offsets)[idx]
        offsets = np.concatenate([[0], np.cumsum(npix)]).astype(np.int64)
        if idx.size:
            starts = self.offsets[idx]
            pix = np.repeat(starts - offsets[:-1], npix) + np.arange(int(offsets[-1]))
        else:
            pix = np.zeros(0, dtype=np.int64)
        out = IslandSet(
            offsets=offsets,
            xs=self.xs[pix],
            ys=self.ys[pix],
            flux=self.flux[pix],
            bkg=self.bkg[pix],
            rms=self.rms[pix],
            morph=self.morph[idx] if self.morph.size == self.n else np.zeros(0, dtype=np.int64),
            parent=self.parent[idx] if self.parent.size == self.n else np.zeros(0, np.int64),
            border=self.border[idx] if self.border.size == self.n else np.zeros(0, dtype=bool),
            good=self.good[idx] if self.good.size == self.n else np.zeros(0, dtype=bool),
        )
        return out.measure()


def concat(sets: list[IslandSet]) -> IslandSet:
    """Concatenate island sets (parent indices are kept as they are).

    Parameters
    ----------
    sets
        Measured island sets.

    Returns
    -------
    IslandSet
        All islands, in order, measured.
    """
    sets = [s for s in sets if s.n > 0] or sets[:1]
    if not sets:
        return empty()
    npix = np.concatenate([np.diff(s.offsets) for s in sets])
    out = IslandSet(
        offsets=np.concatenate([[0], np.cumsum(npix)]).astype(np.int64),
        xs=np.concatenate([s.xs for s in sets]),
        ys=np.concatenate([s.ys for s in sets]),
        flux=np.concatenate([s.flux for s in sets]),
        bkg=np.concatenate([s.bkg for s in sets]),
        rms=np.concatenate([s.rms for s in sets]),
        morph=np.concatenate([s.morph for s in sets]),
        parent=np.concatenate([s.parent for s in sets]),
        border=np.concatenate([s.border for s in sets]),
        good=np.concatenate([s.good for s in sets]),
    )
    return out.measure()


def empty() -> IslandSet:
    """An empty island set."""
    z32 = np.zeros(0, dtype=np.float32)
    zi = np.zeros(0, dtype=np.int32)
    return IslandSet(np.zeros(1, dtype=np.int64), zi, zi.copy(), z32, z32.copy(), z32.copy())


def from_labels(
    labels: I32,
    data: F32,
    bkg: F32 | None,
    rms: F32 | None,
    origin: tuple[int, int] = (0, 0),
    blank: npt.NDArray[np.bool_] | None = None,
    full_shape: tuple[int, int] | None = None,
    image_origin: tuple[int, int] = (0, 0),
    maps: Background | None = None,
) -> IslandSet:
    """Collect the pixels of labelled islands, ordered by label, and measure them.

    Parameters
    ----------
    labels
        Label image (0 = none, islands 1..n, no gaps).
    data, bkg, rms
        Image and maps of the same shape (the maps may be None when ``maps`` is given).
    origin
        ``(x0, y0)`` of the arrays in the full image; pixel coordinates are stored in
        full-image pixels.
    blank
        Blank-pixel mask (islands touching it are flagged ``border``).
    full_shape
        ``(y_end, x_end)`` of the image in full-image pixels (islands on its outer edge are
        flagged ``border``).
    image_origin
        ``(x0, y0)`` of the image (a sub-image starts there).
    maps
        Background whose values are read at the island pixels only (instead of full maps).

    Returns
    -------
    IslandSet
        The islands.
    """
    ny, nx = labels.shape
    flat = labels.ravel()
    idx = np.flatnonzero(flat)
    lab = flat[idx]
    order = np.argsort(lab, kind="stable")
    idx = idx[order]
    lab = lab[order]
    n = int(lab[-1]) if lab.size else 0
    counts = np.bincount(lab, minlength=n + 1)[1:]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    ys, xs = np.divmod(idx, nx)
    if maps is not None:
        pb, pr = maps.at(idx)
    else:
        assert bkg is not None and rms is not None
        pb, pr = bkg.ravel()[idx], rms.ravel()[idx]
    out = IslandSet(
        offsets=offsets,
        xs=(xs + origin[0]).astype(np.int32),
        ys=(ys + origin[1]).astype(np.int32),
        flux=data[ys, xs],
        bkg=pb,
        rms=pr,
    )
    out.measure()
    if n:
        fy, fx = full_shape if full_shape is not None else (ny + origin[1], nx + origin[0])
        ix, iy = image_origin
        edge = (out.xs == ix) | (out.ys == iy) | (out.xs == fx - 1) | (out.ys == fy - 1)
        if blank is not None and blank.any():
            # A pixel is next to a blank one if any 8-neighbour is blank.
            pad = np.pad(blank, 1, constant_values=False)
            near = np.zeros(idx.size, dtype=bool)
            for dy in (-1, 0, 1):
                for dx in (-1, 0, 1):
                    if dx or dy:
                        near |= pad[ys + 1 + dy, xs + 1 + dx]
            edge |= near
        out.border = np.maximum.reduceat(edge, offsets[:-1]).astype(bool)
    return out


def moment_ellipse(cxx: F64, cyy: F64, cxy: F64) -> tuple[F64, F64, F64]:
    """Standard deviations along the principal axes and the major-axis angle.

    Parameters
    ----------
    cxx, cyy, cxy
        Second central moments (pixels squared).

    Returns
    -------
    sig_major, sig_minor, theta
        Pixels, pixels, radians counter-clockwise from +x.
    """
    mean = 0.5 * (cxx + cyy)
    half = np.sqrt((0.5 * (cxx - cyy)) ** 2 + cxy**2)
    big = np.sqrt(np.clip(mean + half, 0.0, None))
    small = np.sqrt(np.clip(mean - half, 0.0, None))
    theta = 0.5 * np.arctan2(2.0 * cxy, cxx - cyy)
    return big, small, theta


def island_order(isl: IslandSet) -> I64:
    """The islands (not nested sources) in catalogue order: by peak row, then column.

    This order does not depend on tiling; island ``k`` of it is ``S<k>`` in the catalogues,
    row ``k`` of the island table, label ``k + 1`` of the segmentation map and polygon ``k``
    of the island region file.

    Parameters
    ----------
    isl
        Islands, then nested sources (``parent >= 0``).

    Returns
    -------
    numpy.ndarray
        Island indices.
    """
    idx = np.flatnonzero(isl.parent < 0) if isl.parent.size == isl.n else np.arange(isl.n)
    return idx[np.lexsort((isl.xpk[idx], isl.ypk[idx]))].astype(np.int64)


def label_image(isl: IslandSet, shape: tuple[int, int], origin: tuple[int, int] = (0, 0)) -> I32:
    """Segmentation map: label ``k + 1`` on the pixels of island ``k`` of :func:`island_order`.

    Parameters
    ----------
    isl
        Islands, then nested sources (their pixels belong to their mother).
    shape
        Shape of the map.
    origin
        ``(x0, y0)`` of the map in full-image pixels.

    Returns
    -------
    numpy.ndarray
        int32 labels, 0 outside every island.
    """
    out = np.zeros(shape, dtype=np.int32)
    for k, i in enumerate(island_order(isl)):
        sl = isl.pixels(int(i))
        out[isl.ys[sl] - origin[1], isl.xs[sl] - origin[0]] = k + 1
    return out
