"""Read 2-D FITS images (or cubes with degenerate extra axes) with their celestial WCS and beam.

Also holds the small amount of sky geometry every app needs: pixel -> RA/Dec, the local
pixel -> (east, north) Jacobian, and the conversion of ellipses between pixel and sky frames.
Pixel coordinates are 0-based (NumPy convention) everywhere.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from astropy.coordinates import FK5, ICRS, SkyCoord
from astropy.io import fits
from astropy.time import Time
from astropy.wcs import WCS, FITSFixedWarning
from astropy.wcs.utils import proj_plane_pixel_scales, wcs_to_celestial_frame

#: (bmaj_arcsec, bmin_arcsec, bpa_deg); sizes are FWHM, the angle is east of north.
Beam = tuple[float, float, float]
FloatArray = npt.NDArray[np.float64]

#: Gaussian FWHM / sigma.
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))

# AIPS writes the restoring beam only as a HISTORY card, e.g.
# "AIPS   CLEAN BMAJ=  1.8056E-03 BMIN=  1.8056E-03 BPA=   0.00".
_HISTORY_BEAM_RE = re.compile(
    r"BMAJ\s*=\s*([-+0-9.EeDd]+)\s+BMIN\s*=\s*([-+0-9.EeDd]+)(?:\s+BPA\s*=\s*([-+0-9.EeDd]+))?"
)
_J2000 = Time("J2000")


class ImageError(ValueError):
    """The input is not a usable image (unreadable, no 2-D data, no WCS, no beam, ...)."""


@dataclass
class FitsImage:
    """A 2-D image ready for source finding.

    Attributes
    ----------
    path
        The file it came from.
    data
        Native-endian, C-contiguous float32 array of shape ``(ny, nx)``; blank pixels are NaN.
    mask
        True where a pixel is NaN, infinite or BLANK.
    wcs
        2-D celestial WCS matching ``data`` (sliced when a sub-image was read).
    beam
        ``(bmaj_arcsec, bmin_arcsec, bpa_deg)``, FWHM, BPA east of north.
    pixel_scale_arcsec
        Geometric mean of the absolute pixel scales.
    beam_area_pix
        Beam solid angle in pixels, ``pi / (4 ln 2) * bmaj * bmin / pixscale**2``.
    bunit
        The BUNIT keyword (stripped), or ``""``.
    header
        Copy of the header of the HDU read.
    hdu_index
        Index of that HDU in the file.
    origin
        ``(x0, y0)`` of ``data[0, 0]`` in the full image (non-zero for sub-images).
    beam_source
        ``"header"``, ``"history"`` (AIPS HISTORY card) or ``"fallback"`` (given by the caller).
    """

    path: Path
    data: npt.NDArray[np.float32]
    mask: npt.NDArray[np.bool_]
    wcs: WCS
    beam: Beam
    pixel_scale_arcsec: float
    beam_area_pix: float
    bunit: str
    header: fits.Header
    hdu_index: int = 0
    origin: tuple[int, int] = (0, 0)
    beam_source: str = "header"

    @property
    def shape(self) -> tuple[int, int]:
        """``(ny, nx)``."""
        ny, nx = self.data.shape
        return int(ny), int(nx)

    @property
    def frame(self) -> str:
        """Name of the celestial frame of the WCS (``fk5``, ``icrs``, ``galactic``, ...)."""
        return celestial_frame_name(self.wcs)


def load_image(
    path: str | Path,
    hdu: int | str | None = None,
    beam_fallback: Beam | tuple[float, float] | None = None,
    subimage: tuple[int, int, int, int] | None = None,
    compact_mask: bool = False,
) -> FitsImage:
    """Load a FITS image (``.fits`` or ``.fits.gz``) for source finding.

    The image is read into one native float32 array band by band of rows (a plain float32
    image straight from the file, without a memory map or a second copy), so loading needs
    the image's bytes and a band.

    Parameters
    ----------
    path
        The FITS file.
    hdu
        HDU index or name; by default the first HDU holding image data with at least 2 axes.
    beam_fallback
        ``(bmaj_arcsec, bmin_arcsec[, bpa_deg])`` used only when the header has no beam.
    subimage
        ``(xmin, xmax, ymin, ymax)``, 0-based, half-open (``data[ymin:ymax, xmin:xmax]``): read
        only this part of the image (through ``HDU.section``, so the rest is not loaded).
    compact_mask
        When no pixel is blank, give a zero-stride all-False mask (see
        :func:`without_empty_mask`) instead of an image-sized one.

    Returns
    -------
    FitsImage
        The image, its mask, WCS and beam.

    Raises
    ------
    ImageError
        When the file cannot be read, holds no 2-D image, has a non-degenerate third axis, has
        no celestial WCS, no beam (and no fallback), or only blank pixels.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"input image not found: {path}")
    try:
        index, header, data, blank, origin = _read(path, hdu, subimage, memmap=True)
    except _NeedsNoMemmap:
        # astropy cannot memory-map integer data with BLANK; read it into memory instead.
        index, header, data, blank, origin = _read(path, hdu, subimage, memmap=False)
    mask = _blank_pixels(data, blank, compact_mask)
    return _described(path, index, header, data, mask, origin, subimage, beam_fallback)


