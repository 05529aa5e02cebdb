"""Source selection and point-like tagging (spec 3.6), and island contours.

Contour parameters come from the island's outer boundary: marching squares on the island mask
(:func:`skimage.measure.find_contours`, sub-pixel vertices; upstream traces pixel centres, so
areas and perimeters differ slightly) and the minimum-area rectangle of the pixel centres
(rotating calipers on the convex hull).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from caesar_rest.sourcefinder._types import F64
from caesar_rest.sourcefinder.islands import MORPH_COMPACT, MORPH_POINTLIKE, IslandSet
from caesar_rest.sourcefinder.options import SelectionSettings


@dataclass
class Shape:
    """Contour parameters of islands (one value per island)."""

    area: F64
    perimeter: F64
    circularity: F64
    bbox_major: F64
    bbox_minor: F64
    bbox_angle: F64
    elongation: F64
    ellipse_area_ratio: F64


def island_mask(isl: IslandSet, i: int, pad: int = 1) -> tuple[npt.NDArray[np.bool_], int, int]:
    """Boolean mask of island ``i`` in its bounding box grown by ``pad``.

    Parameters
    ----------
    isl
        Islands.
    i
        Island index.
    pad
        Margin in pixels.

    Returns
    -------
    mask, x0, y0
        The mask and the full-image pixel of its ``[0, 0]`` element.
    """
    sl = isl.pixels(i)
    x0 = int(isl.xmin[i]) - pad
    y0 = int(isl.ymin[i]) - pad
    mask = np.zeros((int(isl.ymax[i]) - y0 + 1 + pad, int(isl.xmax[i]) - x0 + 1 + pad), bool)
    mask[isl.ys[sl] - y0, isl.xs[sl] - x0] = True
    return mask, x0, y0


def contour(isl: IslandSet, i: int) -> F64:
    """Outer contour of island ``i`` (the longest marching-squares contour at 0.5).

    Parameters
    ----------
    isl
        Islands.
    i
        Island index.

    Returns
    -------
    numpy.ndarray
        ``(n, 2)`` vertices ``(x, y)`` in full-image pixels (closed: last == first).
    """
    from skimage import measure  # scikit-image's package loads only where contours are drawn

    mask, x0, y0 = island_mask(isl, i)
    cs = measure.find_contours(mask.astype(np.float32), 0.5)
    if not cs:
        return np.zeros((0, 2))
    c = max(cs, key=len)
    return np.column_stack([c[:, 1] + x0, c[:, 0] + y0])


def _min_area_rect(pts: F64) -> tuple[float, float, float]:
    if pts.shape[0] < 3:
        ext = np.ptp(pts, axis=0) if pts.size else np.zeros(2)
        return float(ext.max()), float(ext.min()), 0.0
    try:
        from scipy.spatial import ConvexHull

        hull = pts[ConvexHull(pts).vertices]
    except Exception:  # collinear points: a line
        ext = np.ptp(pts, axis=0)
        return float(np.hypot(*ext)), 0.0, math.degrees(math.atan2(ext[1], ext[0]))
    edges = np.diff(np.vstack([hull, hull[:1]]), axis=0)
    ang = np.arctan2(edges[:, 1], edges[:, 0])
    c, s = np.cos(ang), np.sin(ang)
    u = hull[:, 0][None, :] * c[:, None] + hull[:, 1][None, :] * s[:, None]
    v = -hull[:, 0][None, :] * s[:, None] + hull[:, 1][None, :] * c[:, None]
    w = np.ptp(u, axis=1)
    h = np.ptp(v, axis=1)
    k = int(np.argmin(w * h))
    big, small = max(w[k], h[k]), min(w[k], h[k])
    angle = math.degrees(ang[k]) + (0.0 if w[k] >= h[k] else 90.0)
    return float(big), float(small), angle


def shapes(isl: IslandSet) -> Shape:
    """Contour parameters of every island.

    Parameters
    ----------
    isl
        Islands.

    Returns
    -------
    Shape
        Per-island values (NaN where the contour has fewer than 4 points).
    """
    n = isl.n
    vals = np.full((8, n), np.nan)
    for i in range(n):
        c = contour(isl, i)
        sl = isl.pixels(i)
        pts = np.column_stack([isl.xs[sl], isl.ys[sl]]).astype(np.float64)
        big, small, angle = _min_area_rect(pts)
        vals[3:6, i] = big, small, angle
        vals[6, i] = 1.0 - small / big if big > 0 else 0.0
        sig2 = isl.cxx[i] + isl.cyy[i]
        vals[7, i] = (
            4.0
            * math.pi
            * math.sqrt(max(isl.cxx[i] * isl.cyy[i] - isl.cxy[i] ** 2, 0.0))
            / max(isl.npix[i], 1)
            if sig2 > 0
            else 0
        )
        if c.shape[0] < 4:
            continue
        x, y = c[:, 0], c[:, 1]
        area = 0.5 * abs(float(np.dot(x[:-1], y[1:]) - np.dot(x[1:], y[:-1])))
        per = float(np.hypot(np.diff(x), np.diff(y)).sum())
        vals[0, i], vals[1, i] = area, per
        vals[2, i] = 4.0 * math.pi * area / per**2 if per > 0 else np.nan
    return Shape(*vals)


def select(
    isl: IslandSet, beam_area_pix: float, cuts: SelectionSettings | None = None
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.int64]]:
    """Good-source flags and morphology (POINT-LIKE or COMPACT) per island.

    Parameters
    ----------
    isl
        Islands.
    beam_area_pix
        Beam area in pixels.
    cuts
        The cuts (default: the legacy defaults). The bounding-box cut removes islands whose
        minimum-area rectangle is thinner than ``min_bbox`` pixels; a source is point-like
        when every enabled point-like cut passes (``enabled`` is the caller's).

    Returns
    -------
    good, morph
        Per island.
    """
    c = cuts or SelectionSettings()
    sh = shapes(isl)
    good = np.ones(isl.n, dtype=bool)
    if c.use_bbox_cut:
        # The short side is the extent of pixel centres; a one-pixel-wide line has 0.
        good &= ~(np.nan_to_num(sh.bbox_minor, nan=np.inf) + 1.0 < c.min_bbox)
    point = np.ones(isl.n, dtype=bool)
    if c.use_circ_cut:
        point &= ~(sh.circularity < c.circ_thr)
    if c.use_elong_cut:
        point &= ~(sh.elongation > c.elong_thr)
    if c.use_ellipse_area_cut:
        r = sh.ellipse_area_ratio
        point &= ~((r < c.ellipse_area_min) | (r > c.ellipse_area_max))
    if c.use_max_npix_cut:
        point &= isl.npix <= c.max_npix
    if c.use_nbeams_cut:
        point &= isl.npix / beam_area_pix <= c.nbeams_thr
    morph = np.where(point, MORPH_POINTLIKE, MORPH_COMPACT).astype(np.int64)
    return good, morph
