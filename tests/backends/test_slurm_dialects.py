"""slurmrestd dialects from recorded documents: v0.0.38 (recorded here from Slurm 22.05) and
v0.0.40/v0.0.41 (Slurm 23.11/24.05, which cannot run here), plus the state mapping."""

from __future__ import annotations

import json
import shlex
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from caesar_rest.backends.remote import Seen
from caesar_rest.backends.slurm import SlurmBackend, map_state
from caesar_rest.backends.slurmrest import (
    SlurmClient,
    SlurmError,
    SlurmJobInfo,
    SlurmJobSpec,
    parse_exit_code,
    parse_job,
    pick_version,
    submit_body,
)

DATA = Path(__file__).resolve().parent / "data" / "slurm"


def doc(name: str) -> dict:
    return json.loads((DATA / f"{name}.json").read_text())


@pytest.mark.parametrize(
    ("paths", "version"),
    [("v0038", "v0.0.38"), ("v0040", "v0.0.40"), ("v0041", "v0.0.41")],
)
def test_dialect_from_openapi_paths(paths: str, version: str) -> None:
    assert pick_version(doc(f"{paths}_openapi_paths")) == version


def test_no_supported_dialect() -> None:
    with pytest.raises(SlurmError, match="v0.0.99"):
        pick_version(doc("future_openapi_paths"))


@pytest.mark.parametrize(
    ("name", "state", "flags", "exit_code"),
    [
        ("v0038_job_running", "RUNNING", [], 0),
        ("v0038_job_completed", "COMPLETED", [], 0),
        ("v0038_job_failed", "FAILED", [], 3),  # wait status 768
        ("v0038_job_cancelled", "CANCELLED", [], -15),
        ("v0038_job_timeout", "TIMEOUT", [], -15),
        ("v0040_job_pending", "PENDING", [], None),
        ("v0040_job_running", "RUNNING", [], None),
        ("v0040_job_completing", "COMPLETED", ["COMPLETING"], 0),
        ("v0040_job_failed", "FAILED", [], 3),
        ("v0040_job_cancelled", "CANCELLED", [], -15),
        ("v0041_job_timeout", "TIMEOUT", [], -15),
        ("v0041_job_requeued", "PENDING", ["REQUEUED"], None),
        ("v0041_job_oom", "OUT_OF_MEMORY", [], -9),
    ],
)
def test_job_records_of_both_dialects(
    name: str, state: str, flags: list[str], exit_code: int | None
) -> None:
    info = parse_job(doc(name)["jobs"][0])
    assert (info.state, info.flags, info.exit_code) == (state, flags, exit_code)
    assert info.job_id in (4242,) or name.startswith("v0038")


def test_set_infinite_number_fields() -> None:
    info = parse_job(doc("v0040_job_pending")["jobs"][0])
    assert info.start_time is None and info.end_time is None  # {"set": false}
    running = parse_job(doc("v0041_job_running")["jobs"][0])
    assert running.start_time == 1717000010
    assert parse_exit_code({"return_code": {"set": True, "infinite": True, "number": 0}}) is None


def _info(state: str, *flags: str) -> SlurmJobInfo:
    return SlurmJobInfo(1, "x", state, list(flags), 0, 1.0, 2.0)


