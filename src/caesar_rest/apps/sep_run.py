"""Run the ``sep`` app: ``python -m caesar_rest.apps.sep_run --input X --outdir D [--opt=val ...]``.

Steps: load the image, estimate background and rms (local SEP maps or one global sigma-clipped
level), extract islands with SEP at ``mergethr`` sigma, keep sources whose peak is at least
``seedthr`` times the local rms, measure them (moments -> position, FWHM sizes and PA on the sky)
and write the shared catalogue files, a preview and ``summary.json`` into the output folder.

Exit codes: 0 success, 2 bad input or options (clear message on stderr), 1 unexpected error.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import sep
from astropy.stats import sigma_clipped_stats
from astropy.table import Table
from scipy import ndimage

from caesar_rest.apps.adapt import Moments, map_medians, moments_table, truncated_labels
from caesar_rest.apps.console import say
from caesar_rest.apps.products import Extraction, MapStyle
from caesar_rest.apps.program import Finder, program_main
from caesar_rest.apps.sep_app import SepApp
from caesar_rest.catalogue.schema import FLAG_BLENDED, FLAG_TRUNCATED
from caesar_rest.catalogue.writers import make_table
from caesar_rest.imaging.fits_image import (
    FWHM_PER_SIGMA,
    FitsImage,
    ImageError,
    sky_ellipse_to_pixel,
    sky_jacobian,
)

PROG = "sep_run"
ORIGIN = "caesar-rest sep"
#: Pixels SEP may hold in active objects at first; raised once if an extraction overflows it.
MIN_PIXSTACK = 2_000_000
#: Sub-objects SEP may consider while deblending one island (its default of 1024 overflows on
#: large, structured islands).
SUB_OBJECT_LIMIT = 8192
#: Beyond this many unmasked pixels the global statistics use a regular subsample.
GLOBAL_STATS_MAX_PIXELS = 4_000_000


@dataclass
class SepResult:
    """What :func:`extract_sources` found.

    Attributes
    ----------
    table
        The catalogue (shared schema), sorted by island and component.
    background, rms
        Background and rms maps (full arrays, also for a global estimate).
    n_islands
        Connected islands above ``mergethr`` (before the ``seedthr`` cut).
    n_objects
        SEP objects (deblended) before the ``seedthr`` cut.
    timings_s
        Seconds spent per step.
    """

    table: Table
    background: npt.NDArray[np.float32]
    rms: npt.NDArray[np.float32]
    n_islands: int
    n_objects: int
    timings_s: dict[str, float] = field(default_factory=dict)


def _beam_kernel(image: FitsImage) -> npt.NDArray[np.float32]:
    # Beam-shaped Gaussian in pixel space (orientation from the WCS at the image centre).
    ny, nx = image.shape
    jac = sky_jacobian(image.wcs, [(nx - 1) / 2.0], [(ny - 1) / 2.0])
    fa, fb, theta = sky_ellipse_to_pixel(jac, *image.beam)
    sa, sb, t = float(fa[0]) / FWHM_PER_SIGMA, float(fb[0]) / FWHM_PER_SIGMA, float(theta[0])
    half = max(1, math.ceil(3.0 * sa))
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1].astype(np.float64)
    u = xx * math.cos(t) + yy * math.sin(t)
    v = -xx * math.sin(t) + yy * math.cos(t)
    kernel = np.exp(-0.5 * ((u / sa) ** 2 + (v / max(sb, 1e-3)) ** 2))
    return np.ascontiguousarray(kernel / kernel.sum(), dtype=np.float32)


def _estimate_background(
    work: npt.NDArray[np.float32], image: FitsImage, options: Mapping[str, Any]
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], float | None]:
    """Background and rms maps; the third value is the global rms (None for local maps)."""
    mask = image.mask
    ny, nx = image.shape
    if options["globalbkg"]:
        values = image.data[~mask]
        if values.size > GLOBAL_STATS_MAX_PIXELS:
            values = values[:: math.ceil(values.size / GLOBAL_STATS_MAX_PIXELS)]
        _, median, std = sigma_clipped_stats(values, sigma=3.0, maxiters=10)
        median, std = float(median), float(std)
        if not (math.isfinite(std) and std > 0):
            raise ImageError("cannot estimate the noise: the valid pixels are constant")
        back = np.full((ny, nx), median, dtype=np.float32)
        rms = np.full((ny, nx), std, dtype=np.float32)
        return back, rms, std
    # Boxes larger than the image would leave SEP with no box at all.
    bw, bh = min(int(options["bkgbox"]), nx), min(int(options["bkgbox"]), ny)
    fsize = int(options["bkgfilter"])
    bkg = sep.Background(work, mask=mask, bw=bw, bh=bh, fw=fsize, fh=fsize)
    back = np.ascontiguousarray(bkg.back(dtype=np.float32))
    rms = np.ascontiguousarray(bkg.rms(dtype=np.float32))
    bad = ~np.isfinite(rms) | (rms <= 0)
    if bad.any():
        # Boxes with no valid pixels: borrow the typical rms rather than a zero threshold.
        good = rms[~bad]
        if good.size == 0:
            raise ImageError("cannot estimate the noise: the rms map is zero everywhere")
        rms[bad] = np.median(good)
        back[bad & ~np.isfinite(back)] = 0.0
    return back, rms, None


def _extract(
    sub: npt.NDArray[np.float32],
    err: float | npt.NDArray[np.float32],
    mask: npt.NDArray[np.uint8],
    options: Mapping[str, Any],
    kernel: npt.NDArray[np.float32] | None,
) -> tuple[Any, npt.NDArray[np.int32]]:
    kwargs: dict[str, Any] = {
        "err": err,
        "mask": mask,
        "minarea": int(options["npixmin"]),
        "filter_kernel": kernel,
        "deblend_nthresh": int(options["deblend-nthresh"]),
        # A contrast of 1 disables deblending in SEP.
        "deblend_cont": 1.0 if options["no-deblend"] else float(options["deblend-cont"]),
        "segmentation_map": True,
    }
    if kernel is not None:
        kwargs["filter_type"] = "matched"
    sep.set_sub_object_limit(SUB_OBJECT_LIMIT)
    npix = sub.size
    sep.set_extract_pixstack(max(MIN_PIXSTACK, npix // 10))
    try:
        objects, segmap = sep.extract(sub, float(options["mergethr"]), **kwargs)
    except Exception as exc:
        if "pixel buffer full" not in str(exc) or sep.get_extract_pixstack() >= npix:
            raise
        # Very large islands (low thresholds, extended emission): allow one object to hold
        # every pixel and try once more.
        sep.set_extract_pixstack(max(npix, MIN_PIXSTACK))
        objects, segmap = sep.extract(sub, float(options["mergethr"]), **kwargs)
    return objects, np.asarray(segmap, dtype=np.int32)


def extract_sources(image: FitsImage, options: Mapping[str, Any]) -> SepResult:
    """Find and measure sources in ``image`` with SEP.

    Parameters
    ----------
    image
        The image (from :func:`~caesar_rest.imaging.load_image`).
    options
        Resolved options (see :func:`~caesar_rest.apps.program.resolve_options`).

    Returns
    -------
    SepResult
        The catalogue and the maps.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    ny, nx = image.shape
    mask = image.mask
    work = np.where(mask, np.float32(0.0), image.data).astype(np.float32, copy=False)
    work = np.ascontiguousarray(work)
    back, rms, global_rms = _estimate_background(work, image, options)
    work -= back  # background-subtracted in place (saves one image-sized array)
    work[mask] = 0.0
    t1 = time.perf_counter()
    timings["background"] = t1 - t0

    kernel = _beam_kernel(image) if options["filter"] else None
    err: float | npt.NDArray[np.float32] = global_rms if global_rms is not None else rms
    objects, segmap = _extract(work, err, mask.astype(np.uint8), options, kernel)
    t2 = time.perf_counter()
    timings["extract"] = t2 - t1

    # Islands: 8-connected groups of SEP segments (deblended objects share one island).
    islands, n_islands = ndimage.label(segmap > 0, structure=np.ones((3, 3), dtype=bool))
    n_obj = len(objects)
    xpk = np.asarray(objects["xpeak"], dtype=np.intp)
    ypk = np.asarray(objects["ypeak"], dtype=np.intp)
    rms_pk = rms[ypk, xpk].astype(np.float64)
    peak = np.asarray(objects["peak"], dtype=np.float64)
    keep = peak >= float(options["seedthr"]) * rms_pk
    island_of = islands[ypk, xpk].astype(np.int64)
    # Peak pixels are object members, hence inside an island; guard anyway.
    island_of = np.where(island_of > 0, island_of, n_islands + 1 + np.arange(n_obj))
    members = np.bincount(island_of, minlength=1) if n_obj else np.zeros(1, dtype=np.int64)

    truncated_islands = truncated_labels(islands, mask)
    sel = np.flatnonzero(keep)
    table = _measure(
        image, objects[sel], back, rms_pk[sel], island_of[sel], members, truncated_islands
    )
    timings["measure"] = time.perf_counter() - t2
    return SepResult(
        table=table,
        background=back,
        rms=rms,
        n_islands=int(n_islands),
        n_objects=int(n_obj),
        timings_s=timings,
    )


