"""The photutils app: options, extraction accuracy, and a job on a real image through the API."""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from caesar_rest.apps.base import OptionError
from caesar_rest.apps.photutils_app import PhotutilsApp
from caesar_rest.apps.photutils_run import FINDER, extract_sources, main
from caesar_rest.apps.program import resolve_options, run
from caesar_rest.catalogue.schema import (
    COLUMN_NAMES,
    FLAG_BLENDED,
    FLAG_EXTENDED,
    FLAG_TRUNCATED,
)
from caesar_rest.catalogue.writers import read_catalogue_csv
from caesar_rest.imaging import load_image

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
    app = PhotutilsApp()
    opts = app.option_map()
    assert (opts["seedthr"].default, opts["mergethr"].default, opts["npixmin"].default) == (
        5.0,
        3.0,
        3,
    )
    assert (opts["bkgbox"].default, opts["deblend-contrast"].default) == (64, 0.005)
    cmd = app.command(Path("/i.fits"), app.validate({"no-deblend": True, "bkgbox": 32}), Path("o"))
    assert cmd == [
        sys.executable,
        "-m",
        "caesar_rest.apps.photutils_run",
        "--input",
        "/i.fits",
        "--outdir",
        "o",
        "--bkgbox=32",
        "--no-deblend",
    ]
    for bad, name in (
        ({"npixmin": 0}, "npixmin"),
        ({"deblend-contrast": 1.5}, "deblend-contrast"),
        ({"bkgfilter": 100}, "bkgfilter"),
    ):
        with pytest.raises(OptionError, match=name):
            app.validate(bad)


def test_synthetic_field(synth_factory: Callable[..., Any], standard_sources: list[Any]) -> None:
    syn = synth_factory()
    t = extract_sources(load_image(syn.path), resolve_options(PhotutilsApp(), {})).table
    assert t.colnames == list(COLUMN_NAMES)
    assert len(t) == len(syn.sources)
    bright, _, _, ellip, pair_a, pair_b, edge = standard_sources

    def nearest(src: Any) -> int:
        return int(np.argmin(np.hypot(np.asarray(t["x"]) - src.x, np.asarray(t["y"]) - src.y)))

    i = nearest(bright)
    assert math.hypot(t["x"][i] - bright.x, t["y"][i] - bright.y) < 0.5
    assert t["peak_flux"][i] == pytest.approx(bright.peak, rel=0.06)
    assert t["flux"][i] == pytest.approx(syn.flux(bright), rel=0.1)
    assert t["maj"][i] == pytest.approx(syn.beam[0], rel=0.15)
    assert t["snr"][i] == pytest.approx(bright.peak / syn.rms, rel=0.15)
    assert 0.005 < t["x_err"][i] < 0.1 and 0 < t["flux_err"][i] < 0.05 * t["flux"][i]
    assert t["flags"][i] == 0
    i = nearest(ellip)
    assert abs((t["pa"][i] - ellip.pa + 90) % 180 - 90) < 3
    assert t["maj"][i] == pytest.approx(ellip.maj, rel=0.15)
    assert t["flux"][i] == pytest.approx(syn.flux(ellip), rel=0.1)
    assert t["flags"][i] & FLAG_EXTENDED
    ia, ib = nearest(pair_a), nearest(pair_b)
    assert t["island_id"][ia] == t["island_id"][ib]
    assert (t["component_id"][ia], t["component_id"][ib]) == (0, 1)
    assert t["flags"][ia] & FLAG_BLENDED and t["flags"][ib] & FLAG_BLENDED
    assert t["flags"][nearest(edge)] & FLAG_TRUNCATED
    ra, dec = load_image(syn.path).wcs.pixel_to_world_values(t["x"], t["y"])
    np.testing.assert_allclose(t["ra"], ra, atol=1e-9)

    t = extract_sources(
        load_image(syn.path), resolve_options(PhotutilsApp(), {"no-deblend": True})
    ).table
    assert len(t) == len(syn.sources) - 1  # the pair is one source


def test_runner_outputs_and_errors(
    synth_factory: Callable[..., Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    syn = synth_factory(sources=[])
    out = tmp_path / "out"
    summary = run(PhotutilsApp(), FINDER, syn.path, out, {"save-bkgmap": True})
    assert summary["n_sources"] == 0 and len(read_catalogue_csv(out / "catalog.csv")) == 0
    assert (out / "preview-thumb.png").is_file() and (out / "background.fits").is_file()
    assert main(["--input", str(tmp_path / "none.fits"), "--outdir", str(out)]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["--input", str(syn.path), "--outdir", str(out), "--seedthr=-1"]) == 2
    assert "seedthr" in capsys.readouterr().err


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory, s17: Path) -> Iterator[tuple[TestClient, str]]:
    with service(tmp_path_factory.mktemp("photutils-api")) as client:
        yield client, upload(client, s17)


def test_bad_options_refused_before_start(api: tuple[TestClient, str]) -> None:
    client, fid = api
    for inputs, name in (
        ({"seedthr": 1e9}, "seedthr"),
        ({"npixmin": 2.5}, "npixmin"),
        ({"no-deblend": "true"}, "no-deblend"),
        ({"deblend-nlevels": 0}, "deblend-nlevels"),
    ):
        assert_refused(client, fid, "photutils", inputs, name)


def test_real_image_job(api: tuple[TestClient, str], s17: Path, tmp_path: Path) -> None:
    client, fid = api
    job_id, status = run_job(client, fid, "photutils", {"save-rmsmap": True})
    assert status["state"] == "SUCCESS", job_log(client, job_id)
    t = check_outputs(client, job_id, s17, tmp_path)
    assert len(t) == 145  # a deterministic run
    assert np.all(t["snr"] >= 5.0) and np.all(t["maj"] >= t["min"])
    assert np.all((t["x"] >= 0) & (t["x"] <= 999) & (t["y"] >= 0) & (t["y"] <= 999))
    summary = client.get(f"{API}/job/{job_id}/results/summary").json()
    assert summary["tool"].startswith("photutils ") and summary["n_islands"] == 415
    assert summary["rms_median"] == pytest.approx(9.5e-5, rel=0.3)
