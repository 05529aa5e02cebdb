"""Synthetic radio images with known sources, for the app tests (fixtures in conftest)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.wcs import WCS
from scipy import ndimage

FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


@dataclass
class Src:
    """A true source: pixel position, peak (Jy/beam), FWHM axes (arcsec, None = beam), PA."""

    x: float
    y: float
    peak: float
    maj: float | None = None
    min: float | None = None
    pa: float = 0.0


@dataclass
class Synth:
    """A synthetic image on disk and its truth."""

    path: Path
    sources: list[Src]
    rms: float
    beam: tuple[float, float, float]
    pixscale: float
    nan_border: int
    shape: tuple[int, int]
    extra: dict[str, object] = field(default_factory=dict)

    def flux(self, s: Src) -> float:
        """True integrated flux (Jy) of ``s``."""
        if s.maj is None or s.min is None:
            return s.peak
        return s.peak * s.maj * s.min / (self.beam[0] * self.beam[1])


def make_header(
    n: int, pixscale: float, rotation_deg: float = 0.0, crval: tuple[float, float] = (150.0, -30.0)
) -> fits.Header:
    """A SIN-projection header, north up / east left, optionally rotated."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    w.wcs.crval = list(crval)
    w.wcs.crpix = [n / 2 + 0.5, n / 2 + 0.5]
    w.wcs.cdelt = [-pixscale / 3600.0, pixscale / 3600.0]
    t = math.radians(rotation_deg)
    w.wcs.pc = [[math.cos(t), -math.sin(t)], [math.sin(t), math.cos(t)]]
    w.wcs.radesys = "FK5"
    w.wcs.equinox = 2000.0
    return w.to_header()


def render(
    n: int,
    header: fits.Header,
    sources: Sequence[Src],
    beam: tuple[float, float, float],
    rms: float,
    seed: int,
) -> np.ndarray:
    """Beam-correlated noise of rms ``rms`` plus elliptical Gaussians drawn in sky offsets."""
    rng = np.random.default_rng(seed)
    sigma_pix = beam[0] / FWHM_PER_SIGMA / abs(header["CDELT1"] * 3600.0)
    noise = ndimage.gaussian_filter(rng.standard_normal((n, n)), sigma_pix, mode="wrap")
    image = noise * (rms / noise.std())
    w = WCS(header)
    yy, xx = np.mgrid[0:n, 0:n]
    ra, dec = w.pixel_to_world_values(xx.ravel(), yy.ravel())
    ra, dec = np.radians(ra), np.radians(dec)
    for s in sources:
        r0, d0 = (np.radians(v) for v in w.pixel_to_world_values(s.x, s.y))
        da = ra - r0
        east = np.degrees(np.cos(dec) * np.sin(da)) * 3600.0
        north = np.degrees(np.cos(d0) * np.sin(dec) - np.sin(d0) * np.cos(dec) * np.cos(da))
        north = north * 3600.0
        maj = s.maj if s.maj is not None else beam[0]
        mnr = s.min if s.min is not None else beam[1]
        pa = math.radians(s.pa if s.maj is not None else beam[2])
        along = east * math.sin(pa) + north * math.cos(pa)
        across = east * math.cos(pa) - north * math.sin(pa)
        g = np.exp(-4.0 * math.log(2.0) * ((along / maj) ** 2 + (across / mnr) ** 2))
        image += s.peak * g.reshape(n, n)
    return image


def write_synth(
    path: Path,
    sources: Sequence[Src],
    n: int = 256,
    rms: float = 1e-4,
    beam: tuple[float, float, float] = (6.0, 6.0, 0.0),
    pixscale: float = 1.5,
    nan_border: int = 8,
    rotation_deg: float = 0.0,
    seed: int = 42,
    with_beam: bool = True,
    offset: float = 0.0,
) -> Synth:
    """Write a synthetic image (float32, big-endian as FITS stores it) and return its truth."""
    header = make_header(n, pixscale, rotation_deg)
    data = render(n, header, sources, beam, rms, seed) + offset
    if nan_border:
        b = nan_border
        data[:b, :] = np.nan
        data[-b:, :] = np.nan
        data[:, :b] = np.nan
        data[:, -b:] = np.nan
    header["BUNIT"] = "JY/BEAM"
    if with_beam:
        header["BMAJ"] = beam[0] / 3600.0
        header["BMIN"] = beam[1] / 3600.0
        header["BPA"] = beam[2]
    fits.PrimaryHDU(data.astype(np.float32), header=header).writeto(path, overwrite=True)
    return Synth(path, list(sources), rms, beam, pixscale, nan_border, (n, n))


#: The standard field: isolated point sources, an elliptical source, a close pair and a
#: source next to the blank border.
STANDARD_SOURCES = [
    Src(60.3, 70.6, 200e-4),  # bright, isolated: flux check
    Src(190.7, 60.2, 30e-4),
    Src(70.4, 190.8, 15e-4),
    Src(175.2, 180.5, 60e-4, maj=30.0, min=12.0, pa=30.0),  # elliptical: PA check
    Src(118.0, 126.0, 50e-4),  # close pair (2 beams apart): deblending
    Src(126.0, 128.0, 40e-4),
    Src(11.5, 128.0, 40e-4),  # touches the NaN border
]
