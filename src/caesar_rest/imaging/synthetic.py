"""The FITS header and beam geometry shared by the simulated fields (the classifier's training
fields, the finder and extended-emission benchmarks)."""

from __future__ import annotations

import math

from astropy.io import fits
from astropy.wcs import WCS

#: Gaussian FWHM over sigma.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))


def field_header(
    n: int,
    pix: float,
    beam: tuple[float, float, float],
    crval: tuple[float, float] = (150.0, -30.0),
    freq: float | None = None,
) -> fits.Header:
    """The header of a simulated ``n x n`` field: SIN projection (FK5), the beam, Jy/beam.

    Parameters
    ----------
    n
        Side in pixels (the reference pixel is the centre).
    pix
        Pixel size in arcsec.
    beam
        Beam FWHM major, minor (arcsec) and position angle (deg).
    crval
        RA and Dec of the centre (deg).
    freq
        When given, ``RESTFRQ`` and ``FREQ`` in Hz (PyBDSF needs a frequency).

    Returns
    -------
    astropy.io.fits.Header
        The header.
    """
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    w.wcs.crval = list(crval)
    w.wcs.crpix = [n / 2 + 0.5, n / 2 + 0.5]
    w.wcs.cdelt = [-pix / 3600.0, pix / 3600.0]
    w.wcs.radesys = "FK5"
    w.wcs.equinox = 2000.0
    h = w.to_header()
    h["BMAJ"], h["BMIN"], h["BPA"] = beam[0] / 3600.0, beam[1] / 3600.0, beam[2]
    h["BUNIT"] = "JY/BEAM"
    if freq is not None:
        h["RESTFRQ"] = freq
        h["FREQ"] = freq
    return h


def pix_sigma(maj: float, mnr: float, pa: float, pix: float) -> tuple[float, float, float]:
    """A sky Gaussian's FWHM (arcsec) and PA (deg east of north) as pixel sigmas and the angle
    from +x (east is -x).

    Parameters
    ----------
    maj, mnr
        FWHM major and minor axes in arcsec.
    pa
        Position angle in degrees east of north.
    pix
        Pixel size in arcsec.

    Returns
    -------
    tuple of float
        ``(sigma_x, sigma_y, theta)``, sigmas in pixels and theta in radians.
    """
    return maj / FWHM_PER_SIGMA / pix, mnr / FWHM_PER_SIGMA / pix, math.radians(90.0 + pa)
