"""Quick-look PNGs of an image with its catalogue drawn as ellipses, in milliseconds.

The picture is drawn straight into a NumPy RGB array (block-averaged image, asinh stretch,
the *inferno* colour map, FWHM ellipses as one-pixel outlines) and written with a small PNG
encoder (:mod:`zlib`): no matplotlib figure, no font rendering. A 1024x1024 preview costs tens
of milliseconds where a matplotlib figure with WCS axes cost about a second per job. The
preview carries no axes or drawn title: its title (the image's name and the number of sources)
is stored in the PNG's ``Title`` text chunk, and the sky position of the field is in the
catalogues.

Per-source colours: :func:`write_preview`, :func:`write_thumbnail` and :func:`render` take
``colors`` (one RGB triple per catalogue row, e.g. by source class); by default every source
is cyan.
"""

from __future__ import annotations

import math
import struct
import warnings
import zlib
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from caesar_rest.imaging.fits_image import FitsImage, sky_ellipse_to_pixel, sky_jacobian

if TYPE_CHECKING:
    from astropy.table import Table

U8 = npt.NDArray[np.uint8]

#: Outline colour of sources without a colour of their own.
CYAN = (0, 255, 255)
#: Blank (NaN) pixels.
GREY = (153, 153, 153)
#: The matplotlib *inferno* colour map at 17 evenly spaced points (interpolated linearly).
_INFERNO = np.array(
    [
        (0, 0, 4),
        (11, 7, 36),
        (33, 12, 74),
        (61, 9, 101),
        (87, 16, 110),
        (113, 25, 110),
        (138, 34, 106),
        (163, 44, 97),
        (188, 55, 84),
        (210, 70, 68),
        (228, 90, 49),
        (241, 115, 29),
        (249, 142, 9),
        (252, 172, 17),
        (249, 203, 53),
        (242, 234, 105),
        (252, 255, 164),
    ],
    dtype=np.float64,
)
#: Pixels of the image averaged at a time by :func:`block_reduce`, and of the picture coloured
#: at a time by :func:`colourise` (bounds their scratch memory at any image size).
_STRIP_PIXELS = 1 << 22


def _lut() -> U8:
    pos = np.linspace(0.0, 1.0, _INFERNO.shape[0])
    t = np.linspace(0.0, 1.0, 256)
    cols = [np.interp(t, pos, _INFERNO[:, k]) for k in range(3)]
    return np.clip(np.rint(np.stack(cols, axis=1)), 0, 255).astype(np.uint8)


_LUT = _lut()


