"""The pybdsf app: options, conversion of the source and Gaussian lists, a job on a real image."""

from __future__ import annotations

import math
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from fastapi.testclient import TestClient
from regions import Regions

from caesar_rest.apps.base import COMPONENT_RESULTS, OptionError
from caesar_rest.apps.program import run
from caesar_rest.apps.pybdsf_app import PybdsfApp
from caesar_rest.apps.pybdsf_run import FINDER, header_frequency, main
from caesar_rest.catalogue.schema import FLAG_BLENDED, FLAG_EXTENDED, FLAG_TRUNCATED
from caesar_rest.catalogue.writers import read_catalogue_csv

from tests.support.app_jobs import (
    API,
    assert_refused,
    check_outputs,
    job_log,
    run_job,
    service,
    upload,
)


def test_options_and_command() -> None:
    app = PybdsfApp()
    opts = app.option_map()
    assert (opts["thresh_pix"].default, opts["thresh_isl"].default) == (5.0, 3.0)
    assert (opts["rms_box"].default, opts["rms_box_step"].default) == (100, 30)
    # Maps by default: PyBDSF's own choice assumes a flat background.
    assert (opts["rms_map"].default, opts["mean_map"].default) == ("map", "map")
    assert opts["rms_map"].allowed_values == ("map", "const", "auto")
    names = {r.name for r in app.results}
    assert {r.name for r in COMPONENT_RESULTS} <= names and "pybdsf-log" in names
    valid = app.validate({"thresh_pix": 6, "rms_map": "const", "group_by_isl": True})
    cmd = app.command(Path("/in/i.fits"), valid, Path("/out"))
    assert cmd == [
        sys.executable,
        "-m",
        "caesar_rest.apps.pybdsf_run",
        "--input",
        "/in/i.fits",
        "--outdir",
        "/out",
        "--thresh_pix=6.0",
        "--rms_map=const",
        "--group_by_isl",
    ]
    for bad, name in (
        ({"thresh_isl": -1}, "thresh_isl"),
        ({"rms_box": 2}, "rms_box"),
        ({"rms_box": 50, "rms_box_step": 60}, "rms_box_step"),
        ({"mean_map": "median"}, "mean_map"),
        ({"ncores": 0}, "ncores"),
    ):
        with pytest.raises(OptionError, match=name):
            app.validate(bad)


def test_header_frequency(s17: Path) -> None:
    assert header_frequency(fits.getheader(s17)) == pytest.approx(1.44746065140e9)
    assert header_frequency(fits.Header({"RESTFRQ": 1.4e9})) == 1.4e9
    assert header_frequency(fits.Header({"NAXIS": 2})) is None