def header_image(
    path: str | Path, beam_fallback: Beam | tuple[float, float] | None = None
) -> FitsImage:
    """The image :func:`load_image` gives (first image HDU, no sub-image) without reading its
    pixels: header, WCS, beam and shape as loaded, ``data`` and ``mask`` zero-stride
    (all 0 and all False), for planning work before the pixels are read.

    Parameters
    ----------
    path
        The FITS file.
    beam_fallback
        As for :func:`load_image`.

    Returns
    -------
    FitsImage
        The image's description.

    Raises
    ------
    ImageError
        As :func:`load_image`, for what the header shows.
    """
    path = Path(path)
    with _open(path, memmap=True) as hdul:
        index, chosen = _pick_hdu(hdul, None, path.name)
        shape = _plane_shape(chosen, index)
        header = chosen.header.copy()
    data = np.broadcast_to(np.float32(0.0), shape[-2:])
    mask = np.broadcast_to(np.False_, shape[-2:])
    return _described(path, index, header, data, mask, (0, 0), None, beam_fallback)


def _described(
    path: Path,
    index: int,
    header: fits.Header,
    data: npt.NDArray[np.float32],
    mask: npt.NDArray[np.bool_],
    origin: tuple[int, int],
    subimage: tuple[int, int, int, int] | None,
    beam_fallback: Beam | tuple[float, float] | None,
) -> FitsImage:
    """The :class:`FitsImage` of loaded pixels: WCS, pixel scale and beam from the header."""
    xmin, ymin = origin
    ny, nx = data.shape
    wcs = _celestial_wcs(header, index)
    if subimage is not None:
        wcs = wcs[ymin : ymin + ny, xmin : xmin + nx]
    wcs.pixel_shape = (data.shape[1], data.shape[0])
    scales = proj_plane_pixel_scales(wcs)
    if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
        raise ImageError(f"bad pixel scale in the WCS: {scales}")
    pixscale = float(math.sqrt(abs(scales[0] * scales[1]))) * 3600.0

    beam, source = _beam_from_header(header)
    if beam is None:
        if beam_fallback is None:
            raise ImageError("no beam in header (BMAJ/BMIN); give bmaj/bmin options")
        beam, source = _check_beam(beam_fallback), "fallback"
    bmaj, bmin, _ = beam
    beam_area = math.pi / (4.0 * math.log(2.0)) * bmaj * bmin / pixscale**2
    return FitsImage(
        path=path,
        data=data,
        mask=mask,
        wcs=wcs,
        beam=beam,
        pixel_scale_arcsec=pixscale,
        beam_area_pix=beam_area,
        bunit=str(header.get("BUNIT", "")).strip(),
        header=header,
        hdu_index=index,
        origin=(xmin, ymin),
        beam_source=source,
    )


