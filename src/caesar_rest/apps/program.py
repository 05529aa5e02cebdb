"""Shared plumbing of the app programs that run as jobs (``python -m caesar_rest.apps.<app>_run``).

Each program parses ``--input``/``--outdir`` plus its app's options (the parser is built from the
app, so names never drift), validates them with the app, loads the image, runs its finder and
writes the shared output model into the output folder: ``catalog.vot/.csv/.json``, ``catalog.reg``,
optional component files, ``preview.png``, ``preview-thumb.png`` and ``summary.json``.

Exit codes: 0 success, 2 bad input or options (one clear line on stderr), 1 unexpected error.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import numpy.typing as npt
from astropy.io import fits
from astropy.table import Table
from scipy import ndimage

from caesar_rest.apps.base import App, OptionError
from caesar_rest.catalogue.writers import (
    write_all,
    write_csv,
    write_ds9_regions,
    write_json,
    write_votable,
)
from caesar_rest.imaging.fits_image import (
    Beam,
    FitsImage,
    ImageError,
    pixel_to_radec,
    sky_jacobian,
)

#: File names of the component catalogue (``COMPONENT_RESULTS`` in :mod:`caesar_rest.apps.base`).
COMPONENT_FILES: dict[str, str] = {
    "components": "components.vot",
    "components-csv": "components.csv",
    "components-json": "components.json",
    "components-regions": "components.reg",
}
PREVIEW_FILE = "preview.png"
THUMBNAIL_FILE = "preview-thumb.png"
SUMMARY_FILE = "summary.json"
#: Longest side of the thumbnail, in pixels.
THUMBNAIL_SIDE = 256
#: Sources whose fitted or measured area exceeds this many beams are flagged as extended.
EXTENDED_AREA_BEAMS = 2.0

RunFunction = Callable[[Path, Path, Mapping[str, Any]], Mapping[str, Any]]


class ProgramParser(argparse.ArgumentParser):
    """An argument parser that reports errors in one line and exits with code 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``prog: error: message`` on stderr and exit with code 2."""
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser(app: App, prog: str, description: str) -> argparse.ArgumentParser:
    """Build a program's command-line parser from its app's options.

    Parameters
    ----------
    app
        The app whose options become ``--name`` arguments.
    prog
        Program name used in messages.
    description
        One-line description for ``--help``.

    Returns
    -------
    argparse.ArgumentParser
        ``--input`` and ``--outdir`` plus one ``--name`` per option (flags store true, values are
        parsed with their type; absent options stay None).
    """
    parser = ProgramParser(prog=prog, description=description)
    parser.add_argument("--input", required=True, type=Path, help="input FITS image")
    parser.add_argument("--outdir", required=True, type=Path, help="output folder")
    add_option_arguments(parser, app, {"int": int, "float": float, "str": str})
    return parser


def add_option_arguments(
    parser: argparse.ArgumentParser, app: App, kinds: Mapping[str, type]
) -> None:
    """Add one ``--name`` argument per option of ``app`` to ``parser``.

    Parameters
    ----------
    parser
        The parser.
    app
        The app whose options become arguments.
    kinds
        Parser of the values of each option type (``"int"``, ``"float"``, ``"str"``): flags store
        true; absent options stay None.
    """
    for opt in app.options:
        if opt.is_flag:
            parser.add_argument(
                f"--{opt.name}",
                dest=opt.name,
                action="store_true",
                default=None,
                help=opt.description,
            )
        else:
            parser.add_argument(
                f"--{opt.name}",
                dest=opt.name,
                type=kinds[opt.type],
                default=None,
                help=f"{opt.description} (default {opt.default})",
            )


def resolve_options(app: App, options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate options with the app and fill in the defaults.

    Parameters
    ----------
    app
        The app.
    options
        Option values by name (absent or None means "use the default").

    Returns
    -------
    dict
        Every option name with its value (flags default to False).

    Raises
    ------
    OptionError
        On unknown names or values out of bounds.
    """
    given = {k: v for k, v in options.items() if v is not None}
    checked = app.validate(given)
    out: dict[str, Any] = {}
    for opt in app.options:
        default = False if opt.is_flag and opt.default is None else opt.default
        out[opt.name] = checked.get(opt.name, default)
    return out


