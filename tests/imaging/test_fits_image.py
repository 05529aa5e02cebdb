"""Tests of FITS image loading and the sky-geometry helpers."""

from __future__ import annotations

import gzip
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS, FITSFixedWarning

from caesar_rest.imaging import (
    FitsImage,
    ImageError,
    load_image,
    pixel_ellipse_to_sky,
    pixel_to_radec,
    sky_ellipse_to_pixel,
    sky_jacobian,
)
from caesar_rest.imaging.fits_image import without_empty_mask

DATA_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
REAL_IMAGE = DATA_DIR / "ScorpioS17Field.fits"

PIX = 1.5  # arcsec


def _header(nx: int = 64, ny: int = 48, with_beam: bool = True) -> fits.Header:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    w.wcs.crval = [150.0, -30.0]
    w.wcs.crpix = [nx / 2 + 0.5, ny / 2 + 0.5]
    w.wcs.cdelt = [-PIX / 3600.0, PIX / 3600.0]
    h = w.to_header()
    h["BUNIT"] = "JY/BEAM"
    if with_beam:
        h["BMAJ"] = 6.0 / 3600.0
        h["BMIN"] = 4.0 / 3600.0
        h["BPA"] = 30.0
    return h


def _data(nx: int = 64, ny: int = 48) -> np.ndarray:
    return np.arange(nx * ny, dtype=np.float64).reshape(ny, nx) * 1e-3


def _write(path: Path, data: np.ndarray, header: fits.Header) -> Path:
    fits.PrimaryHDU(data, header=header).writeto(path, overwrite=True)
    return path


def test_basic_2d(tmp_path: Path) -> None:
    data = _data()
    data[3, 5] = np.nan
    # FITS stores big-endian; the loader must hand out native float32.
    path = _write(tmp_path / "a.fits", data.astype(">f4"), _header())
    im = load_image(path)
    assert isinstance(im, FitsImage)
    assert im.shape == (48, 64)
    assert im.data.dtype == np.dtype(np.float32) and im.data.dtype.isnative
    assert im.data.flags.c_contiguous
    assert im.mask.dtype == np.bool_ and im.mask.sum() == 1 and im.mask[3, 5]
    np.testing.assert_allclose(im.data[~im.mask], data[~np.isnan(data)], rtol=1e-6)
    assert im.beam == pytest.approx((6.0, 4.0, 30.0))
    assert im.beam_source == "header"
    assert im.pixel_scale_arcsec == pytest.approx(PIX, rel=1e-9)
    expected_area = math.pi / (4 * math.log(2)) * 6.0 * 4.0 / PIX**2
    assert im.beam_area_pix == pytest.approx(expected_area, rel=1e-9)
    assert im.bunit == "JY/BEAM"
    assert im.wcs.naxis == 2 and im.wcs.pixel_shape == (64, 48)
    assert im.origin == (0, 0)
    ra, dec = pixel_to_radec(im.wcs, 31.5, 23.5)  # the reference pixel
    assert float(ra) == pytest.approx(150.0) and float(dec) == pytest.approx(-30.0)


