"""Features of every catalogue row for the classifier.

Every finder's catalogue is described the same way, from the image and the row alone, so that
one model serves every app: the classifier makes its own coarse background and noise maps
(median and MAD in boxes of about ten beams, on a regular subsample of the pixels) and its own
islands (8-connected pixels above 3 sigma). A row belongs to the island under its position.

Features (:data:`FEATURE_NAMES`), all dimensionless:

* the row: S/N (peak over the local rms), peak S/N over the mean rms of its island (CAESAR's
  sourceness feature), fitted-ellipse area over the beam's and eccentricity, integrated over
  peak flux, rows sharing its island, the truncated/blended flags;
* its island: area in beams, eccentricity and fill factor of its moment ellipse, peak S/N,
  flux over peak times beam;
* the local context: distance (beams) and flux ratio to the nearest bright source (an island
  peaking above :data:`BRIGHT_SNR`), how radially the island points at it, the local rms over
  the image's median rms, the islands around it (count within 10 beams, nearest distance,
  flux ratio, size and alignment with the row's island, and whether two neighbours within 20
  or 12 beams lie on opposite sides);
* a cut-out of the significance map around the row's peak (radius 2.5 beams): fraction of
  pixels below -3 sigma, residual after a beam-shaped fit, mean level 1-2 beams out, and
  point asymmetry.

:func:`stamps` gives the input of the image model (:mod:`caesar_rest.classify.image_model`):
the significance map around the row's peak resampled to :data:`STAMP_SIDE` x
:data:`STAMP_SIDE` points :data:`STAMP_STEP_BEAMS` beams apart, over the peak's significance.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import numpy.typing as npt
from astropy.table import Table
from scipy import ndimage
from scipy.spatial import cKDTree

from caesar_rest.catalogue.schema import FLAG_BLENDED, FLAG_TRUNCATED
from caesar_rest.imaging.fits_image import FitsImage
from caesar_rest.sourcefinder.islands import moment_ellipse

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]

#: Islands whose peak exceeds this many sigma are "bright sources" for the context features.
BRIGHT_SNR = 100.0
#: Island threshold in sigma.
ISLAND_SNR = 3.0
#: Value of a feature that cannot be computed (no island, no bright source, no neighbour).
MISSING = -9.0
#: Side of the image model's cut-out, in points of its grid.
STAMP_SIDE = 15
#: Spacing of the cut-out's points, in beams (the cut-out spans 7 beams).
STAMP_STEP_BEAMS = 0.5
#: Cut-out values are clipped to +-this (in units of the peak's significance).
STAMP_CLIP = 2.0

FEATURE_NAMES: tuple[str, ...] = (
    "log_snr",
    "log_peak_over_island_rms",
    "log_area_over_beam",
    "eccentricity",
    "log_flux_over_peak",
    "log_rows_in_island",
    "truncated",
    "blended",
    "log_island_beams",
    "island_eccentricity",
    "island_fill",
    "log_island_peak_snr",
    "log_island_flux_over_peak",
    "log_bright_distance",
    "log_bright_flux_ratio",
    "bright_alignment",
    "rms_rise",
    "neighbours_10_beams",
    "log_neighbour_distance",
    "log_neighbour_flux_ratio",
    "neighbour_opposition",
    "neighbour_alignment",
    "log_neighbour_beams",
    "neighbour_opposition_12_beams",
    "cutout_negative_fraction",
    "cutout_beam_residual",
    "cutout_annulus",
    "cutout_asymmetry",
)


@dataclass
class NoiseMaps:
    """The classifier's block-constant background and noise maps, kept as their grids.

    Values at a pixel are those of the ``cell x cell`` block holding it, as float32: a map of
    the image's size is never made (:meth:`rows` gives one band of rows, :meth:`at` any pixels).

    Attributes
    ----------
    data, mask
        The image and its blank pixels.
    bkg_grid, rms_grid
        float32 block medians and rms (1.4826 MAD), ``(by, bx)``.
    cell
        Block side in image pixels.
    """

    data: F32
    mask: npt.NDArray[np.bool_]
    bkg_grid: F32
    rms_grid: F32
    cell: int

    def rows(self, y0: int, y1: int) -> tuple[F32, F32, F32]:
        """Background, rms and significance (0 at blank pixels) of rows ``y0:y1``."""
        return band_maps(
            self.bkg_grid, self.rms_grid, self.cell, y0, self.data[y0:y1], self.mask[y0:y1]
        )

    def at(self, yi: npt.NDArray[np.intp], xi: npt.NDArray[np.intp]) -> tuple[F32, F32]:
        """Rms and significance at pixels (any shape); significance 0 outside the image."""
        ny, nx = self.data.shape
        inside = (yi >= 0) & (yi < ny) & (xi >= 0) & (xi < nx)
        y, x = np.clip(yi, 0, ny - 1), np.clip(xi, 0, nx - 1)
        by, bx = y // self.cell, x // self.cell
        bkg, rms = self.bkg_grid[by, bx], self.rms_grid[by, bx]
        sig = _significance(self.data[y, x], self.mask[y, x] | ~inside, bkg, rms)
        return rms, sig

    def median_rms(self) -> float:
        """Median of the full rms map (each block counted by its pixels in the image)."""
        ny, nx = self.data.shape
        cy = np.minimum(ny - np.arange(self.rms_grid.shape[0]) * self.cell, self.cell)
        cx = np.minimum(nx - np.arange(self.rms_grid.shape[1]) * self.cell, self.cell)
        values = self.rms_grid.ravel()
        counts = (cy[:, None] * cx[None, :]).ravel().astype(np.int64)
        order = np.argsort(values, kind="stable")
        ends = np.cumsum(counts[order])
        n = int(ends[-1])
        # numpy.median of the n values: the middle one, or the mean of the two middle ones.
        mid = values[order[np.searchsorted(ends, [(n - 1) // 2, n // 2], side="right")]]
        return float(np.median(mid))


def _significance(data: F32, mask: npt.NDArray[np.bool_], bkg: F32, rms: F32) -> F32:
    with np.errstate(all="ignore"):
        return np.where(mask, np.float32(0.0), (data - bkg) / rms).astype(np.float32)


def band_maps(
    bkg_grid: F32, rms_grid: F32, cell: int, y0: int, data: F32, mask: npt.NDArray[np.bool_]
) -> tuple[F32, F32, F32]:
    """Background, rms and significance (0 at blank pixels) of a band of rows.

    Parameters
    ----------
    bkg_grid, rms_grid
        The block grids (:class:`NoiseMaps`).
    cell
        Block side in pixels.
    y0
        Image row of the band's first row.
    data, mask
        The band's pixels and blank pixels (full rows).

    Returns
    -------
    bkg, rms, sig
        float32 maps of the band's shape.
    """
    by = np.arange(y0, y0 + data.shape[0]) // cell
    bx = np.arange(data.shape[1]) // cell
    bkg = bkg_grid[by[:, None], bx[None, :]]
    rms = rms_grid[by[:, None], bx[None, :]]
    return bkg, rms, _significance(data, mask, bkg, rms)


@dataclass
class Islands:
    """The classifier's own islands of an image.

    The island pixels are kept as a list (the image's size is held by no array of this
    object): :meth:`label_at` looks labels up; :attr:`labels`, :attr:`sig` and :attr:`rms`
    build the image-sized maps for callers that need them whole (made on first use).

    Attributes
    ----------
    pixels
        Flat indices (``y * nx + x``, ascending) of the island pixels.
    pixel_labels
        Island label of each of them (1, 2, ... in raster order of their first pixel, as
        ``scipy.ndimage.label`` numbers them).
    maps
        The background and noise maps.
    median_rms
        Median of the noise map.
    npix, flux, peak, mean_rms, cx, cy, ecc, fill, theta
        Per island (index 0 unused): pixels, background-subtracted flux sum, peak significance,
        mean rms, centroid, moment eccentricity, fill factor of the moment ellipse, and its
        angle from +x (radians).
    """

    pixels: npt.NDArray[np.int64]
    pixel_labels: npt.NDArray[np.int32]
    maps: NoiseMaps
    median_rms: float
    npix: F64
    flux: F64
    peak: F64
    mean_rms: F64
    cx: F64
    cy: F64
    ecc: F64
    fill: F64
    theta: F64

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)`` of the image."""
        ny, nx = self.maps.data.shape
        return int(ny), int(nx)

    def label_at(self, yi: npt.NDArray[np.intp], xi: npt.NDArray[np.intp]) -> npt.NDArray[np.intp]:
        """Island labels at pixels (0 outside islands and outside the image)."""
        ny, nx = self.shape
        inside = (yi >= 0) & (yi < ny) & (xi >= 0) & (xi < nx)
        key = np.where(inside, yi.astype(np.int64) * nx + xi, -1)
        if self.pixels.size == 0:
            return np.zeros(key.shape, dtype=np.intp)
        pos = np.clip(np.searchsorted(self.pixels, key), 0, self.pixels.size - 1)
        hit = inside & (self.pixels[pos] == key)
        return np.where(hit, self.pixel_labels[pos], 0).astype(np.intp)

    @cached_property
    def labels(self) -> npt.NDArray[np.int32]:
        """Island label per pixel (0 outside): an image-sized array."""
        out = np.zeros(self.shape, dtype=np.int32)
        out.ravel()[self.pixels] = self.pixel_labels
        return out

    @cached_property
    def sig(self) -> F32:
        """Significance map ``(image - background) / rms``, 0 at blank pixels (image-sized)."""
        return np.concatenate([self.maps.rows(a, b)[2] for a, b in _bands(*self.shape)])

    @cached_property
    def rms(self) -> F32:
        """Noise map (Jy/beam), image-sized."""
        return np.concatenate([self.maps.rows(a, b)[1] for a, b in _bands(*self.shape)])


