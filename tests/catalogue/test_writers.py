"""Tests of the catalogue table, its writers and the preview."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.io import fits
from astropy.io.votable import parse, parse_single_table
from astropy.table import Table
from astropy.wcs import WCS
from regions import EllipseSkyRegion, PointSkyRegion, Regions

from caesar_rest.apps.base import CATALOGUE_RESULTS
from caesar_rest.apps.products import SOURCES, write_catalogue
from caesar_rest.catalogue.preview import block_reduce, render, write_preview
from caesar_rest.catalogue.schema import COLUMN_NAMES, COLUMNS
from caesar_rest.catalogue.writers import (
    VOTableMeta,
    VOTableParam,
    iau_name,
    iau_names,
    make_table,
    read_catalogue_csv,
    table_to_json,
    with_group_column,
    write_csv,
    write_ds9_regions,
    write_json,
    write_votable,
)
from caesar_rest.imaging import load_image

PIX = 1.5  # arcsec


def _wcs(nx: int = 200, ny: int = 100) -> WCS:
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    w.wcs.crval = [150.0, -30.0]
    w.wcs.crpix = [nx / 2 + 0.5, ny / 2 + 0.5]
    w.wcs.cdelt = [-PIX / 3600.0, PIX / 3600.0]
    w.wcs.radesys = "FK5"
    w.wcs.equinox = 2000.0
    return w


def _sample_table() -> Table:
    w = _wcs()
    x = np.array([50.0, 120.0, 150.0])
    y = np.array([40.0, 60.0, 20.0])
    ra, dec = w.pixel_to_world_values(x, y)
    return make_table(
        {
            "name": iau_names(ra, dec, prefix="CRS"),
            "island_id": [0, 1, 1],
            "component_id": [0, 0, 1],
            "x": x,
            "y": y,
            "ra": ra,
            "dec": dec,
            "peak_flux": [1e-3, 2e-3, 5e-4],
            "flux": [1.2e-3, 2.5e-3, 6e-4],
            "maj": [12.0, 8.0, np.nan],  # the last has no size -> point region
            "min": [6.0, 8.0, np.nan],
            "pa": [30.0, 0.0, np.nan],
            "snr": [10.0, 20.0, 5.0],
            "flags": [0, 1, 1],
        }
    )


def test_make_table_schema() -> None:
    t = _sample_table()
    assert t.colnames == list(COLUMN_NAMES)
    for col in COLUMNS:
        c = t[col.name]
        assert c.dtype == np.dtype(col.dtype), col.name
        assert (c.unit or "") == (u.Unit(col.unit) if col.unit else ""), col.name
        assert c.meta["ucd"] == col.ucd
        assert c.description == col.description
    assert np.isnan(t["x_err"]).all()  # not given -> NaN
    assert list(t["flags"]) == [0, 1, 1]


def test_make_table_inputs() -> None:
    empty = make_table(None)
    assert len(empty) == 0 and empty.colnames == list(COLUMN_NAMES)
    rows = make_table([{"name": "a", "ra": 1.0}, {"name": "b", "dec": 2.0, "flags": 3}])
    assert list(rows["name"]) == ["a", "b"]
    assert rows["ra"][0] == 1.0 and np.isnan(rows["ra"][1])
    assert list(rows["flags"]) == [0, 3]
    again = make_table(rows)
    assert again.colnames == list(COLUMN_NAMES) and len(again) == 2
    with pytest.raises(ValueError, match="unknown catalogue column"):
        make_table({"nmae": ["x"]})
    with pytest.raises(ValueError, match="different lengths"):
        make_table({"ra": [1.0, 2.0], "dec": [1.0]})


def test_iau_name() -> None:
    # 248.8 deg = 16h35m12.0s; -47.4697 deg = -47d28m10.9s (truncated, not rounded).
    assert iau_name(248.8, -47.4697) == "J163512.0-472810"
    assert iau_name(248.8, -47.4697, "CRS") == "CRS J163512.0-472810"
    assert iau_name(248.8, -47.4697, ra_decimals=0) == "J163512-472810"
    assert iau_name(0.0, 0.0) == "J000000.0+000000"
    assert iau_name(10.0, -0.0001) == "J004000.0-000000"
    # Just below 24h / 60 s: truncation never yields "60".
    assert iau_name(359.9999999, 89.99999) == "J235959.9+895959"
    assert iau_name(math.nan, 0.0) == ""
    assert iau_names([10.0, 10.0, 20.0], [5.0, 5.0, 5.0]) == [
        "J004000.0+050000",
        "J004000.0+050000_2",
        "J012000.0+050000",
    ]


@pytest.mark.parametrize("fmt", [None, "binary"])
def test_votable_units_and_ucds(tmp_path: Path, fmt: str | None) -> None:
    t = _sample_table()
    path = write_votable(t, tmp_path / "c.vot", tabledata_format=fmt)
    vot = parse_single_table(str(path))
    fields = {f.name: f for f in vot.fields}
    assert list(fields) == list(COLUMN_NAMES)
    for col in COLUMNS:
        assert fields[col.name].ucd == col.ucd, col.name
        if col.unit:
            assert u.Unit(str(fields[col.name].unit)) == u.Unit(col.unit), col.name
        else:
            assert fields[col.name].unit is None
    back = Table.read(path)
    assert back["peak_flux"].unit == u.Jy / u.beam
    assert back["ra"].unit == u.deg and back["maj"].unit == u.arcsec
    assert back["ra"].meta["ucd"] == "pos.eq.ra;meta.main"
    np.testing.assert_allclose(back["ra"], t["ra"])
    assert list(back["name"]) == list(t["name"])


@pytest.mark.parametrize("fmt", [None, "binary"])
def test_votable_coosys_infos_params(tmp_path: Path, fmt: str | None) -> None:
    """COOSYS referenced by ra/dec, provenance INFOs, finite PARAMs; the rows unchanged."""
    t = _sample_table()
    meta = VOTableMeta(
        system="eq_FK5",
        equinox="J2000",
        infos=(("app", "sep"), ("input_file", 'my "field" <1>.fits')),
        params=(
            VOTableParam("beam_major", 6.5, "arcsec", "instr.beam", "Beam major axis"),
            VOTableParam("rms_median", math.nan, "Jy/beam", "stat.stdev", "Median rms"),
        ),
    )
    path = write_votable(t, tmp_path / "c.vot", tabledata_format=fmt, meta=meta)
    resource = parse(str(path)).resources[0]
    (coosys,) = resource.coordinate_systems
    assert (coosys.system, coosys.equinox) == ("eq_FK5", "J2000")
    refs = {f.name: f.ref for f in resource.tables[0].fields}
    assert refs["ra"] == refs["dec"] == coosys.ID
    assert {k for k, v in refs.items() if v} == {"ra", "dec"}
    assert {i.name: i.value for i in resource.infos} == dict(meta.infos)
    (param,) = resource.params  # the NaN one is left out
    assert (param.name, param.value, str(param.unit)) == ("beam_major", 6.5, "arcsec")
    assert param.description == "Beam major axis"
    back = Table.read(path)
    np.testing.assert_allclose(back["ra"], t["ra"])
    # Without meta: an ICRS COOSYS and nothing else.
    plain = parse(str(write_votable(t, tmp_path / "p.vot"))).resources[0]
    assert [(c.system, c.equinox) for c in plain.coordinate_systems] == [("ICRS", None)]
    assert not plain.infos and not plain.params


def test_csv_round_trip(tmp_path: Path) -> None:
    t = _sample_table()
    path = write_csv(t, tmp_path / "c.csv")
    assert path.read_text().splitlines()[0] == ",".join(COLUMN_NAMES)
    back = read_catalogue_csv(path)
    assert back.colnames == list(COLUMN_NAMES)
    for name in COLUMN_NAMES:
        assert back[name].dtype == t[name].dtype
        if t[name].dtype.kind == "f":
            np.testing.assert_array_equal(np.asarray(back[name]), np.asarray(t[name]))
        else:
            assert list(back[name]) == list(t[name])
    assert back["flux"].unit == u.Jy


def test_json(tmp_path: Path) -> None:
    t = _sample_table()
    path = write_json(t, tmp_path / "c.json")
    doc = json.loads(path.read_text())  # strict JSON: NaN must be null
    assert "NaN" not in path.read_text()
    assert [c["name"] for c in doc["columns"]] == list(COLUMN_NAMES)
    assert doc["columns"][11] == {
        "name": "peak_flux",
        "unit": "Jy/beam",
        "ucd": "phot.flux.density;stat.max",
        "description": "Peak surface brightness",
    }
    assert len(doc["sources"]) == 3
    src = doc["sources"][0]
    assert src["name"] == t["name"][0]
    assert src["ra"] == pytest.approx(t["ra"][0], rel=1e-15)
    assert src["x_err"] is None and doc["sources"][2]["maj"] is None
    assert isinstance(src["flags"], int)
    assert table_to_json(t) == doc
    # The bytes of the streaming (pure-Python) encoder the file was written with before.
    with (tmp_path / "streamed.json").open("w", encoding="utf-8") as fh:
        json.dump(table_to_json(t), fh, allow_nan=False, separators=(",", ":"))
        fh.write("\n")
    assert path.read_bytes() == (tmp_path / "streamed.json").read_bytes()
    # Back into a table.
    again = make_table(doc["sources"])
    np.testing.assert_array_equal(np.asarray(again["dec"]), np.asarray(t["dec"]))


def test_regions(tmp_path: Path) -> None:
    t = _sample_table()
    path = write_ds9_regions(t, tmp_path / "c.reg")
    regs = Regions.read(str(path), format="ds9")
    assert len(regs) == 3
    assert isinstance(regs[0], EllipseSkyRegion) and isinstance(regs[2], PointSkyRegion)
    assert regs[0].meta["text"] == t["name"][0]
    assert regs[0].width.to_value(u.arcsec) == pytest.approx(12.0)
    assert regs[0].height.to_value(u.arcsec) == pytest.approx(6.0)
    assert regs[0].center.ra.deg == pytest.approx(t["ra"][0], abs=1e-7)
    # Orientation in pixels: with north up and east left, a PA of 30 deg (east of north)
    # points the major axis to (-sin 30, cos 30), i.e. 120 deg counter-clockwise from +x.
    pix = regs[0].to_pixel(_wcs())
    assert pix.width == pytest.approx(12.0 / PIX, rel=1e-3)
    diff = math.radians(pix.angle.to_value(u.deg) - 120.0)
    assert math.cos(2 * diff) == pytest.approx(1.0, abs=1e-6)
    # PA 0: along north (+y).
    pix = regs[1].to_pixel(_wcs())
    assert math.cos(2 * math.radians(pix.angle.to_value(u.deg) - 90.0)) == pytest.approx(1.0)
    icrs = write_ds9_regions(t, tmp_path / "i.reg", frame="icrs")
    assert Regions.read(str(icrs), format="ds9")[0].center.frame.name == "icrs"


def test_catalogue_files_names_and_empty(tmp_path: Path) -> None:
    """The shared run writes a catalogue under the names of CATALOGUE_RESULTS, also empty."""
    names = {r.name: r.filename for r in CATALOGUE_RESULTS}
    full = tmp_path / "full"
    full.mkdir()
    files = write_catalogue(_sample_table(), full, SOURCES, names, "fk5")
    assert files == {k: names[k] for k in ("catalog", "catalog-csv", "catalog-json", "regions")}
    assert all((full / f).is_file() for f in files.values())
    empty = tmp_path / "empty"
    empty.mkdir()
    files = write_catalogue(make_table(None), empty, SOURCES, names, "fk5")
    assert len(read_catalogue_csv(empty / files["catalog-csv"])) == 0
    vot = Table.read(empty / files["catalog"])
    assert len(vot) == 0 and vot.colnames == list(COLUMN_NAMES)
    assert json.loads((empty / files["catalog-json"]).read_text())["sources"] == []
    assert len(Regions.read(str(empty / files["regions"]), format="ds9")) == 0


def test_classes_from_elsewhere_get_groups(tmp_path: Path) -> None:
    """A catalogue with classes but no group_id (an external program's objects, each whole)
    is written with one group per multi-island row and -1 for the others."""
    table = _sample_table()
    table["class"] = np.array(["extended-multisland", "compact", "extended-multisland"])
    table["class_score"] = np.full(len(table), 0.9)
    done = with_group_column(table)
    assert "group_id" not in table.colnames  # the caller's table is left alone
    multi = np.asarray(done["class"]) == "extended-multisland"
    assert list(done["group_id"][multi]) == list(range(1, int(multi.sum()) + 1))
    assert np.all(done["group_id"][~multi] == -1)
    assert with_group_column(done) is done and with_group_column(make_table(None)).colnames == (
        list(COLUMN_NAMES)
    )
    names = {r.name: r.filename for r in CATALOGUE_RESULTS}
    files = write_catalogue(table, tmp_path, SOURCES, names, "fk5")
    doc = json.loads((tmp_path / files["catalog-json"]).read_text())
    assert [c["name"] for c in doc["columns"]][-3:] == ["class", "class_score", "group_id"]
    csv = Table.read(tmp_path / files["catalog-csv"], format="ascii.csv")
    assert list(csv["group_id"]) == list(done["group_id"])


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", head[16:24])
    return width, height


@pytest.mark.parametrize(("nx", "ny", "max_pixels"), [(200, 100, 1024), (300, 450, 100)])
def test_preview_aspect(tmp_path: Path, nx: int, ny: int, max_pixels: int) -> None:
    rng = np.random.default_rng(0)
    data = rng.standard_normal((ny, nx)).astype(np.float32)
    data[:5, :] = np.nan
    header = _wcs(nx, ny).to_header()
    header["BMAJ"] = header["BMIN"] = 6.0 / 3600.0
    fits.PrimaryHDU(data, header=header).writeto(tmp_path / "im.fits")
    image = load_image(tmp_path / "im.fits")
    t = _sample_table()
    path = write_preview(image, t, tmp_path / "p.png", max_pixels=max_pixels)
    width, height = _png_size(path)
    assert width / height == pytest.approx(nx / ny, rel=0.02)
    assert max(width, height) <= max(max_pixels, 600)
    # No sources at all is fine too.
    write_preview(image, make_table(None), tmp_path / "e.png")
    assert _png_size(tmp_path / "e.png")[0] > 0


def test_preview_draws_outlines_in_source_colours(tmp_path: Path) -> None:
    """The renderer paints each source's ellipse in its colour, at its position (y up)."""
    data = np.zeros((100, 200), dtype=np.float32)
    header = _wcs().to_header()
    header["BMAJ"] = header["BMIN"] = 6.0 / 3600.0
    fits.PrimaryHDU(data, header=header).writeto(tmp_path / "im.fits")
    image = load_image(tmp_path / "im.fits")
    t = _sample_table()
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    rgb = render(image, t, 1024, colors=colours)
    assert rgb.shape == (100, 200, 3)
    for (x, y), c in zip([(50, 40), (120, 60), (150, 20)], colours, strict=True):
        hit = np.argwhere(np.all(rgb == c, axis=2))
        rows, cols = 99 - hit[:, 0], hit[:, 1]  # PNG rows run top down
        assert hit.shape[0] >= 12
        assert abs(cols.mean() - x) < 1.0 and abs(rows.mean() - y) < 1.0
    # Default colour cyan; the flat image is the colour map's lowest colour.
    plain = render(image, t, 1024)
    assert int(np.all(plain == (0, 255, 255), axis=2).sum()) > 36
    assert tuple(plain[0, 0]) == (0, 0, 4)


def test_block_reduce() -> None:
    a = np.arange(20, dtype=np.float32).reshape(4, 5)
    a[0, 0] = np.nan
    r = block_reduce(a, 2)
    assert r.shape == (2, 3)
    assert r[0, 0] == pytest.approx((1 + 5 + 6) / 3)  # NaN ignored
    assert r[1, 2] == pytest.approx((14 + 19) / 2)  # edge block padded with NaN
    assert block_reduce(a, 1) is a