def block_reduce(data: npt.NDArray[np.float32], factor: int) -> npt.NDArray[np.float32]:
    """Average ``factor x factor`` blocks, ignoring NaN; edges are padded with NaN.

    The image is read in strips of blocks, so a memory-mapped image is never copied whole.

    Parameters
    ----------
    data
        2-D image (an array or a memory map).
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
    out = np.empty((by, bx), dtype=np.float32)
    strip = max(1, _STRIP_PIXELS // (factor * factor * bx))
    for j0 in range(0, by, strip):
        j1 = min(by, j0 + strip)
        rows = data[j0 * factor : min(ny, j1 * factor)]
        padded = np.full(((j1 - j0) * factor, bx * factor), np.nan, dtype=np.float32)
        padded[: rows.shape[0], :nx] = rows
        blocks = padded.reshape(j1 - j0, factor, bx, factor)
        if not np.isnan(blocks).any():
            # What nanmean computes when nothing is NaN (the same sum, divided by the
            # count as an integer array would be), without its copy and count.
            tot: npt.NDArray[np.float32] = np.sum(blocks, axis=(1, 3), dtype=np.float32)
            np.true_divide(tot, np.intp(factor * factor), out=out[j0:j1], casting="unsafe")
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks stay NaN, silently
            out[j0:j1] = np.nanmean(blocks, axis=(1, 3), dtype=np.float32)
    return out


def colourise(small: npt.NDArray[np.float32]) -> U8:
    """Map an image to RGB: 99.5 % interval, asinh stretch (a = 0.05), *inferno*, NaN grey.

    Parameters
    ----------
    small
        2-D image (already reduced to picture size).

    Returns
    -------
    numpy.ndarray
        ``(ny, nx, 3)`` uint8, row 0 at the bottom of the image (FITS order).
    """
    finite = np.isfinite(small)
    vals = small[finite]
    if vals.size:
        lo, hi = (float(v) for v in np.percentile(vals, [0.25, 99.75]))
    else:
        lo, hi = 0.0, 1.0
    del vals
    scale = 1.0 / (hi - lo) if hi > lo else 1.0
    rgb = np.empty((*small.shape, 3), dtype=np.uint8)
    # Each pixel as one 3-byte item, so that a step's colour is taken whole.
    items = rgb.view(_RGB_ITEM).reshape(small.shape)
    mixed, colour = _step_colours()
    # By strips of rows: the stretch works in float64.
    step = max(1, _STRIP_PIXELS // 8 // max(small.shape[1], 1))
    for r0 in range(0, small.shape[0], step):
        f = finite[r0 : r0 + step]
        x = np.clip((np.where(f, small[r0 : r0 + step], lo) - lo) * scale, 0.0, 1.0)
        # stretch_levels and the colour map in one lookup: a pixel takes its step's colour,
        # and those in the steps a level boundary crosses are computed.
        k = (x * _STEPS).astype(np.intp)
        np.take(colour, k, out=items[r0 : r0 + step])
        near = mixed[k]
        if near.any():
            rgb[r0 : r0 + step][near] = _LUT[stretch_level(x[near])]
        if not f.all():
            rgb[r0 : r0 + step][~f] = GREY
    return rgb


#: The asinh stretch's softening (:func:`stretch_level`).
_ASINH_A = 0.05
#: Equal steps of [0, 1] of the lookup of :func:`stretch_levels` (a power of two: ``x * n``
#: is exact, so a value's step is exact).
_STEPS = 1 << 16


def stretch_level(x: npt.NDArray[np.float64]) -> npt.NDArray[np.intp]:
    """Colour-map index (0-255) of values in [0, 1]: ``asinh(x / a) / asinh(1 / a)``
    rounded to 255 levels (a = 0.05).

    Parameters
    ----------
    x
        Values scaled to [0, 1].

    Returns
    -------
    numpy.ndarray
        The levels.
    """
    y = np.arcsinh(x / _ASINH_A) / math.asinh(1.0 / _ASINH_A)
    return np.clip((y * 255.0 + 0.5).astype(np.intp), 0, 255)


@lru_cache(maxsize=1)
def _step_levels() -> tuple[npt.NDArray[np.intp], npt.NDArray[np.bool_]]:
    """Per step ``[k / n, (k + 1) / n)`` of [0, 1] (and ``x = 1`` last): the level of its
    first value, and whether its last value has another level (a level boundary inside)."""
    start = np.arange(_STEPS + 1) / _STEPS
    first = stretch_level(start)
    last = stretch_level(np.nextafter(np.minimum(start + 1.0 / _STEPS, 1.0), 0.0))
    last[-1] = first[-1]
    return first, first != last


#: A pixel's RGB as one item (:func:`colourise` takes colours from :func:`_step_colours`).
_RGB_ITEM = np.dtype("V3")


@lru_cache(maxsize=1)
def _step_colours() -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.void]]:
    """The steps a level boundary crosses (:func:`_step_levels`) and the colour of each
    step's first level (:data:`_RGB_ITEM`)."""
    first, mixed = _step_levels()
    colour = np.ascontiguousarray(_LUT[first]).view(_RGB_ITEM).reshape(first.size)
    return mixed, colour


