"""Synthetic radio images with known truth for the source-finder tests."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from scipy import ndimage

FWHM = 2.0 * math.sqrt(2.0 * math.log(2.0))
#: Beam FWHM in pixels (6" beam, 1.5" pixels) and its sigma.
BEAM_FWHM_PIX = 4.0
BEAM_SIGMA = BEAM_FWHM_PIX / FWHM
RMS = 1e-4


def gaussian(
    n: int, x: float, y: float, amp: float, sx: float, sy: float, th: float, ny: int | None = None
) -> np.ndarray:
    """An elliptical Gaussian image (theta from +x, radians)."""
    yy, xx = np.mgrid[0 : (ny or n), 0:n].astype(np.float64)
    c, s = math.cos(th), math.sin(th)
    u = (xx - x) * c + (yy - y) * s
    w = -(xx - x) * s + (yy - y) * c
    return amp * np.exp(-0.5 * ((u / sx) ** 2 + (w / sy) ** 2))


def noise(n: int, seed: int, rms: float = RMS, ny: int | None = None) -> np.ndarray:
    """Beam-correlated Gaussian noise of the given rms."""
    rng = np.random.default_rng(seed)
    z = ndimage.gaussian_filter(rng.standard_normal((ny or n, n)), BEAM_SIGMA, mode="wrap")
    return z * (rms / z.std())


def header(n: int, ny: int | None = None) -> fits.Header:
    """SIN header, 1.5" pixels, circular 6" beam, Jy/beam."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    w.wcs.crval = [150.0, -30.0]
    w.wcs.crpix = [n / 2 + 0.5, (ny or n) / 2 + 0.5]
    w.wcs.cdelt = [-1.5 / 3600.0, 1.5 / 3600.0]
    h = w.to_header()
    h["BMAJ"] = h["BMIN"] = 6.0 / 3600.0
    h["BPA"] = 0.0
    h["BUNIT"] = "JY/BEAM"
    return h


def write(path: Path, data: np.ndarray, with_beam: bool = True) -> Path:
    """Write ``data`` as a FITS image with :func:`header`."""
    ny, nx = data.shape
    h = header(nx, ny)
    if not with_beam:
        del h["BMAJ"], h["BMIN"], h["BPA"]
    fits.PrimaryHDU(data.astype(np.float32), header=h).writeto(path, overwrite=True)
    return path


def point_sources(
    n: int, srcs: list[tuple[float, float, float]], seed: int = 1, ny: int | None = None
) -> np.ndarray:
    """Noise plus beam-shaped sources ``(x, y, peak)``."""
    img = noise(n, seed, ny=ny)
    for x, y, a in srcs:
        img += gaussian(n, x, y, a, BEAM_SIGMA, BEAM_SIGMA, 0.0, ny=ny)
    return img


def ranks_field(path: Path) -> Path:
    """A 420 x 420 field of 30 point sources and an extended source across the tiles (the MPI
    runs split it into 9 tiles of 140 px)."""
    rng = np.random.default_rng(11)
    srcs = [
        (float(x), float(y), float(rng.uniform(8, 60) * RMS))
        for x, y in rng.uniform(15, 405, (30, 2))
    ]
    img = point_sources(420, srcs, seed=11)
    img += gaussian(420, 210.0, 210.0, 8 * RMS, 12.0, 8.0, 0.4)  # extended, across tiles
    return write(path, img)