def test_synthetic_field(
    synth_factory: Callable[..., Any], standard_sources: list[Any], tmp_path: Path
) -> None:
    """Sources and Gaussians with known truth; nothing is written next to the input."""
    syn = synth_factory()
    indir = tmp_path / "in"
    indir.mkdir()
    image = Path(shutil.copy(syn.path, indir / "synth.fits"))
    out = tmp_path / "out"
    summary = run(PybdsfApp(), FINDER, image, out, {"save-rmsmap": True, "no-preview": True})
    assert sorted(p.name for p in indir.iterdir()) == ["synth.fits"]
    assert summary["frequency_source"] == "default"
    assert not any(p.name.startswith(".pybdsf") for p in out.iterdir())
    assert (out / "pybdsf.log").stat().st_size > 0 and (out / "rms.fits").is_file()

    t = read_catalogue_csv(out / "catalog.csv")
    g = read_catalogue_csv(out / "components.csv")
    assert summary["n_sources"] == len(t) and summary["n_components"] == len(g)
    assert len(t) == len(syn.sources) and len(g) >= len(t)
    assert len(Regions.read(str(out / "components.reg"), format="ds9")) == len(g)
    bright, _, _, ellip, pair_a, pair_b, edge = standard_sources

    def nearest(tab: Table, src: Any) -> int:
        d = np.hypot(np.asarray(tab["x"]) - src.x, np.asarray(tab["y"]) - src.y)
        return int(np.argmin(d))

    i = nearest(t, bright)
    assert math.hypot(t["x"][i] - bright.x, t["y"][i] - bright.y) < 0.2
    assert t["peak_flux"][i] == pytest.approx(bright.peak, rel=0.05)
    assert t["flux"][i] == pytest.approx(syn.flux(bright), rel=0.05)
    assert t["maj"][i] == pytest.approx(syn.beam[0], rel=0.1)
    assert t["local_rms"][i] == pytest.approx(syn.rms, rel=0.25)
    assert t["flags"][i] == 0
    i = nearest(t, ellip)
    assert t["maj"][i] == pytest.approx(ellip.maj, rel=0.1)
    assert t["min"][i] == pytest.approx(ellip.min, rel=0.15)
    assert abs((t["pa"][i] - ellip.pa + 90) % 180 - 90) < 3
    assert t["flux"][i] == pytest.approx(syn.flux(ellip), rel=0.1)
    assert t["flags"][i] & FLAG_EXTENDED
    ia, ib = nearest(t, pair_a), nearest(t, pair_b)
    assert ia != ib and t["island_id"][ia] == t["island_id"][ib]
    assert {int(t["component_id"][ia]), int(t["component_id"][ib])} == {0, 1}
    assert t["flags"][ia] & FLAG_BLENDED and t["flags"][ib] & FLAG_BLENDED
    assert t["flags"][nearest(t, edge)] & FLAG_TRUNCATED
    # Gaussians of the bright source: one, with the same flux.
    j = nearest(g, bright)
    assert g["flux"][j] == pytest.approx(t["flux"][nearest(t, bright)], rel=0.02)


def test_runner_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "o"
    assert main(["--input", str(tmp_path / "missing.fits"), "--outdir", str(out)]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["--input", "x.fits", "--outdir", str(out), "--rms_map=maybe"]) == 2
    assert "rms_map" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------
# Through the API, on a real image
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, s17: Path) -> Iterator[tuple[TestClient, str]]:
    with service(tmp_path_factory.mktemp("pybdsf-api")) as client:
        yield client, upload(client, s17)


def test_bad_options_refused_before_start(api: tuple[TestClient, str]) -> None:
    client, fid = api
    for inputs, name in (
        ({"thresh_pix": "high"}, "thresh_pix"),
        ({"rms_box": 100000}, "rms_box"),
        ({"rms_box": 40, "rms_box_step": 50}, "rms_box_step"),
        ({"rms_map": True}, "rms_map"),
        ({"atrous_do": 1}, "atrous_do"),
        ({"thresh": 5}, "thresh"),
    ):
        assert_refused(client, fid, "pybdsf", inputs, name)


def test_real_image_job(api: tuple[TestClient, str], s17: Path, tmp_path: Path) -> None:
    client, fid = api
    job_id, status = run_job(client, fid, "pybdsf", {})
    assert status["state"] == "SUCCESS", job_log(client, job_id)
    t = check_outputs(client, job_id, s17, tmp_path)
    assert len(t) == 24  # a deterministic run
    assert np.all(np.isfinite(t["ra"]) & np.isfinite(t["dec"]) & (t["maj"] >= t["min"]))
    # Components through the model and the legacy routes.
    listing = {r["name"]: r for r in client.get(f"{API}/job/{job_id}/results").json()["results"]}
    assert {"components", "components-csv", "components-json", "pybdsf-log"} <= set(listing)
    comps = client.get(f"{API}/job/{job_id}/source-components")
    assert comps.status_code == 200 and len(comps.json()["sources"]) == 40
    r = client.get(f"{API}/job/{job_id}/output-components")
    assert r.status_code == 200 and r.text.startswith("name,island_id")
    summary = client.get(f"{API}/job/{job_id}/results/summary").json()
    assert summary["frequency_source"] == "header"
    assert summary["options"]["rms_map"] == "map" and summary["options"]["mean_map"] == "map"
    log = client.get(f"{API}/job/{job_id}/results/pybdsf-log").text
    assert "Using 2D map for background rms" in log
    # Nothing next to the uploaded file.
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    uploads = [p for p in Path(ctx.settings.datadir).rglob("*") if p.is_file()]
    assert not any("pybdsf" in p.name for p in uploads), uploads