def stretch_levels(x: npt.NDArray[np.float64]) -> npt.NDArray[np.intp]:
    """:func:`stretch_level` of many values, by a lookup: a value takes its step's level,
    and only values in the few steps a level boundary crosses are computed (the stretch is
    increasing, so a step whose first and last values share a level has no other).

    Parameters
    ----------
    x
        Values scaled to [0, 1].

    Returns
    -------
    numpy.ndarray
        The levels, equal to ``stretch_level(x)``.
    """
    first, mixed = _step_levels()
    step = (x * _STEPS).astype(np.intp)
    level = first[step]
    near = mixed[step]
    if near.any():
        level[near] = stretch_level(x[near])
    return level


def ellipse_outlines(
    table: Table | None, image: FitsImage, factor: int, colors: npt.ArrayLike | None = None
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], U8]:
    """Points on the FWHM ellipses of a catalogue, in the pixels of a picture reduced by ``factor``.

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
    colors
        One RGB triple (0-255) per table row, or None for cyan.

    Returns
    -------
    x, y, rgb
        Picture coordinates of the outline points (float, pixel centres at integers) and their
        colours ``(n, 3)``.
    """
    empty = np.zeros(0), np.zeros(0), np.zeros((0, 3), dtype=np.uint8)
    if table is None or not len(table):
        return empty
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
    if colors is None:
        rgb = np.tile(np.array(CYAN, dtype=np.uint8), (x.size, 1))
    else:
        rgb = np.asarray(colors, dtype=np.uint8).reshape(x.size, 3)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y, maj, mnr, pa, rgb = x[ok], y[ok], maj[ok], mnr[ok], pa[ok], rgb[ok]
    if not x.size:
        return empty
    a, b, theta = sky_ellipse_to_pixel(sky_jacobian(image.wcs, x, y), maj, mnr, pa)
    a, b = a / (2.0 * factor), b / (2.0 * factor)  # semi-axes in picture pixels
    cx, cy = (x - (factor - 1) / 2.0) / factor, (y - (factor - 1) / 2.0) / factor
    # Enough points for a closed one-pixel outline: about two per pixel of circumference.
    npts = np.clip(np.ceil(2.0 * math.pi * np.maximum(a, b) * 2.0), 12, 4096).astype(np.int64)
    src = np.repeat(np.arange(x.size), npts)
    start = np.concatenate([[0], np.cumsum(npts)[:-1]])
    t = 2.0 * math.pi * (np.arange(src.size) - start[src]) / npts[src]
    ct, st = np.cos(t), np.sin(t)
    cth, sth = np.cos(theta)[src], np.sin(theta)[src]
    px = cx[src] + a[src] * ct * cth - b[src] * st * sth
    py = cy[src] + a[src] * ct * sth + b[src] * st * cth
    return px, py, rgb[src]


def render(
    image: FitsImage,
    table: Table | None,
    max_side: int,
    long_side: int | None = None,
    colors: npt.ArrayLike | None = None,
) -> U8:
    """Draw the picture: the image reduced by block averages, the sources outlined.

    Parameters
    ----------
    image
        The image.
    table
        Shared-schema catalogue or None.
    max_side
        The image is block-averaged by the smallest whole factor that brings its long side to
        at most this.
    long_side
        The picture's long side in pixels (the other keeps the image's aspect ratio); the
        averaged image is resampled to it (nearest pixel). Default: the averaged image's size.
    colors
        One RGB triple per table row (None: by ``class`` (:func:`class_rgb`), cyan without).

    Returns
    -------
    numpy.ndarray
        ``(height, width, 3)`` uint8, top row first (ready for PNG).
    """
    ny, nx = image.shape
    factor = max(1, math.ceil(max(nx, ny) / max(int(max_side), 16)))
    small = block_reduce(image.data, factor)
    sny, snx = small.shape
    rgb = colourise(small)
    if long_side is not None:
        scale = long_side / max(nx, ny)
        w, h = max(1, round(nx * scale)), max(1, round(ny * scale))
        if (h, w) != (sny, snx):
            rows = np.minimum(((np.arange(h) + 0.5) * sny / h).astype(np.intp), sny - 1)
            cols = np.minimum(((np.arange(w) + 0.5) * snx / w).astype(np.intp), snx - 1)
            rgb = rgb[rows][:, cols]
    h, w = rgb.shape[:2]
    if colors is None:
        colors = class_rgb(table)
    px, py, col = ellipse_outlines(table, image, factor, colors)
    ix = np.floor((px + 0.5) * w / snx).astype(np.int64)
    iy = np.floor((py + 0.5) * h / sny).astype(np.int64)
    inside = (ix >= 0) & (ix < w) & (iy >= 0) & (iy < h)
    rgb[iy[inside], ix[inside]] = col[inside]
    return np.ascontiguousarray(rgb[::-1])


