"""The source finder's run on one array: a whole image or a tile (spec sections 2-6).

:func:`find_in_array` runs the steps in order, each a function of its own: the background
(:func:`estimate_background`), the compact search, the extended search and the merge of both
into one label image, the measured islands, and :func:`process_islands` (selection, nested
sources, fits). :mod:`.pipeline` calls it on a whole image, :mod:`.tiling` on each tile (and
:func:`process_islands` on the islands merged across tile borders).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from caesar_rest.imaging.fits_image import FitsImage, sky_ellipse_to_pixel, sky_jacobian
from caesar_rest.sourcefinder import (
    background,
    detection,
    extended,
    fitting,
    islands,
    masks,
    nesting,
)
from caesar_rest.sourcefinder import selection as sel
from caesar_rest.sourcefinder._types import F32, FWHM, I32, I64, B
from caesar_rest.sourcefinder.bands import row_bands
from caesar_rest.sourcefinder.islands import (
    MORPH_COMPACT,
    MORPH_COMPACT_EXTENDED,
    MORPH_EXTENDED,
    MORPH_POINTLIKE,
    IslandSet,
)
from caesar_rest.sourcefinder.lm import NPAR
from caesar_rest.sourcefinder.options import FinderOptions

#: Classifies the islands of a tile: (process here, send to the master) per island.
Classifier = Callable[[IslandSet], tuple[B, B]]


@dataclass(frozen=True)
class BeamPix:
    """The beam in the units the pipeline needs.

    Attributes
    ----------
    bmaj, bmin, bpa
        FWHM in arcsec and position angle in degrees east of north.
    area_pix
        Beam area in pixels (``pi bmaj bmin / (4 ln 2) / pixel^2``).
    width_px
        ``ceil(sqrt(bmaj bmin) / pixel)``: the unit of background boxes (spec conventions).
    pix_min
        Minor FWHM in pixels: the unit of the blob scales.
    sigma
        ``(sigma_major, sigma_minor, theta)`` of the beam in pixels, theta in radians
        counter-clockwise from +x (from the WCS at the image centre).
    """

    bmaj: float
    bmin: float
    bpa: float
    area_pix: float
    width_px: float
    pix_min: float
    sigma: tuple[float, float, float]


def beam_pixels(image: FitsImage) -> BeamPix:
    """Beam of ``image`` in pixel units.

    Parameters
    ----------
    image
        The image.

    Returns
    -------
    BeamPix
        The beam.
    """
    bmaj, bmin, bpa = image.beam
    ny, nx = image.shape
    jac = sky_jacobian(image.wcs, [(nx - 1) / 2.0], [(ny - 1) / 2.0])
    a, b, th = sky_ellipse_to_pixel(jac, bmaj, bmin, bpa)
    pix = image.pixel_scale_arcsec
    return BeamPix(
        bmaj=bmaj,
        bmin=bmin,
        bpa=bpa,
        area_pix=image.beam_area_pix,
        width_px=float(math.ceil(math.sqrt(bmaj * bmin) / pix - 1e-9)),
        pix_min=min(bmaj, bmin) / pix,
        sigma=(float(a[0]) / FWHM, float(b[0]) / FWHM, float(th[0])),
    )


@dataclass
class Sources:
    """Sources found in an image or a tile.

    Attributes
    ----------
    isl
        Islands first, then nested sources (``parent`` = index of the mother).
    fit
        Fit result (None when fitting is off); ``unit_source`` maps fit units to ``isl``.
    unit_source
        Source index of each fit unit.
    maps
        Requested maps (full tile arrays).
    edge
        Island pieces cut by a tile border, for the master to merge (tiled runs only).
    stats
        Counts and global background/noise.
    timings
        Seconds per step.
    """

    isl: IslandSet
    fit: fitting.FitResult | None
    unit_source: I64
    maps: dict[str, F32] = field(default_factory=dict)
    edge: IslandSet | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


class _Timer:
    def __init__(self, timings: dict[str, float]):
        self.timings = timings
        self.t = time.perf_counter()

    def lap(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = self.timings.get(name, 0.0) + now - self.t
        self.t = now


def estimate_background(
    data: F32,
    beam: BeamPix,
    opts: FinderOptions,
    origin: tuple[int, int] = (0, 0),
    full_shape: tuple[int, int] | None = None,
    blank: B | None = None,
) -> background.Background:
    """Background and noise maps with the options' settings (spec 2.3-2.5).

    Parameters
    ----------
    data
        Image (NaN = blank).
    beam
        Beam.
    opts
        Options.
    origin, full_shape
        Placement of ``data`` in the full image.
    blank
        The image's blank pixels, when the caller has them (default: non-finite pixels).

    Returns
    -------
    Background
        The maps.
    """

    # One set of work arrays for the box estimates of both estimates (fresh pages cost
    # about as much as the arithmetic on them).
    scratch = background.Scratch()

    def est(
        img: F32, blank: B | None, reuse: tuple[background.Background, F32] | None = None
    ) -> background.Background:
        return background.estimate(
            img,
            opts.background.box_px(beam.width_px),
            opts.background.grid,
            opts.background.estimator,
            opts.background.local,
            opts.background.second_pass,
            beam.width_px,
            origin,
            full_shape,
            blank,
            reuse,
            scratch,
        )

    bk = est(data, blank)
    if opts.background.skip_outliers:
        # The significance by bands of rows (never a whole map): the same islands.
        lab, n = detection.find_islands_banded(
            bk.significance_bands(data),
            data.shape,
            opts.compact.seed_thr,
            opts.compact.merge_thr,
            opts.compact.min_npix,
        )
        found = lab > 0
        del lab
        if n:
            masked = data.copy()
            masked[found] = np.nan
            del found
            # The masked pixels keep interpolated map values (they are not blank). Only the
            # boxes that sample a masked pixel, or whose subtracted background moved, are
            # estimated again: the others would get the first estimate's values.
            bk = est(masked, ~np.isfinite(data) if blank is None else blank, (bk, data))
    return bk


@dataclass
class _ArrayRun:
    """State of :func:`find_in_array` between its stages.

    The stages drop the arrays they no longer need (set to None) so that the fewest
    image-sized arrays are alive at once: the label image, the significance map and the masks
    are each as large as the image.
    """

    data: F32
    blank: B
    bk: background.Background
    beam: BeamPix
    opts: FinderOptions
    origin: tuple[int, int]
    fshape: tuple[int, int]
    want_maps: frozenset[str]
    maps: dict[str, F32] = field(default_factory=dict)
    #: Significance map (only when kept or needed by the iterations).
    z: F32 | None = None
    labels: I32 | None = None
    n: int = 0
    #: Compact-island pixels and extended-region pixels (extended search).
    comp_mask: B | None = None
    ext_mask: B | None = None
    #: Per label ``0..n``: the region holds extended pixels.
    is_ext: B | None = None
    #: Background of the extended search on its block grid (:func:`.masks.search`).
    ext_bkg: F32 | None = None


def find_in_array(
    data: F32,
    beam: BeamPix,
    opts: FinderOptions,
    origin: tuple[int, int] = (0, 0),
    full_shape: tuple[int, int] | None = None,
    want_maps: frozenset[str] = frozenset(),
    classify: Classifier | None = None,
    image_origin: tuple[int, int] | None = None,
    blank: B | None = None,
) -> Sources:
    """Run the pipeline on one array (a whole image or a tile).

    Parameters
    ----------
    data
        Image (float32, NaN = blank).
    beam
        Beam.
    opts
        Options.
    origin, full_shape
        Placement of ``data`` in the full image (pixel coordinates of the results are
        full-image coordinates); ``full_shape`` is ``(y_end, x_end)`` of the image.
    want_maps
        Maps to return: ``bkg``, ``rms``, ``significance``, ``residual``, ``saliency``,
        ``segmented`` (the last is made by :func:`.pipeline.find_sources` from the final
        islands, in catalogue order).
    classify
        For tiles: which islands to process here and which to send to the master (islands
        in neither are dropped: another tile reports them).
    image_origin
        ``(x0, y0)`` of the image (default ``origin``); islands on the image edges are
        flagged as truncated.
    blank
        The non-finite pixels of ``data``, when the caller has them (the loaded image does).

    Returns
    -------
    Sources
        Islands, nested sources and fits.
    """
    timings: dict[str, float] = {}
    tm = _Timer(timings)
    ny, nx = data.shape
    fshape = full_shape if full_shape is not None else (ny + origin[1], nx + origin[0])
    if blank is None:
        blank = ~np.isfinite(data)
    bk = estimate_background(data, beam, opts, origin, fshape, blank)
    tm.lap("background")
    run = _ArrayRun(data, blank, bk, beam, opts, origin, fshape, want_maps)
    _compact_search(run)
    tm.lap("compact")
    n_compact = run.n
    ext_n = 0
    if opts.extended.enabled:
        ext_n = _extended_search(run)
        _merge(run)
    else:
        run.is_ext = np.zeros(run.n + 1, dtype=bool)
    tm.lap("extended")
    isl, edge = _islands(run, classify, origin if image_origin is None else image_origin)
    tm.lap("islands")
    out = process_islands(isl, _array_reader(data, origin), beam, opts, timings)
    if run.ext_bkg is not None:
        _extended_island_background(out.isl, run.ext_bkg, opts, origin)
    if "residual" in want_maps:
        run.maps["residual"] = residual_map(data, bk.bkg, out, origin)
    if "bkg" in want_maps:
        run.maps["bkg"] = bk.bkg
    if "rms" in want_maps:
        run.maps["rms"] = bk.rms
    out.maps = run.maps
    out.edge = edge
    out.stats = _stats(bk, blank, n_compact, ext_n)
    out.timings = {**timings, **out.timings}
    return out


def _compact_search(run: _ArrayRun) -> None:
    """Compact islands (spec 3): ``run.labels``, ``run.n`` (and ``run.z`` when kept)."""
    opts, data = run.opts, run.data
    # The whole significance map only when it is kept or iterations recompute it; otherwise
    # it is produced by bands of rows (it would be the largest array of the run).
    iterate = opts.compact.enabled and opts.compact.n_iters > 1
    z = run.bk.significance(data) if "significance" in run.want_maps or iterate else None
    if z is not None and "significance" in run.want_maps:
        run.maps["significance"] = z
    run.z = z

    def recompute(work: F32) -> F32:
        return estimate_background(work, run.beam, opts, run.origin, run.fshape).significance(work)

    if opts.compact.enabled and z is None:
        run.labels, run.n = detection.find_islands_banded(
            run.bk.significance_bands(data),
            data.shape,
            opts.compact.seed_thr,
            opts.compact.merge_thr,
            opts.compact.min_npix,
        )
    elif opts.compact.enabled:
        assert z is not None
        run.labels, run.n = detection.iterative_search(
            data,
            z,
            opts.compact.seed_thr,
            opts.compact.merge_thr,
            opts.compact.min_npix,
            opts.compact.n_iters,
            opts.compact.seed_thr_step,
            recompute,
        )
    else:
        run.labels, run.n = np.zeros(data.shape, dtype=np.int32), 0


def _extended_search(run: _ArrayRun) -> int:
    """Extended regions (spec 5) on the image without its bright compact islands.

    Sets ``run.comp_mask`` and ``run.ext_mask`` (and drops ``run.z``, and ``run.labels``
    when the merge will label the union again).

    Returns
    -------
    int
        Number of extended regions.
    """
    opts, data, bk, blank = run.opts, run.data, run.bk, run.blank
    labels = run.labels
    assert labels is not None
    zmax = _label_zmax(bk, data, labels, run.n, run.z)
    run.z = None  # the maps dictionary keeps it when it is wanted
    remove = zmax > opts.extended.res_zthr
    remove[0] = False
    # The residual image (compact islands removed by dilation), built in an order that
    # keeps the fewest image-sized arrays alive at once.
    removed = extended.removal_mask(labels, remove, opts.extended.dilate_size)
    run.comp_mask = labels > 0
    if opts.extended.merge_sources:
        run.labels = labels = None  # the merge needs only the mask

    raw, gone = _raw_means(data, blank, removed, extended.reduction(opts.extended.wt_scale_min))
    del removed
    settings = masks.MaskSettings(refine=opts.extended.method in REFINED_METHODS)
    found, sal, run.ext_bkg = masks.search(
        raw,
        gone,
        lambda small, planes: _extended_mask(run, small, planes),
        _search_grid(run),
        settings,
    )
    del raw, gone
    ext_lab, ext_n = detection.label_mask(found, opts.compact.min_npix)
    del found
    if sal is not None:
        run.maps["saliency"] = sal
    del sal
    run.ext_mask = ext_lab > 0
    return ext_n


#: Extended methods whose masks :func:`.masks.search` refines: the default wavelet method
#: (its mask is as wide as the scale that found it). The others keep their own boundaries
#: (refined, the saliency mask would be the wavelet one: both seed the same regions), on
#: the extended search's background.
REFINED_METHODS = frozenset({"WT-THRESH"})


def _extended_island_background(
    isl: IslandSet, bkg_small: F32, opts: FinderOptions, origin: tuple[int, int]
) -> None:
    """Measure the extended islands against the extended search's background (in place).

    The compact search's background (boxes of 20 beams) holds a good part of a large faint
    structure; the flux of an extended island is its pixel sum above the background its
    mask was found on. Nested sources keep theirs (a compact source sits on the diffuse
    emission around it).
    """
    ext = (isl.parent < 0) & np.isin(isl.morph, (MORPH_EXTENDED, MORPH_COMPACT_EXTENDED))
    if not ext.any():
        return
    f = extended.reduction(opts.extended.wt_scale_min)
    pix = np.repeat(ext, np.diff(isl.offsets))
    by = np.minimum((isl.ys[pix] - origin[1]) // f, bkg_small.shape[0] - 1)
    bx = np.minimum((isl.xs[pix] - origin[0]) // f, bkg_small.shape[1] - 1)
    isl.bkg[pix] = bkg_small[by, bx]
    isl.measure()


def _search_grid(run: _ArrayRun) -> masks.SearchGrid:
    """Geometry of the extended search's block grid (:mod:`.masks`)."""
    opts = run.opts
    f = extended.reduction(opts.extended.wt_scale_min)
    k = int(round(math.log2(f)))
    # The background box of the extended search: at least 4 times the largest searched
    # scale (the compact search's box swallows large faint structures).
    box = max(opts.background.box_px(run.beam.width_px), 4.0 * 2.0**opts.extended.wt_scale_max)
    return masks.SearchGrid(
        f=f,
        shape=run.data.shape,
        n0=max(opts.extended.wt_scale_min - k, 0),
        n1=opts.extended.wt_scale_max - k,
        box=box / f,
        grid_fraction=opts.background.grid,
        estimator=opts.background.estimator,
        local=opts.background.local,
        rms=float(run.bk.global_rms),
        beam_area=run.beam.area_pix / float(f * f),
    )


