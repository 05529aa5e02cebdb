"""The viewer's tile pyramid, stretches, pixel look-up and overlay geometry."""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from caesar_rest.catalogue.preview import block_reduce
from caesar_rest.imaging.synthetic import field_header
from caesar_rest.imaging.tiles import (
    COLOURMAPS,
    PERCENTILES,
    TILE,
    ImageView,
    TileService,
    halve,
    overlay_ellipses,
    render_tile,
    stretch,
)


def decode_png(png: bytes) -> np.ndarray:
    """RGB pixels of a PNG written by encode_png (8-bit RGB, filter 0 on every row)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, height = 8, b"", 0, 0
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = np.frombuffer(zlib.decompress(idat), dtype=np.uint8).reshape(height, 1 + 3 * width)
    assert (raw[:, 0] == 0).all()
    return raw[:, 1:].reshape(height, width, 3)


@pytest.fixture
def ramp(tmp_path: Path) -> Path:
    """A 600 x 1000 image whose value is its row number (y), with one blank pixel."""
    header = field_header(1000, 2.0, (10.0, 10.0, 0.0))
    for key in ("NAXIS", "NAXIS1", "NAXIS2"):
        header.remove(key, ignore_missing=True)
    data = np.repeat(np.arange(600, dtype=np.float32)[:, None], 1000, axis=1)
    data[10, 20] = np.nan
    path = tmp_path / "ramp.fits"
    fits.PrimaryHDU(data, header).writeto(path)
    return path


def test_stretches_pinned() -> None:
    x = [-1.0, 0.0, 0.25, 0.5, 1.0, 2.0]
    assert stretch(x, "linear", 0, 1).tolist() == [0.0, 0.0, 0.25, 0.5, 1.0, 1.0]
    assert stretch(x, "sqrt", 0, 1).tolist() == [0.0, 0.0, 0.5, math.sqrt(0.5), 1.0, 1.0]
    assert stretch([0.5], "log", 0, 1)[0] == pytest.approx(math.log10(501) / math.log10(1001))
    assert stretch([0.5], "asinh", 0, 1)[0] == pytest.approx(math.asinh(5) / math.asinh(10))
    assert stretch([5.0], "linear", 0, 10)[0] == 0.5
    with pytest.raises(ValueError, match="scale must be one of linear, log, sqrt, asinh"):
        stretch(x, "gamma", 0, 1)
    with pytest.raises(ValueError, match="hi > lo"):
        stretch(x, "linear", 1, 1)


def test_pyramid_levels_and_tile_shapes(ramp: Path) -> None:
    view = ImageView.open(ramp)
    assert view.shape == (600, 1000) and view.levels == 3  # 1000 -> 500 -> 250 (one tile)
    assert view.level(1).shape == (300, 500) and view.level(2).shape == (150, 250)
    # Level 1 averages 2x2 blocks: rows 0,1 -> 0.5; NaN ignored.
    assert view.level(1)[0, 0] == 0.5 and view.level(1)[5, 10] == pytest.approx(32 / 3)
    assert view.tile_block(0, 3, 2).shape == (600 - 2 * TILE, 1000 - 3 * TILE)
    assert view.tile_block(2, 0, 0).shape == (150, 250)
    with pytest.raises(ValueError, match=r"tile \(4, 0\) is outside level 0 \(1000x600 pixels\)"):
        view.tile_block(0, 4, 0)
    with pytest.raises(ValueError, match="level must be in 0..2"):
        view.level(3)
    view.close()


def test_halve_is_the_nan_ignoring_block_mean() -> None:
    data = np.random.default_rng(3).normal(size=(1031, 517)).astype(np.float32)
    data[5:9, 7:300] = np.nan
    data[0:2, 0:2] = np.nan  # a block with no finite pixel stays NaN
    got = halve(data)
    assert got.shape == (516, 259) and np.isnan(got[0, 0])
    np.testing.assert_array_equal(got, block_reduce(data, 2))


def test_tile_png_is_north_up_with_blank_grey(ramp: Path) -> None:
    view = ImageView.open(ramp)
    rgb = decode_png(render_tile(view.tile_block(0, 0, 0), "linear", 0.0, 255.0, "grey"))
    assert rgb.shape == (TILE, TILE, 3)
    # First PNG row is the tile's highest y (255 -> white), last row y = 0 (black).
    assert rgb[0, 0].tolist() == [255, 255, 255] and rgb[-1, 0].tolist() == [0, 0, 0]
    assert rgb[TILE - 1 - 100, 5].tolist() == [100, 100, 100]
    assert rgb[TILE - 1 - 10, 20].tolist() == [153, 153, 153]  # the blank pixel
    inferno = decode_png(render_tile(view.tile_block(0, 0, 0), "linear", 0.0, 255.0, "inferno"))
    assert inferno[0, 0].tolist() == COLOURMAPS["inferno"][255].tolist() == [252, 255, 164]
    with pytest.raises(ValueError, match="cmap must be one of grey, inferno, viridis"):
        render_tile(view.tile_block(0, 0, 0), "linear", 0.0, 1.0, "jet")
    view.close()


def test_percentiles_and_pixel_lookup(ramp: Path) -> None:
    view = ImageView.open(ramp)
    p = view.percentiles()
    assert list(p) == [f"{q:g}" for q in PERCENTILES]
    assert p["0"] == 0.0 and p["100"] == 599.0 and p["99.5"] == pytest.approx(596.0, abs=0.5)
    got = view.pixel(20.4, 30.6)
    wcs = WCS(fits.getheader(ramp))
    ra, dec = wcs.all_pix2world([[20.4, 30.6]], 0)[0]
    assert (got["x"], got["y"], got["value"], got["bunit"]) == (20, 31, 31.0, "JY/BEAM")
    assert got["ra"] == pytest.approx(ra, abs=1e-9) and got["dec"] == pytest.approx(dec, abs=1e-9)
    assert view.pixel(20, 10)["value"] is None  # blank
    for x, y in ((1000, 0), (math.inf, 0), (0, math.nan)):
        with pytest.raises(ValueError, match="outside the image"):
            view.pixel(x, y)
    view.close()


def test_tile_cache_hits_and_stays_bounded(ramp: Path) -> None:
    service = TileService(max_views=1, cache_bytes=3000)
    first = service.tile("a", ramp, 2, 0, 0, "linear", 0.0, 600.0, "grey")
    assert service.tile("a", ramp, 2, 0, 0, "linear", 0.0, 600.0, "grey") is first
    assert (service.hits, service.misses) == (1, 1)
    for ty in range(3):
        service.tile("a", ramp, 0, 0, ty, "linear", 0.0, 600.0, "grey")
    assert service._tile_bytes <= 3000
    service.view("b", ramp)  # a second image closes the first (max_views=1)
    assert list(service._views) == ["b"]
    service.forget("b")
    assert service._views == {}


def test_overlay_ellipses_in_pixels(ramp: Path) -> None:
    view = ImageView.open(ramp)
    sources = [
        {"x": 100.0, "y": 200.0, "maj": 20.0, "min": 10.0, "pa": 0.0},  # major axis north
        {"x": 50.0, "y": 60.0, "maj": None, "min": None, "pa": None},
        {"x": None, "y": 1.0},
    ]
    got = overlay_ellipses(view, sources)
    assert [e["row"] for e in got] == [0, 1]
    # 2 arcsec pixels: FWHM 20" x 10" -> semi-axes 5 x 2.5 px; north is +y (theta = 90 deg).
    assert got[0]["a"] == pytest.approx(5.0, abs=1e-3)
    assert got[0]["b"] == pytest.approx(2.5, abs=1e-3)
    assert abs(math.sin(got[0]["theta"])) == pytest.approx(1.0, abs=1e-4)
    assert (got[1]["a"], got[1]["b"], got[1]["theta"]) == (3.0, 3.0, 0.0)
    view.close()
