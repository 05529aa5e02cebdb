"""Run the ``photutils`` app: ``python -m caesar_rest.apps.photutils_run --input X --outdir D ...``.

Steps: load the image, estimate background and rms maps with ``Background2D`` (median in boxes,
median-filtered), segment the background-subtracted image at ``mergethr`` sigma with
``detect_sources``, deblend the segments with ``deblend_sources``, measure them with
``SourceCatalog`` and keep the sources whose peak is at least ``seedthr`` times the local rms.
Peak fluxes are in Jy/beam, integrated fluxes (pixel sums over the beam area) in Jy, sizes are
FWHM on the sky and PA east of north, as in the shared schema.

Exit codes: 0 success, 2 bad input or options (clear message on stderr), 1 unexpected error.
"""

from __future__ import annotations

import sys
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from astropy.table import Table
from scipy import ndimage

from caesar_rest.apps.adapt import Moments, map_medians, moments_table, truncated_labels
from caesar_rest.apps.console import say
from caesar_rest.apps.photutils_app import PhotutilsApp
from caesar_rest.apps.products import Extraction, MapStyle
from caesar_rest.apps.program import Finder, program_main
from caesar_rest.catalogue.schema import FLAG_BLENDED, FLAG_TRUNCATED
from caesar_rest.catalogue.writers import make_table
from caesar_rest.imaging.fits_image import (
    FWHM_PER_SIGMA,
    FitsImage,
    ImageError,
)

PROG = "photutils_run"
ORIGIN = "caesar-rest photutils"
#: Background boxes with more than this percentage of blank pixels are left out and filled by
#: interpolation (photutils' default of 10 drops every box along a blank border).
EXCLUDE_PERCENTILE = 50.0


@dataclass
class PhotutilsResult:
    """What :func:`extract_sources` found.

    Attributes
    ----------
    table
        The catalogue (shared schema).
    background, rms
        Background and rms maps.
    n_segments
        Segments above ``mergethr`` (before deblending and the ``seedthr`` cut).
    n_objects
        Deblended sources before the ``seedthr`` cut.
    timings_s
        Seconds per step.
    """

    table: Table
    background: npt.NDArray[np.float32]
    rms: npt.NDArray[np.float32]
    n_segments: int
    n_objects: int
    timings_s: dict[str, float] = field(default_factory=dict)


def _values(quantity: Any) -> npt.NDArray[np.float64]:
    # SourceCatalog returns astropy Quantities (pix, deg) or plain arrays.
    return np.asarray(getattr(quantity, "value", quantity), dtype=np.float64)


