"""The fast VOTable and CSV writers write the same bytes as astropy's writers."""

from __future__ import annotations

import math
from pathlib import Path

import astropy.units as u
import numpy as np
import pytest
from astropy.io.votable import parse_single_table
from astropy.table import MaskedColumn, Table

from caesar_rest.catalogue import writers
from caesar_rest.catalogue.writers import (
    VOTableMeta,
    VOTableParam,
    make_table,
    with_group_column,
    write_csv,
    write_votable,
)

STRINGS = ["", "a,b", 'q"x', " pad ", "\tt\t", "ü é", "<&>'\"", "line\nbreak", "nan", "-"]
FLOATS = [math.nan, math.inf, -math.inf, -0.0, 0.0, 1.0, 123.0, 1e16, 1e-5, 5e-324, 0.1, -2.5e300]
META = VOTableMeta(
    system="eq_FK5",
    equinox="J2000",
    infos=(
        ("app", "caesar"),
        ("options", '{"a": "<b> & \'c\'"}'),
        ("input_file", 'my "field" <1>.fits'),
    ),
    params=(
        VOTableParam("beam_major", 6.499999947851999, "arcsec", "instr.beam", "Beam major axis"),
        VOTableParam("beam_pa", 0.0, "deg", "instr.beam;pos.posAng", "A long description " * 8),
        VOTableParam("rms_median", math.nan, "Jy/beam", "stat.stdev", "left out (NaN)"),
        VOTableParam("rms", 8.952170901466161e-05, "Jy/beam", "stat.stdev", "Median rms"),
        VOTableParam("count", 3.0, "", "meta.number", "no unit"),
    ),
)


def _astropy_votable(table: Table, path: Path, meta: VOTableMeta) -> bytes:
    """What write_votable wrote before the fast path: astropy's from_table and writeto."""
    return writers._astropy_votable(table, path, meta, "tabledata").read_bytes()


def _edge_table(n: int) -> Table:
    """Every column kind the fast writers format, with awkward values."""
    rng = np.random.default_rng(7)
    t = Table()
    t["name"] = np.array([STRINGS[i % len(STRINGS)] for i in range(n)], dtype="U12")
    t["ra"] = np.array([FLOATS[i % len(FLOATS)] for i in range(n)])
    t["ra"].unit = u.deg
    t["ra"].meta["ucd"] = "pos.eq.ra;meta.main"
    t["ra"].description = "Right ascension <J2000> & more"
    t["dec"] = rng.normal(0, 10.0 ** rng.integers(-30, 30, n))
    t["flux"] = rng.normal(size=n)
    t["flux"].unit = u.Jy / u.beam
    t["area"] = rng.uniform(size=n)
    t["area"].unit = u.arcsec**2
    t["area"].description = "A description long enough to be wrapped over several lines " * 3
    t["x"] = rng.uniform(size=n)
    t["x"].unit = u.pix
    t["big"] = rng.integers(-(2**62), 2**62, n)
    t["i32"] = rng.integers(-(2**31), 2**31, n).astype(np.int32)
    t["i16"] = rng.integers(-100, 100, n).astype(np.int16)
    t["u8"] = rng.integers(0, 255, n).astype(np.uint8)
    t["ok"] = rng.uniform(size=n) > 0.5
    t["id"] = np.arange(n)
    return t


@pytest.mark.parametrize("n", [0, 1, 37])
def test_votable_bytes_equal_astropy(tmp_path: Path, n: int) -> None:
    t = _edge_table(n)
    ours = write_votable(t, tmp_path / "ours.vot", meta=META).read_bytes()
    assert writers._tabledata_votable(t, META) is not None  # the fast path was taken
    assert ours == _astropy_votable(t, tmp_path / "astropy.vot", META)
    back = parse_single_table(str(tmp_path / "ours.vot")).to_table(use_names_over_ids=True)
    assert back.colnames == t.colnames and len(back) == n
    for name in t.colnames:
        a, b = np.asarray(t[name]), np.asarray(back[name])
        if a.dtype.kind == "f":
            np.testing.assert_array_equal(a, b)
        elif a.dtype.kind == "U":  # the parser strips blanks (of astropy's files too)
            assert [v.strip() for v in a.tolist()] == b.tolist(), name
        else:
            assert a.tolist() == b.tolist(), name