def _raw_means(data: F32, blank: B, removed: B, f: int) -> tuple[F32, B]:
    """Block means (``f`` px) of the image without the removed compact islands, and the
    blocks whose valid pixels were all removed."""

    def rows(y0: int, y1: int) -> F32:
        band = data[y0:y1].copy()
        band[removed[y0:y1]] = np.nan
        return band

    def valid_rows(y0: int, y1: int) -> F32:
        return np.where(blank[y0:y1], np.float32(np.nan), np.float32(1.0))

    raw = extended.block_mean_rows(rows, data.shape, f)
    if blank.any():
        has_valid = np.isfinite(extended.block_mean_rows(valid_rows, data.shape, f))
    else:
        has_valid = np.ones(raw.shape, dtype=bool)
    return raw, has_valid & ~np.isfinite(raw)


def _extended_mask(run: _ArrayRun, small: F32, planes: extended.Planes) -> tuple[B, F32 | None]:
    """The extended method's mask (and search map when wanted) from the block means (and
    their decomposition, which the wavelet method keeps for the mask refinement)."""
    opts, shape = run.opts, run.data.shape
    want_sal = "saliency" in run.want_maps
    method = opts.extended.method
    # The other methods' modules load with them (not with the default WT-THRESH).
    if method == "SALIENCY-THRESH":
        from caesar_rest.sourcefinder import saliency

        return saliency.saliency_mask_reduced(
            small,
            shape,
            run.blank,
            extended.reduction(opts.extended.wt_scale_min),
            opts.saliency,
            want_sal,
        )
    if method == "ACTIVE-CONTOUR":
        from caesar_rest.sourcefinder import activecontour

        return activecontour.contour_mask_reduced(small, shape, run.blank, opts, want_sal)
    if method == "SP-HIERCLUST":
        from caesar_rest.sourcefinder import superpixel

        return superpixel.superpixel_mask_reduced(small, shape, run.blank, opts, want_sal)
    if method != "WT-THRESH":
        raise ValueError(f"unknown extended-source method extsfinder={method!r}")
    return extended.wavelet_mask_reduced(
        small,
        shape,
        run.blank,
        opts.extended.wt_scale_min,
        opts.extended.wt_scale_max,
        opts.compact.seed_thr,
        opts.compact.merge_thr,
        want_sal,
        planes,
    )