def _measure(
    image: FitsImage,
    obj: Any,
    back: npt.NDArray[np.float32],
    rms_pk: npt.NDArray[np.float64],
    island_of: npt.NDArray[np.int64],
    members: npt.NDArray[np.int64],
    truncated_islands: set[int],
) -> Table:
    n = len(obj)
    if n == 0:
        return make_table(None)
    x = np.asarray(obj["x"], dtype=np.float64)
    y = np.asarray(obj["y"], dtype=np.float64)
    xpk = np.asarray(obj["xpeak"], dtype=np.intp)
    ypk = np.asarray(obj["ypeak"], dtype=np.intp)
    peak = np.asarray(obj["peak"], dtype=np.float64)
    npix = np.asarray(obj["npix"], dtype=np.float64)
    area = image.beam_area_pix
    a = np.asarray(obj["a"], dtype=np.float64) * FWHM_PER_SIGMA
    b = np.asarray(obj["b"], dtype=np.float64) * FWHM_PER_SIGMA

    # SEP's centroid variances assume independent pixels; radio noise is correlated over a
    # beam, which inflates them by about the number of pixels per beam.
    corr = max(1.0, area)
    cov = np.zeros((n, 2, 2), dtype=np.float64)
    cov[:, 0, 0] = np.asarray(obj["errx2"], dtype=np.float64) * corr
    cov[:, 1, 1] = np.asarray(obj["erry2"], dtype=np.float64) * corr
    cov[:, 0, 1] = cov[:, 1, 0] = np.asarray(obj["errxy"], dtype=np.float64) * corr
    finite_cov = np.isfinite(cov).all(axis=(1, 2)) & (cov[:, 0, 0] >= 0) & (cov[:, 1, 1] >= 0)
    cov[~finite_cov] = np.nan

    sep_flags = np.asarray(obj["flag"], dtype=np.int64)
    flags = np.zeros(n, dtype=np.int64)
    blended = (members[island_of] > 1) | ((sep_flags & sep.OBJ_MERGED) != 0)
    flags[blended] |= FLAG_BLENDED
    trunc = np.isin(island_of, list(truncated_islands)) | ((sep_flags & sep.OBJ_TRUNC) != 0)
    flags[trunc] |= FLAG_TRUNCATED
    moments = Moments(
        x=x,
        y=y,
        a=a,
        b=b,
        theta=np.asarray(obj["theta"], dtype=np.float64),
        cov=cov,
        peak=peak,
        pixel_flux=np.asarray(obj["flux"], dtype=np.float64),
        npix=npix,
        rms=rms_pk,
        bkg=back[ypk, xpk].astype(np.float64),
        island_of=island_of,
        flags=flags,
    )
    return moments_table(image, moments)