def test_catalogue_votable_and_csv_bytes_equal_astropy(tmp_path: Path) -> None:
    """The schema's own table (units such as Jy/beam, pix; UCDs; descriptions; groups)."""
    t = with_group_column(make_table({"name": ["J1", ""], "ra": [1.5, math.nan], "flags": [0, 3]}))
    t["class"] = np.array(["compact", "extended-multisland"])
    t = with_group_column(t)
    assert write_votable(t, tmp_path / "a.vot", meta=META).read_bytes() == _astropy_votable(
        t, tmp_path / "b.vot", META
    )
    ours = write_csv(t, tmp_path / "a.csv").read_bytes()
    t.write(tmp_path / "b.csv", format="ascii.csv", overwrite=True)
    assert ours == (tmp_path / "b.csv").read_bytes()


@pytest.mark.parametrize("n", [0, 1, 37])
@pytest.mark.parametrize("chunk", [2048, 5])
def test_csv_bytes_equal_astropy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int, chunk: int
) -> None:
    monkeypatch.setattr(writers, "WRITE_CHUNK", chunk)  # 37 rows: 8 chunks, the last short
    t = _edge_table(n)
    assert writers._csv_text(t) is not None
    ours = write_csv(t, tmp_path / "ours.csv").read_bytes()
    t.write(tmp_path / "astropy.csv", format="ascii.csv", overwrite=True)
    assert ours == (tmp_path / "astropy.csv").read_bytes()


def test_other_tables_go_through_astropy(tmp_path: Path) -> None:
    """Masked, float32, formatted or described tables are left to astropy, same files."""
    t = _edge_table(5)
    masked = t.copy()
    masked["flux"] = MaskedColumn(masked["flux"], mask=[True, False, False, True, False])
    single = t.copy()
    single["flux"] = single["flux"].astype(np.float32)
    formatted = t.copy()
    formatted["flux"].format = ".3f"
    described = t.copy()
    described.meta["description"] = "a table"
    for other in (masked, single, formatted, described):
        assert writers._tabledata_votable(other, META) is None
        ours = write_votable(other, tmp_path / "o.vot", meta=META).read_bytes()
        assert ours == _astropy_votable(other, tmp_path / "a.vot", META)
    for other in (masked, formatted):
        assert writers._csv_text(other) is None
    # float32 in CSV: astropy prints tolist() values too, the fast path gives the same bytes.
    single.write(tmp_path / "a.csv", format="ascii.csv", overwrite=True)
    assert write_csv(single, tmp_path / "o.csv").read_bytes() == (tmp_path / "a.csv").read_bytes()


def test_double_text_is_numpy_str() -> None:
    """astropy prints a double with ``str(np.float64)``; the fast path uses ``repr(float)``."""
    rng = np.random.default_rng(3)
    bits = rng.integers(0, 2**63, 20_000, dtype=np.uint64) | (
        rng.integers(0, 2, 20_000, dtype=np.uint64) << np.uint64(63)
    )
    values = [*bits.view(np.float64).tolist(), *FLOATS, 1e15, 9999999999999998.0, 1e-4]
    for v in values:
        if math.isfinite(v):
            text = str(np.float64(v))
            assert writers._vo_double(v) == (text[:-2] if text.endswith(".0") else text)


@pytest.mark.parametrize("n", [0, 1, 37])
def test_json_in_chunks_is_the_whole_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n: int
) -> None:
    import json

    t = with_group_column(
        make_table({"name": ["J1", "", "J3"] * n, "ra": [1.5, math.nan, 2.0] * n})
    )
    t["class"] = np.array(["compact", "extended", "spurious"] * n)
    t = with_group_column(t)
    monkeypatch.setattr(writers, "WRITE_CHUNK", 4)
    ours = writers.write_json(t, tmp_path / "a.json").read_text(encoding="utf-8")
    whole = json.dumps(writers.table_to_json(t), allow_nan=False, separators=(",", ":")) + "\n"
    assert ours == whole and len(json.loads(ours)["sources"]) == 3 * n
