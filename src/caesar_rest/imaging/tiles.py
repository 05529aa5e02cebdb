"""Image tiles for the web viewer: a pyramid of block-averaged levels, rendered as PNG tiles.

The web viewer shows images of any size at full resolution the way map viewers do: the image
is cut into :data:`TILE` x :data:`TILE` tiles at each level of a pyramid, where level 0 is the
image itself and level ``k`` averages ``2**k x 2**k`` blocks (NaN ignored). The browser asks
only for the tiles it shows, at the level that matches its zoom, so the first view of a
4096x4096 image costs a handful of 256x256 tiles, not one 64 MiB picture.

A tile is drawn with one of the :data:`SCALES` between limits ``lo`` and ``hi`` (data units;
:meth:`TileService.info` gives the percentiles to pick them from) and one of the
:data:`COLOURMAPS`, and encoded with the preview's PNG encoder
(:func:`caesar_rest.catalogue.preview.encode_png`); matplotlib is not involved.

Bounds: at most :data:`MAX_VIEWS` images are held open (memory-mapped where the file allows;
reduced levels take a third of the image's float32 size at most), and the encoded tiles are
kept in a least-recently-used cache of :data:`TILE_CACHE_BYTES`.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from astropy.io import fits
from astropy.wcs import WCS

from caesar_rest.catalogue.preview import _LUT as _INFERNO_LUT
from caesar_rest.catalogue.preview import (
    CLASS_COLOURS,
    GREY,
    UNCLASSIFIED,
    encode_png,
)
from caesar_rest.imaging.fits_image import (
    ImageError,
    _celestial_wcs,
    _pick_hdu,
    pixel_to_radec,
    sky_ellipse_to_pixel,
    sky_jacobian,
)

__all__ = [
    "COLOURMAPS",
    "PERCENTILES",
    "SCALES",
    "TILE",
    "ImageView",
    "TileService",
    "catalogue_overlay",
    "halve",
    "overlay_ellipses",
    "render_tile",
    "stretch",
]

U8 = npt.NDArray[np.uint8]
F32 = npt.NDArray[np.float32]

#: Tile side in pixels of its level.
TILE = 256
#: Images held open at once (least recently used closed first).
MAX_VIEWS = 4
#: Bytes of encoded PNG tiles kept in memory.
TILE_CACHE_BYTES = 64 * 1024 * 1024
#: Pixels sampled (on a regular grid) for the percentiles.
_SAMPLE = 1_000_000
#: Symmetric intervals the viewer offers ("99.5": from the 0.25th to the 99.75th percentile).
INTERVALS = (90.0, 95.0, 99.0, 99.5, 99.9, 100.0)
#: Percentiles given by :meth:`TileService.info`, the ends of the :data:`INTERVALS`.
PERCENTILES: tuple[float, ...] = tuple(
    sorted({round(p, 3) for q in INTERVALS for p in ((100.0 - q) / 2.0, (100.0 + q) / 2.0)})
)
#: Stretches of the normalised value ``x`` in [0, 1] (DS9's definitions, log with a = 1000).
SCALES = ("linear", "log", "sqrt", "asinh")


def _ramp(points: list[tuple[int, int, int]]) -> U8:
    arr = np.array(points, dtype=np.float64)
    pos = np.linspace(0.0, 1.0, arr.shape[0])
    t = np.linspace(0.0, 1.0, 256)
    cols = [np.interp(t, pos, arr[:, k]) for k in range(3)]
    return np.clip(np.rint(np.stack(cols, axis=1)), 0, 255).astype(np.uint8)


def _heat() -> U8:
    t = np.linspace(0.0, 1.0, 256)
    rgb = np.stack([3 * t, 3 * t - 1, 3 * t - 2], axis=1)
    return np.clip(np.rint(255 * rgb), 0, 255).astype(np.uint8)


def _cubehelix(start: float = 0.5, rot: float = -1.5, hue: float = 1.0) -> U8:
    """Green's (2011) cube-helix scheme with matplotlib's default parameters."""
    t = np.linspace(0.0, 1.0, 256)
    phi = 2 * math.pi * (start / 3 + rot * t)
    amp = hue * t * (1 - t) / 2
    r = t + amp * (-0.14861 * np.cos(phi) + 1.78277 * np.sin(phi))
    g = t + amp * (-0.29227 * np.cos(phi) - 0.90649 * np.sin(phi))
    b = t + amp * (1.97294 * np.cos(phi))
    return np.clip(np.rint(255 * np.stack([r, g, b], axis=1)), 0, 255).astype(np.uint8)


#: matplotlib's *viridis* at 17 evenly spaced points (interpolated linearly).
_VIRIDIS = [
    (68, 1, 84), (72, 24, 106), (71, 45, 123), (66, 64, 134), (59, 82, 139), (51, 99, 141),
    (44, 114, 142), (38, 130, 142), (33, 145, 140), (31, 160, 136), (40, 174, 128),
    (63, 188, 115), (94, 201, 98), (132, 212, 75), (173, 220, 48), (216, 226, 25),
    (253, 231, 37),
]  # fmt: skip

#: Colour maps by name: 256 RGB rows each.
COLOURMAPS: dict[str, U8] = {
    "grey": np.repeat(np.arange(256, dtype=np.uint8)[:, None], 3, axis=1),
    "inferno": _INFERNO_LUT,
    "viridis": _ramp(_VIRIDIS),
    "heat": _heat(),
    "cubehelix": _cubehelix(),
}


def stretch(data: npt.ArrayLike, scale: str, lo: float, hi: float) -> npt.NDArray[np.float64]:
    """Normalise ``data`` to [0, 1] between ``lo`` and ``hi``, then apply ``scale``.

    Parameters
    ----------
    data
        Pixel values (NaN stays NaN).
    scale
        One of :data:`SCALES`: ``linear`` x, ``sqrt`` sqrt(x),
        ``log`` log10(1000 x + 1) / log10(1001),
        ``asinh`` asinh(10 x) / asinh(10).
    lo, hi
        Values mapped to 0 and 1 (``hi > lo``).

    Returns
    -------
    numpy.ndarray
        Stretched values in [0, 1], float64.

    Raises
    ------
    ValueError
        For an unknown scale or ``hi <= lo``.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(SCALES)}, got {scale!r}")
    if not (math.isfinite(lo) and math.isfinite(hi) and hi > lo):
        raise ValueError(f"need finite limits with hi > lo, got lo={lo}, hi={hi}")
    with np.errstate(invalid="ignore"):
        x = np.clip((np.asarray(data, dtype=np.float64) - lo) / (hi - lo), 0.0, 1.0)
    if scale == "sqrt":
        return np.sqrt(x)
    if scale == "log":
        return np.log10(1000.0 * x + 1.0) / math.log10(1001.0)
    if scale == "asinh":
        return np.arcsinh(10.0 * x) / math.asinh(10.0)
    return x


