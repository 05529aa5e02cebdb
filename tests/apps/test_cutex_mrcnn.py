"""The cutex and mrcnn apps: options, and jobs through the API on the real images ending
SUCCESS with the shared catalogue, classes and (mrcnn) the masks."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from caesar_rest.apps.cutex_app import CutexApp
from caesar_rest.apps.cutex_run import curvatures
from caesar_rest.apps.mrcnn_app import PATH_ENV, MrcnnApp
from caesar_rest.apps.mrcnn_run import suppress
from caesar_rest.catalogue.schema import CLASSES, COLUMN_NAMES

from tests.support.app_jobs import (
    API,
    assert_refused,
    check_outputs,
    job_log,
    result_bytes,
    run_job,
    service,
    upload,
)


def test_options_are_the_predecessors() -> None:
    cutex = {o.name: o for o in CutexApp().options}
    assert [n for n in cutex][:6] == [
        "seedthr", "npixmin", "npixpsf", "psflimmin", "psflimmax", "no-logredir",
    ]  # fmt: skip
    assert (cutex["seedthr"].default, cutex["npixmin"].default, cutex["npixpsf"].default) == (
        5.0,
        4,
        2.7,
    )
    assert (cutex["psflimmin"].default, cutex["psflimmax"].default) == (0.5, 2.0)
    mrcnn = MrcnnApp().describe()
    assert mrcnn["scoreThr"]["default"] == 0.7 and mrcnn["iouThr"]["default"] == 0.6
    assert (mrcnn["scoreThr"]["min"], mrcnn["scoreThr"]["max"]) == (0.0, 1.0)
    assert mrcnn["image"]["effective"] is False


def test_curvature_of_a_gaussian() -> None:
    """Minus the second derivative of exp(-r^2/2s^2) at its centre is 1/s^2, in every
    direction (the diagonals per unit length)."""
    yy, xx = np.mgrid[-20:21, -20:21].astype(np.float32)
    img = np.exp(-0.5 * (xx**2 + yy**2) / 9.0).astype(np.float32)
    c = curvatures(img)[:, 20, 20]
    np.testing.assert_allclose(c, 1 / 9.0, rtol=0.02)


def test_box_suppression() -> None:
    boxes = np.array([[0, 0, 9, 9], [1, 1, 10, 10], [20, 20, 25, 25]], dtype=float)
    assert list(suppress(boxes, np.array([0.8, 0.9, 0.75]), 0.6)) == [1, 2]
    assert list(suppress(boxes, np.array([0.8, 0.9, 0.75]), 0.7)) == [1, 0, 2]


def test_external_program_is_named_to_the_job(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    prog = tmp_path / "run_mrcnn.sh"
    prog.write_text("#!/bin/sh\nexit 0\n")
    monkeypatch.setenv(PATH_ENV, str(tmp_path))
    monkeypatch.setenv("CAESAR_REST_MRCNN_WEIGHTS", "/w/m.h5")
    assert MrcnnApp().availability() == (False, f"{PATH_ENV}={prog} is not an executable "
                                         "run_mrcnn.sh")  # fmt: skip
    os.chmod(prog, 0o755)
    app = MrcnnApp()
    assert app.availability() == (True, None)
    assert [r.name for r in app.results][-1] == "segmented-map"  # converted: the same files
    cmd = app.command(Path("/in.fits"), {"scoreThr": 0.5}, tmp_path)
    assert cmd[1:] == ["-m", "caesar_rest.apps.mrcnn_run", "--input", "/in.fits", "--outdir",
                       str(tmp_path), "--scoreThr=0.5", "--external", str(prog),
                       "--external-weights", "/w/m.h5"]  # fmt: skip


def test_cutex_and_mrcnn_through_the_api(
    tmp_path: Path, s17: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(PATH_ENV, raising=False)
    extended = shared_data / "ScorpioExtendedSourceField.fits"
    with service(tmp_path / "srv") as client:
        apps = client.get(f"{API}/apps").json()["apps"]
        assert "cutex" in apps and "mrcnn" in apps
        described = client.get(f"{API}/app/mrcnn/describe").json()
        assert described["scoreThr"]["default"] == 0.7
        fid = upload(client, s17)
        assert_refused(client, fid, "cutex", {"psflimmin": 3.0}, "psflimmin")
        assert_refused(client, fid, "mrcnn", {"scoreThr": 1.5}, "scoreThr")
        job, status = run_job(client, fid, "cutex", {"no-logredir": True})
        assert status["state"] == "SUCCESS", job_log(client, job)
        table = check_outputs(client, job, s17, tmp_path)
        assert len(table) == 22  # a deterministic run
        assert table.colnames == [*COLUMN_NAMES, "class", "class_score", "group_id"]
        assert set(table["class"]) <= set(CLASSES)

        fid2 = upload(client, extended)
        job2, status2 = run_job(client, fid2, "mrcnn", {"scoreThr": 0.7, "iouThr": 0.6})
        assert status2["state"] == "SUCCESS", job_log(client, job2)
        table2 = check_outputs(client, job2, extended, tmp_path)
        assert len(table2) == 27  # the shipped network (mrcnn_weights.npz), deterministic
        multi = np.asarray(table2["class"]) == "extended-multisland"
        assert np.all((np.asarray(table2["group_id"]) >= 1) == multi)
        assert np.all(np.asarray(table2["class_score"]) >= 0.7)
        seg = tmp_path / "segmented.fits"
        seg.write_bytes(result_bytes(client, job2, "segmented-map"))
        masks = fits.getdata(seg)
        assert sorted(set(np.unique(masks)) - {0}) == list(range(1, len(table2) + 1))
        # Each row's centroid lies in the box of its mask.
        for row in Table(table2)[:10]:
            ys, xs = np.nonzero(masks == row["island_id"] + 1)
            assert xs.min() - 1 <= row["x"] <= xs.max() + 1
            assert ys.min() - 1 <= row["y"] <= ys.max() + 1