def beam_fallback(options: Mapping[str, Any]) -> Beam | None:
    """The beam given by ``bmaj``/``bmin``/``bpa`` options (one size alone: a circular beam).

    Parameters
    ----------
    options
        Resolved options.

    Returns
    -------
    tuple or None
        ``(bmaj_arcsec, bmin_arcsec, bpa_deg)``, or None when neither size is given.
    """
    sizes = [float(v) for v in (options.get("bmaj"), options.get("bmin")) if v is not None]
    if not sizes:
        return None
    bpa = options.get("bpa")
    return sizes[0], sizes[-1], float(bpa) if bpa is not None else 0.0


def limit_threads(n: int = 1) -> None:
    """Cap the BLAS/OpenMP threads of this process and of the processes it starts.

    Finders that parallelise with processes (BANE, Aegean, PyBDSF) lose time when each process
    also spins BLAS threads: Aegean's fits on a 1000x1000 image took 24 s instead of 7 s with
    the default thread pool on a busy 2-core machine.

    Parameters
    ----------
    n
        Threads per process.
    """
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: the environment still governs child processes
        return
    threadpool_limits(limits=n)


def say(prog: str, message: str) -> None:
    """Print one line of the job log."""
    print(f"{prog}: {message}", flush=True)


def say_options(prog: str, opts: Mapping[str, Any]) -> None:
    """Log the options in effect (unset and false ones left out)."""
    shown = " ".join(f"{k}={v}" for k, v in opts.items() if v is not None and v is not False)
    say(prog, f"options: {shown}")


def describe_image(prog: str, image: FitsImage) -> None:
    """Log the image geometry, beam and unit."""
    ny, nx = image.shape
    bmaj, bmin, bpa = image.beam
    say(
        prog,
        f"image: {image.path.name} {nx}x{ny} px (HDU {image.hdu_index}), BUNIT '{image.bunit}', "
        f"pixel {image.pixel_scale_arcsec:.4g} arcsec, {int(image.mask.sum())} blank pixels",
    )
    say(
        prog,
        f"beam: {bmaj:.4g} x {bmin:.4g} arcsec, PA {bpa:.4g} deg ({image.beam_source}); "
        f"{image.beam_area_pix:.4g} pixels per beam",
    )
    if image.bunit and image.bunit.upper().replace(" ", "") not in ("JY/BEAM", "JY/BM"):
        say(prog, f"warning: BUNIT is '{image.bunit}', fluxes assume Jy/beam")


def image_summary(image: FitsImage) -> dict[str, Any]:
    """The ``image`` block of ``summary.json``."""
    ny, nx = image.shape
    bmaj, bmin, bpa = image.beam
    return {
        "shape": [ny, nx],
        "beam": {"bmaj_arcsec": bmaj, "bmin_arcsec": bmin, "bpa_deg": bpa},
        "beam_source": image.beam_source,
        "pixel_scale_arcsec": image.pixel_scale_arcsec,
        "beam_area_pix": image.beam_area_pix,
        "bunit": image.bunit,
        "n_blank": int(image.mask.sum()),
        "frame": image.frame,
    }


def image_header(image: FitsImage, origin: str) -> fits.Header:
    """A clean 2-D header for ``image`` (celestial WCS, beam, BUNIT), e.g. for maps or copies.

    Parameters
    ----------
    image
        The image.
    origin
        Value of the ORIGIN keyword.

    Returns
    -------
    astropy.io.fits.Header
        The header; the beam is the one :func:`~caesar_rest.imaging.load_image` settled on (from
        the header, an AIPS HISTORY card or the options), so every tool sees the same beam.
    """
    header = image.wcs.to_header()
    header["BUNIT"] = image.bunit or "JY/BEAM"
    header["BMAJ"] = image.beam[0] / 3600.0
    header["BMIN"] = image.beam[1] / 3600.0
    header["BPA"] = image.beam[2]
    header["ORIGIN"] = origin
    return header