class SepFinder(Finder):
    """The ``sep`` program: :func:`extract_sources` and its log lines."""

    prog = PROG
    description = "Extract sources from a FITS image with SEP."
    maps = MapStyle(ORIGIN)

    def extract(self, image: FitsImage, opts: Mapping[str, Any], out_dir: Path) -> Extraction:
        """Find and measure the sources with SEP (see :func:`extract_sources`)."""
        result = extract_sources(image, opts)
        medians = map_medians(image, result.background, result.rms)
        kind = "global" if opts["globalbkg"] else f"local ({opts['bkgbox']} px boxes)"
        say(
            PROG,
            f"background: {kind}, median {medians['background_median']:.4g}, "
            f"median rms {medians['rms_median']:.4g}",
        )
        say(
            PROG,
            f"detection: {result.n_islands} islands above {opts['mergethr']} sigma, "
            f"{result.n_objects} objects, {len(result.table)} sources with peak >= "
            f"{opts['seedthr']} sigma",
        )
        return Extraction(
            table=result.table,
            background=result.background,
            rms=result.rms,
            n_islands=result.n_islands,
            timings=result.timings_s,
            summary=medians,
        )


FINDER = SepFinder()


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see :func:`~caesar_rest.apps.program.program_main`)."""
    return program_main(SepApp(), FINDER, argv)


if __name__ == "__main__":
    sys.exit(main())
