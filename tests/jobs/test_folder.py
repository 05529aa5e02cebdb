"""The job folder module: job.json, exit.json and the one rule from exit record to outcome."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from caesar_rest.apps.base import LOG_RESULT
from caesar_rest.jobs.folder import (
    EXIT_FILE,
    LOG_FILE,
    ExitRecord,
    JobSpec,
    clear_exit,
    lost,
    outcome_of,
    read_exit,
    read_spec,
    write_exit,
    write_spec,
)
from caesar_rest.jobs.states import Reason


def test_log_file_is_the_apps_log_result() -> None:
    assert LOG_RESULT.filename == LOG_FILE


def test_spec_round_trip_and_old_specs(tmp_path: Path) -> None:
    spec = JobSpec("j1", "sep", {"seedthr": 5}, "/data/x.fits", ["python", "-m", "x", "in.fits"])
    write_spec(tmp_path, spec)
    assert read_spec(tmp_path) == spec
    doc = json.loads((tmp_path / "job.json").read_text())
    assert doc == {
        "job_id": "j1",
        "app": "sep",
        "options": {"seedthr": 5},
        "input_file": "/data/x.fits",
        "command": ["python", "-m", "x", "in.fits"],
        "input_name": "",
        "input_sha256": "",
    }
    # A spec written before (with a time_limit nothing reads, without the input's name and
    # hash) is still read.
    old = {k: v for k, v in doc.items() if k not in ("input_name", "input_sha256")}
    (tmp_path / "job.json").write_text(json.dumps({**old, "time_limit": 60}))
    assert read_spec(tmp_path) == spec
    named = JobSpec("j1", "sep", {}, "/data/x.fits", ["x"], "my image.fits", "ab" * 32)
    write_spec(tmp_path, named)
    assert read_spec(tmp_path) == named
    (tmp_path / "job.json").write_text("[1]")
    with pytest.raises(ValueError, match="no object"):
        read_spec(tmp_path)


def test_exit_record_round_trip(tmp_path: Path) -> None:
    assert read_exit(tmp_path) is None
    rec = ExitRecord(3, None, 1.0, 2.5, 1.5, 0.25, 1000)
    write_exit(tmp_path, rec)
    assert read_exit(tmp_path) == rec
    assert [p.name for p in tmp_path.iterdir()] == [EXIT_FILE]  # no temporary left
    clear_exit(tmp_path)
    clear_exit(tmp_path)  # idempotent
    assert read_exit(tmp_path) is None
    (tmp_path / EXIT_FILE).write_text("{not json")
    assert read_exit(tmp_path) is None
    (tmp_path / EXIT_FILE).write_text('{"exit_code": null}')
    half = read_exit(tmp_path)
    assert half is not None and not half.recorded and not half.clean


def test_wrapper_writes_the_record(tmp_path: Path) -> None:
    code = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"
    rc = subprocess.run(
        [sys.executable, "-m", "caesar_rest.backends.wrapper", "--", sys.executable, "-c", code],
        cwd=tmp_path,
        capture_output=True,
    ).returncode
    assert rc == 128 + 15
    rec = read_exit(tmp_path)
    assert rec is not None
    assert (rec.exit_code, rec.signal, rec.recorded, rec.clean) == (-15, 15, True, False)
    assert rec.elapsed is not None and rec.elapsed >= 0


def test_outcome_rule() -> None:
    rec = ExitRecord(2, None, elapsed=3.33333, cpu_time=1.5)
    # The record's code wins over the wrapper's status; the launcher's clock over the record's.
    got = outcome_of(rec, exit_code=0, elapsed=4.00049)
    assert (got.exit_code, got.elapsed, got.cpu_time) == (2, 4.0, 1.5)
    # Without the launcher's clock: the record's time, then the engine's.
    assert outcome_of(rec, seen_elapsed=9.0).elapsed == 3.333
    assert outcome_of(ExitRecord(0, elapsed=0.0), seen_elapsed=9.0).elapsed == 9.0
    # No record (the wrapper was killed): the launcher's status is the job's.
    got = outcome_of(None, exit_code=-9, seen_elapsed=1.0, timed_out=True)
    assert (got.exit_code, got.elapsed, got.timed_out, got.cpu_time) == (-9, 1.0, True, None)
    # A half-written record counts as none.
    got = outcome_of(ExitRecord(None, elapsed=5.0, cpu_time=1.0), exit_code=1)
    assert (got.exit_code, got.elapsed, got.cpu_time) == (1, None, None)
    nobody = lost("gone")
    assert (nobody.exit_code, nobody.reason, nobody.message) == (None, Reason.LOST, "gone")