def write_work_image(image: FitsImage, path: Path, origin: str) -> Path:
    """Write ``image`` as a plain 2-D float32 FITS file for tools that read files themselves.

    External finders then see one HDU, no degenerate axes, blank pixels as NaN and the beam in
    the header; and whatever they write beside their input lands in our folder, never next to the
    user's upload.

    Parameters
    ----------
    image
        The image.
    path
        Output file (overwritten).
    origin
        Value of the ORIGIN keyword.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    header = image_header(image, origin)
    data = np.where(image.mask, np.float32(np.nan), image.data).astype(np.float32)
    fits.PrimaryHDU(data, header=header).writeto(path, overwrite=True)
    return path


def write_map(
    path: Path, data: npt.NDArray[np.floating[Any]], image: FitsImage, what: str, origin: str
) -> Path:
    """Write a background or rms map with the image's WCS (blank where the image is blank).

    Parameters
    ----------
    path
        Output file (overwritten).
    data
        The map, shape ``image.shape``.
    image
        The image it belongs to.
    what
        ``"background"`` or ``"rms"`` (for the COMMENT card).
    origin
        Value of the ORIGIN keyword.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    header = image_header(image, origin)
    header["COMMENT"] = f"{what} map of {image.path.name}"
    out = np.where(image.mask, np.float32(np.nan), np.asarray(data, dtype=np.float32))
    fits.PrimaryHDU(out.astype(np.float32), header=header).writeto(path, overwrite=True)
    return path


def write_maps(
    opts: Mapping[str, Any],
    out_dir: Path,
    image: FitsImage,
    background: npt.NDArray[np.floating[Any]],
    rms: npt.NDArray[np.floating[Any]],
    origin: str,
) -> dict[str, str]:
    """Write the background and rms maps the ``save-bkgmap``/``save-rmsmap`` options ask for.

    Parameters
    ----------
    opts
        Resolved option values.
    out_dir
        Output folder.
    image
        The image the maps belong to.
    background, rms
        The maps.
    origin
        Value of the ORIGIN keyword.

    Returns
    -------
    dict
        Result name to file name of the maps written.
    """
    files: dict[str, str] = {}
    if opts["save-bkgmap"]:
        path = write_map(out_dir / "background.fits", background, image, "background", origin)
        files["background-map"] = path.name
    if opts["save-rmsmap"]:
        files["rms-map"] = write_map(out_dir / "rms.fits", rms, image, "rms", origin).name
    return files


def region_frame(image: FitsImage) -> str:
    """DS9 frame for the catalogue's J2000 coordinates."""
    return "fk5" if image.frame == "fk5" else "icrs"


def write_components(table: Table, out_dir: Path, frame: str) -> dict[str, str]:
    """Write a component catalogue as ``components.vot/.csv/.json/.reg``.

    Parameters
    ----------
    table
        A shared-schema table of components.
    out_dir
        Output folder.
    frame
        DS9 frame (``fk5`` or ``icrs``).

    Returns
    -------
    dict
        Result name to file name.
    """
    write_votable(table, out_dir / COMPONENT_FILES["components"])
    write_csv(table, out_dir / COMPONENT_FILES["components-csv"])
    write_json(table, out_dir / COMPONENT_FILES["components-json"])
    # Components in another colour, so both region files can be loaded together in DS9.
    write_ds9_regions(table, out_dir / COMPONENT_FILES["components-regions"], frame, "magenta")
    return dict(COMPONENT_FILES)