@pytest.mark.parametrize(
    ("state", "flags", "started", "seen"),
    [
        ("PENDING", (), False, Seen.QUEUED),
        ("PENDING", (), True, Seen.QUEUED),  # requeued: back to QUEUED
        ("PENDING", ("REQUEUED",), True, Seen.QUEUED),
        ("CONFIGURING", (), False, Seen.QUEUED),
        ("REQUEUE_HOLD", (), True, Seen.QUEUED),
        ("SPECIAL_EXIT", (), True, Seen.QUEUED),
        ("RUNNING", (), False, Seen.RUNNING),
        ("COMPLETING", (), True, Seen.RUNNING),  # v0.0.38 shows the flag alone
        ("SUSPENDED", (), True, Seen.SUSPENDED),
        ("STOPPED", (), True, Seen.SUSPENDED),
        ("COMPLETED", (), True, Seen.DONE),
        ("COMPLETED", ("COMPLETING",), True, Seen.DONE),
        ("FAILED", (), True, Seen.FAILED),
        ("NODE_FAIL", (), True, Seen.FAILED),
        ("BOOT_FAIL", (), False, Seen.FAILED),
        ("OUT_OF_MEMORY", (), True, Seen.FAILED),
        ("PREEMPTED", (), True, Seen.FAILED),
        ("TIMEOUT", (), True, Seen.TIMEOUT),
        ("DEADLINE", (), False, Seen.TIMEOUT),
        ("CANCELLED", (), True, Seen.CANCELED),
        ("UPDATE_DB", (), True, Seen.NOCHANGE),
        ("SOMETHING_NEW", (), True, Seen.UNKNOWN),
    ],
)
def test_state_mapping(state: str, flags: tuple[str, ...], started: bool, seen: Seen) -> None:
    assert map_state(_info(state, *flags), started).seen == seen


def _spec() -> SlurmJobSpec:
    return SlurmJobSpec(
        name="caesar-x",
        script="#!/bin/bash\ntrue\n",
        cwd="/mnt/jobs/u/job_x",
        stdout="/mnt/jobs/u/job_x/slurm.out",
        environment={"PATH": "/usr/bin:/bin", "A": "b=c"},
        time_limit_min=3,
        cpus=2,
        memory_mb=512,
        partition="normal",
    )


def test_submit_body_dialects() -> None:
    old = submit_body("v0.0.38", _spec())
    assert old["script"].startswith("#!/bin/bash")
    assert old["job"]["environment"] == {"PATH": "/usr/bin:/bin", "A": "b=c"}
    assert old["job"]["time_limit"] == 3 and old["job"]["memory_per_node"] == 512
    new = submit_body("v0.0.41", _spec())
    assert "script" not in new and new["job"]["script"].startswith("#!/bin/bash")
    assert new["job"]["environment"] == ["PATH=/usr/bin:/bin", "A=b=c"]
    assert new["job"]["time_limit"] == {"set": True, "infinite": False, "number": 3}
    assert new["job"]["memory_per_node"]["number"] == 512
    assert new["job"]["partition"] == "normal" and new["job"]["cpus_per_task"] == 2
    assert submit_body("v0.0.39", _spec())["script"].startswith("#!/bin/bash")


def _recorded_server(version: str, seen: list[httpx.Request]) -> httpx.MockTransport:
    """slurmrestd answering from the recorded documents of ``version`` (0040 or 0041)."""

    def handler(req: httpx.Request) -> httpx.Response:
        seen.append(req)
        path = req.url.path
        if path == "/openapi/v3":
            return httpx.Response(200, json=doc(f"{version}_openapi_paths"))
        v = f"v0.0.{version[-2:]}"
        if path == f"/slurm/{v}/job/submit" and req.method == "POST":
            return httpx.Response(200, json=doc(f"{version}_submit"))
        if path == f"/slurm/{v}/job/4242" and req.method == "GET":
            return httpx.Response(200, json=doc(f"{version}_job_running"))
        if path == f"/slurm/{v}/job/4242" and req.method == "DELETE":
            return httpx.Response(200, json=doc(f"{version}_cancel"))
        if path.startswith(f"/slurm/{v}/job/"):
            return httpx.Response(
                404 if version == "v0041" else 500, json=doc(f"{version}_job_unknown")
            )
        return httpx.Response(404, text="Unable to find requested URL endpoint")

    return httpx.MockTransport(handler)


