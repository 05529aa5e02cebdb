"""Tests of the sep app: option schema, command, extraction accuracy and the runner program."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from regions import Regions

from caesar_rest.apps import program
from caesar_rest.apps.base import CATALOGUE_RESULTS, OptionError
from caesar_rest.apps.sep_app import SepApp
from caesar_rest.apps.sep_run import extract_sources, main
from caesar_rest.catalogue.schema import (
    COLUMN_NAMES,
    FLAG_BLENDED,
    FLAG_EXTENDED,
    FLAG_TRUNCATED,
)
from caesar_rest.catalogue.writers import read_catalogue_csv
from caesar_rest.imaging import load_image

from tests.support.paths import SHARED_DATA

DATA_DIR = SHARED_DATA
REAL_IMAGE = DATA_DIR / "ScorpioS17Field.fits"


def _match(table: Table, src: Any) -> int:
    """Index of the catalogue row nearest to ``src``."""
    d = np.hypot(np.asarray(table["x"]) - src.x, np.asarray(table["y"]) - src.y)
    return int(np.argmin(d))


def _dist(table: Table, i: int, src: Any) -> float:
    return float(math.hypot(table["x"][i] - src.x, table["y"][i] - src.y))


def _pa_diff(a: float, b: float) -> float:
    """Smallest difference between two undirected axes, in degrees."""
    return abs((a - b + 90.0) % 180.0 - 90.0)


# --------------------------------------------------------------------------------------------
# The app description
# --------------------------------------------------------------------------------------------


def test_app_options_and_results() -> None:
    app = SepApp()
    assert app.name == "sep" and app.description
    names = [o.name for o in app.options]
    assert names == [
        "seedthr",
        "mergethr",
        "npixmin",
        "filter",
        "bkgbox",
        "bkgfilter",
        "globalbkg",
        "deblend-nthresh",
        "deblend-cont",
        "no-deblend",
        "bmaj",
        "bmin",
        "bpa",
        "save-bkgmap",
        "save-rmsmap",
        "no-preview",
        "classify",
    ]
    for opt in app.options:
        assert opt.description and opt.category, opt.name
        if not opt.is_flag:
            assert opt.min is not None and opt.max is not None, opt.name
    opts = app.option_map()
    assert opts["seedthr"].default == 5.0 and opts["mergethr"].default == 3.0
    assert opts["bkgbox"].default == 64 and opts["deblend-cont"].default == 0.005
    results = {r.name: r for r in app.results}
    for r in CATALOGUE_RESULTS:
        assert results[r.name] == r
    assert results["background-map"].filename == "background.fits"
    assert results["rms-map"].filename == "rms.fits"
    assert results["rms-map"].mime == "application/fits"
    with pytest.raises(OptionError):
        app.validate({"seedthr": -1})
    with pytest.raises(OptionError):
        app.validate({"deblend-cont": 2})


def test_command() -> None:
    app = SepApp()
    opts = app.validate({"seedthr": 6, "globalbkg": True, "no-preview": False})
    cmd = app.command(Path("/in/img.fits"), opts, Path("/out"))
    assert cmd == [
        sys.executable,
        "-m",
        "caesar_rest.apps.sep_run",
        "--input",
        "/in/img.fits",
        "--outdir",
        "/out",
        "--seedthr=6.0",
        "--globalbkg",
    ]
    # The runner reads back what the command says, and accepts every option of the app.
    input_path, out_dir, given, no_preview = program.parse_arguments(app, cmd[3:])
    assert (input_path, out_dir, no_preview) == (Path("/in/img.fits"), Path("/out"), False)
    assert app.validate(given) == {"seedthr": 6.0, "globalbkg": True}
    every = [f"--{o.name}" if o.is_flag else f"--{o.name}={o.default}" for o in app.options]
    _, _, given, _ = program.parse_arguments(app, ["--input", "x", "--outdir", "y", *every])
    assert set(given) == {o.name for o in app.options}
    with pytest.raises(OptionError, match="nosuch"):
        program.parse_arguments(app, ["--input", "x", "--outdir", "y", "--nosuch=1"])


# --------------------------------------------------------------------------------------------
# Extraction on synthetic images
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rotation", [0.0, 25.0])
def test_standard_field(
    synth_factory: Callable[..., Any], standard_sources: list[Any], rotation: float
) -> None:
    syn = synth_factory(rotation_deg=rotation)
    image = load_image(syn.path)
    result = extract_sources(image, program.resolve_options(SepApp(), {}))
    t = result.table
    assert t.colnames == list(COLUMN_NAMES)
    # Every true source found once, nothing else (no detections from the NaN border).
    assert len(t) == len(syn.sources)
    matched = {_match(t, s) for s in syn.sources}
    assert len(matched) == len(syn.sources)
    b = syn.nan_border
    n = syn.shape[0]
    assert np.all((t["x"] > b) & (t["x"] < n - 1 - b) & (t["y"] > b) & (t["y"] < n - 1 - b))

    bright, _, faint, ellip, pair_a, pair_b, edge = standard_sources
    for s in syn.sources:
        i = _match(t, s)
        limit = 1.0 if s in (faint, edge) else 0.5  # S/N 15 and a truncated source
        assert _dist(t, i, s) < limit, s
        assert t["snr"][i] == pytest.approx(s.peak / syn.rms, rel=0.15), s
        assert t["local_rms"][i] == pytest.approx(syn.rms, rel=0.15)

    i = _match(t, bright)
    assert t["flux"][i] == pytest.approx(syn.flux(bright), rel=0.10)
    assert t["peak_flux"][i] == pytest.approx(bright.peak, rel=0.06)
    assert t["flags"][i] == 0
    assert t["maj"][i] == pytest.approx(syn.beam[0], rel=0.15)
    # The error model matches reality roughly: errors small but not absurdly small.
    assert 0.005 < t["x_err"][i] < 0.1 and 0.005 < t["ra_err"][i] / 1.5 < 0.1
    assert 0 < t["flux_err"][i] < 0.05 * t["flux"][i]

    i = _match(t, ellip)
    assert _pa_diff(float(t["pa"][i]), ellip.pa) < 3.0
    assert t["maj"][i] == pytest.approx(ellip.maj, rel=0.15)
    assert t["min"][i] == pytest.approx(ellip.min, rel=0.2)
    assert t["flux"][i] == pytest.approx(syn.flux(ellip), rel=0.10)
    assert t["flags"][i] & FLAG_EXTENDED

    ia, ib = _match(t, pair_a), _match(t, pair_b)
    assert t["island_id"][ia] == t["island_id"][ib]
    assert {int(t["component_id"][ia]), int(t["component_id"][ib])} == {0, 1}
    assert t["component_id"][ia] == 0  # the brighter one first
    assert t["flags"][ia] & FLAG_BLENDED and t["flags"][ib] & FLAG_BLENDED

    assert t["flags"][_match(t, edge)] & FLAG_TRUNCATED
    others = [k for k in range(len(t)) if k != _match(t, edge)]
    assert not np.any(np.asarray(t["flags"])[others] & FLAG_TRUNCATED)

    # Island ids are 0..K-1 and every (island, component) pair is unique.
    assert set(t["island_id"]) == set(range(len(set(t["island_id"]))))
    assert len({(a, c) for a, c in zip(t["island_id"], t["component_id"], strict=True)}) == len(t)
    # Sky positions agree with the WCS.
    ra, dec = image.wcs.pixel_to_world_values(t["x"], t["y"])
    np.testing.assert_allclose(t["ra"], ra, atol=1e-9)
    np.testing.assert_allclose(t["dec"], dec, atol=1e-9)
    assert all(str(nm).startswith("J") for nm in t["name"])
    assert len(set(t["name"])) == len(t)


def test_options_change_behaviour(
    synth_factory: Callable[..., Any], standard_sources: list[Any]
) -> None:
    syn = synth_factory(offset=5e-4)  # a constant background of 5 sigma
    image = load_image(syn.path)
    pair = standard_sources[4:6]

    for opts in ({}, {"globalbkg": True}, {"filter": True}):
        t = extract_sources(image, program.resolve_options(SepApp(), opts)).table
        assert len(t) == len(syn.sources), opts
        assert np.median(t["local_bkg"]) == pytest.approx(5e-4, abs=1e-4), opts

    t = extract_sources(image, program.resolve_options(SepApp(), {"no-deblend": True})).table
    assert len(t) == len(syn.sources) - 1  # the pair is one source
    i = _match(t, pair[0])
    assert t["component_id"][i] == 0

    t = extract_sources(image, program.resolve_options(SepApp(), {"seedthr": 100})).table
    assert len(t) == 1  # only the S/N 200 source


def test_runner_outputs(synth_factory: Callable[..., Any], tmp_path: Path) -> None:
    syn = synth_factory()
    out = tmp_path / "out"
    rc = main(["--input", str(syn.path), "--outdir", str(out), "--save-bkgmap", "--save-rmsmap"])
    assert rc == 0
    for name in ("catalog.vot", "catalog.csv", "catalog.json", "catalog.reg", "preview.png"):
        assert (out / name).is_file(), name
    t = read_catalogue_csv(out / "catalog.csv")
    assert len(t) == len(syn.sources)
    assert len(Regions.read(str(out / "catalog.reg"), format="ds9")) == len(t)
    assert len(json.loads((out / "catalog.json").read_text())["sources"]) == len(t)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["app"] == "sep" and summary["n_sources"] == len(t)
    assert summary["image"]["shape"] == [256, 256]
    assert summary["image"]["beam"]["bmaj_arcsec"] == pytest.approx(6.0)
    assert summary["rms_median"] == pytest.approx(syn.rms, rel=0.15)
    assert {"load", "background", "extract", "total"} <= set(summary["timings_s"])
    with fits.open(out / "rms.fits") as hdul:
        rms = hdul[0].data
        assert rms.shape == (256, 256)
        assert np.nanmedian(rms) == pytest.approx(syn.rms, rel=0.15)
        assert np.isnan(rms[0, 0])  # blank pixels stay blank
        assert hdul[0].header["CTYPE1"] == "RA---SIN"
    with fits.open(out / "background.fits") as hdul:
        assert abs(np.nanmedian(hdul[0].data)) < 0.3 * syn.rms


def test_runner_empty_catalogue(synth_factory: Callable[..., Any], tmp_path: Path) -> None:
    syn = synth_factory(sources=[])
    out = tmp_path / "out"
    assert main(["--input", str(syn.path), "--outdir", str(out), "--no-preview"]) == 0
    assert not (out / "preview.png").exists()
    assert len(read_catalogue_csv(out / "catalog.csv")) == 0
    assert len(Table.read(out / "catalog.vot")) == 0
    assert json.loads((out / "catalog.json").read_text())["sources"] == []
    assert len(Regions.read(str(out / "catalog.reg"), format="ds9")) == 0
    assert json.loads((out / "summary.json").read_text())["n_sources"] == 0


def test_runner_bad_options(
    synth_factory: Callable[..., Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    syn = synth_factory()
    base = ["--input", str(syn.path), "--outdir", str(tmp_path / "o")]
    assert main([*base, "--seedthr=-3"]) == 2
    assert "seedthr" in capsys.readouterr().err
    assert main([*base, "--nosuch=1"]) == 2
    assert "nosuch" in capsys.readouterr().err
    assert main([*base, "--npixmin=abc"]) == 2
    assert "npixmin" in capsys.readouterr().err
    assert main(["--input", str(tmp_path / "missing.fits"), "--outdir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------------------------
# The program as a subprocess
# --------------------------------------------------------------------------------------------


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "caesar_rest.apps.sep_run", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)  # noqa: S603


def test_beam_missing_then_given(synth_factory: Callable[..., Any], tmp_path: Path) -> None:
    syn = synth_factory(with_beam=False)
    out = tmp_path / "o"
    proc = _run("--input", str(syn.path), "--outdir", str(out), "--no-preview")
    assert proc.returncode == 2, proc.stderr
    assert "no beam in header (BMAJ/BMIN); give bmaj/bmin options" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = _run(
        "--input", str(syn.path), "--outdir", str(out), "--no-preview", "--bmaj=6", "--bmin", "6"
    )
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["image"]["beam_source"] == "fallback"
    assert summary["n_sources"] == len(syn.sources)


def test_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "t.fits"
    cols = fits.ColDefs([fits.Column(name="a", format="E", array=np.arange(3.0))])
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(cols)]).writeto(path)
    proc = _run("--input", str(path), "--outdir", str(tmp_path / "o"))
    assert proc.returncode == 2
    assert "no image data" in proc.stderr


def test_real_image(tmp_path: Path) -> None:
    out = tmp_path / "real"
    proc = _run("--input", str(REAL_IMAGE.resolve()), "--outdir", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "sources with peak >=" in proc.stdout
    t = read_catalogue_csv(out / "catalog.csv")
    raw = Table.read(out / "catalog.csv", format="ascii.csv")
    assert raw.colnames == [*COLUMN_NAMES, "class", "class_score", "group_id"]
    assert len(t) == 59  # a deterministic run
    assert np.all((t["x"] >= 0) & (t["x"] <= 999) & (t["y"] >= 0) & (t["y"] <= 999))
    assert np.all(np.isfinite(t["ra"]) & np.isfinite(t["dec"]))
    assert np.all(t["snr"] >= 5.0)
    assert np.all(t["maj"] >= t["min"])
    assert (out / "preview.png").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_sources"] == len(t)
    assert summary["image"]["beam"]["bmaj_arcsec"] == pytest.approx(6.5, abs=1e-3)


def test_pixel_stack_overflow_is_retried(
    synth_factory: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import sep

    from caesar_rest.apps import sep_run

    syn = synth_factory()
    calls: list[int] = []
    real = sep.set_extract_pixstack

    def spy(n: int) -> None:
        calls.append(n)
        real(n)

    monkeypatch.setattr(sep_run, "MIN_PIXSTACK", 1000)
    monkeypatch.setattr(sep_run.sep, "set_extract_pixstack", spy)
    # A threshold of 0.1 sigma joins most of the image into one huge island.
    result = extract_sources(
        load_image(syn.path), program.resolve_options(SepApp(), {"mergethr": 0.1})
    )
    assert calls[-1] == 256 * 256 and len(calls) == 2
    assert result.n_islands >= 1