def render_tile(
    block: npt.ArrayLike, scale: str, lo: float, hi: float, cmap: str = "inferno"
) -> bytes:
    """One tile as PNG: stretched, coloured, NaN grey, image row 0 at the bottom.

    Parameters
    ----------
    block
        2-D pixel values in FITS order (row 0 is the lowest y).
    scale, lo, hi
        See :func:`stretch`.
    cmap
        One of :data:`COLOURMAPS`.

    Returns
    -------
    bytes
        The PNG file.

    Raises
    ------
    ValueError
        For an unknown scale or colour map, or bad limits.
    """
    lut = COLOURMAPS.get(cmap)
    if lut is None:
        raise ValueError(f"cmap must be one of {', '.join(COLOURMAPS)}, got {cmap!r}")
    values = np.asarray(block)
    y = stretch(values, scale, lo, hi)
    finite = np.isfinite(y)
    idx = np.where(finite, y * 255.0 + 0.5, 0.0).astype(np.intp)
    rgb = lut[np.clip(idx, 0, 255)]
    rgb[~finite] = GREY
    return encode_png(np.ascontiguousarray(rgb[::-1]))


def halve(data: npt.NDArray[Any]) -> F32:
    """Average 2x2 blocks ignoring NaN (odd edges padded with NaN), in strips of rows.

    Parameters
    ----------
    data
        2-D image (an array or a memory map).

    Returns
    -------
    numpy.ndarray
        float32 array of shape ``ceil(ny / 2), ceil(nx / 2)``; NaN where a block has no finite
        pixel.
    """
    ny, nx = data.shape
    by, bx = -(-ny // 2), -(-nx // 2)
    out = np.empty((by, bx), dtype=np.float32)
    strip = 512
    for j0 in range(0, by, strip):
        j1 = min(by, j0 + strip)
        rows = np.asarray(data[2 * j0 : min(ny, 2 * j1)], dtype=np.float32)
        block = np.full((2 * (j1 - j0), 2 * bx), np.nan, dtype=np.float32)
        block[: rows.shape[0], :nx] = rows
        finite = np.isfinite(block)
        block[~finite] = 0.0
        total = block.reshape(j1 - j0, 2, bx, 2).sum(axis=(1, 3), dtype=np.float32)
        count = finite.reshape(j1 - j0, 2, bx, 2).sum(axis=(1, 3), dtype=np.int8)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[j0:j1] = np.where(count > 0, total / count, np.nan)
    return out


@dataclass
class ImageView:
    """One open image: its 2-D data (memory-mapped when the file allows), WCS and pyramid.

    Attributes
    ----------
    path
        The FITS file.
    data
        The 2-D pixel array (``(ny, nx)``, FITS order).
    wcs
        Its 2-D celestial WCS.
    bunit
        The BUNIT keyword.
    levels
        Number of pyramid levels; the last fits in one tile.
    """

    path: Path
    data: npt.NDArray[Any]
    wcs: WCS
    bunit: str
    levels: int
    _hdul: Any = None
    _reduced: dict[int, F32] = field(default_factory=dict)
    _lock: threading.RLock = field(default_factory=threading.RLock)
    _percentiles: dict[str, float] | None = None

    @classmethod
    def open(cls, path: str | Path) -> ImageView:
        """Open ``path`` (memory-mapped) without reading its pixels.

        Raises
        ------
        ImageError
            When it is not a FITS image with a celestial WCS.
        """
        path = Path(path)
        try:
            hdul = fits.open(path, memmap=True)
            index, hdu = _pick_hdu(hdul, None, path.name)
            lead = (0,) * (hdu.data.ndim - 2)
            data = hdu.data[lead] if lead else hdu.data
            wcs = _celestial_wcs(hdu.header, index)
        except ImageError:
            raise
        except Exception as exc:  # astropy raises many kinds on junk
            raise ImageError(f"cannot read {path.name} as a FITS image: {exc}") from None
        ny, nx = data.shape
        levels = max(0, math.ceil(math.log2(max(nx, ny) / TILE))) + 1 if max(nx, ny) > TILE else 1
        return cls(path, data, wcs, str(hdu.header.get("BUNIT", "")).strip(), levels, hdul)

    def close(self) -> None:
        """Close the file (the memory map)."""
        if self._hdul is not None:
            self._hdul.close()
            self._hdul = None

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)``."""
        ny, nx = self.data.shape
        return int(ny), int(nx)

    def level(self, k: int) -> npt.NDArray[Any]:
        """The pyramid level ``k`` (0: the image; k: ``2**k`` blocks averaged, from level k-1).

        Built once: concurrent requests for a level that is being built wait for it.
        """
        if not 0 <= k < self.levels:
            raise ValueError(f"level must be in 0..{self.levels - 1}, got {k}")
        if k == 0:
            return self.data
        have = self._reduced.get(k)
        if have is not None:
            return have
        with self._lock:  # re-entrant: level k-1 is built under the same lock
            if k not in self._reduced:
                self._reduced[k] = halve(self.level(k - 1))
            return self._reduced[k]

    def percentiles(self) -> dict[str, float]:
        """The :data:`PERCENTILES` of the finite pixels (on a grid of about 10**6 of them)."""
        if self._percentiles is None:
            ny, nx = self.shape
            step = max(1, math.ceil(math.sqrt(nx * ny / _SAMPLE)))
            sample = np.asarray(self.data[::step, ::step], dtype=np.float32)
            vals = sample[np.isfinite(sample)]
            if vals.size == 0:
                vals = np.zeros(1, dtype=np.float32)
            got = np.percentile(vals, PERCENTILES)
            self._percentiles = {f"{p:g}": float(v) for p, v in zip(PERCENTILES, got, strict=True)}
        return self._percentiles

    def tile_block(self, k: int, tx: int, ty: int) -> npt.NDArray[Any]:
        """The pixels of tile ``(tx, ty)`` of level ``k`` (``ty`` counts up from the bottom row).

        Raises
        ------
        ValueError
            For a level or tile outside the image.
        """
        lvl = self.level(k)
        ny, nx = lvl.shape
        if not (0 <= tx < -(-nx // TILE) and 0 <= ty < -(-ny // TILE)):
            raise ValueError(f"tile ({tx}, {ty}) is outside level {k} ({nx}x{ny} pixels)")
        return lvl[ty * TILE : (ty + 1) * TILE, tx * TILE : (tx + 1) * TILE]

    def info(self) -> dict[str, Any]:
        """Shape, tile size, levels, BUNIT, percentiles and the WCS header."""
        ny, nx = self.shape
        return {
            "shape": [ny, nx],
            "tile": TILE,
            "levels": self.levels,
            "bunit": self.bunit,
            "percentiles": self.percentiles(),
            "intervals": list(INTERVALS),
            "scales": list(SCALES),
            "colourmaps": list(COLOURMAPS),
            "wcs": {k: v for k, v in self.wcs.to_header().items() if k not in ("COMMENT", "")},
        }

    def pixel(self, x: float, y: float) -> dict[str, Any]:
        """The value at pixel ``(x, y)`` (0-based, centres at integers) and its RA/Dec.

        Raises
        ------
        ValueError
            Outside the image.
        """
        ny, nx = self.shape
        if not (math.isfinite(x) and math.isfinite(y)):
            raise ValueError(f"pixel ({x}, {y}) is outside the image ({nx}x{ny})")
        ix, iy = int(math.floor(x + 0.5)), int(math.floor(y + 0.5))
        if not (0 <= ix < nx and 0 <= iy < ny):
            raise ValueError(f"pixel ({x}, {y}) is outside the image ({nx}x{ny})")
        value = float(self.data[iy, ix])
        ra, dec = pixel_to_radec(self.wcs, np.array([x]), np.array([y]))
        return {
            "x": ix,
            "y": iy,
            "value": value if math.isfinite(value) else None,
            "bunit": self.bunit,
            "ra": float(ra[0]),
            "dec": float(dec[0]),
        }


class TileService:
    """Open images and encoded tiles, both bounded, shared by the requests of one process.

    Parameters
    ----------
    max_views
        Images kept open.
    cache_bytes
        Bytes of PNG tiles kept.
    """

    def __init__(self, max_views: int = MAX_VIEWS, cache_bytes: int = TILE_CACHE_BYTES) -> None:
        self.max_views = max_views
        self.cache_bytes = cache_bytes
        self._views: OrderedDict[str, ImageView] = OrderedDict()
        self._tiles: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._tile_bytes = 0
        self._lock = threading.Lock()
        #: Tiles served from the cache and rendered (for tests and the benchmark).
        self.hits = 0
        self.misses = 0

    def view(self, key: str, path: str | Path) -> ImageView:
        """The open image ``key`` (a file id), opened from ``path`` on first use."""
        with self._lock:
            view = self._views.get(key)
            if view is not None:
                self._views.move_to_end(key)
                return view
        opened = ImageView.open(path)
        with self._lock:
            view = self._views.setdefault(key, opened)
            self._views.move_to_end(key)
            while len(self._views) > self.max_views:
                _, old = self._views.popitem(last=False)
                old.close()
        if view is not opened:
            opened.close()
        return view

    def tile(
        self,
        key: str,
        path: str | Path,
        level: int,
        tx: int,
        ty: int,
        scale: str,
        lo: float,
        hi: float,
        cmap: str,
    ) -> bytes:
        """The PNG of one tile (see :func:`render_tile`), from the cache when it is there.

        Raises
        ------
        ValueError
            For a tile outside the image or bad scale, limits or colour map.
        """
        ck = (key, level, tx, ty, scale, lo, hi, cmap)
        with self._lock:
            png = self._tiles.get(ck)
            if png is not None:
                self._tiles.move_to_end(ck)
                self.hits += 1
                return png
        block = self.view(key, path).tile_block(level, tx, ty)
        png = render_tile(block, scale, lo, hi, cmap)
        with self._lock:
            self.misses += 1
            if ck not in self._tiles:
                self._tiles[ck] = png
                self._tile_bytes += len(png)
            while self._tile_bytes > self.cache_bytes and self._tiles:
                _, old = self._tiles.popitem(last=False)
                self._tile_bytes -= len(old)
        return png

    def forget(self, key: str) -> None:
        """Close image ``key`` and drop its tiles (the file was deleted)."""
        with self._lock:
            view = self._views.pop(key, None)
            for ck in [c for c in self._tiles if c[0] == key]:
                self._tile_bytes -= len(self._tiles.pop(ck))
        if view is not None:
            view.close()


def overlay_ellipses(view: ImageView, sources: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The FWHM ellipses of catalogue rows in pixel geometry, for drawing over the image.

    Parameters
    ----------
    view
        The image the catalogue was made from.
    sources
        Catalogue rows (``x``, ``y``, ``maj``, ``min``, ``pa``; sizes in arcsec, PA east of
        north), as in ``catalog.json``.

    Returns
    -------
    list of dict
        Per row with a finite position: ``row`` (index in ``sources``), ``x``, ``y``, semi-axes
        ``a``, ``b`` (pixels) and ``theta`` (radians from the +x axis towards +y). Rows
        without a usable size get a 3-pixel circle.
    """
    rows = [i for i, s in enumerate(sources) if _finite(s.get("x")) and _finite(s.get("y"))]
    if not rows:
        return []
    x = np.array([sources[i]["x"] for i in rows], dtype=np.float64)
    y = np.array([sources[i]["y"] for i in rows], dtype=np.float64)
    maj = np.array([_num(sources[i].get("maj")) for i in rows])
    mnr = np.array([_num(sources[i].get("min")) for i in rows])
    pa = np.nan_to_num(np.array([_num(sources[i].get("pa")) for i in rows]), nan=0.0)
    sized = np.isfinite(maj) & np.isfinite(mnr) & (maj > 0) & (mnr > 0)
    a = np.full(x.size, 3.0)
    b = np.full(x.size, 3.0)
    theta = np.zeros(x.size)
    if sized.any():
        jac = sky_jacobian(view.wcs, x[sized], y[sized])
        fa, fb, ft = sky_ellipse_to_pixel(jac, maj[sized], mnr[sized], pa[sized])
        a[sized], b[sized], theta[sized] = fa / 2.0, fb / 2.0, ft
    return [
        {
            "row": r,
            "x": round(float(x[j]), 3),
            "y": round(float(y[j]), 3),
            "a": round(float(a[j]), 3),
            "b": round(float(b[j]), 3),
            "theta": round(float(theta[j]), 5),
        }
        for j, r in enumerate(rows)
    ]


def _num(value: Any) -> float:
    return float(value) if _finite(value) else math.nan


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def catalogue_overlay(view: ImageView, catalogue_json: str | Path) -> dict[str, Any]:
    """A job's ``catalog.json`` with the ellipses to draw over its image.

    Parameters
    ----------
    view
        The job's input image.
    catalogue_json
        The job's ``catalog.json`` (``{"columns": [...], "sources": [...]}``).

    Returns
    -------
    dict
        ``columns`` and ``sources`` as in the file, ``ellipses`` from
        :func:`overlay_ellipses`, and the preview's colour of each class (``class_colours``,
        ``unclassified``).
    """
    doc = json.loads(Path(catalogue_json).read_text(encoding="utf-8"))
    sources = list(doc.get("sources", []))
    return {
        "columns": doc.get("columns", []),
        "sources": sources,
        "ellipses": overlay_ellipses(view, sources),
        "class_colours": CLASS_COLOURS,
        "unclassified": UNCLASSIFIED,
    }