#: Pixels per band of rows labelled at a time (:func:`label_rows`, the image-sized maps): a
#: band's maps and labels are its temporaries, ~30 bytes a pixel.
BAND_PIXELS = 1 << 19
#: Pixels read and cut into blocks at a time for the noise grid (:func:`grid_rows`; at
#: least one row of blocks).
GRID_PIXELS = 1 << 20
#: Catalogue rows whose cut-outs are made at a time (:func:`stamps`, the cut-out features):
#: ~100 bytes per cut-out pixel.
ROW_CHUNK = 1024


def _bands(ny: int, nx: int, pixels: int | None = None) -> list[tuple[int, int]]:
    pixels = BAND_PIXELS if pixels is None else pixels
    step = max(1, pixels // max(nx, 1))
    return [(a, min(ny, a + step)) for a in range(0, ny, step)]


def beam_fwhm_pix(image: FitsImage) -> float:
    """Geometric-mean beam FWHM in pixels."""
    return math.sqrt(image.beam[0] * image.beam[1]) / image.pixel_scale_arcsec


#: ``read(y0, y1)``: rows ``y0:y1`` of an image (float32, NaN at blanks) and their blank pixels.
RowReader = Callable[[int, int], tuple[F32, npt.NDArray[np.bool_]]]


def memory_rows(data: F32, mask: npt.NDArray[np.bool_]) -> RowReader:
    """A :data:`RowReader` of an image in memory (views, no copy)."""

    def read(y0: int, y1: int) -> tuple[F32, npt.NDArray[np.bool_]]:
        return data[y0:y1], mask[y0:y1]

    return read


@dataclass(frozen=True)
class GridShape:
    """The block layout of :func:`noise_grid` on an image.

    Attributes
    ----------
    ny, nx
        Image shape.
    step
        Subsampling step (pixels).
    b
        Block side in subsampled pixels (the block is ``b * step`` image pixels).
    """

    ny: int
    nx: int
    step: int
    b: int

    @property
    def cell(self) -> int:
        """Block side in image pixels."""
        return self.b * self.step

    @property
    def by(self) -> int:
        """Block rows."""
        return _ceil(_ceil(self.ny, self.step), self.b)

    @property
    def bx(self) -> int:
        """Block columns."""
        return _ceil(_ceil(self.nx, self.step), self.b)


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def grid_shape(ny: int, nx: int, box: int) -> GridShape:
    """The block layout for blocks of about ``box`` pixels (at most 32 x 32 samples each)."""
    box = max(4, min(box, ny, nx))
    step = max(1, box // 32)
    return GridShape(ny, nx, step, max(1, box // step))


def _sampled(read: RowReader, g: GridShape, y0: int, y1: int) -> F32:
    """Rows ``y0, y0 + step, ... < y1`` and every ``step``-th column, NaN at blanks, read in
    bands of about :data:`GRID_PIXELS` (``y0`` is a multiple of ``step``)."""
    h = max(1, GRID_PIXELS // max(g.nx, 1) // g.step) * g.step
    parts = []
    for a in range(y0, y1, h):
        data, mask = read(a, min(y1, a + h))
        s = (slice(None, None, g.step), slice(None, None, g.step))
        parts.append(np.where(mask[s], np.float32(np.nan), data[s]))
    return np.concatenate(parts) if parts else np.zeros((0, -(-g.nx // g.step)), np.float32)


def grid_rows(read: RowReader, g: GridShape, j0: int, j1: int) -> tuple[F32, F32]:
    """Median and 1.4826 MAD of block rows ``j0:j1`` (before :func:`fill_grid`).

    Parameters
    ----------
    read
        The image's rows.
    g
        The layout.
    j0, j1
        Block rows.

    Returns
    -------
    med, mad
        float32 ``(j1 - j0, bx)``; NaN for blocks without valid pixels.
    """
    b, bx = g.b, g.bx
    sx = -(-g.nx // g.step)
    med = np.empty((j1 - j0, bx), dtype=np.float32)
    mad = np.empty((j1 - j0, bx), dtype=np.float32)
    # By bands of block rows: the subsample of a band, padded and cut into blocks.
    chunk = max(1, GRID_PIXELS // max(bx * b * b, 1))
    for c0 in range(j0, j1, chunk):
        c1 = min(j1, c0 + chunk)
        work = _sampled(read, g, c0 * g.cell, min(g.ny, c1 * g.cell))
        padded = np.full(((c1 - c0) * b, bx * b), np.nan, dtype=np.float32)
        padded[: work.shape[0], :sx] = work
        blocks = padded.reshape(c1 - c0, b, bx, b).transpose(0, 2, 1, 3).reshape(c1 - c0, bx, -1)
        med[c0 - j0 : c1 - j0], mad[c0 - j0 : c1 - j0] = _block_stats(blocks)
    return med, mad


def fill_grid(med: F32, mad: F32) -> tuple[F32, F32]:
    """The whole grid's blocks without a valid rms take the median background and rms."""
    good = np.isfinite(mad) & (mad > 0)
    fill_rms = float(np.median(mad[good])) if good.any() else 1.0
    fill_bkg = float(np.median(med[good])) if good.any() else 0.0
    med = np.where(good, med, fill_bkg)
    mad = np.where(good, mad, fill_rms)
    return med.astype(np.float32), mad.astype(np.float32)


def noise_grid(data: F32, mask: npt.NDArray[np.bool_], box: int) -> NoiseMaps:
    """Background (median) and rms (1.4826 MAD) in ``box x box`` blocks, block-constant.

    The statistics of a block come from a regular subsample of its pixels (at most 32 x 32),
    which keeps the cost small at any image size.

    Parameters
    ----------
    data
        Image.
    mask
        Blank pixels (ignored).
    box
        Block side in pixels.

    Returns
    -------
    NoiseMaps
        The maps.
    """
    ny, nx = data.shape
    g = grid_shape(int(ny), int(nx), box)
    bkg, rms = fill_grid(*grid_rows(memory_rows(data, mask), g, 0, g.by))
    return NoiseMaps(data, mask, bkg, rms, g.cell)


def _block_stats(blocks: F32) -> tuple[F32, F32]:
    """NaN-ignoring median and 1.4826 MAD of each block (last axis), as ``numpy.nanmedian``
    gives them; blocks without NaN through ``numpy.median`` at once (what ``nanmedian`` does
    for them one by one when a block has 600 values or more)."""
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks
        if blocks.shape[-1] < 600:
            med = np.nanmedian(blocks, axis=-1)
            return med, np.nanmedian(np.abs(blocks - med[..., None]), axis=-1) * 1.4826
        holes = np.isnan(blocks).any(axis=-1)
        med = np.median(blocks, axis=-1)
        if holes.any():
            med[holes] = np.nanmedian(blocks[holes], axis=-1)
        dev = np.abs(blocks - med[..., None])
        mad = np.median(dev, axis=-1)
        if holes.any():
            mad[holes] = np.nanmedian(dev[holes], axis=-1)
        return med, mad * 1.4826


def noise_maps(data: F32, mask: npt.NDArray[np.bool_], box: int) -> tuple[F32, F32]:
    """:func:`noise_grid` as two image-sized float32 maps (background, rms)."""
    maps = noise_grid(data, mask, box)
    bands = [maps.rows(a, b) for a, b in _bands(*data.shape)]
    return np.concatenate([b[0] for b in bands]), np.concatenate([b[1] for b in bands])


@dataclass
class LabelPart:
    """The islands of a range of rows, labelled on their own (:func:`label_rows`).

    Attributes
    ----------
    pixels, labels, sig, flux, rms
        Per island pixel (raster order): flat index in the image, label in the range
        (``1..n``, raster order of first pixels, joined across the range's bands by
        :attr:`links`), significance, image minus background, and rms.
    links
        ``(2, k)`` pairs of labels that touch across a band border inside the range.
    first, last
        Labels of the range's first and last rows (None for an empty range).
    n
        Labels used.
    """

    pixels: npt.NDArray[np.int64]
    labels: npt.NDArray[np.int64]
    sig: F32
    flux: F32
    rms: F32
    links: list[npt.NDArray[np.int64]]
    first: npt.NDArray[np.int64] | None
    last: npt.NDArray[np.int64] | None
    n: int


def _touching(
    last: npt.NDArray[np.int64], first: npt.NDArray[np.int64]
) -> list[npt.NDArray[np.int64]]:
    """8-connectivity across a row border: pairs of labels of (x - 1, x, x + 1) above."""
    nx = last.size
    out = []
    for dx in (-1, 0, 1):
        a = last[max(0, -dx) : nx - max(0, dx)]
        b = first[max(0, dx) : nx - max(0, -dx)]
        both = (a > 0) & (b > 0)
        out.append(np.stack([a[both], b[both]]))
    return out


def label_rows(
    read: RowReader,
    bkg_grid: F32,
    rms_grid: F32,
    cell: int,
    shape: tuple[int, int],
    y0: int,
    y1: int,
) -> LabelPart:
    """8-connected pixels above :data:`ISLAND_SNR` in rows ``y0:y1``, band by band.

    Parameters
    ----------
    read
        The image's rows.
    bkg_grid, rms_grid, cell
        The noise grid (:class:`NoiseMaps`).
    shape
        ``(ny, nx)`` of the image.
    y0, y1
        The rows.

    Returns
    -------
    LabelPart
        The range's island pixels and labels.
    """
    ny, nx = shape
    structure = np.ones((3, 3), dtype=bool)
    parts: list[tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], F32, F32, F32]] = []
    links: list[npt.NDArray[np.int64]] = []
    offset = 0
    first: npt.NDArray[np.int64] | None = None
    last: npt.NDArray[np.int64] | None = None
    for a, b in _bands(ny, nx):
        a, b = max(a, y0), min(b, y1)
        if a >= b:
            continue
        data, mask = read(a, b)
        bkg, rms, sig = band_maps(bkg_grid, rms_grid, cell, a, data, mask)
        lab, n = ndimage.label(sig > ISLAND_SNR, structure=structure)
        lab = np.asarray(lab, dtype=np.int64)
        lab[lab > 0] += offset
        if last is not None:
            links += _touching(last, lab[0])
        else:
            first = lab[0].copy()
        last = lab[-1].copy()
        idx = np.flatnonzero(lab)
        flux = (data.ravel()[idx] - bkg.ravel()[idx]).astype(np.float32)
        parts.append((idx + a * nx, lab.ravel()[idx], sig.ravel()[idx], flux, rms.ravel()[idx]))
        offset += n
    i64, f32 = np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    return LabelPart(
        pixels=np.concatenate([p[0] for p in parts]) if parts else i64,
        labels=np.concatenate([p[1] for p in parts]) if parts else i64,
        sig=np.concatenate([p[2] for p in parts]) if parts else f32,
        flux=np.concatenate([p[3] for p in parts]) if parts else f32,
        rms=np.concatenate([p[4] for p in parts]) if parts else f32,
        links=links,
        first=first,
        last=last,
        n=offset,
    )


def join_parts(
    parts: list[LabelPart],
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], F32, F32, F32]:
    """The islands of the whole image from its row ranges' (in row order, covering it).

    Returns
    -------
    pixels, labels, sig, flux, rms
        Per island pixel (raster order), with the labels ``scipy.ndimage.label`` gives the
        whole image.
    """
    links: list[npt.NDArray[np.int64]] = []
    provs = []
    offset = 0
    last: npt.NDArray[np.int64] | None = None
    for p in parts:
        if p.n == 0 and p.first is None:
            continue
        provs.append(np.where(p.labels > 0, p.labels + offset, 0))
        links += [lk + offset for lk in p.links]
        first = np.where(p.first > 0, p.first + offset, 0) if p.first is not None else None
        if last is not None and first is not None:
            links += _touching(last, first)
        if p.last is not None:
            last = np.where(p.last > 0, p.last + offset, 0)
        offset += p.n
    prov = np.concatenate(provs) if provs else np.zeros(0, dtype=np.int64)
    final = _join(prov, links, offset)

    def cat(name: str, dtype: type) -> npt.NDArray[Any]:
        arrays = [getattr(p, name) for p in parts]
        return np.concatenate(arrays) if arrays else np.zeros(0, dtype=dtype)

    return (
        cat("pixels", np.int64),
        final,
        cat("sig", np.float32),
        cat("flux", np.float32),
        cat("rms", np.float32),
    )


def _label_bands(
    maps: NoiseMaps,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32], F32, F32, F32]:
    """8-connected pixels above :data:`ISLAND_SNR`, band by band of rows, joined across bands
    (:func:`join_parts` of one :func:`label_rows` over every row)."""
    read = memory_rows(maps.data, maps.mask)
    shape = maps.data.shape
    part = label_rows(
        read,
        maps.bkg_grid,
        maps.rms_grid,
        maps.cell,
        (int(shape[0]), int(shape[1])),
        0,
        int(shape[0]),
    )
    return join_parts([part])


def _join(
    prov: npt.NDArray[np.int64], links: list[npt.NDArray[np.int64]], n: int
) -> npt.NDArray[np.int32]:
    """Final labels of pixels from their band labels (``1..n``) joined by ``links``: one label
    per connected group, numbered by the group's first band label (its first pixel)."""
    if n == 0:
        return np.zeros(prov.shape, dtype=np.int32)
    pairs = np.concatenate(links, axis=1) if links else np.zeros((2, 0), dtype=np.int64)
    if pairs.size:
        from scipy.sparse import coo_matrix
        from scipy.sparse.csgraph import connected_components

        g = coo_matrix((np.ones(pairs.shape[1]), (pairs[0] - 1, pairs[1] - 1)), shape=(n, n))
        _, comp = connected_components(g, directed=False)
    else:
        comp = np.arange(n)
    # Band labels are in raster order of their first pixel, so a group's first pixel is that
    # of its smallest band label.
    _, first = np.unique(comp, return_index=True)
    rank = np.empty(first.size, dtype=np.int32)
    rank[np.argsort(first)] = np.arange(1, first.size + 1, dtype=np.int32)
    lut = np.concatenate([[0], rank[comp]]).astype(np.int32)
    return lut[prov]


def find_islands(image: FitsImage) -> Islands:
    """Noise maps, significance and islands of ``image`` with their moments.

    Made band by band of rows: the memory is the island pixels and a few bands, not the
    image's size again.

    Parameters
    ----------
    image
        The image.

    Returns
    -------
    Islands
        Maps and per-island measurements.
    """
    maps = noise_grid(image.data, image.mask, island_box(image))
    return islands_from(maps, *_label_bands(maps))


def island_box(image: FitsImage) -> int:
    """Side of the noise grid's blocks: about ten beams."""
    return int(round(10 * beam_fwhm_pix(image)))


def islands_from(
    maps: NoiseMaps,
    idx: npt.NDArray[np.int64],
    lab: npt.NDArray[np.int32],
    sig: F32,
    flux32: F32,
    rms_pix: F32,
) -> Islands:
    """:class:`Islands` from the noise maps and the island pixels (:func:`join_parts`): the
    per-island moments.

    Parameters
    ----------
    maps
        The noise maps.
    idx, lab, sig, flux32, rms_pix
        Per island pixel: flat index, label, significance, flux, rms.

    Returns
    -------
    Islands
        Maps and per-island measurements.
    """
    n = int(lab.max()) if lab.size else 0
    nx = maps.data.shape[1]
    yy, xx = np.divmod(idx, nx)
    s = sig.astype(np.float64)
    flux = flux32.astype(np.float64)
    w = np.maximum(s, 0.0)
    m = n + 1

    def total(weights: F64 | None = None) -> F64:
        return np.bincount(lab, weights=weights, minlength=m).astype(np.float64)

    npix = total()
    wsum = np.maximum(total(w), 1e-12)
    cx, cy = total(w * xx) / wsum, total(w * yy) / wsum
    dx, dy = xx - cx[lab], yy - cy[lab]
    del xx, yy  # 16 bytes per island pixel
    sxx, syy, sxy = total(w * dx * dx) / wsum, total(w * dy * dy) / wsum, total(w * dx * dy) / wsum
    big, small, theta = moment_ellipse(sxx, syy, sxy)
    ecc = np.sqrt(np.clip(1.0 - (small / np.maximum(big, 1e-12)) ** 2, 0.0, 1.0))
    # Pixels inside the 2-sigma moment ellipse of an island that fills it: about 4 pi a b.
    fill = npix / np.maximum(4.0 * math.pi * big * small, 1.0)
    peak = np.zeros(m)
    np.maximum.at(peak, lab, s)
    return Islands(
        pixels=idx,
        pixel_labels=lab,
        maps=maps,
        median_rms=maps.median_rms(),
        npix=npix,
        flux=total(flux),
        peak=peak,
        mean_rms=total(rms_pix.astype(np.float64)) / np.maximum(npix, 1),
        cx=cx,
        cy=cy,
        ecc=ecc,
        fill=np.minimum(fill, 5.0),
        theta=theta,
    )


def _log(values: F64, floor: float = 1e-6) -> F64:
    out = np.log10(np.maximum(values, floor))
    return np.where(np.isfinite(values), out, MISSING)


def row_islands(
    isl: Islands, xi: npt.NDArray[np.intp], yi: npt.NDArray[np.intp]
) -> npt.NDArray[np.intp]:
    """The island under each row's pixel, else the largest label within 2 pixels (0: none)."""
    own = isl.label_at(yi, xi)
    lost = np.flatnonzero(own == 0)
    if lost.size:
        offs = np.arange(-2, 3)
        win = isl.label_at(
            yi[lost, None, None] + offs[None, :, None], xi[lost, None, None] + offs[None, None, :]
        )
        own[lost] = win.reshape(lost.size, -1).max(axis=1)
    return own


def _context(
    isl: Islands,
    own: npt.NDArray[np.intp],
    x: F64,
    y: F64,
    peak_snr: F64,
    fwhm: float,
    beam_area: float,
) -> F64:
    """Bright-source and neighbour features (columns 13-23 of :data:`FEATURE_NAMES`)."""
    n = len(own)
    out = np.full((n, 11), MISSING)
    ids = np.arange(1, len(isl.npix))
    bright = ids[isl.peak[1:] >= BRIGHT_SNR]
    if bright.size:
        tree = cKDTree(np.column_stack([isl.cx[bright], isl.cy[bright]]))
        k = min(2, bright.size)
        d, j = tree.query(np.column_stack([x, y]), k=k)
        d, j = d.reshape(n, k), j.reshape(n, k)
        # The nearest bright source that is not the row's own island.
        pick = np.where(bright[j[:, 0]] == own, 1, 0) if k > 1 else np.zeros(n, dtype=int)
        rows = np.arange(n)
        dist, b = d[rows, pick], bright[j[rows, pick]]
        alone = (k == 1) & (bright[j[:, 0]] == own)
        dist = np.where(alone, np.inf, dist)
        out[:, 0] = np.where(np.isfinite(dist), _log(dist / fwhm), MISSING)
        out[:, 1] = np.where(np.isfinite(dist), _log(peak_snr / isl.peak[b]), MISSING)
        phi = np.arctan2(y - isl.cy[b], x - isl.cx[b])
        align = np.abs(np.cos(isl.theta[np.maximum(own, 0)] - phi))
        out[:, 2] = np.where(np.isfinite(dist) & (own > 0), align, MISSING)
    ny, nx = isl.shape
    rms_near, _ = isl.maps.at(
        np.clip(np.rint(y), 0, ny - 1).astype(np.intp),
        np.clip(np.rint(x), 0, nx - 1).astype(np.intp),
    )
    out[:, 3] = rms_near / isl.median_rms
    strong = ids[isl.peak[1:] >= 5.0]
    if strong.size >= 2:
        pts = np.column_stack([isl.cx[strong], isl.cy[strong]])
        tree = cKDTree(pts)
        me = np.column_stack([x, y])
        near = tree.query_ball_point(me, r=20.0 * fwhm)
        for i, cand in enumerate(near):
            others = [c for c in cand if strong[c] != own[i]]
            if not others:
                continue
            o = np.asarray(others)
            dv = pts[o] - me[i]
            dd = np.hypot(dv[:, 0], dv[:, 1])
            out[i, 4] = float(np.sum(dd <= 10.0 * fwhm))
            j = int(np.argmin(dd))
            out[i, 5] = math.log10(max(dd[j] / fwhm, 1e-3))
            out[i, 6] = math.log10(max(isl.peak[strong[o[j]]] / max(peak_snr[i], 1e-3), 1e-6))
            out[i, 9] = math.log10(max(isl.npix[strong[o[j]]] / beam_area, 1e-3))
            if own[i] > 0:
                phi = math.atan2(dv[j, 1], dv[j, 0])
                out[i, 8] = abs(math.cos(isl.theta[own[i]] - phi))
            if len(o) >= 2:
                u = dv / np.maximum(dd[:, None], 1e-9)
                cos = u @ u.T
                out[i, 7] = float(cos.min())
                close = dd <= 12.0 * fwhm
                if close.sum() >= 2:
                    out[i, 10] = float(cos[np.ix_(close, close)].min())
        out[:, 4] = np.where(out[:, 4] == MISSING, 0.0, out[:, 4])
    return out


def _cutouts(isl: Islands, xi: npt.NDArray[np.intp], yi: npt.NDArray[np.intp], fwhm: float) -> F64:
    """Cut-out features (the last four columns of :data:`FEATURE_NAMES`), by chunks of
    :data:`ROW_CHUNK` rows."""
    n = len(xi)
    out = np.empty((n, 4))
    for a in range(0, n, ROW_CHUNK):
        b = a + ROW_CHUNK
        out[a:b] = _cutout_chunk(isl, xi[a:b], yi[a:b], fwhm)
    return out


def _peak_pixels(
    isl: Islands, xi: npt.NDArray[np.intp], yi: npt.NDArray[np.intp]
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Each row's position moved to the brightest pixel within 2 px (the row's peak)."""
    n = len(xi)
    offs = np.arange(-2, 3)
    _, win = isl.maps.at(
        yi[:, None, None] + offs[None, :, None], xi[:, None, None] + offs[None, None, :]
    )
    best = win.reshape(n, -1).argmax(axis=1)
    return yi + best // 5 - 2, xi + best % 5 - 2


def _cutout_chunk(
    isl: Islands, xi: npt.NDArray[np.intp], yi: npt.NDArray[np.intp], fwhm: float
) -> F64:
    n = len(xi)
    r = max(3, int(math.ceil(2.5 * fwhm)))
    # Significance around each row's peak (0 outside the image).
    py, px = _peak_pixels(isl, xi, yi)
    k = np.arange(-r, r + 1)
    _, cut32 = isl.maps.at(
        py[:, None, None] + k[None, :, None], px[:, None, None] + k[None, None, :]
    )
    cut = cut32.astype(np.float64)
    rr = np.hypot(k[:, None], k[None, :])
    centre = np.maximum(cut[:, r, r], 1e-3)
    beam = np.exp(-0.5 * (rr / (fwhm / 2.3548)) ** 2)
    inner = rr <= 1.5 * fwhm
    resid = cut - centre[:, None, None] * beam[None]
    out = np.empty((n, 4))
    out[:, 0] = (cut < -3.0).reshape(n, -1).mean(axis=1)
    out[:, 1] = np.sqrt((resid[:, inner] ** 2).mean(axis=1)) / centre
    ring = (rr >= fwhm) & (rr <= 2.0 * fwhm)
    out[:, 2] = cut[:, ring].mean(axis=1) / centre
    flip = cut[:, ::-1, ::-1]
    out[:, 3] = np.abs(cut - flip).reshape(n, -1).sum(axis=1) / np.maximum(
        np.abs(cut).reshape(n, -1).sum(axis=1), 1e-9
    )
    return out


def _column(table: Table, name: str) -> F64:
    if name not in table.colnames:
        return np.full(len(table), np.nan)
    col = table[name]
    values = col.filled(np.nan) if hasattr(col, "filled") else col
    return np.asarray(values, dtype=np.float64)


def row_pixels(
    image: FitsImage, table: Table
) -> tuple[F64, F64, npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Rows' positions in the image's pixels: ``x, y`` (0-based, NaN as 0) and the nearest
    pixel ``xi, yi`` inside the image.

    Parameters
    ----------
    image
        The image.
    table
        The catalogue (``x``, ``y`` in the image's full-frame pixels).

    Returns
    -------
    x, y, xi, yi
        Positions and pixel indices.
    """
    ny, nx = image.shape
    ox, oy = image.origin
    x = np.nan_to_num(_column(table, "x") - ox, nan=0.0)
    y = np.nan_to_num(_column(table, "y") - oy, nan=0.0)
    xi = np.clip(np.rint(x), 0, nx - 1).astype(np.intp)
    yi = np.clip(np.rint(y), 0, ny - 1).astype(np.intp)
    return x, y, xi, yi


def stamps(image: FitsImage, table: Table, islands: Islands | None = None) -> F32:
    """The image model's input of every row: a cut-out of the significance map.

    :data:`STAMP_SIDE` x :data:`STAMP_SIDE` points :data:`STAMP_STEP_BEAMS` beams apart (nearest
    pixel), centred on the row's peak (the brightest pixel within 2 px of its position), over
    the peak's significance (at least 1), clipped to +-:data:`STAMP_CLIP`; 0 outside the image.

    Parameters
    ----------
    image
        The image the catalogue comes from.
    table
        The catalogue.
    islands
        The image's islands (:func:`find_islands`), computed when not given.

    Returns
    -------
    numpy.ndarray
        float32, rows x ``STAMP_SIDE ** 2`` (row-major: y then x).
    """
    n = len(table)
    if n == 0:
        return np.zeros((0, STAMP_SIDE**2), dtype=np.float32)
    isl = islands if islands is not None else find_islands(image)
    _, _, xi, yi = row_pixels(image, table)
    half = STAMP_SIDE // 2
    offs = np.rint(np.arange(-half, half + 1) * STAMP_STEP_BEAMS * beam_fwhm_pix(image))
    k = offs.astype(np.intp)
    out = np.empty((n, STAMP_SIDE**2), dtype=np.float32)
    for a in range(0, n, ROW_CHUNK):
        py, px = _peak_pixels(isl, xi[a : a + ROW_CHUNK], yi[a : a + ROW_CHUNK])
        _, cut = isl.maps.at(
            py[:, None, None] + k[None, :, None], px[:, None, None] + k[None, None, :]
        )
        centre = np.maximum(cut[:, half, half], np.float32(1.0))
        scaled = np.clip(cut / centre[:, None, None], -STAMP_CLIP, STAMP_CLIP)
        out[a : a + ROW_CHUNK] = scaled.reshape(len(py), -1)
    return out


def row_features(image: FitsImage, table: Table, islands: Islands | None = None) -> F64:
    """The feature matrix of a catalogue (rows x :data:`FEATURE_NAMES`).

    Parameters
    ----------
    image
        The image the catalogue comes from.
    table
        Shared-schema catalogue (``x``, ``y``, ``peak_flux``, ``flux``, ``maj``, ``min``,
        ``flags``; missing values allowed).
    islands
        The image's islands (:func:`find_islands`), computed when not given.

    Returns
    -------
    numpy.ndarray
        float64 matrix; features that cannot be computed are :data:`MISSING`.
    """
    n = len(table)
    if n == 0:
        return np.zeros((0, len(FEATURE_NAMES)))
    isl = islands if islands is not None else find_islands(image)
    fwhm = beam_fwhm_pix(image)
    x, y, xi, yi = row_pixels(image, table)
    own = row_islands(isl, xi, yi)
    rms_at, sig_at = isl.maps.at(yi, xi)
    rms_here = rms_at.astype(np.float64)
    peak = _column(table, "peak_flux")
    peak_snr = np.where(np.isfinite(peak), peak / rms_here, sig_at)
    island_rms = np.where(own > 0, isl.mean_rms[own], rms_here)
    bmaj, bmin, _ = image.beam
    maj, mnr = _column(table, "maj"), _column(table, "min")
    area = maj * mnr / (bmaj * bmin)
    ecc = np.sqrt(np.clip(1.0 - (mnr / maj) ** 2, 0.0, 1.0))
    has_island = own > 0
    isl_beams = np.where(has_island, isl.npix[own] / image.beam_area_pix, np.nan)
    area = np.where(np.isfinite(area) & (area > 0), area, isl_beams)
    ecc = np.where(np.isfinite(ecc), ecc, np.where(has_island, isl.ecc[own], MISSING))
    flux = _column(table, "flux")
    fop = flux / peak
    isl_fop = np.where(
        has_island,
        isl.flux[own] / np.maximum(isl.peak[own] * isl.mean_rms[own] * image.beam_area_pix, 1e-12),
        np.nan,
    )
    fop = np.where(np.isfinite(fop) & (fop > 0), fop, isl_fop)
    counts = np.bincount(own, minlength=len(isl.npix))
    rows_in = np.where(has_island, counts[own], 1)
    flags = np.nan_to_num(_column(table, "flags"), nan=0.0).astype(np.int64)
    feats = np.column_stack(
        [
            _log(peak_snr),
            _log(peak / island_rms),
            _log(area),
            ecc,
            _log(fop),
            np.log10(rows_in),
            ((flags & FLAG_TRUNCATED) != 0).astype(float),
            ((flags & FLAG_BLENDED) != 0).astype(float),
            _log(isl_beams),
            np.where(has_island, isl.ecc[own], MISSING),
            np.where(has_island, isl.fill[own], MISSING),
            np.where(has_island, _log(isl.peak[own]), MISSING),
            _log(isl_fop),
            _context(isl, own, x, y, peak_snr, fwhm, image.beam_area_pix),
            _cutouts(isl, xi, yi, fwhm),
        ]
    )
    return np.where(np.isfinite(feats), feats, MISSING)
