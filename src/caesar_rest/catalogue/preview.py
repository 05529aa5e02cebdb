"""A quick-look PNG of an image with its catalogue drawn as ellipses."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import cast

import matplotlib
import numpy as np
import numpy.typing as npt
from astropy.table import Table
from astropy.visualization import AsinhStretch, ImageNormalize, PercentileInterval
from astropy.visualization.wcsaxes import WCSAxes
from astropy.wcs import WCS
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import EllipseCollection
from matplotlib.figure import Figure
from matplotlib.transforms import Transform

from caesar_rest.imaging.fits_image import FitsImage, sky_ellipse_to_pixel, sky_jacobian

# Axes margins as fractions of the figure; equal horizontal and vertical totals keep the PNG's
# width/height ratio equal to the image's.
_LEFT, _RIGHT, _BOTTOM, _TOP = 0.15, 0.03, 0.10, 0.08


def block_reduce(data: npt.NDArray[np.float32], factor: int) -> npt.NDArray[np.float32]:
    """Average ``factor x factor`` blocks, ignoring NaN; edges are padded with NaN.

    Parameters
    ----------
    data
        2-D image.
    factor
        Block size (1 returns ``data`` unchanged).

    Returns
    -------
    numpy.ndarray
        Array of shape ``ceil(ny / factor), ceil(nx / factor)``.
    """
    if factor <= 1:
        return data
    ny, nx = data.shape
    by, bx = -(-ny // factor), -(-nx // factor)
    padded = np.full((by * factor, bx * factor), np.nan, dtype=np.float32)
    padded[:ny, :nx] = data
    blocks = padded.reshape(by, factor, bx, factor)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks stay NaN, silently
        return np.asarray(np.nanmean(blocks, axis=(1, 3), dtype=np.float32), dtype=np.float32)


def source_ellipses(
    table: Table | None,
    image: FitsImage,
    factor: int,
    transform: Transform,
    linewidth: float,
) -> EllipseCollection | None:
    """The catalogue's sources as FWHM ellipses on a picture block-reduced by ``factor``, cyan
    or coloured by class (:func:`class_colours`).

    Sources without a usable size are drawn with the beam; those without a finite position are
    left out.

    Parameters
    ----------
    table
        Shared-schema catalogue (``x``, ``y``, ``maj``, ``min``, ``pa``) or None.
    image
        The image the catalogue was made from (origin, beam, WCS).
    factor
        Block-reduction factor of the picture.
    transform
        The axes' data transform (``ax.transData``).
    linewidth
        Line width of the ellipses.

    Returns
    -------
    matplotlib.collections.EllipseCollection or None
        None when there is nothing to draw.
    """
    if table is None or not len(table):
        return None
    x0, y0 = image.origin
    x = np.asarray(table["x"], dtype=np.float64) - x0
    y = np.asarray(table["y"], dtype=np.float64) - y0
    maj = np.asarray(table["maj"], dtype=np.float64)
    mnr = np.asarray(table["min"], dtype=np.float64)
    pa = np.nan_to_num(np.asarray(table["pa"], dtype=np.float64), nan=0.0)
    bad = ~(np.isfinite(maj) & np.isfinite(mnr) & (maj > 0) & (mnr > 0))
    maj = np.where(bad, image.beam[0], maj)
    mnr = np.where(bad, image.beam[1], mnr)
    pa = np.where(bad, image.beam[2], pa)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y, maj, mnr, pa = x[ok], y[ok], maj[ok], mnr[ok], pa[ok]
    edges = class_colours(table)
    colours = edges if isinstance(edges, str) else [c for c, k in zip(edges, ok, strict=True) if k]
    if not x.size:
        return None
    jac = sky_jacobian(image.wcs, x, y)
    a, b, theta = sky_ellipse_to_pixel(jac, maj, mnr, pa)
    offsets = np.column_stack([(x - (factor - 1) / 2.0), (y - (factor - 1) / 2.0)])
    return EllipseCollection(
        widths=a / factor,  # FWHM: full axis lengths, as EllipseCollection wants
        heights=b / factor,
        angles=np.degrees(theta),
        units="xy",
        offsets=offsets / factor,
        offset_transform=transform,
        facecolors="none",
        edgecolors=colours,
        linewidths=linewidth,
    )


def write_preview(
    image: FitsImage,
    table: Table | None,
    path: str | Path,
    max_pixels: int = 1024,
    title: str | None = None,
    name: str | None = None,
) -> Path:
    """Write a PNG of the image (asinh stretch, WCS axes) with the sources as ellipses.

    Parameters
    ----------
    image
        The image the catalogue was extracted from.
    table
        Catalogue (:func:`~caesar_rest.catalogue.writers.make_table` schema) or None. Its
        ``x``/``y`` are in full-image pixels (``image.origin`` is subtracted); sizes and angles
        come from ``maj``/``min``/``pa``.
    path
        Output PNG (overwritten).
    max_pixels
        Images larger than this on either side are block-averaged down first, which keeps the
        plot fast and light on memory; the PNG's long side is at most this many pixels (but at
        least 600).
    title
        Plot title; by default ``name`` and the number of sources.
    name
        The image's name in the default title (e.g. the user's file name); by default the
        image's file name.

    Returns
    -------
    pathlib.Path
        The file written.
    """
    path = Path(path)
    ny, nx = image.shape
    factor = max(1, math.ceil(max(nx, ny) / max(int(max_pixels), 16)))
    small = block_reduce(image.data, factor)
    sny, snx = small.shape
    # WCS slicing with a step describes block averages (pixel i covers i*f .. i*f+f-1).
    wcs: WCS = image.wcs[::factor, ::factor] if factor > 1 else image.wcs

    finite = small[np.isfinite(small)]
    if finite.size:
        norm = ImageNormalize(finite, interval=PercentileInterval(99.5), stretch=AsinhStretch(0.05))
    else:
        norm = ImageNormalize(vmin=0.0, vmax=1.0)

    # The PNG's long side gets min(max_pixels, image long side) pixels, at least 600.
    dpi = 100.0
    side_in = max(600.0, float(min(max_pixels, max(nx, ny)))) / dpi
    width_in = side_in if snx >= sny else side_in * snx / sny
    height_in = side_in if sny >= snx else side_in * sny / snx
    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = cast(
        WCSAxes,
        fig.add_axes((_LEFT, _BOTTOM, 1.0 - _LEFT - _RIGHT, 1.0 - _BOTTOM - _TOP), projection=wcs),
    )
    cmap = matplotlib.colormaps["inferno"].with_extremes(bad="0.6")  # blank pixels in grey
    ax.imshow(small, origin="lower", cmap=cmap, norm=norm, interpolation="nearest")
    ax.set_xlim(-0.5, snx - 0.5)
    ax.set_ylim(-0.5, sny - 0.5)
    try:
        ax.coords[0].set_axislabel("RA", fontsize=9)
        ax.coords[1].set_axislabel("Dec", fontsize=9, minpad=0.4)
        ax.coords[0].set_ticklabel(size=8)
        ax.coords[1].set_ticklabel(size=8)
        ax.coords[0].set_major_formatter("hh:mm:ss")
        ax.coords[1].set_major_formatter("dd:mm")
    except Exception:  # non-equatorial frames have other coordinate names; keep defaults
        pass
    ax.coords.grid(color="white", alpha=0.25, linestyle="dotted")

    n_src = 0 if table is None else len(table)
    coll = source_ellipses(table, image, factor, ax.transData, linewidth=0.8)
    if coll is not None:
        ax.add_collection(coll)
        add_class_legend(ax, table)
    if title is None:
        # A file name is plain text: "$" would start matplotlib mathtext (and may not parse).
        shown = (name or image.path.name).replace("$", r"\$")
        title = f"{shown}: {n_src} source{'s' if n_src != 1 else ''}"
    ax.set_title(title, fontsize=9)
    fig.savefig(path, dpi=dpi, format="png")
    return path


#: Ellipse colour of each class of the classifier (caesar_rest.classify.CLASSES).
CLASS_COLOURS: dict[str, str] = {
    "compact": "cyan",
    "extended": "lime",
    "extended-multisland": "magenta",
    "spurious": "red",
    "flagged": "orange",
    "diffuse": "deepskyblue",
}
#: Colour of rows without a class (unclassified catalogue, unknown class).
UNCLASSIFIED = "cyan"


def class_colours(table: Table) -> str | list[str]:
    """Edge colours of the sources: one per row by its ``class`` (:data:`CLASS_COLOURS`), or
    :data:`UNCLASSIFIED` for every row of a catalogue without classes.

    Parameters
    ----------
    table
        The catalogue.

    Returns
    -------
    str or list of str
        One colour for all rows, or one per row.
    """
    if "class" not in table.colnames:
        return UNCLASSIFIED
    return [CLASS_COLOURS.get(str(c), UNCLASSIFIED) for c in table["class"]]


def add_class_legend(ax: object, table: Table | None) -> None:
    """A legend of the classes present in ``table`` (their colours and counts), if any.

    Parameters
    ----------
    ax
        The matplotlib axes.
    table
        The catalogue drawn.
    """
    if table is None or "class" not in table.colnames or not len(table):
        return
    from matplotlib.lines import Line2D

    names = [str(c) for c in table["class"]]
    handles = [
        Line2D(
            [],
            [],
            color=colour,
            marker="o",
            linestyle="",
            markerfacecolor="none",
            label=f"{name} ({names.count(name)})",
        )
        for name, colour in CLASS_COLOURS.items()
        if name in names
    ]
    ax.legend(  # type: ignore[attr-defined]
        handles=handles,
        loc="upper right",
        fontsize=7,
        framealpha=0.6,
        title="class",
        title_fontsize=7,
    )
