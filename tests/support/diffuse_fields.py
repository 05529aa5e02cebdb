"""Deterministic simulated fields of diffuse emission with truth footprints (issue 16).

A field holds shells, partial arcs, large faint blobs and filaments whose peak per pixel is
1-6 sigma, plus point sources, on beam-correlated noise of rms :data:`RMS`. Every structure
keeps its noiseless model, so a finder's mask can be scored against the truth:

* footprint of a structure: the pixels where its model is at least 1 sigma;
* recall of a structure: share of its footprint inside the mask (found when >= 0.3);
* flux recovered: model flux of the structures inside the mask over their total flux;
* mask precision: share of the mask's pixels where some true source is at least 0.25 sigma.

Used by the extended-search tests (small fields) and by ``benchmarks/extended.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import numpy.typing as npt
from astropy.io import fits
from scipy import ndimage

from caesar_rest.imaging.synthetic import FWHM_PER_SIGMA, field_header

RMS = 1e-4
PIX = 1.5  # arcsec
BEAM = (6.0, 5.0, 0.0)  # arcsec, deg
KINDS = ("shell", "arc", "blob", "filament")


@dataclass
class Structure:
    """One true structure: kind, its model in a bounding box ``(y0, x0)`` and flux."""

    kind: str
    y0: int
    x0: int
    model: npt.NDArray[np.float32]

    def footprint(self, thr: float = RMS) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        """Full-image ``(ys, xs)`` where the model is at least ``thr``."""
        yy, xx = np.nonzero(self.model >= thr)
        return yy + self.y0, xx + self.x0


@dataclass
class Field:
    """A simulated field: image (Jy/beam), structures, point sources ``(x, y, peak)``."""

    image: npt.NDArray[np.float32]
    structures: list[Structure]
    points: list[tuple[float, float, float]] = field(default_factory=list)

    def truth_sum(self) -> npt.NDArray[np.float32]:
        """Noiseless sum of every true source (structures and points)."""
        n = self.image.shape[0]
        out = np.zeros((n, n), dtype=np.float32)
        for s in self.structures:
            h, w = s.model.shape
            out[s.y0 : s.y0 + h, s.x0 : s.x0 + w] += s.model
        sig = BEAM[0] / PIX / FWHM_PER_SIGMA
        for x, y, peak in self.points:
            _paint(out, x, y, lambda r2, p=peak: p * np.exp(-0.5 * r2 / sig**2), 5 * sig)
        return out

    def write(self, path: Path) -> Path:
        """Write the image as a FITS file with WCS and beam."""
        fits.PrimaryHDU(self.image, header=header(self.image.shape[0])).writeto(
            path, overwrite=True
        )
        return path


def header(n: int) -> fits.Header:
    """SIN header with the beam, Jy/beam and a frequency (PyBDSF needs one)."""
    return field_header(n, PIX, BEAM, crval=(250.0, -45.0), freq=1.4e9)


def _paint(img: npt.NDArray[np.float32], x: float, y: float, prof: object, r: float) -> None:
    # Add prof(r2) (r2 = squared distance, px) in a box of half-size r around (x, y).
    n = img.shape[0]
    x0, x1 = max(int(x - r), 0), min(int(x + r) + 2, n)
    y0, y1 = max(int(y - r), 0), min(int(y + r) + 2, n)
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1]
    img[y0:y1, x0:x1] += prof(((xx - x) ** 2 + (yy - y) ** 2).astype(np.float32))  # type: ignore[operator]


def _model(kind: str, rng: np.random.Generator, scale: float) -> npt.NDArray[np.float32]:
    """Model of one structure in its own box (peak 1-6 sigma per pixel)."""
    peak = rng.uniform(1.0, 6.0) * RMS
    if kind in ("shell", "arc"):
        rad = rng.uniform(40, 110) * scale
        wid = rng.uniform(4, 10) * scale
        m = int(rad + 4 * wid) + 1
        yy, xx = np.mgrid[-m : m + 1, -m : m + 1].astype(np.float32)
        r = np.hypot(xx, yy)
        out = np.exp(-0.5 * ((r - rad) / wid) ** 2)
        if kind == "arc":
            a0, span = rng.uniform(0, 2 * math.pi), rng.uniform(0.6, 1.5) * math.pi
            d = np.mod(np.arctan2(yy, xx) - a0, 2 * math.pi)
            out *= np.clip(np.minimum(d, span - d) / 0.3, 0, 1) * (d <= span)
    elif kind == "blob":
        sx = rng.uniform(25, 60) * scale
        sy = sx * rng.uniform(0.5, 1.0)
        th = rng.uniform(0, math.pi)
        peak = rng.uniform(1.0, 3.0) * RMS
        m = int(3.5 * sx) + 1
        yy, xx = np.mgrid[-m : m + 1, -m : m + 1].astype(np.float32)
        u = xx * math.cos(th) + yy * math.sin(th)
        v = -xx * math.sin(th) + yy * math.cos(th)
        out = np.exp(-0.5 * ((u / sx) ** 2 + (v / sy) ** 2))
    else:
        length = rng.uniform(120, 260) * scale
        wid = rng.uniform(3, 6)
        m = int(length / 2 + 4 * wid) + 1
        yy, xx = np.mgrid[-m : m + 1, -m : m + 1].astype(np.float32)
        th, bend = rng.uniform(0, math.pi), rng.uniform(-1.5, 1.5) / length
        u = xx * math.cos(th) + yy * math.sin(th)
        v = -xx * math.sin(th) + yy * math.cos(th) - bend * u**2
        along = np.clip(1.0 - np.maximum(np.abs(u) - length / 2 + 15, 0) / 15, 0, 1)
        out = np.exp(-0.5 * (v / wid) ** 2) * along
    return (peak * out).astype(np.float32)


def make_field(n: int = 512, n_struct: int = 4, n_points: int = 20, seed: int = 1) -> Field:
    """A deterministic field.

    Parameters
    ----------
    n
        Side in pixels.
    n_struct
        Number of structures (kinds in turn: shell, arc, blob, filament).
    n_points
        Number of point sources (S/N 5-100), kept off the structures.
    seed
        Random seed.

    Returns
    -------
    Field
        Image and truth.
    """
    rng = np.random.default_rng(seed)
    scale = min(1.0, n / 1024)
    sig = BEAM[0] / PIX / FWHM_PER_SIGMA
    noise = ndimage.gaussian_filter(rng.standard_normal((n, n)).astype(np.float32), sig)
    img = (noise * (RMS / noise.std())).astype(np.float32)
    occupied = np.zeros((n, n), dtype=bool)
    structs: list[Structure] = []
    for k in range(n_struct):
        kind = KINDS[k % len(KINDS)]
        for _ in range(200):
            m = _model(kind, rng, scale)
            h = m.shape[0]
            if h >= n - 20:
                continue
            y0, x0 = (int(v) for v in rng.integers(10, n - 10 - h, 2))
            box = occupied[y0 : y0 + h, x0 : x0 + h]
            if not (box & (m > 0.1 * RMS)).any():
                box |= m > 0.05 * RMS
                img[y0 : y0 + h, x0 : x0 + h] += m
                structs.append(Structure(kind, y0, x0, m))
                break
    points: list[tuple[float, float, float]] = []
    for _ in range(100 * n_points):
        if len(points) >= n_points:
            break
        x, y = rng.uniform(15, n - 15, 2)
        if occupied[int(y) - 8 : int(y) + 9, int(x) - 8 : int(x) + 9].any():
            continue
        occupied[int(y) - 8 : int(y) + 9, int(x) - 8 : int(x) + 9] = True
        points.append((float(x), float(y), float(rng.uniform(5, 100)) * RMS))
    f = Field(img, structs, points)
    for x, y, peak in points:
        _paint(img, x, y, lambda r2, p=peak: p * np.exp(-0.5 * r2 / sig**2), 5 * sig)
    return f


@dataclass
class Score:
    """Scores of a mask against a field's structures."""

    found: int
    total: int
    mean_recall: float
    flux_recovered: float
    precision: float