def write_products(
    prog: str,
    image: FitsImage,
    table: Table,
    out_dir: Path,
    *,
    preview: bool = True,
    components: Table | None = None,
) -> tuple[dict[str, str], dict[str, float]]:
    """Write the catalogue files, component files, preview and thumbnail.

    Parameters
    ----------
    prog
        Program name for the log.
    image
        The image the catalogue comes from.
    table
        Source catalogue (shared schema).
    out_dir
        Output folder (created if missing).
    preview
        Whether to draw ``preview.png`` and ``preview-thumb.png``.
    components
        Component catalogue, for apps that have one.

    Returns
    -------
    files, timings
        Result name to file name; seconds spent writing and drawing.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    frame = region_frame(image)
    files = {k: p.name for k, p in write_all(table, out_dir, frame=frame).items()}
    if components is not None:
        files.update(write_components(components, out_dir, frame))
    t1 = time.perf_counter()
    timings = {"write": t1 - t0}
    if preview:
        from caesar_rest.catalogue.preview import write_preview  # matplotlib is slow to import

        # Draw components where the app has them: they show how the sources were modelled.
        drawn = components if components is not None else table
        files["preview"] = write_preview(image, drawn, out_dir / PREVIEW_FILE).name
        files["preview-thumb"] = write_thumbnail(image, drawn, out_dir / THUMBNAIL_FILE).name
        timings["preview"] = time.perf_counter() - t1
    say(
        prog,
        f"wrote {len(table)} sources"
        + ("" if components is None else f", {len(components)} components"),
    )
    return files, timings


def write_thumbnail(
    image: FitsImage, table: Table | None, path: Path, max_side: int = THUMBNAIL_SIDE
) -> Path:
    """Write a small PNG of the image (no axes, asinh stretch) with the sources as ellipses.

    Parameters
    ----------
    image
        The image.
    table
        Shared-schema catalogue or None.
    path
        Output PNG (overwritten).
    max_side
        Longest side in pixels; the other side keeps the image's aspect ratio.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    from astropy.visualization import AsinhStretch, ImageNormalize, PercentileInterval
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import EllipseCollection
    from matplotlib.figure import Figure

    from caesar_rest.catalogue.preview import block_reduce
    from caesar_rest.imaging.fits_image import sky_ellipse_to_pixel

    ny, nx = image.shape
    factor = max(1, math.ceil(max(nx, ny) / max_side))
    small = block_reduce(image.data, factor)
    sny, snx = small.shape
    # Pixel size of the PNG: the long side is max_side (or the image's, if smaller).
    scale = min(1.0, max_side / max(nx, ny))
    width, height = max(1, round(nx * scale)), max(1, round(ny * scale))
    dpi = 100.0
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    finite = small[np.isfinite(small)]
    if finite.size:
        norm = ImageNormalize(finite, interval=PercentileInterval(99.5), stretch=AsinhStretch(0.05))
    else:
        norm = ImageNormalize(vmin=0.0, vmax=1.0)
    cmap = colormaps["inferno"].with_extremes(bad="0.6")
    ax.imshow(small, origin="lower", cmap=cmap, norm=norm, interpolation="nearest", aspect="auto")
    ax.set_xlim(-0.5, snx - 0.5)
    ax.set_ylim(-0.5, sny - 0.5)
    if table is not None and len(table):
        x0, y0 = image.origin
        x = np.asarray(table["x"], dtype=np.float64) - x0
        y = np.asarray(table["y"], dtype=np.float64) - y0
        maj = np.asarray(table["maj"], dtype=np.float64)
        mnr = np.asarray(table["min"], dtype=np.float64)
        pa = np.nan_to_num(np.asarray(table["pa"], dtype=np.float64), nan=0.0)
        bad = ~(np.isfinite(maj) & np.isfinite(mnr) & (maj > 0) & (mnr > 0))
        maj, mnr = np.where(bad, image.beam[0], maj), np.where(bad, image.beam[1], mnr)
        pa = np.where(bad, image.beam[2], pa)
        ok = np.isfinite(x) & np.isfinite(y)
        if ok.any():
            jac = sky_jacobian(image.wcs, x[ok], y[ok])
            a, b, theta = sky_ellipse_to_pixel(jac, maj[ok], mnr[ok], pa[ok])
            centre = (factor - 1) / 2.0
            offsets = np.column_stack([x[ok] - centre, y[ok] - centre]) / factor
            ax.add_collection(
                EllipseCollection(
                    widths=a / factor,
                    heights=b / factor,
                    angles=np.degrees(theta),
                    units="xy",
                    offsets=offsets,
                    offset_transform=ax.transData,
                    facecolors="none",
                    edgecolors="cyan",
                    linewidths=0.6,
                )
            )
    fig.savefig(path, dpi=dpi, format="png")
    return path


def finish_summary(
    prog: str, out_dir: Path, summary: dict[str, Any], timings: Mapping[str, float]
) -> dict[str, Any]:
    """Add the timings to ``summary``, write ``summary.json`` and log the timings.

    Parameters
    ----------
    prog
        Program name for the log.
    out_dir
        Output folder.
    summary
        The summary without its timings.
    timings
        Seconds per step.

    Returns
    -------
    dict
        ``summary`` with ``timings_s``.
    """
    summary["timings_s"] = {k: round(v, 4) for k, v in timings.items()}
    write_summary(out_dir, summary)
    say(prog, "timings: " + ", ".join(f"{k} {v:.3f} s" for k, v in summary["timings_s"].items()))
    return summary