def encode_png(rgb: U8, text: dict[str, str] | None = None, level: int = 1) -> bytes:
    """Encode an RGB array as PNG (8-bit truecolour, no interlace).

    Parameters
    ----------
    rgb
        ``(height, width, 3)`` uint8, top row first.
    text
        ``tEXt`` chunks (Latin-1 keywords and text; other characters are replaced).
    level
        zlib compression level (1: a noisy 1024x1024 picture in ~40 ms, 15 % larger than 6).

    Returns
    -------
    bytes
        The PNG file.
    """
    h, w = rgb.shape[:2]
    raw = np.empty((h, 1 + 3 * w), dtype=np.uint8)
    raw[:, 0] = 0  # filter type "none" on every row
    raw[:, 1:] = rgb.reshape(h, 3 * w)

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    parts = [b"\x89PNG\r\n\x1a\n", chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))]
    for key, value in (text or {}).items():
        body = key.encode("latin-1", "replace")[:79] + b"\0" + value.encode("latin-1", "replace")
        parts.append(chunk(b"tEXt", body))
    parts.append(chunk(b"IDAT", zlib.compress(raw.data, level)))
    parts.append(chunk(b"IEND", b""))
    return b"".join(parts)


def png_text(path: str | Path) -> dict[str, str]:
    """The ``tEXt`` chunks of a PNG file.

    Parameters
    ----------
    path
        The PNG.

    Returns
    -------
    dict
        Keyword to text.
    """
    data = Path(path).read_bytes()
    out: dict[str, str] = {}
    pos = 8
    while pos + 8 <= len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if kind == b"tEXt":
            key, _, value = data[pos + 8 : pos + 8 + n].partition(b"\0")
            out[key.decode("latin-1")] = value.decode("latin-1")
        pos += 12 + n
    return out


def preview_title(image: FitsImage, table: Table | None, name: str | None = None) -> str:
    """The default preview title: the image's name and the number of sources.

    Parameters
    ----------
    image
        The image.
    table
        Catalogue or None.
    name
        The image's name (default: its file name).

    Returns
    -------
    str
        E.g. ``"field.fits: 12 sources"``.
    """
    n_src = 0 if table is None else len(table)
    return f"{name or image.path.name}: {n_src} source{'s' if n_src != 1 else ''}"


def write_preview(
    image: FitsImage,
    table: Table | None,
    path: str | Path,
    max_pixels: int = 1024,
    title: str | None = None,
    name: str | None = None,
    colors: npt.ArrayLike | None = None,
) -> Path:
    """Write a PNG of the image (asinh stretch) with the sources as ellipses.

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
        Images larger than this on either side are block-averaged down; the PNG's long side is
        ``min(max_pixels, image long side)`` pixels, but at least 600 (smaller images are
        enlarged, nearest pixel).
    title
        The PNG's ``Title`` text; by default ``name`` and the number of sources.
    name
        The image's name in the default title (e.g. the user's file name); by default the
        image's file name.
    colors
        One RGB triple (0-255) per catalogue row (None: as :func:`render`).

    Returns
    -------
    pathlib.Path
        The file written.
    """
    path = Path(path)
    ny, nx = image.shape
    side = max(600, min(int(max_pixels), max(nx, ny)))
    rgb = render(image, table, max_pixels, long_side=side, colors=colors)
    legend = class_legend(table)
    if legend:
        draw_legend(rgb, legend)
    text = {"Title": title if title is not None else preview_title(image, table, name)}
    text["Software"] = "caesar-rest"
    if legend:
        text["Legend"] = "; ".join(f"{name} ({count})" for name, count, _ in legend)
    path.write_bytes(encode_png(rgb, text))
    return path


