"""Cross-matching two catalogues: matches, unmatched, flux ratios, offsets, plot and CLI."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from caesar_rest.catalogue.compare import (
    compare_catalogues,
    cross_match,
    default_radius,
    read_catalogue,
    robust_stats,
)
from caesar_rest.catalogue.writers import make_table, write_csv, write_json, write_votable
from caesar_rest.cli import main as cli_main

DEC0 = -43.0
ARCSEC = 1.0 / 3600.0


def _catalogue(ra: np.ndarray, dec: np.ndarray, flux: np.ndarray, maj: float = 6.5) -> Table:
    n = len(ra)
    return make_table(
        {
            "name": [f"S{i}" for i in range(n)],
            "ra": ra,
            "dec": dec,
            "flux": flux,
            "peak_flux": flux,
            "maj": np.full(n, maj),
            "min": np.full(n, maj),
        }
    )


@pytest.fixture
def pair() -> tuple[Table, Table]:
    """A: 50 sources on a grid 60" apart; B: 45 of them shifted 0.5" east, 0.2" north, flux
    x1.1 (+-2% noise), plus 5 sources of its own."""
    rng = np.random.default_rng(3)
    gx, gy = np.meshgrid(np.arange(10), np.arange(5))
    dec_a = DEC0 + gy.ravel() * 60 * ARCSEC
    ra_a = 250.0 + gx.ravel() * 60 * ARCSEC / math.cos(math.radians(DEC0))
    flux_a = rng.uniform(1e-3, 1e-1, ra_a.size)
    a = _catalogue(ra_a, dec_a, flux_a)
    keep = np.arange(45)
    ra_b = ra_a[keep] + 0.5 * ARCSEC / np.cos(np.radians(dec_a[keep]))
    dec_b = dec_a[keep] + 0.2 * ARCSEC
    flux_b = flux_a[keep] * 1.1 * (1 + rng.normal(0, 0.02, keep.size))
    extra_ra = 251.0 + np.arange(5) * 0.01
    b = _catalogue(
        np.concatenate([ra_b, extra_ra]),
        np.concatenate([dec_b, np.full(5, DEC0)]),
        np.concatenate([flux_b, np.full(5, 1e-2)]),
        maj=8.0,
    )
    return a, b


def test_compare_report(pair: tuple[Table, Table]) -> None:
    a, b = pair
    result = compare_catalogues(a, b, beam_arcsec=6.5, labels=("a.csv", "b.csv"))
    assert (result.radius_arcsec, result.radius_rule) == (6.5, "beam FWHM")
    report = result.to_dict(a, b)
    assert (report["n_a"], report["n_b"], report["n_matched"]) == (50, 50, 45)
    assert (report["n_unmatched_a"], report["n_unmatched_b"]) == (5, 5)
    assert report["unmatched_a"] == [f"S{i}" for i in range(45, 50)]
    assert report["unmatched_b"] == [f"S{i}" for i in range(45, 50)]
    assert report["matched_fraction_a"] == pytest.approx(0.9)
    flux = report["flux_ratio_b_over_a"]
    assert flux["n"] == 45 and flux["median"] == pytest.approx(1.1, abs=0.01)
    assert flux["robust_scatter"] == pytest.approx(0.022, abs=0.01)
    off = report["offset_arcsec"]
    assert off["median_east"] == pytest.approx(0.5, abs=1e-3)
    assert off["median_north"] == pytest.approx(0.2, abs=1e-3)
    assert off["median_separation"] == pytest.approx(math.hypot(0.5, 0.2), abs=1e-3)
    json.dumps(report)  # serialisable as it is

    # Without a beam: 1.5 x the larger median maj (8" in B).
    assert default_radius(a, b) == (12.0, "1.5 x the larger median maj")
    tight = compare_catalogues(a, b, radius_arcsec=0.4)
    assert tight.n_matched == 0 and tight.radius_rule == "given"


def test_one_to_one_closest_first() -> None:
    ra_a, dec_a = np.array([10.0]), np.array([0.0])
    ra_b = np.array([10.0 + 2 * ARCSEC, 10.0 + 1 * ARCSEC, np.nan])
    dec_b = np.array([0.0, 0.0, 0.0])
    ia, ib, sep = cross_match(ra_a, dec_a, ra_b, dec_b, 5.0)
    assert ia.tolist() == [0] and ib.tolist() == [1]
    assert sep[0] == pytest.approx(1.0, rel=1e-6)
    # Two A sources competing for one B: the closer one wins; across RA = 0 works too.
    ia, ib, sep = cross_match([359.9999, 0.0004], [0.0, 0.0], [0.00001], [0.0], 5.0)
    assert ia.tolist() == [0] and ib.tolist() == [0] and sep[0] == pytest.approx(0.396, abs=1e-3)
    empty = cross_match([], [], [1.0], [1.0], 5.0)
    assert all(len(x) == 0 for x in empty)


def test_robust_stats_and_bad_inputs(pair: tuple[Table, Table]) -> None:
    assert robust_stats([1.0, 2.0, 3.0, np.nan]) == {
        "n": 3,
        "median": 2.0,
        "robust_scatter": 1.4826,
    }
    assert robust_stats([]) == {"n": 0, "median": None, "robust_scatter": None}
    a, b = pair
    with pytest.raises(ValueError, match="positive"):
        compare_catalogues(a, b, radius_arcsec=-1.0)
    nosize = make_table({"ra": [1.0], "dec": [1.0]})
    with pytest.raises(ValueError, match="radius"):
        default_radius(nosize, nosize)
    # Non-positive fluxes give no ratio.
    a2 = a.copy()
    a2["flux"][0] = 0.0
    assert compare_catalogues(a2, b, 6.5).to_dict()["flux_ratio_b_over_a"]["n"] == 44
    # Empty catalogues compare to nothing without error.
    empty = make_table(None)
    rep = compare_catalogues(empty, b, 6.5).to_dict(empty, b)
    assert rep["n_matched"] == 0 and rep["matched_fraction_a"] is None


def test_read_formats(pair: tuple[Table, Table], tmp_path: Path) -> None:
    a, _ = pair
    for path in (
        write_csv(a, tmp_path / "a.csv"),
        write_votable(a, tmp_path / "a.vot"),
        write_json(a, tmp_path / "a.json"),
    ):
        t = read_catalogue(path)
        assert len(t) == len(a)
        np.testing.assert_allclose(t["ra"], a["ra"])
        np.testing.assert_allclose(t["flux"], a["flux"])
    (tmp_path / "x.txt").write_text("hello")
    with pytest.raises(ValueError, match="unknown catalogue format"):
        read_catalogue(tmp_path / "x.txt")
    (tmp_path / "bad.json").write_text('{"rows": []}')
    with pytest.raises(ValueError, match="sources"):
        read_catalogue(tmp_path / "bad.json")


def test_cli(pair: tuple[Table, Table], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = pair
    pa = write_csv(a, tmp_path / "a.csv")
    pb = write_votable(b, tmp_path / "b.vot")
    plot = tmp_path / "cmp.png"
    rc = cli_main(["compare", str(pa), str(pb), "--radius", "6.5", "--plot", str(plot), "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n_matched"] == 45 and report["radius_arcsec"] == 6.5
    assert report["plot"] == str(plot)
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000

    assert cli_main(["compare", str(pa), str(pb)]) == 0
    text = capsys.readouterr().out
    assert "matched: 45 (90.0% of A, 90.0% of B)" in text
    assert "match radius: 12 arcsec (1.5 x the larger median maj)" in text
    assert "flux ratio B/A: median 1.1" in text

    assert cli_main(["compare", str(pa), str(tmp_path / "missing.csv")]) == 2
    assert "error:" in capsys.readouterr().err
    assert cli_main(["compare", str(pa), str(pb), "--radius", "0"]) == 2