def score(f: Field, mask: npt.NDArray[np.bool_]) -> Score:
    """Score a claimed-pixel mask (see the module docstring for the definitions).

    Parameters
    ----------
    f
        The field.
    mask
        Claimed pixels (image shape).

    Returns
    -------
    Score
        Structures found (recall >= 0.3), mean recall, flux recovered, mask precision.
    """
    recalls, fin, ftot = [], 0.0, 0.0
    for s in f.structures:
        ys, xs = s.footprint()
        recalls.append(float(mask[ys, xs].mean()) if ys.size else 0.0)
        h, w = s.model.shape
        sub = mask[s.y0 : s.y0 + h, s.x0 : s.x0 + w]
        fin += float(s.model[sub].sum())
        ftot += float(s.model.sum())
    truth = f.truth_sum()
    claimed = int(mask.sum())
    prec = float((truth[mask] >= 0.25 * RMS).sum() / claimed) if claimed else 1.0
    rec = np.array(recalls)
    return Score(
        int((rec >= 0.3).sum()),
        len(recalls),
        float(rec.mean()) if rec.size else 0.0,
        fin / ftot if ftot else 0.0,
        prec,
    )


def finder_mask(result: object, shape: tuple[int, int]) -> npt.NDArray[np.bool_]:
    """Claimed pixels of a ``find_sources`` result: every island (nested sources excluded).

    Parameters
    ----------
    result
        A :class:`~caesar_rest.sourcefinder.pipeline.SourceFinderResult`.
    shape
        Image shape.

    Returns
    -------
    numpy.ndarray
        Boolean mask.
    """
    isl = result.sources.isl  # type: ignore[attr-defined]
    mask = np.zeros(shape, dtype=bool)
    for i in range(len(isl.npix)):
        if isl.parent.size and isl.parent[i] >= 0:
            continue
        a, b = isl.offsets[i], isl.offsets[i + 1]
        mask[isl.ys[a:b], isl.xs[a:b]] = True
    return mask
