"""The aegean app: option schema (the predecessor's nine), conversion, and a job on a real image."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from caesar_rest.apps.aegean_app import AegeanApp
from caesar_rest.apps.aegean_run import FINDER, main
from caesar_rest.apps.base import OptionError
from caesar_rest.apps.program import parse_arguments, run
from caesar_rest.catalogue.schema import FLAG_BLENDED, FLAG_EXTENDED, FLAG_TRUNCATED
from caesar_rest.catalogue.writers import read_catalogue_csv

from tests.support.app_jobs import assert_refused, check_outputs, job_log, run_job, service, upload

#: The predecessor's aegean options: kind, default, min, max, category (legacy notes §4.4).
LEGACY = {
    "save-bkgmap": ("none", None, None, None, "OUTPUT"),
    "save-rmsmap": ("none", None, None, None, "OUTPUT"),
    "bkgbox": ("int", 100, 5, 10000, "IMGBKG"),
    "bkggrid": ("int", 20, 5, 1000, "IMGBKG"),
    "seedthr": ("float", 5.0, 0, 10000, "COMPACT-SOURCES"),
    "mergethr": ("float", 2.6, 0, 10000, "COMPACT-SOURCES"),
    "fit-maxcomponents": ("int", 3, 0, 100, "COMPACT-SOURCES"),
    "no-logredir": ("none", None, None, None, "RUN"),
    "ncores": ("int", 1, 1, 100, "RUN"),
}


def test_legacy_options_kept() -> None:
    app = AegeanApp()
    opts = app.option_map()
    for name, (kind, default, lo, hi, category) in LEGACY.items():
        o = opts[name]
        assert (o.type, o.category) == (kind, category), name
        if kind != "none":
            assert (o.default, o.min, o.max) == (default, lo, hi), name
    assert opts["fit-maxcomponents"].subcategory == "FITTING"
    assert opts["no-logredir"].effective is False  # accepted, no effect
    assert opts["ncores"].effective is True
    described = app.describe()
    assert described["bkgbox"]["default"] == 100 and described["bkgbox"]["max"] == 10000
    names = {r.name for r in app.results}
    assert {"catalog", "regions", "preview", "preview-thumb", "rms-map"} <= names


def test_validation_and_command() -> None:
    app = AegeanApp()
    opts = app.validate({"seedthr": "6", "ncores": 2, "save-rmsmap": True, "no-logredir": True})
    cmd = app.command(Path("/in/img.fits"), opts, Path("/out"))
    assert cmd[:3] == [sys.executable, "-m", "caesar_rest.apps.aegean_run"]
    assert cmd[3:] == [
        "--input",
        "/in/img.fits",
        "--outdir",
        "/out",
        "--save-rmsmap",
        "--seedthr=6.0",
        "--no-logredir",
        "--ncores=2",
    ]
    # The program reads back what the command says.
    input_path, out_dir, given, _ = parse_arguments(app, cmd[3:])
    assert (input_path, out_dir) == (Path("/in/img.fits"), Path("/out"))
    assert app.validate(given) == {
        "save-rmsmap": True,
        "seedthr": 6.0,
        "no-logredir": True,
        "ncores": 2,
    }
    for bad, name in (
        ({"bkgbox": 4}, "bkgbox"),
        ({"bkggrid": 1001}, "bkggrid"),
        ({"bkgbox": 50, "bkggrid": 60}, "bkggrid"),
        ({"fit-maxcomponents": -1}, "fit-maxcomponents"),
        ({"ncores": 0}, "ncores"),
        ({"save-bkgmap": "yes"}, "save-bkgmap"),
    ):
        with pytest.raises(OptionError, match=name):
            app.validate(bad)


def test_synthetic_field(
    synth_factory: Callable[..., Any], standard_sources: list[Any], tmp_path: Path
) -> None:
    """Fluxes, sizes, islands and flags on an image with known sources."""
    syn = synth_factory()
    out = tmp_path / "out"
    summary = run(AegeanApp(), FINDER, syn.path, out, {"save-bkgmap": True, "no-preview": True})
    t = read_catalogue_csv(out / "catalog.csv")
    assert summary["n_sources"] == len(t)
    assert len(t) == len(syn.sources)
    bright, _, _, ellip, pair_a, pair_b, edge = standard_sources

    def nearest(src: Any) -> int:
        return int(np.argmin(np.hypot(np.asarray(t["x"]) - src.x, np.asarray(t["y"]) - src.y)))

    i = nearest(bright)
    assert math.hypot(t["x"][i] - bright.x, t["y"][i] - bright.y) < 0.2
    assert t["peak_flux"][i] == pytest.approx(bright.peak, rel=0.05)
    assert t["flux"][i] == pytest.approx(syn.flux(bright), rel=0.05)
    assert t["maj"][i] == pytest.approx(syn.beam[0], rel=0.1)
    assert t["local_rms"][i] == pytest.approx(syn.rms, rel=0.25)
    assert 0 < t["ra_err"][i] < 0.5 and 0 < t["x_err"][i] < 0.3
    i = nearest(ellip)
    assert t["maj"][i] == pytest.approx(ellip.maj, rel=0.15)
    assert t["min"][i] == pytest.approx(ellip.min, rel=0.15)
    assert t["flux"][i] == pytest.approx(syn.flux(ellip), rel=0.1)
    assert t["flags"][i] & FLAG_EXTENDED
    # No PA check: Aegean 2.3.5 itself pulls fitted PAs of resolved sources towards 0/90 deg
    # (a noise-free 12"x8" Gaussian at PA 45 comes out at PA 20; at 0 and 90 it is exact),
    # which is Aegean's reported value, passed through unchanged (see docs/apps.md).
    ia, ib = nearest(pair_a), nearest(pair_b)
    assert ia != ib and t["island_id"][ia] == t["island_id"][ib]
    assert t["component_id"][ia] == 0 and t["component_id"][ib] == 1
    assert t["flags"][ia] & FLAG_BLENDED and t["flags"][ib] & FLAG_BLENDED
    assert t["flags"][nearest(edge)] & FLAG_TRUNCATED
    assert not t["flags"][nearest(bright)] & FLAG_TRUNCATED
    assert (out / "background.fits").is_file() and not (out / "rms.fits").exists()
    # The scratch folder with BANE's maps and the image copy is gone.
    assert sorted(p.name for p in out.iterdir()) == [
        "background.fits",
        "catalog.csv",
        "catalog.json",
        "catalog.reg",
        "catalog.vot",
        "summary.json",
    ]


def test_runner_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    assert main(["--input", str(tmp_path / "missing.fits"), "--outdir", str(out)]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["--input", "x.fits", "--outdir", str(out), "--bkgbox=3"]) == 2
    assert "bkgbox" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Through the API, on a real image
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, s17: Path) -> Iterator[tuple[TestClient, str]]:
    with service(tmp_path_factory.mktemp("aegean-api")) as client:
        yield client, upload(client, s17)


def test_bad_options_refused_before_start(api: tuple[TestClient, str]) -> None:
    client, fid = api
    for inputs, name in (
        ({"seedthr": -1}, "seedthr"),
        ({"bkgbox": 20000}, "bkgbox"),
        ({"bkgbox": 50, "bkggrid": 60}, "bkggrid"),
        ({"fit-maxcomponents": 101}, "fit-maxcomponents"),
        ({"ncores": "many"}, "ncores"),
        ({"nosuch": 1}, "nosuch"),
    ):
        assert_refused(client, fid, "aegean", inputs, name)


def test_real_image_job(api: tuple[TestClient, str], s17: Path, tmp_path: Path) -> None:
    client, fid = api
    job_id, status = run_job(client, fid, "aegean", {"save-rmsmap": True, "ncores": 1})
    assert status["state"] == "SUCCESS", job_log(client, job_id)
    t = check_outputs(client, job_id, s17, tmp_path)
    assert len(t) == 48  # a deterministic run (one core)
    inside = (t["x"] >= -0.5) & (t["x"] <= 999.5) & (t["y"] >= -0.5) & (t["y"] <= 999.5)
    # A fit may put the centre of a source cut by the edge just off the image: flagged.
    assert np.all((t["x"] > -5) & (t["x"] < 1004) & (t["y"] > -5) & (t["y"] < 1004))
    assert np.all(t["flags"][~inside] & FLAG_TRUNCATED) and inside.sum() == 47
    assert np.all(t["maj"] >= t["min"]) and np.all((t["pa"] >= 0) & (t["pa"] < 180))
    assert np.nanmedian(np.asarray(t["snr"])) > 5
    summary = client.get(f"/caesar/api/v1.0/job/{job_id}/results/summary").json()
    assert summary["app"] == "aegean" and summary["options"]["bkgbox"] == 100
    assert summary["rms_median"] == pytest.approx(9e-5, rel=0.3)
    rms = client.get(f"/caesar/api/v1.0/job/{job_id}/results/rms-map")
    assert rms.status_code == 200 and rms.content[:6] == b"SIMPLE"
    log = job_log(client, job_id)
    assert "aegean_run: detection:" in log and "\x1b[" not in log  # plain text, no colours
    assert json.loads(client.get(f"/caesar/api/v1.0/job/{job_id}/status").text)["exit_code"] == 0