def write_summary(out_dir: Path, summary: Mapping[str, Any]) -> Path:
    """Write ``summary.json``.

    Parameters
    ----------
    out_dir
        Output folder.
    summary
        JSON-serialisable summary (NumPy scalars are converted).

    Returns
    -------
    pathlib.Path
        The file written.
    """
    path = out_dir / SUMMARY_FILE
    path.write_text(json.dumps(summary, indent=2, default=_json_default) + "\n", encoding="utf-8")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# --------------------------------------------------------------------------------------------
# Catalogue helpers shared by the converters
# --------------------------------------------------------------------------------------------


def island_labels(
    significant: npt.NDArray[np.bool_],
) -> tuple[npt.NDArray[np.int32], int]:
    """8-connected islands of ``significant`` pixels.

    Parameters
    ----------
    significant
        Boolean map of pixels above the island threshold.

    Returns
    -------
    labels, n
        Label map (0 = background) and number of islands.
    """
    labels, n = ndimage.label(significant, structure=np.ones((3, 3), dtype=bool))
    return np.asarray(labels, dtype=np.int32), int(n)


def truncated_labels(labels: npt.NDArray[np.int32], mask: npt.NDArray[np.bool_]) -> set[int]:
    """Labels of islands touching the image edge or a blank pixel (they may be cut off).

    Parameters
    ----------
    labels
        Island label map.
    mask
        Blank pixels.

    Returns
    -------
    set of int
        The labels (0 excluded).
    """
    edge = np.concatenate([labels[0, :], labels[-1, :], labels[:, 0], labels[:, -1]])
    found = set(np.unique(edge).tolist())
    if mask.any():
        near_blank = ndimage.binary_dilation(mask, structure=np.ones((3, 3), dtype=bool))
        found |= set(np.unique(labels[near_blank]).tolist())
    found.discard(0)
    return {int(v) for v in found}


def labels_at(
    labels: npt.NDArray[np.int32], x: npt.ArrayLike, y: npt.ArrayLike
) -> npt.NDArray[np.int64]:
    """Island label under each (0-based) pixel position; 0 outside the image or any island."""
    ny, nx = labels.shape
    xi = np.rint(np.nan_to_num(np.asarray(x, dtype=np.float64), nan=-1.0)).astype(np.int64)
    yi = np.rint(np.nan_to_num(np.asarray(y, dtype=np.float64), nan=-1.0)).astype(np.int64)
    inside = (xi >= 0) & (xi < nx) & (yi >= 0) & (yi < ny)
    out = np.zeros(xi.shape, dtype=np.int64)
    out[inside] = labels[yi[inside], xi[inside]]
    return out


def outside_image(
    image: FitsImage, x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]
) -> npt.NDArray[np.bool_]:
    """Whether full-image pixel positions fall off the image (fits may put a centre there)."""
    ny, nx = image.shape
    x0, y0 = image.origin
    xs, ys = x - x0, y - y0
    with np.errstate(invalid="ignore"):
        inside = (xs >= -0.5) & (xs <= nx - 0.5) & (ys >= -0.5) & (ys <= ny - 0.5)
    return np.asarray(~inside)