def read_pixels(
    path: str | Path, hdu: int, box: tuple[int, int, int, int]
) -> npt.NDArray[np.float32]:
    """The pixels of a box of an image HDU, as :func:`load_image` gives them (native float32,
    NaN at non-finite and BLANK pixels), reading only that part of the file.

    Parameters
    ----------
    path
        The FITS file.
    hdu
        Index of the image HDU.
    box
        ``(xmin, xmax, ymin, ymax)``, 0-based, half-open, in the HDU's pixels (one row or
        column is enough, unlike :func:`load_image`'s ``subimage``).

    Returns
    -------
    numpy.ndarray
        ``(ymax - ymin, xmax - xmin)`` float32.

    Raises
    ------
    ImageError
        When the file cannot be read or the box is outside the image.
    """
    try:
        _, _, data, blank, _ = _read(Path(path), hdu, box, memmap=True, least=1)
    except _NeedsNoMemmap:
        _, _, data, blank, _ = _read(Path(path), hdu, box, memmap=False, least=1)
    bad = ~np.isfinite(data)
    if blank is not None:
        bad |= blank
    data[bad] = np.nan
    return data


def _blank_pixels(
    data: npt.NDArray[np.float32], blank: npt.NDArray[np.bool_] | None, compact: bool
) -> npt.NDArray[np.bool_]:
    """The blank pixels (non-finite or BLANK), set to NaN in ``data``, by bands of rows."""
    ny, nx = data.shape
    step = max(1, (1 << 22) // max(nx, 1))
    bands = [(a, min(ny, a + step)) for a in range(0, ny, step)]
    if compact and blank is None and all(np.isfinite(data[a:b]).all() for a, b in bands):
        return np.broadcast_to(np.False_, data.shape)
    mask = np.empty(data.shape, dtype=bool)
    n_blank = 0
    for a, b in bands:
        m = mask[a:b]
        np.isfinite(data[a:b], out=m)
        np.logical_not(m, out=m)
        if blank is not None:
            m |= blank[a:b]
        data[a:b][m] = np.nan
        n_blank += int(np.count_nonzero(m))
    if n_blank == data.size:
        raise ImageError("the image has no valid pixels (all NaN or BLANK)")
    return mask


def without_empty_mask(image: FitsImage) -> FitsImage:
    """The image with a zero-stride, read-only all-False mask when no pixel is blank.

    Saves a byte per pixel for code that only reads and slices the mask. Not for C libraries
    that need contiguous arrays (sep): they get the loaded image itself.

    Parameters
    ----------
    image
        A loaded image.

    Returns
    -------
    FitsImage
        ``image`` itself when it has blank pixels, else a copy sharing its data.
    """
    if image.mask.strides == (0, 0) or image.mask.any():
        return image
    return replace(image, mask=np.broadcast_to(np.False_, image.data.shape))


class _NeedsNoMemmap(Exception):
    """The data cannot be memory-mapped (scaled integers with BLANK)."""


def _open(path: Path, memmap: bool) -> fits.HDUList:
    """The FITS file, open (:class:`ImageError` when it is not one)."""
    try:
        return fits.open(path, memmap=memmap)
    except Exception as exc:  # astropy raises OSError, ValueError, TypeError... on junk
        raise ImageError(f"cannot read {path.name} as FITS: {exc}") from None


def _read(
    path: Path,
    hdu: int | str | None,
    subimage: tuple[int, int, int, int] | None,
    memmap: bool,
    least: int = 2,
) -> tuple[
    int, fits.Header, npt.NDArray[np.float32], npt.NDArray[np.bool_] | None, tuple[int, int]
]:
    with _open(path, memmap) as hdul:
        index, chosen = _pick_hdu(hdul, hdu, path.name)
        shape = _plane_shape(chosen, index)
        ny, nx = shape[-2:]
        if subimage is None:
            xmin, xmax, ymin, ymax = 0, nx, 0, ny
        else:
            xmin, xmax, ymin, ymax = _check_subimage(subimage, nx, ny, least)
        header = chosen.header.copy()
        lead: tuple[int, ...] = (0,) * (len(shape) - 2)
        index_tuple = (*lead, slice(ymin, ymax), slice(xmin, xmax))
        try:
            plain = subimage is None and _plain_float32(hdul, chosen)
            if plain:
                data = _read_float32(path, int(hdul.fileinfo(index)["datLoc"]), ny, nx)
                raw = data
            else:
                # .section reads only the requested part; .data maps the whole array.
                raw = (
                    chosen.section[index_tuple]
                    if subimage is not None
                    else chosen.data[index_tuple]
                )
                data = np.array(raw, dtype=np.float32, order="C")  # copy: native endian, C order
        except Exception as exc:
            if memmap and "memory-mapped" in str(exc):
                raise _NeedsNoMemmap() from None
            raise ImageError(f"cannot read image data of HDU {index}: {exc}") from None
        blank = _blank_mask(raw, header)
    return index, header, data, blank, (xmin, ymin)


def _plane_shape(hdu: Any, index: int) -> tuple[int, ...]:
    """The HDU's shape, checked: 2-D, or extra axes of length 1, at least 2 x 2."""
    shape = tuple(int(n) for n in hdu.shape)
    for j, n in enumerate(shape[:-2]):
        if n != 1:
            axis = len(shape) - j  # FITS axis number of this NumPy axis
            raise ImageError(
                f"HDU {index} has a non-degenerate axis {axis} (length {n}); only 2-D images "
                "or cubes whose extra axes have length 1 are supported"
            )
    ny, nx = shape[-2:]
    if ny < 2 or nx < 2:
        raise ImageError(f"HDU {index} image is too small ({nx}x{ny} pixels)")
    return shape


def _plain_float32(hdul: fits.HDUList, hdu: Any) -> bool:
    """Whether the HDU's data are float32 pixels stored as they are (no scaling, no
    compression): then :func:`_read_float32` reads them from the file directly."""
    h = hdu.header
    return (
        isinstance(hdu, fits.PrimaryHDU | fits.ImageHDU)
        and h.get("BITPIX") == -32
        and float(h.get("BSCALE", 1.0)) == 1.0
        and float(h.get("BZERO", 0.0)) == 0.0
        and getattr(hdul._file, "compression", None) is None
        and not hdu._data_loaded
    )


def _read_float32(path: Path, offset: int, ny: int, nx: int) -> npt.NDArray[np.float32]:
    """``ny x nx`` big-endian float32 pixels at ``offset`` of ``path`` as a native array,
    read band by band into the array itself (the page cache holds the file, not this
    process)."""
    out = np.empty((ny, nx), dtype=np.float32)
    step = max(1, (1 << 22) // max(nx, 1))
    with open(path, "rb") as fh:
        fh.seek(offset)
        for a in range(0, ny, step):
            band = out[a : a + step]
            view = band.data.cast("B")
            got = fh.readinto(view)
            if got != view.nbytes:
                raise ImageError(f"{path.name}: the image data end early")
            if np.little_endian:
                band.byteswap(inplace=True)
    return out


def _is_image_hdu(h: Any) -> bool:
    if not isinstance(h, fits.PrimaryHDU | fits.ImageHDU | fits.CompImageHDU):
        return False
    try:
        shape = h.shape
    except Exception:
        return False
    return len(shape) >= 2 and all(int(n) > 0 for n in shape)


def _pick_hdu(hdul: fits.HDUList, hdu: int | str | None, name: str) -> tuple[int, Any]:
    if hdu is not None:
        try:
            chosen = hdul[hdu]
        except (IndexError, KeyError):
            raise ImageError(f"{name} has no HDU {hdu!r}") from None
        if not _is_image_hdu(chosen):
            raise ImageError(f"HDU {hdu!r} of {name} is not an image with at least 2 axes")
        return hdul.index_of(hdu), chosen
    for i, h in enumerate(hdul):
        if _is_image_hdu(h):
            return i, h
    raise ImageError(f"{name} holds no image data with at least 2 axes")


def _check_subimage(
    sub: tuple[int, int, int, int], nx: int, ny: int, least: int = 2
) -> tuple[int, int, int, int]:
    # least: the fewest rows and columns (2 for a sub-image the user asks for, which the finder
    # processes; 1 for the internal reads of read_pixels, a band of rows among others).
    if len(sub) != 4:
        raise ImageError("subimage must be (xmin, xmax, ymin, ymax)")
    xmin, xmax, ymin, ymax = (int(v) for v in sub)
    if not (0 <= xmin < xmax <= nx and 0 <= ymin < ymax <= ny):
        raise ImageError(
            f"subimage {sub} is outside the image (x in [0, {nx}), y in [0, {ny}), min < max)"
        )
    if xmax - xmin < least or ymax - ymin < least:
        raise ImageError(f"subimage {sub} is too small")
    return xmin, xmax, ymin, ymax


def _blank_mask(raw: Any, header: fits.Header) -> npt.NDArray[np.bool_] | None:
    # astropy turns BLANK into NaN only when it scales the data; raw integers keep the value.
    blank = header.get("BLANK")
    arr = np.asarray(raw)
    if blank is None or not np.issubdtype(arr.dtype, np.integer):
        return None
    return np.asarray(arr == int(blank))


def _celestial_wcs(header: fits.Header, index: int) -> WCS:
    try:
        with warnings.catch_warnings():
            # Headers from Miriad/CASA trigger harmless "fixed" notes (NCP -> SIN, DATE, ...).
            warnings.simplefilter("ignore", FITSFixedWarning)
            full = WCS(header)
            cel = full.celestial
    except Exception as exc:
        raise ImageError(f"cannot parse the WCS of HDU {index}: {exc}") from None
    if cel.naxis != 2 or not full.has_celestial:
        raise ImageError(f"HDU {index} has no celestial WCS (e.g. RA---SIN/DEC--SIN)")
    if {int(full.wcs.lng), int(full.wcs.lat)} != {0, 1}:
        raise ImageError("the celestial axes must be the first two image axes")
    return cel


def _to_float(value: Any) -> float | None:
    try:
        out = float(str(value).replace("D", "E").replace("d", "e"))
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _beam_from_header(header: fits.Header) -> tuple[Beam | None, str]:
    bmaj, bmin = _to_float(header.get("BMAJ")), _to_float(header.get("BMIN"))
    if bmaj is not None and bmin is not None and bmaj > 0 and bmin > 0:
        bpa = _to_float(header.get("BPA")) or 0.0
        return _check_beam((bmaj * 3600.0, bmin * 3600.0, bpa)), "header"
    # Fall back to the last AIPS CLEAN HISTORY card (values in degrees).
    for card in reversed(list(header.get("HISTORY", []))):
        m = _HISTORY_BEAM_RE.search(str(card))
        if m is None:
            continue
        hmaj, hmin = _to_float(m.group(1)), _to_float(m.group(2))
        hpa = _to_float(m.group(3)) if m.group(3) else 0.0
        if hmaj and hmin and hmaj > 0 and hmin > 0:
            return _check_beam((hmaj * 3600.0, hmin * 3600.0, hpa or 0.0)), "history"
    return None, ""


def _check_beam(beam: Beam | tuple[float, float]) -> Beam:
    if len(beam) not in (2, 3):
        raise ImageError("beam must be (bmaj_arcsec, bmin_arcsec[, bpa_deg])")
    bmaj, bmin = float(beam[0]), float(beam[1])
    bpa = float(beam[2]) if len(beam) == 3 and beam[2] is not None else 0.0
    if not (math.isfinite(bmaj) and math.isfinite(bmin) and bmaj > 0 and bmin > 0):
        raise ImageError(f"beam sizes must be positive, got bmaj={bmaj} bmin={bmin}")
    if not math.isfinite(bpa):
        raise ImageError(f"beam position angle must be finite, got {bpa}")
    if bmin > bmaj:  # keep bmaj the major axis; the major axis is then perpendicular
        bmaj, bmin, bpa = bmin, bmaj, bpa + 90.0
    return bmaj, bmin, bpa


# --------------------------------------------------------------------------------------------
# Sky geometry
# --------------------------------------------------------------------------------------------


def celestial_frame_name(wcs: WCS) -> str:
    """Name of the celestial frame of ``wcs`` (``icrs`` if it cannot be told).

    Parameters
    ----------
    wcs
        A celestial WCS.

    Returns
    -------
    str
        An astropy frame name such as ``fk5``, ``icrs`` or ``galactic``.
    """
    try:
        return str(wcs_to_celestial_frame(wcs).name)
    except Exception:
        return "icrs"


def pixel_to_radec(wcs: WCS, x: npt.ArrayLike, y: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    """Convert 0-based pixel positions to equatorial J2000 coordinates.

    Images in ICRS or FK5 J2000 keep their native values (they agree to ~20 mas); any other frame
    (galactic, FK4, other equinoxes) is transformed to ICRS.

    Parameters
    ----------
    wcs
        2-D celestial WCS.
    x, y
        0-based pixel coordinates (scalars or arrays of the same shape).

    Returns
    -------
    ra, dec
        Degrees, ``ra`` in [0, 360).
    """
    xa = np.asarray(x, dtype=np.float64)
    ya = np.asarray(y, dtype=np.float64)
    world = wcs.pixel_to_world_values(xa, ya)
    lon = np.asarray(world[int(wcs.wcs.lng)], dtype=np.float64)
    lat = np.asarray(world[int(wcs.wcs.lat)], dtype=np.float64)
    try:
        frame = wcs_to_celestial_frame(wcs)
    except Exception:
        frame = ICRS()
    native = isinstance(frame, ICRS) or (
        isinstance(frame, FK5) and abs(frame.equinox.jyear - _J2000.jyear) < 1e-6
    )
    if not native:
        icrs = SkyCoord(lon, lat, unit="deg", frame=frame).icrs
        lon = np.asarray(icrs.ra.deg, dtype=np.float64)
        lat = np.asarray(icrs.dec.deg, dtype=np.float64)
    return np.mod(lon, 360.0), lat


def sky_offsets_arcsec(
    ra0: FloatArray, dec0: FloatArray, ra1: FloatArray, dec1: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Orthographic (SIN) offsets of points 1 about points 0 in the tangent plane.

    Parameters
    ----------
    ra0, dec0, ra1, dec1
        Coordinates in degrees (arrays of one shape).

    Returns
    -------
    east, north
        The offsets in arcsec.
    """
    a0, d0, a1, d1 = (np.radians(v) for v in (ra0, dec0, ra1, dec1))
    da = a1 - a0
    east = np.cos(d1) * np.sin(da)
    north = np.cos(d0) * np.sin(d1) - np.sin(d0) * np.cos(d1) * np.cos(da)
    k = 3600.0 * 180.0 / math.pi
    return east * k, north * k


def sky_jacobian(
    wcs: WCS, x: npt.ArrayLike, y: npt.ArrayLike, step: float = 0.5
) -> npt.NDArray[np.float64]:
    """Local linear map from pixel offsets to sky offsets at each position.

    Computed numerically (central differences) so that it holds anywhere in the field for any
    projection, rotation or skew, in the equatorial frame of :func:`pixel_to_radec`.

    Parameters
    ----------
    wcs
        2-D celestial WCS.
    x, y
        0-based pixel positions, shape ``(n,)`` (scalars are promoted).
    step
        Half-step of the finite differences, in pixels.

    Returns
    -------
    numpy.ndarray
        Shape ``(n, 2, 2)``: ``J[i] @ (dx, dy) = (d_east, d_north)`` in arcsec.
    """
    xa = np.atleast_1d(np.asarray(x, dtype=np.float64))
    ya = np.atleast_1d(np.asarray(y, dtype=np.float64))
    n = xa.size
    px = np.concatenate([xa, xa + step, xa - step, xa, xa])
    py = np.concatenate([ya, ya, ya, ya + step, ya - step])
    ra, dec = pixel_to_radec(wcs, px, py)
    ra0, dec0 = ra[:n], dec[:n]
    jac = np.empty((n, 2, 2), dtype=np.float64)
    for col, (plus, minus) in enumerate(((1, 2), (3, 4))):
        sp, sm = slice(plus * n, (plus + 1) * n), slice(minus * n, (minus + 1) * n)
        e_plus, n_plus = sky_offsets_arcsec(ra0, dec0, ra[sp], dec[sp])
        e_minus, n_minus = sky_offsets_arcsec(ra0, dec0, ra[sm], dec[sm])
        jac[:, 0, col] = (e_plus - e_minus) / (2.0 * step)
        jac[:, 1, col] = (n_plus - n_minus) / (2.0 * step)
    return jac


def _eigen2(
    cxx: FloatArray, cyy: FloatArray, cxy: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    # Eigen-decomposition of symmetric 2x2 matrices: (major, minor) std and major-axis angle.
    mean = 0.5 * (cxx + cyy)
    half = np.sqrt((0.5 * (cxx - cyy)) ** 2 + cxy**2)
    big = np.sqrt(np.clip(mean + half, 0.0, None))
    small = np.sqrt(np.clip(mean - half, 0.0, None))
    angle = 0.5 * np.arctan2(2.0 * cxy, cxx - cyy)
    return big, small, angle


def pixel_ellipse_to_sky(
    jac: npt.NDArray[np.float64], a: npt.ArrayLike, b: npt.ArrayLike, theta: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Convert pixel-space ellipses to sky ellipses.

    Parameters
    ----------
    jac
        ``(n, 2, 2)`` Jacobians from :func:`sky_jacobian`.
    a, b
        Semi-axes (or any linear size measure) in pixels.
    theta
        Angle of ``a`` in radians, counter-clockwise from +x towards +y (sep's convention).

    Returns
    -------
    maj, min, pa
        Sizes in arcsec (same measure as ``a``/``b``) and the position angle of the major axis
        in degrees east of north, in [0, 180).
    """
    av, bv, tv = (np.asarray(v, dtype=np.float64) for v in (a, b, theta))
    c, s = np.cos(tv), np.sin(tv)
    cov = np.empty(jac.shape, dtype=np.float64)
    cov[:, 0, 0] = av**2 * c**2 + bv**2 * s**2
    cov[:, 1, 1] = av**2 * s**2 + bv**2 * c**2
    cov[:, 0, 1] = cov[:, 1, 0] = (av**2 - bv**2) * s * c
    sky = jac @ cov @ np.transpose(jac, (0, 2, 1))
    big, small, phi = _eigen2(sky[:, 0, 0], sky[:, 1, 1], sky[:, 0, 1])
    # phi is measured from east towards north; PA is from north towards east.
    pa = np.mod(90.0 - np.degrees(phi), 180.0)
    return big, small, pa


def sky_ellipse_to_pixel(
    jac: npt.NDArray[np.float64], maj: npt.ArrayLike, minor: npt.ArrayLike, pa: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Convert sky ellipses to pixel-space ellipses (inverse of :func:`pixel_ellipse_to_sky`).

    Parameters
    ----------
    jac
        ``(n, 2, 2)`` Jacobians from :func:`sky_jacobian`.
    maj, minor
        Axis sizes in arcsec.
    pa
        Position angle of the major axis, degrees east of north.

    Returns
    -------
    a, b, theta
        Sizes in pixels and the angle of ``a`` in radians counter-clockwise from +x.
    """
    mv, nv, pv = (np.asarray(v, dtype=np.float64) for v in (maj, minor, pa))
    p = np.radians(pv)
    ue, un = np.sin(p), np.cos(p)  # unit vector of the major axis in (east, north)
    sky = np.empty(jac.shape, dtype=np.float64)
    sky[:, 0, 0] = mv**2 * ue**2 + nv**2 * un**2
    sky[:, 1, 1] = mv**2 * un**2 + nv**2 * ue**2
    sky[:, 0, 1] = sky[:, 1, 0] = (mv**2 - nv**2) * ue * un
    inv = np.linalg.inv(jac)
    cov = inv @ sky @ np.transpose(inv, (0, 2, 1))
    return _eigen2(cov[:, 0, 0], cov[:, 1, 1], cov[:, 0, 1])
