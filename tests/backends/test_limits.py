"""Job resource limits (issue 14 item 1): memory, CPU time, open files and file size.

Small limits and bounded programs only: the 1 GiB allocation fails at once under a 200 MiB
limit (the kernel refuses the mapping; nothing is touched), the CPU burner stops at 1 s.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from fastapi.testclient import TestClient

from caesar_rest.api.app import create_app
from caesar_rest.apps.registry import default_registry
from caesar_rest.backends.kubernetes import build_manifest
from caesar_rest.backends.process import job_environment, job_limits, launch, launch_environment
from caesar_rest.backends.remote import CoreView
from caesar_rest.backends.slurm import SlurmBackend
from caesar_rest.backends.wrapper import limit_hit
from caesar_rest.db.engine import make_engine, make_sessionmaker
from caesar_rest.db.models import JobRecord
from caesar_rest.jobs.folder import (
    LIMITS_ENV,
    LOG_FILE,
    ExitRecord,
    JobLimits,
    outcome_of,
    read_exit,
    size_text,
)
from caesar_rest.jobs.service import JobService
from caesar_rest.settings import Settings

from tests.support.app_jobs import job_log, run_job, upload
from tests.support.server import SLEEP_APP, make_settings

MIB = 1024 * 1024
HOG_APP = "tests.support.caesar_test_apps:HogApp"


def run_limited(tmp: Path, code: str, limits: JobLimits) -> ExitRecord:
    """Run ``python -c code`` through the wrapper under ``limits``; its exit record."""
    started = launch(tmp, [sys.executable, "-c", code], cores=1, limits=limits)
    started.proc.wait(timeout=60)
    record = read_exit(tmp)
    assert record is not None
    return record


def test_memory_limit_ends_the_job_with_its_reason(tmp_path: Path) -> None:
    record = run_limited(tmp_path, "b = bytearray(1 << 30)", JobLimits(memory=200 * MIB))
    assert record.exit_code == 1 and record.limit == "memory"
    assert record.reason == "memory limit 200 MiB exceeded"
    outcome = outcome_of(record, exit_code=1)
    assert outcome.message == "memory limit 200 MiB exceeded" and not outcome.timed_out
    log = (tmp_path / LOG_FILE).read_text()
    assert "MemoryError" in log and "[caesar-rest] memory limit 200 MiB exceeded" in log


def test_cpu_time_limit_times_the_job_out(tmp_path: Path) -> None:
    burn = "import time\nend = time.time() + 30\nwhile time.time() < end: pass"
    record = run_limited(tmp_path, burn, JobLimits(cpu_time=1))
    assert record.signal == 24 and record.limit == "cpu_time"  # SIGXCPU
    assert record.elapsed is not None and record.elapsed < 20
    outcome = outcome_of(record)
    assert outcome.timed_out and outcome.message == "CPU time limit of 1 s exceeded"


def test_file_size_limit(tmp_path: Path) -> None:
    write = "open('big.out', 'wb').write(bytes(4 << 20))"
    record = run_limited(tmp_path, write, JobLimits(file_size=MIB))
    assert record.limit == "file_size" and record.reason == "output file size limit 1 MiB exceeded"
    assert (tmp_path / "big.out").stat().st_size <= MIB


def test_open_files_limit(tmp_path: Path) -> None:
    code = "import os\nheld = [open(os.devnull) for _ in range(500)]"
    record = run_limited(tmp_path, code, JobLimits(open_files=64))
    assert record.limit == "open_files" and record.reason == "open files limit 64 exceeded"


def test_no_limit_hit_no_reason(tmp_path: Path) -> None:
    record = run_limited(tmp_path, "import sys; sys.exit(3)", JobLimits(memory=200 * MIB))
    assert record.exit_code == 3 and record.limit is None and record.reason is None
    assert outcome_of(record).message == ""
    ok = run_limited(tmp_path, "b = bytearray(10 << 20)", JobLimits(memory=200 * MIB))
    assert ok.exit_code == 0 and ok.reason is None


def test_limit_rule() -> None:
    mem = JobLimits(memory=4 << 30)
    assert limit_hit(-9, mem, 0.0, (4 << 30) // 1024, b"") == "memory"  # killed at the limit
    assert limit_hit(-9, mem, 0.0, 1000, b"") is None  # killed from outside
    assert limit_hit(1, mem, 0.0, 0, b"numpy...._ArrayMemoryError: Unable to allocate") == "memory"
    assert limit_hit(1, JobLimits(), 0.0, 0, b"MemoryError") is None  # no limit, no blame
    assert limit_hit(0, mem, 0.0, 0, b"MemoryError") is None
    assert limit_hit(-9, JobLimits(cpu_time=5), 5.2, 0, b"") == "cpu_time"
    assert limit_hit(-25, JobLimits(file_size=1), 0.0, 0, b"") == "file_size"  # SIGXFSZ
    assert mem.describe("memory") == "memory limit 4 GiB exceeded"
    assert size_text(1536 * 1024) == "1536 KiB" and size_text(1000) == "1000 bytes"


def test_limits_travel_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    limits = JobLimits(memory=4 << 30, open_files=4096)
    assert JobLimits.from_env(limits.to_env()) == limits
    assert JobLimits.from_env("memory=x,bogus=3,cpu_time=7") == JobLimits(cpu_time=7)
    assert job_environment(2, limits)[LIMITS_ENV] == "memory=4294967296,open_files=4096"
    assert LIMITS_ENV not in job_environment(2, JobLimits())
    monkeypatch.setenv(LIMITS_ENV, "memory=1")  # a service started from a job: not inherited
    assert LIMITS_ENV not in launch_environment(1)


def test_older_exit_record_still_readable() -> None:
    old = ExitRecord.from_dict(json.loads('{"exit_code": 0, "signal": null, "elapsed": 1.5}'))
    assert old.limit is None and old.reason is None and old.recorded


def test_settings_defaults() -> None:
    s = Settings()
    limits = job_limits(s)
    assert limits == JobLimits(memory=4 << 30, cpu_time=0, open_files=4096, file_size=16 << 30)
    assert job_limits(Settings(job_memory_limit_mib=0)).memory == 0  # type: ignore[call-arg]


def _job(tmp: Path) -> JobRecord:
    reldir = "u/job_abc"
    jdir = tmp / "jobs" / reldir
    jdir.mkdir(parents=True)
    (jdir / "job.json").write_text(json.dumps({"command": [sys.executable, "-m", "app"]}))
    return JobRecord(id="abc", app="sep", reldir=reldir, time_limit=90, cores=2, owner="u")


def test_slurm_job_asks_for_the_memory_limit(tmp_path: Path) -> None:
    settings = Settings(  # type: ignore[call-arg]
        datadir=tmp_path / "data",
        jobdir=tmp_path / "jobs",
        slurm_url="http://slurm:6820",
        slurm_token="t",
    )
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    svc = JobService(settings, make_sessionmaker(engine), default_registry())
    spec = SlurmBackend(svc, settings.slurm).job_spec(_job(tmp_path))
    assert spec.memory_mb == 4096  # --mem from job_memory_limit_mib
    assert JobLimits.from_env(spec.environment[LIMITS_ENV]) == job_limits(settings)
    settings.slurm.memory_mb = 8000  # the section's own value wins
    assert SlurmBackend(svc, settings.slurm).job_spec(_job(tmp_path / "b")).memory_mb == 8000


def test_kubernetes_job_has_resource_limits_and_the_rlimits(tmp_path: Path) -> None:
    settings = Settings(  # type: ignore[call-arg]
        datadir=tmp_path / "data",
        jobdir=tmp_path / "jobs",
        kube_image="caesar:1",
        kube_pvc="store",
        job_cpu_time_limit=600,
    )
    job = _job(tmp_path)
    manifest = build_manifest(settings.kube, CoreView.of(settings), job, ["python", "-m", "app"])
    (c,) = manifest["spec"]["template"]["spec"]["containers"]
    assert c["resources"]["limits"]["memory"] == "4Gi"
    env = {e["name"]: e["value"] for e in c["env"]}
    assert JobLimits.from_env(env[LIMITS_ENV]).cpu_time == 600


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(
        tmp_path,
        extra_apps=[SLEEP_APP, HOG_APP],
        job_memory_limit_mib=200,
        job_cpu_time_limit=1,
    )
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def file_id(client: TestClient, tmp_path: Path) -> str:
    path = tmp_path / "img.fits"
    fits.PrimaryHDU(np.ones((8, 8), dtype=np.float32)).writeto(path)
    return upload(client, path)


def test_local_job_over_the_memory_limit_ends_failure(client: TestClient, file_id: str) -> None:
    job_id, status = run_job(client, file_id, "hog", {"hog": "memory", "amount": 1024}, 60)
    assert status["state"] == "FAILURE", status
    assert status["status"] == "memory limit 200 MiB exceeded"
    assert "memory limit 200 MiB exceeded" in job_log(client, job_id)
    _, ok = run_job(client, file_id, "hog", {"hog": "memory", "amount": 20}, 60)
    assert ok["state"] == "SUCCESS", ok


def test_local_job_over_the_cpu_time_limit_times_out(client: TestClient, file_id: str) -> None:
    job_id, status = run_job(client, file_id, "hog", {"hog": "cpu", "amount": 30}, 60)
    assert status["state"] == "TIMED-OUT", status
    assert status["status"] == "CPU time limit of 1 s exceeded"
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    log = (ctx.jobs.job_dir(ctx.jobs.get_any(job_id)) / LOG_FILE).read_text()
    assert "[caesar-rest] CPU time limit of 1 s exceeded" in log