def _background(
    work: npt.NDArray[np.float32], mask: npt.NDArray[np.bool_], options: Mapping[str, Any]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    from photutils.background import Background2D, MedianBackground

    ny, nx = work.shape
    box = (min(int(options["bkgbox"]), ny), min(int(options["bkgbox"]), nx))
    size = int(options["bkgfilter"])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input data contains NaN" style notes
            bkg = Background2D(
                work,
                box,
                mask=mask,
                filter_size=(size, size),
                bkg_estimator=MedianBackground(),
                exclude_percentile=EXCLUDE_PERCENTILE,
            )
    except ValueError as exc:
        raise ImageError(f"cannot estimate the background: {exc}") from None
    back = np.asarray(bkg.background, dtype=np.float32)
    rms = np.asarray(bkg.background_rms, dtype=np.float32)
    bad = ~np.isfinite(rms) | (rms <= 0)
    if bad.all():
        raise ImageError("cannot estimate the noise: the rms map is zero everywhere")
    if bad.any():
        rms[bad] = np.median(rms[~bad])
        back[bad & ~np.isfinite(back)] = 0.0
    return back, rms


def _centroid_variance(
    sub: npt.NDArray[np.float32], labels: npt.NDArray[np.int32], ids: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Per label: sum of (x - xc)^2 and (y - yc)^2 over its pixels (flux-weighted centroid)."""
    ny, nx = sub.shape
    yy, xx = np.mgrid[0:ny, 0:nx]
    w = sub.astype(np.float64)
    flux = ndimage.sum_labels(w, labels, ids)
    xc = ndimage.sum_labels(w * xx, labels, ids) / flux
    yc = ndimage.sum_labels(w * yy, labels, ids) / flux
    n = ndimage.sum_labels(np.ones_like(w), labels, ids)
    sx = ndimage.sum_labels(xx.astype(np.float64), labels, ids)
    sy = ndimage.sum_labels(yy.astype(np.float64), labels, ids)
    sxx = ndimage.sum_labels((xx * xx).astype(np.float64), labels, ids)
    syy = ndimage.sum_labels((yy * yy).astype(np.float64), labels, ids)
    dxx = sxx - 2.0 * xc * sx + n * xc**2
    dyy = syy - 2.0 * yc * sy + n * yc**2
    return np.asarray(dxx), np.asarray(dyy), np.asarray(flux)


def extract_sources(image: FitsImage, options: Mapping[str, Any]) -> PhotutilsResult:
    """Find and measure sources in ``image`` with photutils.

    Parameters
    ----------
    image
        The image (from :func:`~caesar_rest.imaging.load_image`).
    options
        Resolved options (see :func:`~caesar_rest.apps.program.resolve_options`).

    Returns
    -------
    PhotutilsResult
        The catalogue and the maps.
    """
    from photutils.segmentation import SourceCatalog, deblend_sources, detect_sources

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    mask = image.mask
    work = np.where(mask, np.float32(0.0), image.data).astype(np.float32)
    back, rms = _background(work, mask, options)
    sub = (work - back).astype(np.float32)
    sub[mask] = 0.0
    t1 = time.perf_counter()
    timings["background"] = t1 - t0

    npix_min = int(options["npixmin"])
    segm = detect_sources(sub, float(options["mergethr"]) * rms, n_pixels=npix_min, mask=mask)
    if segm is None:
        timings["extract"] = time.perf_counter() - t1
        return PhotutilsResult(make_table(None), back, rms, 0, 0, timings)
    parents = np.asarray(segm.data, dtype=np.int32)
    if options["no-deblend"]:
        deblended = segm
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # photutils warns about segments it cannot split
            deblended = deblend_sources(
                sub,
                segm,
                n_pixels=npix_min,
                n_levels=int(options["deblend-nlevels"]),
                contrast=float(options["deblend-contrast"]),
                progress_bar=False,
            )
    cat = SourceCatalog(sub, deblended, mask=mask)
    t2 = time.perf_counter()
    timings["extract"] = t2 - t1

    labels = np.asarray(cat.label, dtype=np.int64)
    xpk = np.asarray(cat.max_value_xindex, dtype=np.intp)
    ypk = np.asarray(cat.max_value_yindex, dtype=np.intp)
    peak = _values(cat.max_value)
    rms_pk = rms[ypk, xpk].astype(np.float64)
    parent_of = parents[ypk, xpk].astype(np.int64)
    members = np.bincount(parent_of, minlength=int(parents.max()) + 1)
    keep = peak >= float(options["seedthr"]) * rms_pk
    cut = truncated_labels(parents, mask)
    dxx, dyy, wsum = _centroid_variance(sub, np.asarray(deblended.data, np.int32), labels)

    sel = np.flatnonzero(keep)
    table = _measure(
        image,
        cat,
        sel,
        back,
        rms_pk,
        parent_of,
        members,
        cut,
        (dxx, dyy, wsum),
    )
    timings["measure"] = time.perf_counter() - t2
    return PhotutilsResult(table, back, rms, int(segm.n_labels), len(labels), timings)


def _measure(
    image: FitsImage,
    cat: Any,
    sel: npt.NDArray[np.intp],
    back: npt.NDArray[np.float32],
    rms_pk: npt.NDArray[np.float64],
    parent_of: npt.NDArray[np.int64],
    members: npt.NDArray[np.int64],
    cut: set[int],
    spread: tuple[npt.NDArray[np.float64], ...],
) -> Table:
    if sel.size == 0:
        return make_table(None)
    x = _values(cat.x_centroid)[sel]
    y = _values(cat.y_centroid)[sel]
    xpk = np.asarray(cat.max_value_xindex, dtype=np.intp)[sel]
    ypk = np.asarray(cat.max_value_yindex, dtype=np.intp)[sel]
    peak = _values(cat.max_value)[sel]
    npix = _values(cat.area)[sel]
    seg_flux = _values(cat.segment_flux)[sel]
    rms_s = rms_pk[sel]
    parent = parent_of[sel]
    area = image.beam_area_pix
    a = _values(cat.semimajor_axis)[sel] * FWHM_PER_SIGMA
    b = _values(cat.semiminor_axis)[sel] * FWHM_PER_SIGMA
    theta = np.radians(_values(cat.orientation)[sel])

    # Centroid errors for noise correlated over a beam: var = corr * rms^2 * sum(dx^2) / F^2.
    dxx, dyy, wsum = (v[sel] for v in spread)
    corr = max(1.0, area)
    with np.errstate(invalid="ignore", divide="ignore"):
        x_err = np.sqrt(corr * rms_s**2 * np.clip(dxx, 0.0, None)) / np.abs(wsum)
        y_err = np.sqrt(corr * rms_s**2 * np.clip(dyy, 0.0, None)) / np.abs(wsum)
    cov = np.zeros((sel.size, 2, 2), dtype=np.float64)
    cov[:, 0, 0], cov[:, 1, 1] = x_err**2, y_err**2

    flags = np.zeros(sel.size, dtype=np.int64)
    flags[members[parent] > 1] |= FLAG_BLENDED
    flags[np.isin(parent, list(cut))] |= FLAG_TRUNCATED
    moments = Moments(
        x=x,
        y=y,
        a=a,
        b=b,
        theta=theta,
        cov=cov,
        peak=peak,
        pixel_flux=seg_flux,
        npix=npix,
        rms=rms_s,
        bkg=back[ypk, xpk].astype(np.float64),
        island_of=parent,
        flags=flags,
    )
    return moments_table(image, moments)


class PhotutilsFinder(Finder):
    """The ``photutils`` program: :func:`extract_sources` and its log lines."""

    prog = PROG
    description = "Extract sources from a FITS image with photutils."
    maps = MapStyle(ORIGIN)

    def extract(self, image: FitsImage, opts: Mapping[str, Any], out_dir: Path) -> Extraction:
        """Find and measure the sources with photutils (see :func:`extract_sources`)."""
        import photutils

        result = extract_sources(image, opts)
        medians = map_medians(image, result.background, result.rms)
        say(PROG, f"background: {opts['bkgbox']} px boxes, median rms {medians['rms_median']:.4g}")
        say(
            PROG,
            f"detection: {result.n_segments} segments above {opts['mergethr']} sigma, "
            f"{result.n_objects} after deblending, {len(result.table)} sources with peak >= "
            f"{opts['seedthr']} sigma",
        )
        return Extraction(
            table=result.table,
            background=result.background,
            rms=result.rms,
            n_islands=result.n_segments,
            timings=result.timings_s,
            tool=f"photutils {photutils.__version__}",
            summary=medians,
        )


FINDER = PhotutilsFinder()


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see :func:`~caesar_rest.apps.program.program_main`)."""
    return program_main(PhotutilsApp(), FINDER, argv)


if __name__ == "__main__":
    sys.exit(main())
