"""Fault tests with real processes: killed server, killed jobs, restarts, time limits, cancel."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.server import LiveServer, wait_state


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is not alive.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_until(cond, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[LiveServer]:
    # Cold starts (the fallback when the fork server cannot serve): the tests below show what
    # the cold path keeps; the warm tests at the end, the same for jobs of the fork server.
    s = LiveServer(tmp_path / "srv", CAESAR_REST_JOB_FORK_SERVER="off").start()
    yield s
    s.stop()


def upload(c: httpx.Client, path: Path) -> str:
    with open(path, "rb") as fh:
        r = c.post("/upload", files={"file": (path.name, fh)})
    assert r.status_code == 200, r.text
    return str(r.json()["uuid"])


def submit_sleep(c: httpx.Client, file_id: str, seconds: float, code: int = 0) -> str:
    r = c.post(
        "/job",
        json={
            "app": "sleep",
            "job_inputs": {"seconds": seconds, "exit-code": code},
            "data_inputs": file_id,
        },
    )
    assert r.status_code == 202, r.text
    return str(r.json()["job_id"])


def job_pids(srv: LiveServer, job_id: str) -> tuple[int, int]:
    """(app pid, grandchild sleep pid) written by the test app."""
    path = next(srv.jobdir.glob(f"*/job_{job_id}")) / "pids.txt"
    wait_until(lambda: path.exists() and len(path.read_text().split()) == 2)
    a, b = path.read_text().split()
    return int(a), int(b)


def test_server_killed_during_upload_leaves_nothing(srv: LiveServer, tmp_path: Path) -> None:
    sent_enough = threading.Event()
    release = threading.Event()

    def body() -> Iterator[bytes]:
        yield b'--bnd\r\nContent-Disposition: form-data; name="file"; filename="x.fits"\r\n\r\n'
        yield b"SIMPLE  =                    T" + b" " * 50
        for _ in range(64):
            yield b"\0" * 65536
        sent_enough.set()
        release.wait(30)
        yield b"\r\n--bnd--\r\n"

    def do_upload() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(
                f"{srv.api}/upload",
                content=body(),
                timeout=30,
                headers={"Content-Type": "multipart/form-data; boundary=bnd"},
            )

    t = threading.Thread(target=do_upload)
    t.start()
    assert sent_enough.wait(20)
    incoming = srv.datadir / ".incoming"
    wait_until(lambda: any(incoming.glob("*.part")))
    srv.kill()
    release.set()
    t.join(30)
    assert any(incoming.glob("*.part"))  # the partial file of the dead process is there...
    srv.start()
    assert not any(incoming.glob("*.part"))  # ...and the restart swept it
    with srv.client() as c:
        assert c.get("/fileids").json() == []
    assert [p for p in srv.datadir.rglob("*") if p.is_file()] == []


def test_job_process_sigkill_ends_failure(srv: LiveServer, s17: Path) -> None:
    with srv.client() as c:
        fid = upload(c, s17)
        # 1. the job process (the wrapper, whose pid the status shows) is killed
        job = submit_sleep(c, fid, 60)
        st = wait_state(c, job, {"RUNNING"})
        app_pid, grandchild = job_pids(srv, job)
        wait_until(lambda: c.get(f"/job/{job}/status").json()["pid"] != "")
        pid = int(c.get(f"/job/{job}/status").json()["pid"])
        os.kill(pid, signal.SIGKILL)
        st = wait_state(c, job, {"FAILURE"})
        assert st["exit_code"] == -signal.SIGKILL
        assert "signal 9" in st["status"]
        wait_until(lambda: not pid_alive(app_pid) and not pid_alive(grandchild))
        # 2. the app process itself is killed: the wrapper records it
        job2 = submit_sleep(c, fid, 60)
        wait_state(c, job2, {"RUNNING"})
        app_pid, grandchild = job_pids(srv, job2)
        os.kill(app_pid, signal.SIGKILL)
        st = wait_state(c, job2, {"FAILURE"})
        assert st["exit_code"] == -signal.SIGKILL
        wait_until(lambda: not pid_alive(grandchild))
        # a non-zero exit code is a FAILURE with that code
        job3 = submit_sleep(c, fid, 0, code=3)
        st = wait_state(c, job3, {"FAILURE"})
        assert st["exit_code"] == 3 and "return code 3" in st["status"]


def test_time_limit_gives_timed_out(tmp_path: Path, s17: Path) -> None:
    srv = LiveServer(tmp_path / "srv", CAESAR_REST_JOB_TIME_LIMIT="2").start()
    try:
        with srv.client() as c:
            fid = upload(c, s17)
            job = submit_sleep(c, fid, 60)
            app_pid, grandchild = job_pids(srv, job)
            t0 = time.time()  # the app runs (a first warm job waited for the server's imports)
            st = wait_state(c, job, {"TIMED-OUT"}, timeout=45)
            assert time.time() - t0 < 30  # the 2 s limit, not the job's own 60 s, ended it
            assert st["exit_code"] == -signal.SIGTERM
            wait_until(lambda: not pid_alive(app_pid) and not pid_alive(grandchild))
    finally:
        srv.stop()


def test_cancel_running_job_kills_process_group(srv: LiveServer, s17: Path) -> None:
    with srv.client() as c:
        fid = upload(c, s17)
        job = submit_sleep(c, fid, 60)
        wait_state(c, job, {"RUNNING"})
        app_pid, grandchild = job_pids(srv, job)
        r = c.post(f"/job/{job}/cancel")
        assert r.status_code == 200 and r.json()["state"] == "CANCELED"
        wait_until(lambda: not pid_alive(app_pid) and not pid_alive(grandchild))
        st = c.get(f"/job/{job}/status").json()
        assert st["state"] == "CANCELED"
        # queued jobs are canceled without running
        jobs = [submit_sleep(c, fid, 60) for _ in range(3)]  # limit is 2 at once
        for j in jobs:
            assert c.get(f"/job/{j}/cancel").json()["state"] == "CANCELED"
        for j in jobs:
            wait_state(c, j, {"CANCELED"})


def test_restart_reconciles_running_jobs(srv: LiveServer, s17: Path) -> None:
    with srv.client() as c:
        fid = upload(c, s17)
        lost = submit_sleep(c, fid, 60)  # its process dies while the server is down
        finished = submit_sleep(c, fid, 1.5)  # ends while the server is down
        wait_state(c, lost, {"RUNNING"})
        wait_state(c, finished, {"RUNNING"})
        lost_pids = job_pids(srv, lost)
        job_pids(srv, finished)
    srv.kill()
    wrapper_pid = int(
        sqlite3.connect(srv.root / "caesar-rest.sqlite3")
        .execute("SELECT pid FROM jobs WHERE id = ?", (lost,))
        .fetchone()[0]
    )
    for pid in (wrapper_pid, *lost_pids):
        os.kill(pid, signal.SIGKILL)
    # 'finished' completes meanwhile and writes exit.json (its wrapper outlives the server).
    finished_exit = next(srv.jobdir.glob(f"*/job_{finished}")) / "exit.json"
    wait_until(finished_exit.exists, timeout=60)
    # A job marked RUNNING whose process never existed on this machine.
    db = sqlite3.connect(srv.root / "caesar-rest.sqlite3")
    db.execute(
        "UPDATE jobs SET phase='EXECUTING', pid=999999, pid_start=1 WHERE id = ?", (finished,)
    )
    db.commit()
    db.close()
    srv.start()
    with srv.client() as c:
        st = wait_state(c, lost, {"FAILURE"})
        assert "vanished" in st["status"]
        st = wait_state(c, finished, {"SUCCESS"})
        assert st["exit_code"] == 0


def test_restart_adopts_job_still_running(srv: LiveServer, s17: Path) -> None:
    with srv.client() as c:
        fid = upload(c, s17)
        job = submit_sleep(c, fid, 120)
        wait_state(c, job, {"RUNNING"})
        app_pid, grandchild = job_pids(srv, job)
    srv.kill()
    assert pid_alive(app_pid)  # the job outlives the server
    srv.start()
    with srv.client() as c:
        assert c.get(f"/job/{job}/status").json()["state"] == "RUNNING"
        # The restarted server adopted the job: it sees the process end and records it.
        os.kill(app_pid, signal.SIGKILL)
        st = wait_state(c, job, {"FAILURE"}, timeout=30)
        assert st["exit_code"] == -signal.SIGKILL
        wait_until(lambda: not pid_alive(grandchild))


# --- warm starts (the fork server) -----------------------------------------------------------
@pytest.fixture
def warm(tmp_path: Path) -> Iterator[LiveServer]:
    s = LiveServer(tmp_path / "warm", CAESAR_REST_JOB_FORK_SERVER="eager").start()
    yield s
    s.stop()


def job_log_text(srv: LiveServer, job_id: str) -> str:
    return (next(srv.jobdir.glob(f"*/job_{job_id}")) / "job.log").read_text()


def test_warm_jobs_outlive_a_killed_service(warm: LiveServer, s17: Path) -> None:
    with warm.client() as c:
        fid = upload(c, s17)
        ends_while_down = submit_sleep(c, fid, 2)  # ends while the service is down
        ends_after = submit_sleep(c, fid, 8)  # still runs when the service is back
        for job in (ends_while_down, ends_after):
            wait_state(c, job, {"RUNNING"})
            job_pids(warm, job)  # the app runs
            assert "warm start (fork server" in job_log_text(warm, job)
    # The service, its fork server and anything else in its process group, killed outright.
    warm.kill()
    folder = next(warm.jobdir.glob(f"*/job_{ends_while_down}"))
    wait_until(lambda: (folder / "exit.json").exists(), timeout=30)  # recorded by the job itself
    warm.start()
    with warm.client() as c:
        for job in (ends_while_down, ends_after):
            st = wait_state(c, job, {"SUCCESS", "FAILURE"}, timeout=60)
            assert st["state"] == "SUCCESS" and st["exit_code"] == 0, st
            assert c.get(f"/job/{job}/results/result").text == "done\n"


def test_cancel_kills_a_warm_job_group(warm: LiveServer, s17: Path) -> None:
    with warm.client() as c:
        fid = upload(c, s17)
        job = submit_sleep(c, fid, 60)
        wait_state(c, job, {"RUNNING"})
        app_pid, grandchild = job_pids(warm, job)
        assert "warm start (fork server" in job_log_text(warm, job)
        assert c.post(f"/job/{job}/cancel").json()["state"] == "CANCELED"
        wait_until(lambda: not pid_alive(app_pid) and not pid_alive(grandchild))
        assert c.get(f"/job/{job}/status").json()["state"] == "CANCELED"
