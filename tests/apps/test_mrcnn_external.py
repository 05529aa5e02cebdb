"""The ``mrcnn`` app with an external caesar-mrcnn: a fake program (tests/support/fake_mrcnn.py)
writes caesar-mrcnn's JSON, the job converts it to the shared catalogue and segmented.fits."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from caesar_rest.apps.mrcnn_app import PATH_ENV, WEIGHTS_ENV, MrcnnApp
from caesar_rest.apps.mrcnn_external import external_command, read_detections, run_program
from caesar_rest.apps.mrcnn_run import convert_external
from caesar_rest.catalogue.schema import COLUMN_NAMES, FLAG_TRUNCATED
from caesar_rest.imaging.fits_image import load_image

from tests.support.app_jobs import API, check_outputs, job_log, result_bytes, run_job, service
from tests.support.app_jobs import upload as upload_file

FAKE = Path(__file__).resolve().parents[1] / "support" / "fake_mrcnn.py"


def install_fake(folder: Path) -> Path:
    """``run_mrcnn.sh`` in ``folder`` that runs the fake with this interpreter."""
    folder.mkdir(parents=True, exist_ok=True)
    prog = folder / "run_mrcnn.sh"
    prog.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{FAKE}" "$@"\n')
    prog.chmod(0o755)
    return prog


def test_command_is_the_predecessors(tmp_path: Path) -> None:
    cmd = external_command(Path("/p/run_mrcnn.sh"), "/w/m.h5", Path("/in.fits"), {"scoreThr": 0.5})
    assert cmd == ["/p/run_mrcnn.sh", "--runmode=detect", "--weights=/w/m.h5", "--scoreThr=0.5",
                   "--image=/in.fits"]  # fmt: skip


def test_fake_output_converted(tmp_path: Path, s17: Path) -> None:
    prog = install_fake(tmp_path / "bin")
    argv = external_command(prog, "/w/m.h5", s17, {"scoreThr": 0.6, "iouThr": 0.6})
    detections = read_detections(run_program(argv, tmp_path / "out"))
    raw = json.loads((tmp_path / "out/external/out_ScorpioS17Field.json").read_text())["objs"]
    assert len(detections) == len(raw) == 20  # the tile file is left aside
    assert Counter(o["class_name"] for o in raw) == {
        "extended": 10, "sidelobe": 5, "galaxy_C2": 3, "source": 2,
    }  # fmt: skip
    table, masks = convert_external(load_image(s17), detections)
    assert len(table) == 20 and table.colnames == [*COLUMN_NAMES, "class", "class_score"]
    assert Counter(table["class"]) == {
        "extended": 10, "spurious": 5, "extended-multisland": 3, "compact": 2,
    }  # fmt: skip
    assert sorted(set(np.unique(masks)) - {0}) == list(range(1, 21))
    for row in table:
        obj = raw[row["island_id"]]
        assert row["class_score"] == obj["score"]
        # The mask is the program's, pixel for pixel; the centroid lies in its box.
        assert int((masks == row["island_id"] + 1).sum()) == len(obj["pixels"])
        assert obj["x1"] <= row["x"] <= obj["x2"] and obj["y1"] <= row["y"] <= obj["y2"]
        if obj["edge"]:
            assert row["flags"] & FLAG_TRUNCATED
    assert sum(o["edge"] for o in raw) == 2
    assert np.all(np.asarray(table["flux"]) > 0)


def test_mrcnn_job_with_the_external_program(
    tmp_path: Path, s17: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    prog = install_fake(tmp_path / "bin")
    monkeypatch.setenv(PATH_ENV, str(prog.parent))
    monkeypatch.setenv(WEIGHTS_ENV, "/w/m.h5")
    assert MrcnnApp().availability() == (True, None)
    with service(tmp_path / "srv") as client:
        fid = upload_file(client, s17)
        job, status = run_job(client, fid, "mrcnn", {"scoreThr": 0.7})
        assert status["state"] == "SUCCESS", job_log(client, job)
        assert "fake_mrcnn: --runmode=detect --weights=/w/m.h5 --scoreThr=0.7" in job_log(
            client, job
        )
        table = check_outputs(client, job, s17, tmp_path)
        assert len(table) == 15
        assert Counter(table["class"]) == {"extended": 10, "extended-multisland": 3, "compact": 2}
        seg = tmp_path / "segmented.fits"
        seg.write_bytes(result_bytes(client, job, "segmented-map"))
        assert sorted(set(np.unique(fits.getdata(seg))) - {0}) == list(range(1, 16))

        monkeypatch.setenv("FAKE_MRCNN_FAIL", "1")
        job2, status2 = run_job(client, fid, "mrcnn", {})
        assert status2["state"] == "FAILURE"
        assert "run_mrcnn.sh exited with status 1" in job_log(client, job2)
    assert client.get(f"{API}/apps").status_code == 200