def _merge(run: _ArrayRun) -> None:
    """Compact islands and extended regions as one label image (``run.labels``, ``run.n``,
    ``run.is_ext``)."""
    opts = run.opts
    comp_mask, ext_mask = run.comp_mask, run.ext_mask
    run.comp_mask = run.ext_mask = None
    assert comp_mask is not None and ext_mask is not None
    if opts.extended.merge_sources:
        # Spec 5.6: union of compact and extended, split again (in place: the masks
        # and the new labels are the largest arrays at this point).
        ext_only = ext_mask & ~comp_mask
        np.logical_or(comp_mask, ext_mask, out=comp_mask)
        del ext_mask
        run.labels, run.n = detection.label_mask(comp_mask, opts.compact.min_npix)
        is_ext = np.zeros(run.n + 1, dtype=bool)
        np.logical_or.at(is_ext, run.labels[ext_only], True)
    else:
        labels = run.labels
        assert labels is not None
        ext_mask &= ~comp_mask
        ext_labels, ne = detection.label_mask(ext_mask, opts.compact.min_npix)
        np.add(ext_labels, run.n, out=labels, where=ext_labels > 0)
        del ext_labels
        is_ext = np.zeros(run.n + ne + 1, dtype=bool)
        is_ext[run.n + 1 :] = True
        run.n += ne
    run.is_ext = is_ext


