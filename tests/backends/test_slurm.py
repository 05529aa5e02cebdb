"""The slurm backend against a real single-node Slurm 22.05 (munge, slurmctld, slurmd,
slurmrestd with JWT) started through scripts/slurm.sh."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from caesar_rest.backends.slurmrest import SlurmClient

from tests.backends.backend_support import (
    SlurmCluster,
    job_folder,
    pid_alive,
    slurm_server,
    start_slurm,
    status,
    submit_sleep,
    submit_uws,
    upload,
    wait_file,
    wait_for,
)
from tests.support.e2e import run_curl_sequence
from tests.support.server import wait_state
from tests.support.webdav_remote import WebdavRemote

pytestmark = pytest.mark.slurm
FINAL = {"SUCCESS", "FAILURE", "TIMED-OUT", "ABORTED", "CANCELED"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[SlurmCluster]:
    yield from start_slurm()


@pytest.fixture(scope="module")
def srv(cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One server on the slurm backend (SQLite) for the tests below."""
    s = slurm_server(tmp_path_factory.mktemp("slurm") / "srv", cluster).start(timeout=60)
    yield s
    s.stop()


def slurm_id(cluster: SlurmCluster, job_id: str) -> str:
    """The Slurm job id of a caesar-rest job (by its Slurm job name)."""
    out = cluster.run("squeue", "-h", "-n", f"caesar-{job_id}", "-o", "%i").stdout.strip()
    assert out, f"caesar-{job_id} is not in squeue"
    return out


def slurm_state(cluster: SlurmCluster, sid: str) -> str:
    out = cluster.run("scontrol", "show", "job", sid, check=False).stdout
    return next((w.split("=", 1)[1] for w in out.split() if w.startswith("JobState=")), "")


def test_curl_sequence_slurm(srv: Any, s17: Path, tmp_path: Path) -> None:
    """The core issue's end-to-end sequence, unchanged, with the job as a Slurm batch job."""
    run_curl_sequence(srv, s17, tmp_path)
    with srv.client() as c:
        doc = status(c, c.get("/jobs").json()[0]["job_id"])
    assert doc["backend"] == "slurm"
    assert [e["to"] for e in doc["events"]] == ["PENDING", "QUEUED", "EXECUTING", "COMPLETED"]
    assert "Slurm as job" in doc["events"][1]["message"]


def test_dialect_and_given_token(cluster: SlurmCluster) -> None:
    """22.05 serves v0.0.38; a token from `scontrol token` works instead of the key."""
    out = cluster.run("scontrol", "token", "lifespan=300").stdout.strip()
    token = out.split("=", 1)[1]
    client = SlurmClient(cluster.env["CAESAR_REST_SLURM_URL"], "root", token=token)
    assert client.version == "v0.0.38"
    assert isinstance(client.jobs(), list)


def test_cancel_through_the_api(srv: Any, cluster: SlurmCluster, s17: Path) -> None:
    with srv.client() as c:
        job_id = submit_sleep(c, upload(c, s17), 60)
        wait_for(c, job_id, {"RUNNING"})
        sid = slurm_id(cluster, job_id)
        app_pid, child_pid = map(int, wait_file(job_folder(srv, job_id) / "pids.txt").split())
        assert c.post(f"/job/{job_id}/cancel").status_code == 200
        doc = wait_for(c, job_id, {"CANCELED"}, timeout=60)
    assert doc["phase"] == "ABORTED"
    deadline = time.time() + 60
    while time.time() < deadline and (
        pid_alive(app_pid) or slurm_state(cluster, sid) != "CANCELLED"
    ):
        time.sleep(0.2)
    assert slurm_state(cluster, sid) == "CANCELLED"
    assert not pid_alive(app_pid) and not pid_alive(child_pid)


def test_scancel_from_outside(srv: Any, cluster: SlurmCluster, s17: Path) -> None:
    with srv.client() as c:
        job_id = submit_sleep(c, upload(c, s17), 60)
        wait_for(c, job_id, {"RUNNING"})
        cluster.run("scancel", slurm_id(cluster, job_id))
        doc = wait_for(c, job_id, FINAL, timeout=20)
    assert doc["phase"] == "ABORTED", doc
    assert doc["state"] == "CANCELED"
    assert "CANCELLED" in doc["status"]


def test_failing_job(srv: Any, s17: Path) -> None:
    with srv.client() as c:
        job_id = submit_sleep(c, upload(c, s17), 0.2, code=3)
        doc = wait_for(c, job_id, FINAL, timeout=30)
    assert doc["state"] == "FAILURE" and doc["exit_code"] == 3, doc


def test_time_limit_to_the_second(srv: Any, s17: Path) -> None:
    """The batch script stops the job at its own limit (Slurm counts minutes)."""
    with srv.client() as c:
        fid = upload(c, s17)
    job_id = submit_uws(srv, fid, seconds=60, limit=3)
    with srv.client() as c:
        doc = wait_for(c, job_id, FINAL, timeout=90)
    assert doc["state"] == "TIMED-OUT", doc
    assert 2.5 < doc["elapsed_time"] < 45, doc  # the 3 s limit, not the job's own 60 s


