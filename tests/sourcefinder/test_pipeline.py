"""End-to-end tests: the pipeline, tiling, the caesar app and program, the real images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from caesar_rest.apps.base import OptionError
from caesar_rest.apps.caesar_app import CaesarApp
from caesar_rest.apps.caesar_run import main
from caesar_rest.apps.registry import default_registry
from caesar_rest.catalogue.writers import read_catalogue_csv
from caesar_rest.imaging import ImageError
from caesar_rest.sourcefinder import FinderOptions, build_catalogues, find_sources, from_legacy
from caesar_rest.sourcefinder.options import (
    EXTENSION_OPTIONS,
    FitSettings,
    ineffective_given,
)

from tests.sourcefinder.sf_synth import BEAM_SIGMA, RMS, gaussian, point_sources, write
from tests.support.legacy_options import (
    describe_like_legacy,
    expected_caesar_options,
    read_legacy_caesar_options,
)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
FIT = FinderOptions(fit=FitSettings(enabled=True))


def _field(n: int = 300, seed: int = 3) -> tuple[np.ndarray, list[tuple[float, float, float]]]:
    rng = np.random.default_rng(seed)
    srcs: list[tuple[float, float, float]] = []
    while len(srcs) < 25:
        x, y = rng.uniform(15, n - 15, 2)
        if all(np.hypot(x - a, y - b) > 14 for a, b, _ in srcs):
            srcs.append((float(x), float(y), float(rng.uniform(8, 60) * RMS)))
    return point_sources(n, srcs, seed=seed), srcs


def test_pipeline_finds_and_measures_point_sources(tmp_path: Path) -> None:
    img, srcs = _field()
    path = write(tmp_path / "f.fits", img)
    res = find_sources(path, FIT)
    cat = build_catalogues(res).components
    assert len(cat) == len(srcs)
    x, y = np.asarray(cat["x"]), np.asarray(cat["y"])
    ratio = []
    for sx, sy, a in srcs:
        d = np.hypot(x - sx, y - sy)
        j = int(np.argmin(d))
        assert d[j] < 1.0
        ratio.append(cat["flux"][j] / a)  # point sources: flux (Jy) = peak (Jy/beam)
    assert abs(float(np.median(ratio)) - 1.0) < 0.03
    assert set(res.timings) >= {"background", "compact", "fit", "total"}


def test_nan_border_handled(tmp_path: Path) -> None:
    img, _ = _field(seed=8)
    img[:, :20] = np.nan
    img[:25, :] = np.nan
    img += gaussian(300, 23.0, 150.0, 40 * RMS, BEAM_SIGMA, BEAM_SIGMA, 0.0)  # cut by the border
    path = write(tmp_path / "nan.fits", img)
    res = find_sources(path, FIT)
    cats = build_catalogues(res)
    cat = cats.components
    for col in ("x", "y", "ra", "dec", "flux", "peak_flux", "local_rms"):
        assert np.isfinite(np.asarray(cat[col])).all(), col
    assert (np.asarray(cat["x"]) >= 19.5).all() and (np.asarray(cat["y"]) >= 24.5).all()
    edge = np.hypot(np.asarray(cat["x"]) - 23, np.asarray(cat["y"]) - 150) < 3
    assert edge.sum() == 1 and (cat["flags"][edge][0] & 2)  # FLAG_TRUNCATED


def test_tiled_equals_untiled(tmp_path: Path) -> None:
    img, _ = _field(n=600, seed=5)
    img += gaussian(600, 300.0, 300.0, 8 * RMS, 12.0, 8.0, 0.4)  # extended, across tiles
    path = write(tmp_path / "t.fits", img)
    # The compact pipeline (background, islands, nested sources, fits) is exactly the same.
    opts = FIT.with_(extended={"enabled": False})
    plain = build_catalogues(find_sources(path, opts)).components
    tiled_res = find_sources(path, opts.with_(tile_split=True, tile_size=200, nproc=2))
    assert tiled_res.n_tiles == 9
    tiled = build_catalogues(tiled_res).components
    assert len(tiled) == len(plain)
    for col in ("x", "y", "flux", "peak_flux", "maj", "island_id", "component_id"):
        assert np.allclose(np.asarray(tiled[col]), np.asarray(plain[col]), rtol=1e-6), col
    # With the extended search the wavelet noise is estimated per tile: the fitted point
    # sources still agree.
    plain = build_catalogues(find_sources(path, FIT)).components
    tiled = build_catalogues(find_sources(path, FIT.with_(tile_split=True, tile_size=200)))
    tiled = tiled.components
    fp = plain[np.asarray(plain["fitted"]) & (np.asarray(plain["npix"]) < 100)]
    ft = tiled[np.asarray(tiled["fitted"]) & (np.asarray(tiled["npix"]) < 100)]
    assert len(fp) == len(ft) >= 20
    assert np.allclose(np.sort(np.asarray(fp["flux"])), np.sort(np.asarray(ft["flux"])), rtol=1e-6)


def test_tiled_run_of_large_island(tmp_path: Path) -> None:
    # Small tiles with no room for the island: it is cut and merged on the master.
    n = 500
    img = point_sources(n, [(60.0, 60.0, 30 * RMS)], seed=2)
    img += gaussian(n, 250.0, 250.0, 10 * RMS, 80.0, 50.0, 0.3)
    path = write(tmp_path / "e.fits", img)
    # A global background keeps the blob; small boxes keep the compact margins small (78 px),
    # but the extended search widens them to 3 x its largest scale (192 px): the tiles then
    # hold the island, found as one on the master. (The compact search alone, without
    # that margin, splits this island over the tiles: 5 islands against 2, before issue 16
    # too.)
    base = FIT.with_(background={"local": False, "box": 20, "box_in_beams": False})
    plain = build_catalogues(find_sources(path, base))
    res = find_sources(path, base.with_(tile_split=True, tile_size=100))
    tiled = build_catalogues(res)
    assert res.n_tiles == 25
    assert len(tiled.islands) == len(plain.islands)
    big_t = int(np.argmax(tiled.islands["flux"]))
    big_p = int(np.argmax(plain.islands["flux"]))
    assert tiled.islands["flux"][big_t] == pytest.approx(plain.islands["flux"][big_p], rel=0.05)


def test_missing_beam_fallback_or_error(tmp_path: Path) -> None:
    img, _ = _field(n=128)
    path = write(tmp_path / "nobeam.fits", img, with_beam=False)
    with pytest.raises(ImageError, match="beam"):
        find_sources(path, FIT)
    res = find_sources(path, from_legacy({"bmaj": 6.0, "bmin": 6.0, "fitsources": True}))
    assert res.image.beam_source == "fallback" and res.beam.area_pix == pytest.approx(18.13, 0.01)


# --------------------------------------------------------------------------------------------
# The app and its program
# --------------------------------------------------------------------------------------------


def test_app_options_match_the_predecessor() -> None:
    app = CaesarApp()
    assert "caesar" in default_registry().names()
    names = [o.name for o in app.options]
    # The predecessor's 156 options (tests/support/data, transcribed from its code), in its
    # order, with kind, default, bounds, values, category and "advanced"; then the extensions.
    legacy = read_legacy_caesar_options()
    kinds = [r.kind for r in legacy]
    assert len(legacy) == 156 and (kinds.count("flag"), kinds.count("enum")) == (61, 12)
    assert sum(r.advanced for r in legacy) == 50
    assert [describe_like_legacy(o) for o in app.options[:156]] == expected_caesar_options()
    assert names[156:] == [*(o.name for o in EXTENSION_OPTIONS), "classify"]
    assert len(names) == len(set(names))
    desc = app.describe()
    assert desc["seedthr"]["default"] == 5.0 and desc["seedthr"]["effective"] is True
    assert desc["fit-minimizer"]["effective"] is False
    assert desc["bkgestimator"]["allowed_values"] == ["Mean", "Median", "BiWeight", "ClippedMedian"]
    assert {
        "catalog",
        "catalog-csv",
        "catalog-json",
        "components",
        "components-json",
        "components-csv",
        "islands-dat",
        "components-dat",
        "preview",
    } <= {r.name for r in app.results}
    with pytest.raises(OptionError):
        app.validate({"seedthr": -1})
    opts = from_legacy(app.validate({"no-nestedsearch": True, "fit-maxcomponents": 5}))
    assert not opts.nested.enabled and opts.fit.max_components == 5
    assert ineffective_given({"fit-minimizer": "Minuit", "seedthr": 4.0}) == ["fit-minimizer"]
    cmd = app.command(Path("in.fits"), {"seedthr": 4.0, "fitsources": True}, Path("out"))
    assert cmd[-2:] == ["--seedthr=4.0", "--fitsources"]


def test_program_writes_every_result(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    img, srcs = _field(n=200, seed=4)
    path = write(tmp_path / "in.fits", img)
    out = tmp_path / "out"
    rc = main(
        [
            "--input",
            str(path),
            "--outdir",
            str(out),
            "--fitsources",
            "--save-bkgmap",
            "--save-residualmap",
            "--fit-minimizer=Minuit",
            "--no-preview",
        ]
    )
    assert rc == 0
    log = capsys.readouterr().out
    assert log.count("without effect") == 1 and "fit-minimizer" in log
    app = CaesarApp()
    written = {r.name for r in app.results if (out / r.filename).is_file()}
    assert {
        "catalog",
        "catalog-csv",
        "catalog-json",
        "regions",
        "components",
        "components-json",
        "components-csv",
        "components-dat",
        "islands-dat",
        "summary",
        "background-map",
        "residual-map",
    } <= written
    cat = read_catalogue_csv(out / "catalog.csv")
    assert len(cat) >= len(srcs) - 2
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_components_fitted"] == len(cat) and "total" in summary["timings_s"]
    dat = (out / "catalog.dat").read_text().splitlines()
    assert dat[1].startswith("# name\tiauName\tnpix") and dat[2].startswith("S0\t")
    comp = (out / "catalog_fitcomp.dat").read_text().splitlines()
    assert len(comp) == 2 + len(cat)
    resid = fits.getdata(out / "residual.fits")
    assert np.nanstd(resid) < 1.5 * RMS  # the fitted models remove the sources
    doc = json.loads((out / "components.json").read_text())
    assert len(doc["components"]) == len(cat) and doc["metadata"]["beam_area_pix"] > 0


def test_program_bad_input(tmp_path: Path) -> None:
    assert main(["--input", str(tmp_path / "none.fits"), "--outdir", str(tmp_path)]) == 2
    assert main(["--input", "x.fits", "--outdir", str(tmp_path), "--seedthr=abc"]) == 2


# --------------------------------------------------------------------------------------------
# Real images
# --------------------------------------------------------------------------------------------


#: Deterministic runs with fitting: islands, components, fitted components, median rms (Jy/beam).
REAL_IMAGE_RESULTS = {
    "ScorpioS17Field.fits": (76, 100, 71, 8.952170901466161e-05),
    "ScorpioExtendedSourceField.fits": (39, 51, 31, 7.594723138026893e-05),
}


@pytest.mark.parametrize("name", ["ScorpioS17Field.fits", "ScorpioExtendedSourceField.fits"])
def test_real_images(name: str) -> None:
    res = find_sources(DATA / name, FIT)
    cats = build_catalogues(res)
    ny, nx = res.image.shape
    n_islands, n_components, n_fitted, median_rms = REAL_IMAGE_RESULTS[name]
    assert (len(cats.islands), len(cats.components)) == (n_islands, n_components)
    assert np.asarray(cats.components["fitted"]).sum() == n_fitted
    for tab in (cats.components, cats.islands):
        x, y = np.asarray(tab["x"]), np.asarray(tab["y"])
        assert ((x >= -0.5) & (x <= nx - 0.5) & (y >= -0.5) & (y <= ny - 0.5)).all()
        assert np.isfinite(np.asarray(tab["ra"])).all()
    assert res.sources.stats["median_rms"] == pytest.approx(median_rms, rel=1e-6)


def test_fitting_is_on_by_default_and_deblends_a_single_peaked_pair(tmp_path: Path) -> None:
    # Two point sources 0.9 beam FWHM apart: the app's defaults fit them (no fitsources
    # needed) and the catalogue has one row per source with its flux; the predecessor's
    # default (no-fitsources) one island row.
    img = point_sources(48, [(22.0, 24.0, 100 * RMS), (24.8, 26.2, 50 * RMS)], seed=1)
    path = write(tmp_path / "pair.fits", img)
    assert from_legacy({}).fit.enabled and not from_legacy({"no-fitsources": True}).fit.enabled
    assert from_legacy({"fitsources": True, "no-fitsources": True}).fit.enabled
    comps = build_catalogues(find_sources(path, from_legacy({}))).components
    assert len(comps) == 2
    order = np.argsort(-np.asarray(comps["flux"]))
    assert np.allclose(np.asarray(comps["x"])[order], [22.0, 24.8], atol=0.1)
    assert np.allclose(np.asarray(comps["flux"])[order] / RMS, [100, 50], rtol=0.05)
    nofit = build_catalogues(find_sources(path, from_legacy({"no-fitsources": True})))
    assert len(nofit.components) == 1
    single = build_catalogues(find_sources(path, from_legacy({"fit-nodeblend": True})))
    assert len(single.components) == 1


def test_components_json_is_streamed_in_chunks_with_the_bytes_of_the_whole_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from caesar_rest.sourcefinder import catalogue

    img, _ = _field()
    cats = build_catalogues(find_sources(write(tmp_path / "f.fits", img), FIT))
    cats.components["class"] = np.full(len(cats.components), "compact")  # added later: not in it
    whole = catalogue.write_components_json(cats.components_json, tmp_path / "whole.json")
    monkeypatch.setattr(catalogue, "JSON_CHUNK", 7)  # 25 rows: 4 chunks, the last one short
    streamed = cats.write_components_json(tmp_path / "streamed.json")
    assert streamed.read_bytes() == whole.read_bytes()
    doc = json.loads(whole.read_text())
    assert len(doc["components"]) == 25 and "class" not in doc["components"][0]
    assert doc["columns"][0]["name"] == cats.components.colnames[0]


def test_a_job_sent_early_with_a_nan_field_is_the_same_job() -> None:
    from caesar_rest.sourcefinder.pipeline import _same_job

    nan_opts = from_legacy({"seedthr": 5.0})
    a = (nan_opts, float("nan"), (1, 2))
    assert a != (nan_opts, float("nan"), (1, 2))  # == alone would abort the run
    assert _same_job(a, (nan_opts, float("nan"), (1, 2)))
    assert not _same_job(a, (nan_opts, float("nan"), (1, 3)))
