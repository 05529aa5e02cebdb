"""Catalogue helpers for the third-party finders (SEP, photutils, Aegean, PyBDSF).

Their own catalogues lack what the shared schema holds: island labels, truncation and blend
flags, pixel errors of sky errors, ids in a fixed order. These helpers compute them the same way
for every app: :func:`moments_table` turns the moment measurements of SEP and photutils, and
:func:`fitted_table` the fitted sky lists of Aegean and PyBDSF, into the shared catalogue.
:func:`write_work_image` gives tools that read files a clean copy of the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from astropy.io import fits
from astropy.table import Table
from scipy import ndimage

from caesar_rest.apps.products import image_header
from caesar_rest.catalogue.schema import FLAG_BLENDED, FLAG_EXTENDED, FLAG_TRUNCATED
from caesar_rest.catalogue.writers import iau_names, make_table
from caesar_rest.imaging.fits_image import (
    Beam,
    FitsImage,
    pixel_ellipse_to_sky,
    pixel_to_radec,
    sky_jacobian,
)

F64 = npt.NDArray[np.float64]

#: Sources whose fitted or measured area exceeds this many beams are flagged as extended.
EXTENDED_AREA_BEAMS = 2.0


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


def map_medians(
    image: FitsImage, background: npt.NDArray[np.float32], rms: npt.NDArray[np.float32]
) -> dict[str, float]:
    """Median rms and background over the valid pixels (not blank, finite rms), for the summary.

    Parameters
    ----------
    image
        The image (its mask marks blank pixels).
    background, rms
        The finder's maps.

    Returns
    -------
    dict
        ``rms_median`` and ``background_median`` (NaN when no pixel is valid).
    """
    good = np.isfinite(rms) & ~image.mask
    if not good.any():
        return {"rms_median": float("nan"), "background_median": float("nan")}
    return {
        "rms_median": float(np.median(rms[good])),
        "background_median": float(np.median(background[good])),
    }


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


@dataclass
class Moments:
    """Moment measurements of ``n`` sources, in pixels of the image the finder saw.

    Attributes
    ----------
    x, y
        Centroids (0-based pixels of the image or its cutout).
    a, b, theta
        FWHM axes in pixels and angle in radians (counter-clockwise from +x).
    cov
        ``(n, 2, 2)`` centroid covariance in pixels squared.
    peak, pixel_flux, npix
        Peak (Jy/beam), pixel sum (Jy/beam summed over pixels) and pixel count.
    rms, bkg
        Local rms and background at the peak.
    island_of
        Island of each source (any ids; renumbered by :func:`renumber`).
    flags
        Flags already known (blended, truncated); extended is added from the size.
    """

    x: F64
    y: F64
    a: F64
    b: F64
    theta: F64
    cov: F64
    peak: F64
    pixel_flux: F64
    npix: F64
    rms: F64
    bkg: F64
    island_of: npt.NDArray[np.int64]
    flags: npt.NDArray[np.int64]


def moments_table(image: FitsImage, m: Moments) -> Table:
    """The shared-schema catalogue of moment measurements, sorted by island and component.

    Parameters
    ----------
    image
        The image (WCS, beam, origin of a cutout).
    m
        The measurements (at least one source).

    Returns
    -------
    astropy.table.Table
        One row per source.
    """
    area = image.beam_area_pix
    ra, dec = pixel_to_radec(image.wcs, m.x, m.y)
    jac = sky_jacobian(image.wcs, m.x, m.y)
    maj, mnr, pa = pixel_ellipse_to_sky(jac, m.a, m.b, m.theta)
    sky_cov = jac @ m.cov @ np.transpose(jac, (0, 2, 1))
    flags = m.flags.copy()
    flags[extended_mask(maj, mnr, image.beam)] |= FLAG_EXTENDED
    # Islands renumbered 0.. in order of their ids; components by decreasing peak.
    island_ids, component_ids = renumber(m.island_of, m.peak)
    x0, y0 = image.origin
    columns: dict[str, Any] = {
        "name": iau_names(ra, dec),
        "island_id": island_ids,
        "component_id": component_ids,
        "x": m.x + x0,
        "y": m.y + y0,
        "x_err": np.sqrt(m.cov[:, 0, 0]),
        "y_err": np.sqrt(m.cov[:, 1, 1]),
        "ra": ra,
        "dec": dec,
        "ra_err": np.sqrt(sky_cov[:, 0, 0]),
        "dec_err": np.sqrt(sky_cov[:, 1, 1]),
        "peak_flux": m.peak,
        "peak_flux_err": m.rms,
        # Jy/beam summed over pixels, divided by the beam area in pixels: Jy; the error for
        # noise correlated over ``area`` pixels (variance ~ rms^2 * npix * min(npix, area)).
        "flux": m.pixel_flux / area,
        "flux_err": m.rms * np.sqrt(m.npix * np.minimum(m.npix, area)) / area,
        "maj": maj,
        "min": mnr,
        "pa": pa,
        "local_rms": m.rms,
        "local_bkg": m.bkg,
        "snr": m.peak / m.rms,
        "flags": flags,
    }
    table = make_table(columns)
    return table[np.lexsort((table["component_id"], table["island_id"]))]


@dataclass
class SkyPositions:
    """Positions of ``n`` sources a tool reported on the sky, with their pixel equivalents.

    Attributes
    ----------
    x, y, x_err, y_err
        0-based full-image pixel positions and errors.
    ra, dec, ra_err, dec_err
        J2000 RA/Dec in degrees, errors along RA and Dec in arcsec (NaN for sentinels).
    """

    x: F64
    y: F64
    x_err: F64
    y_err: F64
    ra: F64
    dec: F64
    ra_err: F64
    dec_err: F64


def sky_positions(
    image: FitsImage, lon: F64, lat: F64, lon_err_deg: F64, lat_err_deg: F64
) -> SkyPositions:
    """Pixel and J2000 positions of a tool's sky positions and errors (image frame, degrees).

    Parameters
    ----------
    image
        The image the tool ran on.
    lon, lat
        Native longitude and latitude in degrees.
    lon_err_deg, lat_err_deg
        Their errors in degrees (negative values are "unknown" sentinels).

    Returns
    -------
    SkyPositions
        The positions.
    """
    x, y, ra, dec = positions_from_sky(image, lon, lat)
    ra_err = nan_sentinels(lon_err_deg, 3600.0)
    dec_err = nan_sentinels(lat_err_deg, 3600.0)
    x_err, y_err = pixel_errors(image, x, y, ra_err, dec_err)
    return SkyPositions(x, y, x_err, y_err, ra, dec, ra_err, dec_err)


def fitted_table(
    image: FitsImage,
    pos: SkyPositions,
    island: npt.NDArray[np.int64],
    flags: npt.NDArray[np.int64],
    truncation: tuple[npt.NDArray[np.int32], set[int]],
    values: dict[str, F64],
) -> Table:
    """The shared-schema catalogue of a fitted source list, sorted by island and component.

    Sources sharing an island are flagged blended, those larger than
    :data:`EXTENDED_AREA_BEAMS` beams extended, those on a truncated island or off the image
    truncated.

    Parameters
    ----------
    image
        The image the tool ran on.
    pos
        The positions (:func:`sky_positions`).
    island
        The tool's island of each source.
    flags
        Tool-specific flags already set (e.g. fit failed); the others are added.
    truncation
        Island label map of the image and the set of its truncated labels.
    values
        The other schema columns: at least ``peak_flux``, ``maj``, ``min`` and ``local_rms``.

    Returns
    -------
    astropy.table.Table
        One row per source.
    """
    flags = flags.copy()
    _, isl_index = np.unique(island, return_inverse=True)
    members = np.bincount(isl_index)
    flags[members[isl_index] > 1] |= FLAG_BLENDED
    flags[extended_mask(values["maj"], values["min"], image.beam)] |= FLAG_EXTENDED
    labels, cut = truncation
    x0, y0 = image.origin
    under = labels_at(labels, pos.x - x0, pos.y - y0)
    flags[np.isin(under, list(cut)) | outside_image(image, pos.x, pos.y)] |= FLAG_TRUNCATED

    island_ids, component_ids = renumber(island, values["peak_flux"])
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = values["peak_flux"] / values["local_rms"]
    columns: dict[str, Any] = {
        "name": iau_names(pos.ra, pos.dec),
        "island_id": island_ids,
        "component_id": component_ids,
        "x": pos.x,
        "y": pos.y,
        "x_err": pos.x_err,
        "y_err": pos.y_err,
        "ra": pos.ra,
        "dec": pos.dec,
        "ra_err": pos.ra_err,
        "dec_err": pos.dec_err,
        **values,
        "snr": snr,
        "flags": flags,
    }
    table = make_table(columns)
    return table[np.lexsort((table["component_id"], table["island_id"]))]