def test_slurm_timeout_state(srv: Any, cluster: SlurmCluster, s17: Path) -> None:
    """Slurm's own TIMEOUT maps to TIMED-OUT. Slurm counts whole minutes, so the job's limit
    is lowered to zero while it runs (as an operator may), instead of waiting a minute."""
    with srv.client() as c:
        job_id = submit_sleep(c, upload(c, s17), 300)
        wait_for(c, job_id, {"RUNNING"})
        sid = slurm_id(cluster, job_id)
        cluster.run("scontrol", "update", f"JobId={sid}", "TimeLimit=0")
        doc = wait_for(c, job_id, FINAL, timeout=90)
    assert doc["state"] == "TIMED-OUT", doc
    assert slurm_state(cluster, sid) == "TIMEOUT"
    assert "Slurm stopped the job at its time limit" in doc["status"]


def test_monitor_reconciles_jobs_that_vanished_from_slurmctld(
    srv: Any, cluster: SlurmCluster, s17: Path
) -> None:
    """slurmctld loses its job records: a finished job is settled by the monitor from its
    exit.json, a held one is marked lost once past the bound. Runs last: it stops the shared
    server (only the monitor acts) and restarts slurmctld without state."""
    env = {
        **srv.env,
        "CAESAR_REST_DATADIR": str(srv.datadir),
        "CAESAR_REST_JOBDIR": str(srv.jobdir),
    }
    db = srv.root / "caesar-rest.sqlite3"

    def monitor(lost_after: float) -> None:
        r = subprocess.run(
            [sys.executable, "-m", "caesar_rest.cli", "monitor", "--once"],
            env={**env, "CAESAR_REST_MONITOR_LOST_AFTER": str(lost_after)},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr

    def record(job_id: str) -> tuple[str, str | None, str, int | None]:
        with sqlite3.connect(db) as conn:
            row = conn.execute(
                "SELECT phase, reason, message, exit_code FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        return tuple(row)  # type: ignore[return-value]

    with srv.client() as c:
        fid = upload(c, s17)
        held = submit_sleep(c, fid, 1)
        cluster.run("scontrol", "hold", slurm_id(cluster, held))
        done = submit_sleep(c, fid, 2)
    srv.stop()  # from here on only the monitor moves the jobs
    wait_file(job_folder(srv, done) / "exit.json")
    assert record(done)[0] in ("QUEUED", "EXECUTING")
    r = cluster.script("clear-jobs")
    assert r.returncode == 0, r.stderr
    assert cluster.run("squeue", "-h").stdout.strip() == ""
    monitor(600)
    # The finished job is settled from its exit.json; the held one is only unseen so far.
    assert record(done)[0] == "COMPLETED" and record(done)[3] == 0
    assert record(held)[0] == "QUEUED"
    time.sleep(1.1)
    monitor(1)
    phase, reason, message, _ = record(held)
    assert (phase, reason) == ("ERROR", "lost"), message
    assert "unknown to slurmctld" in message and "outcome unknown" in message


def test_slurm_job_with_the_remote_volume(cluster: SlurmCluster, tmp_path: Path, s17: Path) -> None:
    """End to end with the rclone volume: the upload is on the remote before 200, the input
    is staged in on the node when it is not cached, and the Slurm job ends SUCCESS only with
    its whole folder on the remote (a real ``rclone serve webdav``)."""
    webdav = WebdavRemote(tmp_path / "remote").start()
    s = slurm_server(
        tmp_path / "srv",
        cluster,
        CAESAR_REST_MOUNT_RCLONE_VOLUME="true",
        CAESAR_REST_RCLONE_STORAGE_NAME=webdav.remote,
        CAESAR_REST_RCLONE_STORAGE_PATH="appdata",
    )
    try:
        s.start(timeout=60)
        with s.client() as c:
            fid = upload(c, s17)
            assert webdav.files("appdata/data") == {f"anonymous/{fid}.fits": 4_017_600}
            (s.datadir / "anonymous" / f"{fid}.fits").unlink()  # not cached: staged in
            job_id = submit_sleep(c, fid, 0.2)
            st = wait_state(c, job_id, FINAL, timeout=90)
        assert st["state"] == "SUCCESS", st
        on_remote = webdav.files(f"appdata/jobs/anonymous/job_{job_id}")
        assert {"job.json", "job.log", "exit.json"} <= set(on_remote)
        jdir = s.jobdir / "anonymous" / f"job_{job_id}"
        assert on_remote == {p.name: p.stat().st_size for p in jdir.iterdir() if p.is_file()}
        assert (s.datadir / "anonymous" / f"{fid}.fits").read_bytes() == s17.read_bytes()
    finally:
        s.stop()
        webdav.stop()