def test_gzip(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.fits", _data().astype(np.float32), _header())
    gz = tmp_path / "a.fits.gz"
    with path.open("rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    im = load_image(gz)
    np.testing.assert_allclose(im.data, _data(), rtol=1e-6)


def test_cube_with_degenerate_axes(tmp_path: Path) -> None:
    h = _header()
    h["CTYPE3"], h["CRVAL3"], h["CDELT3"], h["CRPIX3"] = "FREQ", 1.4e9, 1e6, 1.0
    h["CTYPE4"], h["CRVAL4"], h["CDELT4"], h["CRPIX4"] = "STOKES", 1.0, 1.0, 1.0
    data = _data()[None, None, :, :].astype(np.float32)
    path = _write(tmp_path / "cube.fits", data, h)
    assert fits.getheader(path)["NAXIS"] == 4
    im = load_image(path)
    assert im.shape == (48, 64) and im.wcs.naxis == 2
    np.testing.assert_allclose(im.data, _data(), rtol=1e-6)


def test_non_degenerate_third_axis(tmp_path: Path) -> None:
    h = _header()
    h["CTYPE3"], h["CRVAL3"], h["CDELT3"], h["CRPIX3"] = "FREQ", 1.4e9, 1e6, 1.0
    data = np.zeros((3, 48, 64), dtype=np.float32)
    path = _write(tmp_path / "cube.fits", data, h)
    with pytest.raises(ImageError, match="non-degenerate axis 3"):
        load_image(path)


def test_real_image_with_ctype3_ctype4_but_naxis2() -> None:
    header = fits.getheader(REAL_IMAGE)
    assert header["NAXIS"] == 2 and "CTYPE3" in header and "CTYPE4" in header
    im = load_image(REAL_IMAGE)
    assert im.shape == (1000, 1000)
    assert im.wcs.naxis == 2 and im.wcs.has_celestial
    assert im.beam == pytest.approx((6.5, 6.5, 0.0), abs=1e-4)  # no BPA -> 0
    assert im.pixel_scale_arcsec == pytest.approx(1.5, abs=1e-4)
    assert im.bunit == "JY/BEAM"
    assert im.frame == "fk5"
    # Pixel (CRPIX - 1) is CRVAL, exactly (NCP is handled by the WCS).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FITSFixedWarning)
        w = WCS(header).celestial
    ra, dec = pixel_to_radec(im.wcs, header["CRPIX1"] - 1, header["CRPIX2"] - 1)
    assert float(ra) == pytest.approx(header["CRVAL1"], abs=1e-9)
    assert float(dec) == pytest.approx(header["CRVAL2"], abs=1e-9)
    ra_c, dec_c = pixel_to_radec(im.wcs, 499.5, 499.5)
    exp = w.pixel_to_world_values(499.5, 499.5)
    assert float(ra_c) == pytest.approx(float(exp[0])) and float(dec_c) == pytest.approx(
        float(exp[1])
    )
    assert 250 < float(ra_c) < 260 and -45 < float(dec_c) < -40


def test_scaled_integers_and_blank(tmp_path: Path) -> None:
    raw = np.arange(48 * 64, dtype=np.int16).reshape(48, 64)
    raw[0, 0] = -32768
    hdu = fits.PrimaryHDU(raw, header=_header())
    hdu.header["BSCALE"] = 0.5
    hdu.header["BZERO"] = 10.0
    hdu.header["BLANK"] = -32768
    path = tmp_path / "int.fits"
    hdu.writeto(path)
    im = load_image(path)
    assert im.mask[0, 0] and im.mask.sum() == 1
    assert np.isnan(im.data[0, 0])
    assert im.data[0, 1] == pytest.approx(1 * 0.5 + 10.0)
    assert im.data[10, 3] == pytest.approx((10 * 64 + 3) * 0.5 + 10.0)
    # The same through a section read.
    sub = load_image(path, subimage=(0, 10, 0, 5))
    assert sub.mask[0, 0] and sub.data[0, 1] == pytest.approx(10.5)


def test_unscaled_integer_blank(tmp_path: Path) -> None:
    raw = np.ones((48, 64), dtype=np.int32)
    raw[5, 6] = -99
    h = _header()
    h["BLANK"] = -99
    path = _write(tmp_path / "i.fits", raw, h)
    im = load_image(path)
    assert im.mask.sum() == 1 and im.mask[5, 6] and np.isnan(im.data[5, 6])


def test_no_beam(tmp_path: Path) -> None:
    path = _write(tmp_path / "nb.fits", _data().astype(np.float32), _header(with_beam=False))
    with pytest.raises(ImageError, match=r"no beam in header \(BMAJ/BMIN\)"):
        load_image(path)
    im = load_image(path, beam_fallback=(5.0, 4.0))
    assert im.beam == (5.0, 4.0, 0.0) and im.beam_source == "fallback"
    # Minor larger than major: swapped, PA turned by 90 deg.
    im = load_image(path, beam_fallback=(4.0, 5.0, 10.0))
    assert im.beam == (5.0, 4.0, 100.0)
    with pytest.raises(ImageError, match="positive"):
        load_image(path, beam_fallback=(0.0, 5.0, 0.0))


def test_header_beam_wins_over_fallback(tmp_path: Path) -> None:
    path = _write(tmp_path / "b.fits", _data().astype(np.float32), _header())
    assert load_image(path, beam_fallback=(20.0, 20.0, 0.0)).beam == pytest.approx((6.0, 4.0, 30.0))


def test_beam_from_aips_history(tmp_path: Path) -> None:
    h = _header(with_beam=False)
    h.add_history("AIPS   CLEAN BMAJ=  1.6667E-03 BMIN=  1.3889E-03 BPA=  45.00")
    path = _write(tmp_path / "h.fits", _data().astype(np.float32), h)
    im = load_image(path)
    assert im.beam == pytest.approx((6.0, 5.0, 45.0), abs=1e-3)
    assert im.beam_source == "history"


def test_subimage(tmp_path: Path) -> None:
    path = _write(tmp_path / "s.fits", _data().astype(np.float32), _header())
    full = load_image(path)
    sub = load_image(path, subimage=(10, 30, 5, 25))
    assert sub.shape == (20, 20) and sub.origin == (10, 5)
    np.testing.assert_array_equal(sub.data, full.data[5:25, 10:30])
    ra_s, dec_s = pixel_to_radec(sub.wcs, 0.0, 0.0)
    ra_f, dec_f = pixel_to_radec(full.wcs, 10.0, 5.0)
    assert float(ra_s) == pytest.approx(float(ra_f), abs=1e-10)
    assert float(dec_s) == pytest.approx(float(dec_f), abs=1e-10)
    # One row is too small for a sub-image to process (read_pixels reads one: test_ranked).
    for bad in [(0, 65, 0, 10), (10, 10, 0, 10), (-1, 5, 0, 5), (10, 30, 5, 6)]:
        with pytest.raises(ImageError, match="subimage"):
            load_image(path, subimage=bad)


def test_image_in_extension(tmp_path: Path) -> None:
    path = tmp_path / "ext.fits"
    fits.HDUList(
        [fits.PrimaryHDU(), fits.ImageHDU(_data().astype(np.float32), header=_header())]
    ).writeto(path)
    im = load_image(path)
    assert im.hdu_index == 1 and im.shape == (48, 64)
    with pytest.raises(ImageError, match="not an image"):
        load_image(path, hdu=0)
    with pytest.raises(ImageError, match="no HDU"):
        load_image(path, hdu=5)


@pytest.mark.parametrize("kind", ["missing", "text", "table", "no_wcs", "all_nan"])
def test_bad_inputs(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "bad.fits"
    if kind == "text":
        path.write_text("this is not a FITS file\n" * 100)
    elif kind == "table":
        cols = fits.ColDefs([fits.Column(name="a", format="E", array=np.arange(3.0))])
        fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(path)
    elif kind == "no_wcs":
        h = fits.Header()
        h["BMAJ"], h["BMIN"] = 1e-3, 1e-3
        _write(path, np.zeros((10, 10), dtype=np.float32), h)
    elif kind == "all_nan":
        _write(path, np.full((48, 64), np.nan, dtype=np.float32), _header())
    match = {
        "missing": "not found",
        "text": "cannot read",
        "table": "no image data",
        "no_wcs": "celestial WCS",
        "all_nan": "no valid pixels",
    }[kind]
    with pytest.raises(ImageError, match=match):
        load_image(path)
    assert issubclass(ImageError, ValueError)


def test_jacobian_and_ellipse_conversions() -> None:
    w = WCS(_header())
    jac = sky_jacobian(w, [31.5, 0.0], [23.5, 0.0])
    assert jac.shape == (2, 2, 2)
    # North up, east left: +x goes west (-east), +y goes north.
    np.testing.assert_allclose(jac[0], [[-PIX, 0.0], [0.0, PIX]], atol=1e-6)
    # A pixel ellipse along +y (theta = 90 deg) points north: PA 0; along -x: east, PA 90.
    maj, mnr, pa = pixel_ellipse_to_sky(
        jac[:1].repeat(3, 0), [4, 4, 4], [2, 2, 2], [math.pi / 2, 0.0, math.radians(120.0)]
    )
    np.testing.assert_allclose(maj, 4 * PIX, rtol=1e-6)
    np.testing.assert_allclose(mnr, 2 * PIX, rtol=1e-6)
    np.testing.assert_allclose(pa, [0.0, 90.0, 30.0], atol=1e-6)
    a, b, theta = sky_ellipse_to_pixel(jac[:1].repeat(3, 0), maj, mnr, pa)
    np.testing.assert_allclose(a, 4, rtol=1e-6)
    np.testing.assert_allclose(b, 2, rtol=1e-6)
    # Axes are undirected: compare angles modulo 180 deg.
    diff = theta - np.array([math.pi / 2, 0.0, math.radians(120.0)])
    np.testing.assert_allclose(np.cos(2 * diff), 1.0, atol=1e-9)


def test_pixel_to_radec_converts_galactic() -> None:
    from astropy.coordinates import SkyCoord

    w = WCS(naxis=2)
    w.wcs.ctype = ["GLON-SIN", "GLAT-SIN"]
    w.wcs.crval = [340.0, 0.5]
    w.wcs.crpix = [10.5, 10.5]
    w.wcs.cdelt = [-PIX / 3600.0, PIX / 3600.0]
    ra, dec = pixel_to_radec(w, [3.0, 10.0], [4.0, 15.0])
    lon, lat = w.pixel_to_world_values([3.0, 10.0], [4.0, 15.0])
    icrs = SkyCoord(lon, lat, unit="deg", frame="galactic").icrs
    np.testing.assert_allclose(ra, icrs.ra.deg, atol=1e-10)
    np.testing.assert_allclose(dec, icrs.dec.deg, atol=1e-10)
    # PA stays east of (equatorial) north: the Jacobian is rotated w.r.t. the pixel grid.
    jac = sky_jacobian(w, [10.0], [10.0])
    assert abs(jac[0, 0, 1]) > 0.1


def test_without_empty_mask(tmp_path: Path) -> None:
    full = load_image(_write(tmp_path / "full.fits", _data().astype(">f4"), _header()))
    lean = without_empty_mask(full)
    assert lean is not full and lean.data is full.data
    assert lean.mask.shape == full.shape and not lean.mask.any()
    assert lean.mask.strides == (0, 0) and not lean.mask.flags.writeable
    assert without_empty_mask(lean) is lean
    # Slices and boolean indexing behave as with the full mask.
    assert lean.data[2:5][lean.mask[2:5]].size == 0
    data = _data()
    data[3, 5] = np.nan
    holed = load_image(_write(tmp_path / "holed.fits", data.astype(">f4"), _header()))
    assert without_empty_mask(holed) is holed


@pytest.mark.parametrize("cube", [False, True])
def test_header_image_is_the_loaded_image_without_its_pixels(tmp_path: Path, cube: bool) -> None:
    from caesar_rest.imaging.fits_image import header_image

    h = _header(with_beam=False)
    data = _data().astype(np.float32)
    if cube:
        h["CTYPE3"], h["CRVAL3"], h["CDELT3"], h["CRPIX3"] = "FREQ", 1.4e9, 1e6, 1.0
        data = data[None]
    path = _write(tmp_path / "a.fits", data, h)
    loaded = load_image(path, beam_fallback=(7.0, 5.0, 10.0))
    head = header_image(path, beam_fallback=(7.0, 5.0, 10.0))
    assert head.shape == loaded.shape == (48, 64) and head.data.strides == (0, 0)
    assert not head.mask.any() and head.mask.strides == (0, 0)
    assert (head.path, head.hdu_index, head.origin) == (loaded.path, 0, (0, 0))
    assert (
        (head.beam, head.beam_source)
        == (loaded.beam, loaded.beam_source)
        == (
            (7.0, 5.0, 10.0),
            "fallback",
        )
    )
    assert head.pixel_scale_arcsec == loaded.pixel_scale_arcsec
    assert head.beam_area_pix == loaded.beam_area_pix
    assert head.wcs.to_header() == loaded.wcs.to_header()
    assert head.wcs.pixel_shape == loaded.wcs.pixel_shape == (64, 48)
    h["CTYPE3"], h["CRVAL3"], h["CDELT3"], h["CRPIX3"] = "FREQ", 1.4e9, 1e6, 1.0
    bad = _write(tmp_path / "b.fits", np.zeros((3, 48, 64), dtype=np.float32), h)
    with pytest.raises(ImageError, match="non-degenerate axis 3"):
        header_image(bad, beam_fallback=(7.0, 5.0, 10.0))