def write_thumbnail(
    image: FitsImage,
    table: Table | None,
    path: str | Path,
    max_side: int = 256,
    colors: npt.ArrayLike | None = None,
) -> Path:
    """Write a small PNG of the image with the sources as ellipses.

    Parameters
    ----------
    image
        The image.
    table
        Shared-schema catalogue or None.
    path
        Output PNG (overwritten).
    max_side
        Longest side in pixels (smaller images keep their size).
    colors
        One RGB triple per catalogue row (None: as :func:`render`).

    Returns
    -------
    pathlib.Path
        The file written.
    """
    path = Path(path)
    ny, nx = image.shape
    side = min(int(max_side), max(nx, ny))
    path.write_bytes(encode_png(render(image, table, max_side, long_side=side, colors=colors)))
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
#: RGB of each colour name used above.
_RGB: dict[str, tuple[int, int, int]] = {
    "cyan": CYAN,
    "lime": (0, 255, 0),
    "magenta": (255, 0, 255),
    "red": (255, 0, 0),
    "orange": (255, 165, 0),
    "deepskyblue": (0, 191, 255),
}


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


def class_rgb(table: Table | None) -> U8 | None:
    """One RGB triple per row by its class, or None (cyan for all) without a ``class`` column.

    Parameters
    ----------
    table
        The catalogue or None.

    Returns
    -------
    numpy.ndarray or None
        ``(len(table), 3)`` uint8 colours.
    """
    if table is None or "class" not in table.colnames:
        return None
    names = class_colours(table)
    return np.array([_RGB[n] for n in names], dtype=np.uint8).reshape(len(table), 3)


def class_legend(table: Table | None) -> list[tuple[str, int, tuple[int, int, int]]]:
    """The classes present in ``table``: name, number of rows and colour, in class order.

    Parameters
    ----------
    table
        The catalogue or None.

    Returns
    -------
    list of tuple
        Empty for a catalogue without classes.
    """
    if table is None or "class" not in table.colnames or not len(table):
        return []
    names = [str(c) for c in table["class"]]
    return [
        (name, names.count(name), _RGB[colour])
        for name, colour in CLASS_COLOURS.items()
        if name in names
    ]


def draw_legend(rgb: U8, legend: list[tuple[str, int, tuple[int, int, int]]]) -> None:
    """Draw the class legend (a colour swatch and "name (count)" per class) in the top-right
    corner of ``rgb``, in place, with Pillow's built-in bitmap font (no figure: milliseconds).

    Parameters
    ----------
    rgb
        ``(ny, nx, 3)`` uint8 picture.
    legend
        :func:`class_legend` entries.
    """
    from PIL import Image, ImageDraw

    lines = [f"{name} ({count})" for name, count, _ in legend]
    width = 14 + 6 * max(len(line) for line in lines)
    height = 4 + 11 * len(lines)
    ny, nx = rgb.shape[:2]
    if width + 4 > nx or height + 4 > ny:
        return
    pic = Image.fromarray(rgb)
    draw = ImageDraw.Draw(pic)
    x0 = nx - width - 4
    draw.rectangle((x0, 4, nx - 4, 4 + height), fill=(0, 0, 0))
    for i, (line, (_, _, colour)) in enumerate(zip(lines, legend, strict=True)):
        y = 7 + 11 * i
        draw.rectangle((x0 + 3, y + 1, x0 + 9, y + 7), outline=colour)
        draw.text((x0 + 12, y), line, fill=colour)
    rgb[...] = np.asarray(pic)