def renumber(
    island: npt.ArrayLike, peak: npt.ArrayLike
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Island ids 0..K-1 (in order of the given ids) and component ids by decreasing peak.

    Parameters
    ----------
    island
        Any island identifier per row.
    peak
        Peak flux per row.

    Returns
    -------
    island_ids, component_ids
    """
    isl = np.asarray(island)
    pk = np.nan_to_num(np.asarray(peak, dtype=np.float64), nan=-np.inf)
    n = isl.size
    if n == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    _, ids = np.unique(isl, return_inverse=True)
    ids = ids.astype(np.int64).ravel()
    order = np.lexsort((-pk, ids))
    sorted_ids = ids[order]
    comp = np.empty(n, dtype=np.int64)
    comp[order] = np.arange(n) - np.searchsorted(sorted_ids, sorted_ids, side="left")
    return ids, comp


def positions_from_sky(
    image: FitsImage, lon: npt.ArrayLike, lat: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], ...]:
    """Pixel positions and J2000 RA/Dec of sources a tool reported in the image's own frame.

    Parameters
    ----------
    image
        The image (its WCS is the one the tool used).
    lon, lat
        Native longitude and latitude in degrees (RA/Dec for equatorial images).

    Returns
    -------
    x, y, ra, dec
        0-based pixel positions in the full image and equatorial coordinates in degrees.
    """
    lo = np.asarray(lon, dtype=np.float64)
    la = np.asarray(lat, dtype=np.float64)
    if lo.size == 0:
        empty = np.zeros(0, dtype=np.float64)
        return empty, empty, empty, empty
    x, y = image.wcs.world_to_pixel_values(lo, la)
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    ra, dec = pixel_to_radec(image.wcs, x, y)
    x0, y0 = image.origin
    return x + x0, y + y0, ra, dec


def pixel_errors(
    image: FitsImage,
    x: npt.NDArray[np.float64],
    y: npt.NDArray[np.float64],
    east_err: npt.NDArray[np.float64],
    north_err: npt.NDArray[np.float64],
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Pixel-space errors of sky-space position errors (arcsec) through the local WCS.

    Parameters
    ----------
    image
        The image.
    x, y
        0-based full-image pixel positions.
    east_err, north_err
        Position errors along RA and Dec in arcsec (uncorrelated).

    Returns
    -------
    x_err, y_err
        In pixels; NaN where the input error is NaN.
    """
    if x.size == 0:
        return np.zeros(0), np.zeros(0)
    x0, y0 = image.origin
    jac = sky_jacobian(image.wcs, x - x0, y - y0)
    inv = np.linalg.inv(jac)
    sky = np.zeros(jac.shape, dtype=np.float64)
    sky[:, 0, 0] = east_err**2
    sky[:, 1, 1] = north_err**2
    cov = inv @ sky @ np.transpose(inv, (0, 2, 1))
    return np.sqrt(cov[:, 0, 0]), np.sqrt(cov[:, 1, 1])


def extended_mask(
    maj: npt.NDArray[np.float64], mnr: npt.NDArray[np.float64], beam: Beam
) -> npt.NDArray[np.bool_]:
    """Sources larger than :data:`EXTENDED_AREA_BEAMS` beams (by FWHM ellipse area)."""
    with np.errstate(invalid="ignore"):
        area = maj * mnr
        return np.asarray(np.isfinite(area) & (area > EXTENDED_AREA_BEAMS * beam[0] * beam[1]))


def nan_sentinels(values: Any, scale: float = 1.0) -> npt.NDArray[np.float64]:
    """Float array times ``scale`` with negative sentinels (e.g. Aegean's -1 errors) as NaN."""
    arr = np.array(values, dtype=np.float64, copy=True)
    arr[~np.isfinite(arr) | (arr < 0)] = np.nan
    return arr * scale


# --------------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------------


def program_main(
    app: App,
    prog: str,
    description: str,
    run: RunFunction,
    argv: Sequence[str] | None = None,
) -> int:
    """Parse arguments and run a program, mapping failures to exit codes.

    Parameters
    ----------
    app
        The app whose options the program takes.
    prog
        Program name used in messages.
    description
        One-line description for ``--help``.
    run
        ``run(input_path, out_dir, options)``; raises ``ImageError`` or ``OptionError`` on bad
        input.
    argv
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 for bad input or options, 1 for an unexpected error.
    """
    parser = build_parser(app, prog, description)
    try:
        ns = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a parse error (2, already reported)
        return int(exc.code) if isinstance(exc.code, int) else 2
    values = vars(ns)
    options = {o.name: values[o.name] for o in app.options}
    return run_reporting_errors(
        prog, lambda: run(Path(values["input"]), Path(values["outdir"]), options)
    )


def run_reporting_errors(prog: str, call: Callable[[], object]) -> int:
    """Call ``call()`` and map its failures to exit codes (messages on stderr).

    Parameters
    ----------
    prog
        Program name used in messages.
    call
        The work; raises ``ImageError`` or ``OptionError`` on bad input.

    Returns
    -------
    int
        0 on success, 2 for ``ImageError``/``OptionError`` (one line on stderr), 1 for any other
        exception (traceback in the job log on stdout, one line on stderr).
    """
    try:
        call()
    except (ImageError, OptionError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        traceback.print_exc(file=sys.stdout)  # full detail in the job log
        print(f"{prog}: unexpected error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0
