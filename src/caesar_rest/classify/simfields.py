"""Simulated radio fields with per-class truth, for training and testing the classifier.

One field (:func:`make_field`, deterministic for a seed) holds beam-correlated noise, a faint
background gradient and the emission of every class the classifier knows:

* compact: point sources (peak S/N 3-300 from dN/dS ~ S^-2) and barely resolved Gaussians
  (at most 1.3 times the beam);
* extended: resolved single-island sources, one or two overlapping elliptical Gaussians
  1.8-5 times the beam;
* extended-multisland: radio galaxies, a core (absent in a quarter of them) and two lobes
  8-20 beams apart, each lobe 1.5-3 times the beam and as bright as the core or brighter;
* spurious: bright sources (S/N 500-5000) with sidelobe rings (azimuthally clumpy, positive
  with negative troughs) and radial spokes, as an under-deconvolved interferometric image has;
* diffuse: large faint emission, 2-3 overlapping Gaussians of 7-25 beams at 3-8 sigma.

Besides the image, the field keeps one model map per class (:attr:`Field.models`). The class of
a position is the class whose model is brightest there, if that model reaches 2 sigma;
elsewhere a detection is noise and counts as spurious (:meth:`Field.label_at`). The field also
keeps which radio galaxy each pixel belongs to (:attr:`Field.galaxies`, the galaxy whose model is
brightest there): the truth of the grouping of multi-island rows (:meth:`Field.galaxy_at`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from astropy.io import fits

from caesar_rest.imaging.synthetic import FWHM_PER_SIGMA, field_header, pix_sigma

F32 = npt.NDArray[np.float32]
#: (bmaj, bmin, bpa): arcsec, arcsec, degrees east of north.
Beam = tuple[float, float, float]

#: Noise rms of every field, Jy/beam.
RMS = 1e-4
#: Pixel size, arcsec.
PIX = 1.5
#: Classes with a model map, in the order of :attr:`Field.models` (indices of CLASSES).
MODEL_CLASSES = ("compact", "extended", "extended-multisland", "spurious", "diffuse")


@dataclass
class Field:
    """A simulated image and its truth.

    Attributes
    ----------
    image
        float32 image, Jy/beam.
    models
        Noise-free emission per class of :data:`MODEL_CLASSES`, same shape as the image
        (the spurious model is the absolute value of the artefacts).
    beam
        ``(bmaj, bmin, bpa)`` in arcsec and degrees east of north.
    header
        FITS header (SIN projection, FK5, beam, BUNIT).
    galaxies
        Per pixel, the number (1, 2, ...) of the radio galaxy whose model is brightest there
        (0 where no galaxy has emission), same shape as the image.
    """

    image: F32
    models: npt.NDArray[np.float32]
    beam: tuple[float, float, float]
    header: fits.Header
    galaxies: npt.NDArray[np.int16]

    def label_at(self, x: npt.ArrayLike, y: npt.ArrayLike) -> npt.NDArray[np.str_]:
        """The true class at pixel positions (0-based, rounded to the nearest pixel).

        Parameters
        ----------
        x, y
            Pixel positions.

        Returns
        -------
        numpy.ndarray
            Class names; ``spurious`` where no class model reaches 2 sigma (noise).
        """
        ny, nx = self.image.shape
        xi = np.clip(np.rint(np.nan_to_num(np.asarray(x, dtype=float))).astype(int), 0, nx - 1)
        yi = np.clip(np.rint(np.nan_to_num(np.asarray(y, dtype=float))).astype(int), 0, ny - 1)
        vals = self.models[:, yi, xi]
        best = np.argmax(vals, axis=0)
        names = np.asarray(MODEL_CLASSES)[best]
        return np.where(vals.max(axis=0) >= 2.0 * RMS, names, "spurious")

    def galaxy_at(self, x: npt.ArrayLike, y: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """The radio galaxy at pixel positions: its number where the true class is
        ``extended-multisland``, else 0.

        Parameters
        ----------
        x, y
            Pixel positions (0-based, rounded to the nearest pixel).

        Returns
        -------
        numpy.ndarray
            Galaxy numbers (1, 2, ...), 0 for rows of no galaxy.
        """
        ny, nx = self.image.shape
        xi = np.clip(np.rint(np.nan_to_num(np.asarray(x, dtype=float))).astype(int), 0, nx - 1)
        yi = np.clip(np.rint(np.nan_to_num(np.asarray(y, dtype=float))).astype(int), 0, ny - 1)
        multi = self.label_at(x, y) == "extended-multisland"
        return np.where(multi, self.galaxies[yi, xi], 0).astype(np.int64)


def header(n: int, beam: tuple[float, float, float]) -> fits.Header:
    """FITS header of an ``n x n`` field with ``beam``."""
    return field_header(n, PIX, beam)


def _pix_sigma(maj: float, mnr: float, pa: float) -> tuple[float, float, float]:
    return pix_sigma(maj, mnr, pa, PIX)


def _gauss(
    img: F32, x: float, y: float, amp: float, sx: float, sy: float, th: float, reach: float = 5.0
) -> None:
    # Add an elliptical Gaussian (pixel sigmas sx, sy, angle th from +x) to img in place.
    ny, nx = img.shape
    r = int(math.ceil(reach * max(sx, sy)))
    x0, x1 = max(int(x) - r, 0), min(int(x) + r + 1, nx)
    y0, y1 = max(int(y) - r, 0), min(int(y) + r + 1, ny)
    if x0 >= x1 or y0 >= y1:
        return
    yy, xx = np.mgrid[y0:y1, x0:x1]
    c, s = math.cos(th), math.sin(th)
    u = (xx - x) * c + (yy - y) * s
    w = -(xx - x) * s + (yy - y) * c
    img[y0:y1, x0:x1] += (amp * np.exp(-0.5 * ((u / sx) ** 2 + (w / sy) ** 2))).astype(np.float32)


def _noise(rng: np.random.Generator, n: int, beam: tuple[float, float, float]) -> F32:
    # White noise convolved with the beam (FFT), rescaled to RMS.
    sx, sy, th = _pix_sigma(*beam)
    kern = np.zeros((n, n), dtype=np.float32)
    _gauss(kern, n / 2, n / 2, 1.0, sx, sy, th)
    kern = np.fft.ifftshift(kern)
    white = rng.standard_normal((n, n)).astype(np.float32)
    img = np.fft.irfft2(np.fft.rfft2(white) * np.fft.rfft2(kern), s=(n, n))
    return np.asarray(img * (RMS / img.std()), dtype=np.float32)


class _Placer:
    """Random positions kept apart from each other."""

    def __init__(self, rng: np.random.Generator, n: int):
        self.rng, self.n = rng, n
        self.taken: list[tuple[float, float, float]] = []

    def free(self, x: float, y: float, r: float) -> bool:
        inside = r < x < self.n - r and r < y < self.n - r
        return inside and all(math.hypot(x - a, y - b) > r + c for a, b, c in self.taken)

    def take(self, r: float, margin: float = 12.0, tries: int = 200) -> tuple[float, float] | None:
        for _ in range(tries):
            x, y = (float(v) for v in self.rng.uniform(margin, self.n - margin, 2))
            if self.free(x, y, r):
                self.taken.append((x, y, r))
                return x, y
        return None


def _snr_draw(rng: np.random.Generator, lo: float = 3.0, hi: float = 300.0) -> float:
    # dN/dS ~ S^-2 between lo and hi (inverse CDF).
    a, b = 1.0 / lo, 1.0 / hi
    return float(1.0 / (a - rng.uniform() * (a - b)))


def _add_compact(m: F32, rng: np.random.Generator, pl: _Placer, beam: Beam, count: int) -> None:
    for k in range(count):
        pos = pl.take(4.0)
        if pos is None:
            return
        f = 1.0 if k % 5 else float(rng.uniform(1.0, 1.3))
        maj, mnr = beam[0] * f, beam[1] * f
        snr = _snr_draw(rng)
        _gauss(
            m, *pos, snr * RMS, *_pix_sigma(maj, mnr, beam[2] if f == 1.0 else rng.uniform(0, 180))
        )


def _add_extended(m: F32, rng: np.random.Generator, pl: _Placer, beam: Beam, count: int) -> None:
    for _ in range(count):
        f = float(rng.uniform(1.8, 5.0))
        pos = pl.take(2.0 * f * beam[0] / PIX)
        if pos is None:
            return
        maj = beam[0] * f
        mnr = max(beam[1] * 1.1, maj * float(rng.uniform(0.35, 1.0)))
        pa = float(rng.uniform(0, 180))
        snr = float(rng.uniform(8, 60))
        _gauss(m, *pos, snr * RMS, *_pix_sigma(maj, mnr, pa))
        if rng.uniform() < 0.5:  # an irregular shape: a second, offset component
            off = float(rng.uniform(0.3, 0.7)) * maj / PIX
            a = float(rng.uniform(0, 2 * math.pi))
            x2, y2 = pos[0] + off * math.cos(a), pos[1] + off * math.sin(a)
            _gauss(
                m,
                x2,
                y2,
                snr * RMS * float(rng.uniform(0.4, 0.9)),
                *_pix_sigma(maj * 0.7, mnr * 0.8, pa + 40),
            )


def _add_galaxies(
    m: F32,
    gid: npt.NDArray[np.int16],
    rng: np.random.Generator,
    pl: _Placer,
    beam: Beam,
    count: int,
) -> None:
    # Each galaxy is drawn alone, added to ``m``; ``gid`` takes its number where it is the
    # brightest galaxy.
    one = np.zeros_like(m)
    best = np.zeros_like(m)
    for k in range(count):
        one.fill(0.0)
        if not _add_galaxy(one, rng, pl, beam):
            return
        m += one
        gid[one > best] = k + 1
        np.maximum(best, one, out=best)


def _add_galaxy(m: F32, rng: np.random.Generator, pl: _Placer, beam: Beam) -> bool:
    # One radio galaxy (core and two lobes) added to ``m``; False when there is no room.
    sep_beams = float(rng.uniform(8, 20))
    half = sep_beams * beam[0] / PIX / 2.0
    pos = pl.take(half + 4.0 * beam[0] / PIX)
    if pos is None:
        return False
    x, y = pos
    core = float(rng.uniform(8, 60))
    if rng.uniform() > 0.25:
        _gauss(m, x, y, core * RMS, *_pix_sigma(*beam))
    a = float(rng.uniform(0, 2 * math.pi))
    for side in (0.0, math.pi + float(rng.uniform(-0.35, 0.35))):
        d = half * float(rng.uniform(0.8, 1.2))
        lx, ly = x + d * math.cos(a + side), y + d * math.sin(a + side)
        f = float(rng.uniform(1.5, 3.0))
        lobe = core * float(rng.uniform(0.5, 2.0)) if core > 15 else float(rng.uniform(8, 40))
        # Elongated along the jet axis (pixel angle a + side from +x).
        pa = math.degrees(a + side) - 90.0 + float(rng.uniform(-20, 20))
        _gauss(m, lx, ly, lobe * RMS, *_pix_sigma(beam[0] * f, beam[1] * f * 0.6, pa))
    return True


def _add_artefacts(
    m: F32, art: F32, rng: np.random.Generator, pl: _Placer, beam: Beam, count: int
) -> None:
    n = m.shape[0]
    sig = beam[0] / FWHM_PER_SIGMA / PIX
    for _ in range(count):
        pos = pl.take(30.0 * beam[0] / PIX / 2.0, margin=40.0)
        if pos is None:
            return
        x, y = pos
        peak = float(np.exp(rng.uniform(math.log(500), math.log(5000)))) * RMS
        _gauss(m, x, y, peak, *_pix_sigma(*beam))
        r_max = 26.0 * beam[0] / PIX
        r = int(math.ceil(r_max))
        x0, x1, y0, y1 = (
            max(int(x) - r, 0),
            min(int(x) + r + 1, n),
            max(int(y) - r, 0),
            min(int(y) + r + 1, n),
        )
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        rr = np.hypot(xx - x, yy - y)
        phi = np.arctan2(yy - y, xx - x)
        pattern = np.zeros_like(rr)
        step = float(rng.uniform(3.0, 6.0)) * beam[0] / PIX
        m_az = int(rng.integers(2, 7))
        ph0 = float(rng.uniform(0, 2 * math.pi))
        level = peak * float(rng.uniform(0.01, 0.03))
        for k in range(1, 5):
            ring = np.exp(-0.5 * ((rr - k * step) / sig) ** 2)
            trough = np.exp(-0.5 * ((rr - (k + 0.5) * step) / sig) ** 2)
            clump = 0.4 + 0.6 * np.cos(m_az * phi + ph0 + k) ** 2
            pattern += (level / k) * clump * (ring - 0.6 * trough)
        n_spoke = int(rng.integers(0, 7))
        r0 = 2.5 * beam[0] / PIX
        for j in range(n_spoke):
            ang = ph0 + j * 2 * math.pi / max(n_spoke, 1) + float(rng.uniform(-0.2, 0.2))
            along = (xx - x) * math.cos(ang) + (yy - y) * math.sin(ang)
            perp = -(xx - x) * math.sin(ang) + (yy - y) * math.cos(ang)
            spoke = np.exp(-0.5 * (perp / sig) ** 2) * (along > r0) * (r0 / np.maximum(along, r0))
            pattern += level * 1.5 * spoke * (1.0 if j % 2 == 0 else -0.7)
        art[y0:y1, x0:x1] += pattern


def _add_diffuse(m: F32, rng: np.random.Generator, pl: _Placer, beam: Beam, count: int) -> None:
    for _ in range(count):
        f = float(rng.uniform(7, 25))
        pos = pl.take(1.2 * f * beam[0] / PIX)
        if pos is None:
            return
        snr = float(rng.uniform(3, 8))
        for _k in range(int(rng.integers(2, 4))):
            dx, dy = rng.normal(0.0, 0.25 * f * beam[0] / PIX, 2)
            g = f * float(rng.uniform(0.6, 1.0))
            _gauss(
                m,
                pos[0] + dx,
                pos[1] + dy,
                snr * RMS * float(rng.uniform(0.5, 1.0)),
                *_pix_sigma(
                    beam[0] * g,
                    beam[0] * g * float(rng.uniform(0.5, 1.0)),
                    float(rng.uniform(0, 180)),
                ),
                reach=3.0,
            )


def make_field(seed: int, n: int = 1024, density: float = 1.0) -> Field:
    """A simulated field with every class (see the module notes).

    Parameters
    ----------
    seed
        Random seed: the same seed gives the same field.
    n
        Side in pixels.
    density
        Scale of the number of objects of every class (1: about 200 per 1024^2).

    Returns
    -------
    Field
        Image, class models, beam and header.
    """
    rng = np.random.default_rng(seed)
    bmaj = float(rng.uniform(5.0, 8.0))
    beam = (bmaj, bmaj * float(rng.uniform(0.75, 1.0)), float(rng.uniform(0, 180)))
    scale = density * (n / 1024) ** 2
    models = np.zeros((len(MODEL_CLASSES), n, n), dtype=np.float32)
    pl = _Placer(rng, n)
    art = np.zeros((n, n), dtype=np.float32)
    _add_artefacts(models[0], art, rng, pl, beam, max(1, round(3 * scale)))
    galaxies = np.zeros((n, n), dtype=np.int16)
    _add_galaxies(models[2], galaxies, rng, pl, beam, max(1, round(6 * scale)))
    _add_diffuse(models[4], rng, pl, beam, max(1, round(2 * scale)))
    _add_extended(models[1], rng, pl, beam, max(1, round(25 * scale)))
    _add_compact(models[0], rng, pl, beam, max(1, round(180 * scale)))
    img = _noise(rng, n, beam)
    yv, xv = np.mgrid[0:n, 0:n].astype(np.float32) / np.float32(n)
    img += (2e-5 * (xv - 0.5) + 1.5e-5 * (yv - 0.5)).astype(np.float32)
    img += models[0] + models[1] + models[2] + models[4] + art
    # The artefacts' class map is their absolute level (positive sidelobes and negative
    # troughs alike); the bright source's own model outshines it near its centre.
    models[3] = np.abs(art)
    return Field(
        image=img.astype(np.float32),
        models=models,
        beam=beam,
        header=header(n, beam),
        galaxies=galaxies,
    )


def write_field(field: Field, path: str) -> None:
    """Write a field's image as FITS.

    Parameters
    ----------
    field
        The field.
    path
        Output file (overwritten).
    """
    fits.PrimaryHDU(field.image, header=field.header).writeto(path, overwrite=True)