def _islands(
    run: _ArrayRun, classify: Classifier | None, image_origin: tuple[int, int]
) -> tuple[IslandSet, IslandSet | None]:
    """Measured islands of ``run.labels`` with their morphology (drops the label image).

    Returns
    -------
    own, edge
        The islands to process here, and (tiles) the pieces to send to the master.
    """
    labels, is_ext = run.labels, run.is_ext
    run.labels = None  # the islands hold their pixels; the label image is the largest array
    assert labels is not None and is_ext is not None
    isl = islands.from_labels(
        labels,
        run.data,
        None,
        None,
        run.origin,
        run.blank,
        run.fshape,
        image_origin,
        maps=run.bk,
    )
    fittable = isl.npix / run.beam.area_pix <= run.opts.fit.max_nbeams
    # Spec 5.6: merged regions with extended pixels are EXTENDED unless fittable.
    isl.morph = np.where(is_ext[1:] & ~fittable, MORPH_EXTENDED, MORPH_COMPACT).astype(np.int64)
    del labels
    if classify is None:
        return isl, None
    own, send = classify(isl)
    return isl.subset(own), isl.subset(send)


def _stats(bk: background.Background, blank: B, n_compact: int, ext_n: int) -> dict[str, Any]:
    med_bkg, med_rms = _map_medians(bk, blank)
    return {
        "global_bkg": bk.global_bkg,
        "global_rms": bk.global_rms,
        "median_rms": med_rms,
        "median_bkg": med_bkg,
        "n_compact_islands": int(n_compact),
        "n_extended_regions": int(ext_n),
        "bkg_box_px": bk.grid.box if bk.grid is not None else None,
        "bkg_step_px": bk.grid.step if bk.grid is not None else None,
    }