@pytest.mark.parametrize("version", ["v0040", "v0041"])
def test_client_speaks_the_new_dialect(tmp_path: Path, version: str) -> None:
    key = tmp_path / "jwt_hs256.key"
    key.write_bytes(b"k" * 32)
    seen: list[httpx.Request] = []
    client = SlurmClient(
        "http://slurm:6820", "caesar", keyfile=key, transport=_recorded_server(version, seen)
    )
    assert client.version == f"v0.0.{version[-2:]}"
    assert client.submit(_spec()) == 4242
    body = json.loads(seen[-1].content)
    assert isinstance(body["job"]["environment"], list) and "script" in body["job"]
    info = client.job(4242)
    assert info is not None and info.state == "RUNNING"
    assert client.job(999999) is None
    assert client.cancel(4242) is True
    assert client.cancel(999999) is False
    # Every request carried the user and a valid token.
    for req in seen:
        assert req.headers["X-SLURM-USER-NAME"] == "caesar"
        claims = jwt.decode(req.headers["X-SLURM-USER-TOKEN"], b"k" * 32, algorithms=["HS256"])
        assert claims["sun"] == "caesar" and claims["exp"] > time.time()


def test_old_dialect_unknown_job_is_none() -> None:
    def handler(req: httpx.Request) -> httpx.Response:
        return httpx.Response(500, json=doc("v0038_job_unknown"))

    client = SlurmClient(
        "http://x", "u", token="t", version="v0.0.38", transport=httpx.MockTransport(handler)
    )
    assert client.job(999999) is None


def test_tokens_are_renewed_before_expiry(tmp_path: Path) -> None:
    key = tmp_path / "k"
    key.write_bytes(b"s" * 32)
    client = SlurmClient("http://x", "u", keyfile=key, lifespan=120)
    first = client.token()
    assert client.token() == first
    client._token_exp = time.time() + 30  # within the renewal margin
    time.sleep(1.1)
    assert client.token() != first
    with pytest.raises(SlurmError):
        SlurmClient("http://x", "u")  # neither key nor token


def test_batch_script_quotes_every_value(tmp_path: Path) -> None:
    """Paths and options with shell metacharacters reach the wrapper unchanged."""
    from caesar_rest.apps.registry import default_registry
    from caesar_rest.db.engine import make_engine, make_sessionmaker
    from caesar_rest.db.models import JobRecord
    from caesar_rest.jobs.service import JobService
    from caesar_rest.settings import Settings

    settings = Settings(
        datadir=tmp_path / "data",
        jobdir=tmp_path / "jobs",
        slurm_url="http://slurm:6820",
        slurm_token="t",
        slurm_jobdir=Path("/mnt/storage/jobs with space"),
        slurm_datadir=Path("/mnt/storage/data"),
        slurm_python="/opt/py/bin/python3",
    )
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    svc = JobService(settings, make_sessionmaker(engine), default_registry())
    backend = SlurmBackend(svc, settings.slurm)
    reldir = "anonymous/job_abc"
    jdir = tmp_path / "jobs" / reldir
    jdir.mkdir(parents=True)
    nasty = "$(touch /tmp/pwned); `id` 'q' \"d\""
    command = [
        __import__("sys").executable,
        "-m",
        "app",
        "--input",
        str((tmp_path / "data" / "u" / "f.fits").resolve()),
        "--tag",
        nasty,
    ]
    (jdir / "job.json").write_text(json.dumps({"command": command}))
    job = JobRecord(id="abc", app="sep", reldir=reldir, time_limit=90, cores=8, owner="u")
    script = backend.batch_script(job)
    lines = script.splitlines()
    cd = ["cd", "--", "/mnt/storage/jobs with space/anonymous/job_abc", "||", "exit", "1"]
    assert shlex.split(lines[2]) == cd
    argv = shlex.split(next(line for line in lines if line.startswith("timeout ")))
    assert argv[:4] == ["timeout", "--signal=TERM", "--kill-after=5", "90"]
    assert argv[4:9] == [
        "/opt/py/bin/python3",
        "-m",
        "caesar_rest.backends.wrapper",
        "--",
        "/opt/py/bin/python3",
    ]
    assert argv[argv.index("--input") + 1] == "/mnt/storage/data/u/f.fits"
    assert argv[argv.index("--tag") + 1] == nasty
    assert argv[-4:] == [">>", "job.log", "2>&1"] or argv[-3:] == [">>", "job.log", "2>&1"]
    spec = backend.job_spec(job)
    assert spec.time_limit_min == 3  # 90 s -> 2 min, plus the one-minute backstop
    assert spec.cpus == 4  # capped at slurm_max_cores
    assert spec.cwd == "/mnt/storage/jobs with space/anonymous/job_abc"