def _label_zmax(
    bk: background.Background, data: F32, labels: I32, n: int, z: F32 | None
) -> npt.NDArray[np.float64]:
    """Peak significance of each label ``0..n`` (-inf when none), from ``z`` or by bands."""
    zmax = np.full(n + 1, -np.inf)
    if n == 0:
        return zmax
    bands = [(0, data.shape[0], z)] if z is not None else bk.significance_bands(data)
    for y0, y1, zb in bands:
        lb = labels[y0:y1]
        inside = lb > 0
        np.maximum.at(zmax, lb[inside], zb[inside])
    return zmax


def _map_medians(bk: background.Background, blank: B) -> tuple[float, float]:
    """Medians of the background and noise maps over every k-th valid pixel (k = n / 1e6)."""
    ny, nx = blank.shape
    n_valid = int(blank.size - np.count_nonzero(blank))
    if n_valid == 0:
        return math.nan, math.nan
    step = max(1, n_valid // 1_000_000)
    total = -(-n_valid // step)
    vb = np.empty(total, dtype=np.float32)
    vr = np.empty(total, dtype=np.float32)
    seen = got = 0
    for a, b in row_bands(ny, nx):
        valid = ~blank[a:b]
        # Valid pixels number seen, seen+1, ... here; keep those at multiples of step.
        first = (-seen) % step
        if step == 1:
            bb, rr = bk.rows(a, b)
            bb, rr = bb[valid][first::step], rr[valid][first::step]
            n_band = bb.size
        else:
            # The maps at the kept pixels only (the values of the rows, Background.at).
            idx = np.flatnonzero(valid)
            n_band = idx.size
            bb, rr = bk.at(idx[first::step] + a * nx)
        k = bb.size
        vb[got : got + k] = bb
        vr[got : got + k] = rr
        got += k
        seen += n_band
    return (
        float(np.median(vb[:got], overwrite_input=True)),
        float(np.median(vr[:got], overwrite_input=True)),
    )


def _array_reader(data: F32, origin: tuple[int, int]) -> nesting.Reader:
    ny, nx = data.shape
    ox, oy = origin

    def read(x0: int, x1: int, y0: int, y1: int) -> F32:
        # Clip to the image: callers use max(x0, 0) etc. as the cut-out origin.
        a0, a1 = max(x0, 0) - ox, min(x1 - ox, nx)
        b0, b1 = max(y0, 0) - oy, min(y1 - oy, ny)
        a0, b0 = max(a0, 0), max(b0, 0)
        return np.asarray(data[b0:b1, a0:a1], dtype=np.float32)

    return read


def process_islands(
    isl: IslandSet,
    read: nesting.Reader,
    beam: BeamPix,
    opts: FinderOptions,
    timings: dict[str, float] | None = None,
) -> Sources:
    """Selection, nested search and fits of measured islands (spec 3.6, 4, 6).

    Parameters
    ----------
    isl
        Islands (morphology set: COMPACT or EXTENDED).
    read
        Image reader for cut-outs around islands (nested search).
    beam
        Beam.
    opts
        Options.
    timings
        Dictionary receiving the time per step.

    Returns
    -------
    Sources
        Islands then nested sources, and the fits.
    """
    timings = {} if timings is None else timings
    tm = _Timer(timings)
    if opts.selection.enabled and isl.n:
        good, morph = _select(isl, beam, opts)
        isl.morph = np.where(isl.morph == MORPH_EXTENDED, MORPH_EXTENDED, morph)
        isl = isl.subset(good)
    elif isl.n:
        # Spec 3.6: with no cut enabled every compact island is point-like.
        isl.morph = np.where(isl.morph == MORPH_EXTENDED, MORPH_EXTENDED, MORPH_POINTLIKE)
    tm.lap("selection")
    nested = islands.empty()
    if opts.nested.enabled and isl.n:
        thr = math.ceil(opts.nested.beams_thr * beam.area_pix)
        eligible = isl.npix > thr
        if eligible.any():
            if opts.nested.blob_method == "GausLaplacian":
                scales = [beam.sigma[1]]
            else:
                scales = nesting.blob_scales(
                    beam.pix_min,
                    opts.nested.min_scale,
                    opts.nested.max_scale,
                    opts.nested.scale_step,
                )
            nested = nesting.nested_sources(
                isl,
                eligible,
                read,
                beam.sigma,
                scales,
                opts.nested.peak_zthr,
                opts.nested.merge_zthr,
                opts.compact.min_npix,
                opts.nested.min_mother_dist,
                opts.nested.max_pix_match,
                opts.nested.blob_thr,
                opts.nested.kern_factor,
            )
            if nested.n and opts.selection.enabled:
                good, morph = _select(nested, beam, opts)
                nested.morph = morph
                nested = nested.subset(good)
            elif nested.n:
                nested.morph = np.full(nested.n, MORPH_POINTLIKE, dtype=np.int64)
            # Spec 5.6: an extended mother holding compact nested sources.
            has_child = np.zeros(isl.n, dtype=bool)
            has_child[nested.parent] = True
            isl.morph = np.where(
                (isl.morph == MORPH_EXTENDED) & has_child, MORPH_COMPACT_EXTENDED, isl.morph
            )
    tm.lap("nested")
    n_isl = isl.n
    allsrc = islands.concat([isl, nested]) if nested.n else isl
    if allsrc.parent.size != allsrc.n:
        allsrc.parent = np.full(allsrc.n, -1, dtype=np.int64)
    fit: fitting.FitResult | None = None
    unit_source = np.zeros(0, dtype=np.int64)
    if opts.fit.enabled and allsrc.n:
        fit, unit_source = fit_sources(allsrc, n_isl, beam, opts, read)
    tm.lap("fit")
    return Sources(allsrc, fit, unit_source, timings=timings)


def _select(s: IslandSet, beam: BeamPix, o: FinderOptions) -> tuple[B, I64]:
    return sel.select(s, beam.area_pix, o.selection)


def fit_units_of(src: IslandSet, n_isl: int, beam: BeamPix, opts: FinderOptions) -> I64:
    """Sources to fit (spec 6.1): fittable islands whole, else their fittable nested sources.

    Parameters
    ----------
    src
        Islands (first ``n_isl``) then nested sources.
    n_isl
        Number of islands.
    beam
        Beam.
    opts
        Options.

    Returns
    -------
    numpy.ndarray
        Source indices.
    """
    small = src.npix / beam.area_pix <= opts.fit.max_nbeams
    whole = np.zeros(src.n, dtype=bool)
    whole[:n_isl] = small[:n_isl] & np.isin(src.morph[:n_isl], (MORPH_COMPACT, MORPH_POINTLIKE))
    nested = np.zeros(src.n, dtype=bool)
    if src.n > n_isl:
        par = src.parent[n_isl:]
        nested[n_isl:] = small[n_isl:] & ~whole[par]
    return np.flatnonzero(whole | nested)


def fit_sources(
    src: IslandSet,
    n_isl: int,
    beam: BeamPix,
    opts: FinderOptions,
    read: nesting.Reader | None = None,
) -> tuple[fitting.FitResult, I64]:
    """Fit the sources selected by :func:`fit_units_of`.

    Parameters
    ----------
    src
        Islands then nested sources.
    n_isl
        Number of islands.
    beam
        Beam.
    opts
        Options.
    read
        Image reader (for the per-source box background).

    Returns
    -------
    fit, unit_source
        The fit result and the source index of each unit.
    """
    which = fit_units_of(src, n_isl, beam, opts)
    pix = src.subset(which)
    peaks = _peaks(pix)
    zthr = max(opts.fit.peak_zthr, opts.compact.seed_thr)
    seeds = fitting.seed_components(pix, peaks, beam.sigma, zthr, opts.fit.max_components)
    if opts.fit.use_nested and src.n > n_isl:
        seeds = _nested_seeds(src, n_isl, which, pix, seeds, beam, opts)
    box_b = box_r = None
    if opts.fit.bkg_box and read is not None:
        box_b, box_r = _box_bkg(src, which, read, opts)
    units = fitting.Units(pix, seeds, box_b, box_r)
    config = fitting.FitConfig.of(opts.fit, zthr, beam.area_pix, beam.sigma)
    return fitting.fit_units(units, config), which


def _peaks(pix: IslandSet) -> B:
    return fitting.find_peaks(pix, pix.flux - pix.bkg)


def _nested_seeds(
    src: IslandSet,
    n_isl: int,
    which: I64,
    pix: IslandSet,
    seeds: list[npt.NDArray[np.float64]],
    beam: BeamPix,
    opts: FinderOptions,
) -> list[npt.NDArray[np.float64]]:
    # fit-usenestedascomponents: one beam-shaped component at the peak of each nested source.
    out = list(seeds)
    par = src.parent[n_isl:]
    zthr = max(opts.fit.peak_zthr, opts.compact.seed_thr)
    for j, s in enumerate(which):
        if s >= n_isl:
            continue
        kids = n_isl + np.flatnonzero(par == s)
        if kids.size == 0:
            continue
        amp = src.smax[kids] - src.bkg_sum[kids] / src.npix[kids]
        z = src.zmax[kids]
        order = np.argsort(-amp)
        order = order[z[order] >= zthr][: opts.fit.max_components]
        if order.size == 0:
            continue
        comp = np.empty((order.size, NPAR))
        comp[:, 0] = amp[order]
        comp[:, 1] = src.xpk[kids[order]]
        comp[:, 2] = src.ypk[kids[order]]
        comp[:, 3], comp[:, 4], comp[:, 5] = beam.sigma
        out[j] = comp
    del pix
    return out


def _box_bkg(
    src: IslandSet, which: I64, read: nesting.Reader, opts: FinderOptions
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    bb = np.full(which.size, np.nan)
    br = np.full(which.size, np.nan)
    m = opts.background.source_box_border
    for j, s in enumerate(which):
        x0, x1 = int(src.xmin[s]) - m, int(src.xmax[s]) + m + 1
        y0, y1 = int(src.ymin[s]) - m, int(src.ymax[s]) + m + 1
        cut = read(x0, x1, y0, y1).copy()
        sl = src.pixels(int(s))
        cut[src.ys[sl] - max(y0, 0), src.xs[sl] - max(x0, 0)] = np.nan
        vals = cut[np.isfinite(cut)]
        if vals.size >= 10:
            med = float(np.median(vals))
            bb[j] = med
            br[j] = 1.4826 * float(np.median(np.abs(vals - med)))
    return bb, br


def component_model(
    params: npt.NDArray[np.float64], shape: tuple[int, int], origin: tuple[int, int]
) -> F32:
    """Image of fitted components (each drawn within +-5 sigma).

    Parameters
    ----------
    params
        ``(n, 6)`` components (A, x, y in full-image pixels, sx, sy, theta).
    shape
        Array shape.
    origin
        Array origin in the full image.

    Returns
    -------
    numpy.ndarray
        The model image.
    """
    out = np.zeros(shape, dtype=np.float32)
    ny, nx = shape
    for a, x, y, sx, sy, th in params:
        r = int(math.ceil(5.0 * max(sx, sy)))
        cx, cy = int(round(x)) - origin[0], int(round(y)) - origin[1]
        x0, x1 = max(cx - r, 0), min(cx + r + 1, nx)
        y0, y1 = max(cy - r, 0), min(cy + r + 1, ny)
        if x0 >= x1 or y0 >= y1:
            continue
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dx = xx + origin[0] - x
        dy = yy + origin[1] - y
        c, s = math.cos(th), math.sin(th)
        u = dx * c + dy * s
        w = -dx * s + dy * c
        out[y0:y1, x0:x1] += (a * np.exp(-0.5 * ((u / sx) ** 2 + (w / sy) ** 2))).astype(np.float32)
    return out


def residual_map(data: F32, bkg: F32, src: Sources, origin: tuple[int, int]) -> F32:
    """Image minus background minus the fitted components.

    Parameters
    ----------
    data, bkg
        Image and background map.
    src
        Sources with fits.
    origin
        Array origin in the full image.

    Returns
    -------
    numpy.ndarray
        The residual.
    """
    res = np.subtract(data, bkg, dtype=np.float32)
    if src.fit is not None and src.fit.params.size:
        res -= component_model(src.fit.params, data.shape, origin)
    return res