def _mpi_backend(tmp_path: Path, **slurm: Any) -> tuple[SlurmBackend, Path]:
    from caesar_rest.apps.registry import default_registry
    from caesar_rest.db.engine import make_engine, make_sessionmaker
    from caesar_rest.jobs.service import JobService
    from caesar_rest.settings import Settings

    settings = Settings(
        datadir=tmp_path / "data",
        jobdir=tmp_path / "jobs",
        slurm_url="http://slurm:6820",
        slurm_token="t",
        slurm_max_cores=2,
        slurm_memory_mb=1000,
        **slurm,
    )
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")
    svc = JobService(settings, make_sessionmaker(engine), default_registry())
    return SlurmBackend(svc, settings.slurm), tmp_path / "jobs"


def _mpi_job(jobs: Path, name: str, app: str, options: dict[str, Any]) -> Any:
    from caesar_rest.db.models import JobRecord

    (jobs / "u" / name).mkdir(parents=True)
    spec = {"command": ["/py", "-m", "caesar_rest.apps.caesar_run"], "options": options}
    (jobs / "u" / name / "job.json").write_text(json.dumps(spec))
    return JobRecord(id=name, app=app, reldir=f"u/{name}", time_limit=90, cores=2, owner="u")


def _run_line(script: str) -> list[str]:
    argv = shlex.split(next(line for line in script.splitlines() if line.startswith("timeout ")))
    return argv[argv.index("--") + 1 : argv.index(">>")]


def test_mpi_jobs_run_their_ranks_through_the_launcher(tmp_path: Path) -> None:
    """slurm_mpi_ranks tasks with the app's cores each, started by srun (or mpirun) inside
    the wrapper; other apps and no-mpi jobs stay one task."""
    backend, jobs = _mpi_backend(tmp_path, slurm_mpi_ranks=4, slurm_mpi_nodes=2)
    caesar = _mpi_job(jobs, "a", "caesar", {})
    assert _run_line(backend.batch_script(caesar)) == [
        "srun",
        "--mpi=pmix",
        "--ntasks=4",
        "--cpus-per-task=2",
        "--kill-on-bad-exit=1",
        "/py",
        "-m",
        "caesar_rest.apps.caesar_run",
    ]
    spec = backend.job_spec(caesar)
    assert (spec.tasks, spec.nodes, spec.cpus) == (4, 2, 2)
    body = submit_body("v0.0.38", spec)["job"]
    assert (body["tasks"], body["minimum_nodes"], body["maximum_nodes"]) == (4, 2, 2)
    assert body["memory_per_cpu"] == 500 and "memory_per_node" not in body
    for job in (_mpi_job(jobs, "b", "sep", {}), _mpi_job(jobs, "c", "caesar", {"no-mpi": True})):
        assert _run_line(backend.batch_script(job))[0] == "/py"
        spec = backend.job_spec(job)
        assert (spec.tasks, spec.nodes) == (1, 0)
        assert submit_body("v0.0.41", spec)["job"]["memory_per_node"]["number"] == 1000
    other, jobs2 = _mpi_backend(
        tmp_path / "m", slurm_mpi_ranks=2, slurm_mpi_launcher="/opt/ompi/bin/mpirun"
    )
    line = _run_line(other.batch_script(_mpi_job(jobs2, "d", "caesar", {})))
    assert line[:5] == ["/opt/ompi/bin/mpirun", "-n", "2", "--bind-to", "none"]


def test_the_launcher_setting_is_checked() -> None:
    from pydantic import ValidationError

    from caesar_rest.settings import SlurmSettings

    for bad in ("srun; id", "bash", "/x/../srun -x", "mpirun --foo"):
        with pytest.raises(ValidationError):
            SlurmSettings(mpi_launcher=bad)
    with pytest.raises(ValidationError):
        SlurmSettings(mpi_type="pmix --x")
