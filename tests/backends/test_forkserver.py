"""Warm job starts (issue 19): jobs forked by the fork server, with the cold path's isolation.

One small server (numpy preloaded: a fraction of a second) serves most tests of this module;
the death and refusal tests start their own.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog
from astropy.io import fits
from fastapi.testclient import TestClient

from caesar_rest.api.app import create_app
from caesar_rest.backends import local as local_backend
from caesar_rest.backends.forkserver import ForkServer
from caesar_rest.backends.process import (
    Launched,
    kill_group,
    launch,
    launch_environment,
    process_alive,
)
from caesar_rest.db.models import JobRecord
from caesar_rest.jobs.folder import LOG_FILE, JobLimits, outcome_of, read_exit

from tests.support.app_jobs import API, job_log, run_job, upload, wait_state
from tests.support.procs import child_pids, wait_children, wait_gone
from tests.support.server import make_settings

MIB = 1024 * 1024
PROBE = [sys.executable, "-m", "job_probe"]


def _server(*preload: str, die_with_launcher: bool = False) -> ForkServer:
    server = ForkServer(preload, die_with_launcher=die_with_launcher, env=launch_environment(1))
    server.start()
    assert server.wait_ready(60), server.why
    return server


@pytest.fixture(scope="module")
def server() -> Iterator[ForkServer]:
    srv = _server("numpy")
    yield srv
    srv.close()


def _probe(folder: Path, limits: JobLimits | None = None, *args: str, **kw: Any) -> Launched:
    return launch(folder, [*PROBE, *args], cores=3, limits=limits, extra_env={"PROBE": "x"}, **kw)


def _report(folder: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((folder / "probe.json").read_text())
    return data


def _wait_file(path: Path, timeout: float = 10) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return path.read_text()
        time.sleep(0.02)
    raise AssertionError(f"{path} did not appear")


def test_a_job_runs_warm_with_the_cold_isolation(server: ForkServer, tmp_path: Path) -> None:
    started = _probe(tmp_path, JobLimits(open_files=321), "--exit-code", "3", warm=server)
    assert started.warm
    assert started.proc.wait(timeout=20) == 3
    rep = _report(tmp_path)
    # Forked by the job's wrapper, itself forked by the server (numpy there already), in a
    # session and process group of its own: the wrapper's.
    assert rep["numpy_before"] is True and rep["ppid"] == started.pid
    assert started.pid == rep["sid"] == rep["pgid"] != rep["pid"]
    assert rep["cwd"] == str(tmp_path) and rep["argv"] == ["--exit-code", "3"]
    # Only its standard streams: nothing of the server (its sockets, pipes) is left open.
    log = str(tmp_path / LOG_FILE)
    assert rep["fds"] == {"0": os.devnull, "1": log, "2": log}
    # One thread, and the BLAS pool the job's OMP_NUM_THREADS asks for (as a new interpreter).
    assert rep["threads"] == int(rep["env"]["OMP_NUM_THREADS"])
    # A new interpreter's signal handlers, nothing blocked.
    assert rep["handlers"] == {
        "SIGTERM": "SIG_DFL",
        "SIGINT": "default_int_handler",
        "SIGCHLD": "SIG_DFL",
        "SIGPIPE": "SIG_IGN",
        "SIGXFSZ": "SIG_IGN",
        "SIGHUP": "SIG_DFL",
    }
    assert rep["blocked"] == []
    # The job's environment and limits, not the server's.
    assert rep["env"] == {
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "3"),
        "CAESAR_JOB_LIMITS": "open_files=321",
        "PROBE": "x",
    }
    assert rep["nofile"] == 321
    # exit.json and the log lines as the wrapper writes them; the outcome rule is the same.
    record = read_exit(tmp_path)
    assert record is not None and (record.exit_code, record.signal) == (3, None)
    assert record.cpu_time is not None and record.max_rss_kib
    assert outcome_of(record).exit_code == 3
    # The wrapper's lines first, in the order of a cold start (the spare writes them before it
    # hands the app its command).
    lines = (tmp_path / LOG_FILE).read_text().splitlines()
    assert lines[:3] == [
        f"[caesar-rest] warm start (fork server {server.pid})",
        f"[caesar-rest] running: {[*PROBE, '--exit-code', '3']!r}",
        "[caesar-rest] limits: open_files=321",
    ]
    assert lines[3].startswith("[caesar-rest] exit code 3,") and len(lines) == 4


def test_each_job_draws_its_own_random_numbers(server: ForkServer, tmp_path: Path) -> None:
    draws = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        started = _probe(tmp_path / name, warm=server)
        assert started.warm and started.proc.wait(timeout=20) == 0
        draws.append(_report(tmp_path / name)["random"])
    assert draws[0] != draws[1]  # numpy's global state is seeded afresh in each job


def test_cancel_kills_the_warm_job_group(server: ForkServer, tmp_path: Path) -> None:
    started = launch(
        tmp_path, [sys.executable, "-m", "caesar_test_apps", "--seconds", "60"], 1, warm=server
    )
    assert started.warm
    app, child = map(int, _wait_file(tmp_path / "pids.txt").split())
    assert os.getpgid(app) == os.getpgid(child) == started.pid  # the wrapper's group
    kill_group(started.pid, started.start_ticks, grace=2.0)
    assert started.proc.wait(timeout=10) == 128 + signal.SIGTERM
    assert not process_alive(app, None) and not process_alive(child, None)
    record = read_exit(tmp_path)
    assert record is not None and (record.exit_code, record.signal) == (-15, 15)


def test_limits_still_apply(server: ForkServer, tmp_path: Path) -> None:
    (tmp_path / "mem").mkdir()
    mem = launch(
        tmp_path / "mem",
        [sys.executable, "-m", "caesar_test_apps", "--hog", "memory", "--amount", "1024"],
        1,
        limits=JobLimits(memory=400 * MIB),
        warm=server,
    )
    assert mem.warm and mem.proc.wait(timeout=20) == 1
    record = read_exit(tmp_path / "mem")
    assert record is not None and record.reason == "memory limit 400 MiB exceeded"
    (tmp_path / "cpu").mkdir()
    cpu = launch(
        tmp_path / "cpu",
        [sys.executable, "-m", "caesar_test_apps", "--hog", "cpu", "--amount", "30"],
        1,
        limits=JobLimits(cpu_time=1),
        warm=server,
    )
    assert cpu.warm and cpu.proc.wait(timeout=20) == 128 + signal.SIGXCPU
    record = read_exit(tmp_path / "cpu")
    assert record is not None and record.limit == "cpu_time"
    assert outcome_of(record).timed_out
    assert (
        "[caesar-rest] CPU time limit of 1 s exceeded" in (tmp_path / "cpu" / LOG_FILE).read_text()
    )


def test_another_program_runs_under_the_wrapper(server: ForkServer, tmp_path: Path) -> None:
    started = launch(tmp_path, ["sh", "-c", "echo from-sh; exit 4"], 1, warm=server)
    assert started.warm and started.proc.wait(timeout=20) == 4
    record = read_exit(tmp_path)
    assert record is not None and record.exit_code == 4
    assert "from-sh" in (tmp_path / LOG_FILE).read_text()


def test_fork_server_death_falls_back_to_cold_starts(tmp_path: Path) -> None:
    srv = _server()
    try:
        assert srv.pid is not None
        os.kill(srv.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while srv.pid is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        with structlog.testing.capture_logs() as logs:
            for name in ("a", "b"):
                (tmp_path / name).mkdir()
                started = _probe(tmp_path / name, warm=srv)
                assert not started.warm and started.proc.wait(timeout=30) == 0
                assert _report(tmp_path / name)["numpy_before"] is False  # a new interpreter
        # Logged once, with the reason.
        cold = [e for e in logs if e["event"] == "fork_server_unavailable"]
        assert [e["reason"] for e in cold] == ["exited with status -9"]
        assert "warm start" not in (tmp_path / "a" / LOG_FILE).read_text()
    finally:
        srv.close()


def test_unsafe_preload_is_refused(tmp_path: Path) -> None:
    srv = ForkServer(["threaded_import"], env=launch_environment(1))
    try:
        srv.start()
        assert not srv.wait_ready(60)
        assert srv.why == "2 threads after the preload (forking is unsafe)"
        started = _probe(tmp_path, warm=srv)
        assert not started.warm and started.proc.wait(timeout=30) == 0
    finally:
        srv.close()


def test_a_local_job_outlives_its_launcher_and_keeps_its_record(tmp_path: Path) -> None:
    srv = _server()
    started = launch(
        tmp_path, [sys.executable, "-m", "caesar_test_apps", "--seconds", "1"], 1, warm=srv
    )
    server = srv.pid
    srv.close()  # the service stops (or restarts): the job goes on
    assert started.warm and server is not None
    assert started.proc.wait(timeout=20) == 0
    record = read_exit(tmp_path)
    assert record is not None and (record.exit_code, record.signal) == (0, None)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and process_alive(server, None):
        time.sleep(0.05)
    assert not process_alive(server, None)  # then the server has gone too


def test_a_local_job_outlives_a_killed_server_and_records_its_end(tmp_path: Path) -> None:
    srv = _server()
    try:
        started = launch(
            tmp_path, [sys.executable, "-m", "caesar_test_apps", "--seconds", "1.5"], 1, warm=srv
        )
        _wait_file(tmp_path / "pids.txt")
        assert started.warm and srv.pid is not None
        os.kill(srv.pid, signal.SIGKILL)  # as when the service's process group is killed
        # The launcher no longer hears the status (None), but the job ends as it would have,
        # and its wrapper (in the job's own session) has recorded how.
        assert started.proc.wait(timeout=20) is None
        record = read_exit(tmp_path)
        assert record is not None and (record.exit_code, record.signal) == (0, None)
        assert (tmp_path / "result.txt").read_text() == "done\n"
        assert "[caesar-rest] exit code 0," in (tmp_path / LOG_FILE).read_text()
    finally:
        srv.close()


def test_a_launcher_that_dies_takes_its_celery_jobs_along(tmp_path: Path) -> None:
    srv = _server(die_with_launcher=True)
    try:
        started = launch(
            tmp_path, [sys.executable, "-m", "caesar_test_apps", "--seconds", "60"], 1, warm=srv
        )
        app, child = map(int, _wait_file(tmp_path / "pids.txt").split())
        started.proc.close()  # type: ignore[attr-defined]  # the task's process went away
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and process_alive(app, None):
            time.sleep(0.05)
        assert not process_alive(app, None)
        # The wrapper writes the record after its app has gone: wait for it (seen missing once
        # when read at once on a loaded CI machine).
        record = read_exit(tmp_path)
        while record is None and time.monotonic() < deadline + 10:
            time.sleep(0.05)
            record = read_exit(tmp_path)
        assert record is not None and record.signal == signal.SIGTERM
    finally:
        srv.close()
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


# --- the spare wrapper: forked before its job -------------------------------------------------
def test_a_job_runs_in_the_wrapper_forked_before_it(tmp_path: Path) -> None:
    srv = _server()
    try:
        assert srv.pid is not None
        # Forked in advance, waiting for a job: the wrapper, and the app in its session.
        (spare,) = wait_children(srv.pid)
        (app,) = wait_children(spare)
        started = _probe(tmp_path, warm=srv)
        assert started.warm and started.pid == spare
        assert started.proc.wait(timeout=20) == 0
        rep = _report(tmp_path)
        assert rep["pid"] == app and rep["ppid"] == spare
        assert rep["sid"] == rep["pgid"] == spare  # the job's own session
        # The next job's wrapper is forked once this one has been handed over.
        (nxt,) = wait_children(srv.pid)
        assert nxt != spare
    finally:
        srv.close()


def test_an_unused_spare_dies_with_its_server(tmp_path: Path) -> None:
    srv = _server()
    assert srv.pid is not None
    (spare,) = wait_children(srv.pid)
    (app,) = wait_children(spare)
    os.kill(srv.pid, signal.SIGKILL)  # as when the service's process group is killed
    assert wait_gone(spare, 5) and wait_gone(app, 5)
    srv.close()
    srv = _server()
    try:
        assert srv.pid is not None
        (spare,) = wait_children(srv.pid)
        (app,) = wait_children(spare)
        server = srv.pid
        srv.close()  # the service stops: the server ends, and its spare with it
        assert wait_gone(spare, 5) and wait_gone(app, 5) and wait_gone(server, 5)
    finally:
        srv.close()


def test_a_spare_that_died_unused_is_replaced(tmp_path: Path) -> None:
    srv = _server()
    try:
        assert srv.pid is not None
        (spare,) = wait_children(srv.pid)
        os.kill(spare, signal.SIGKILL)
        assert wait_gone(spare, 5)
        started = _probe(tmp_path, warm=srv)
        assert started.warm and started.pid != spare
        assert started.proc.wait(timeout=20) == 0
        assert child_pids(srv.pid) != [spare]
    finally:
        srv.close()


def test_an_edited_app_runs_its_new_source(tmp_path: Path) -> None:
    """The wrapper forked before an edit still runs the app's source as it is at the job's
    start (the module is found and compiled at each start, not cached in the server)."""
    code = tmp_path / "code"
    code.mkdir()
    app = code / "edited_app.py"
    srv = _server()
    try:
        assert srv.pid is not None
        for text, want in (('"one"', "one"), ('"two, longer"', "two, longer")):
            wait_children(srv.pid)  # the spare is forked before the edit
            app.write_text(f'open("out.txt", "w").write({text})\n')
            folder = tmp_path / want.split(",")[0]
            folder.mkdir()
            started = launch(
                folder,
                [sys.executable, "-m", "edited_app"],
                1,
                extra_env={"PYTHONPATH": str(code)},
                warm=srv,
            )
            assert started.warm and started.proc.wait(timeout=20) == 0
            assert (folder / "out.txt").read_text() == want
    finally:
        srv.close()


# --- the local runner ------------------------------------------------------------------------
@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "img.fits"
    fits.PrimaryHDU(np.ones((8, 8), dtype=np.float32)).writeto(path)
    return path


def test_the_local_runner_starts_jobs_warm(tmp_path: Path, image: Path) -> None:
    settings = make_settings(tmp_path, job_fork_server="eager", job_fork_server_preload=["numpy"])
    with TestClient(create_app(settings)) as client:
        local = client.app.state.ctx.jobs.backends["local"]  # type: ignore[attr-defined]
        assert local.fork_server is not None and local.fork_server.wait_ready(60)
        fid = upload(client, image)
        job_id, status = run_job(client, fid, "sleep", {"seconds": 0, "exit-code": 0}, 30)
        assert status["state"] == "SUCCESS", status
        assert f"warm start (fork server {local.fork_server.pid})" in job_log(client, job_id)


def test_an_idle_submit_launches_its_job_before_it_answers(
    tmp_path: Path, image: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a serving fork server and a free slot the submitting thread launches the job
    itself (no hand-over to the dispatcher thread): its pid is recorded when the submit
    answers. While the server is not yet serving (lazy: it starts with the first job), the
    dispatcher launches, and waits for it."""
    threads: list[str] = []
    real = local_backend.launch

    def spy(*args: Any, **kwargs: Any) -> Any:
        threads.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(local_backend, "launch", spy)
    # Two slots: the first job's supervisor may still count it (its end is recorded first).
    settings = make_settings(
        tmp_path,
        job_fork_server="lazy",
        job_fork_server_preload=["numpy"],
        max_concurrent_jobs=2,
    )
    with TestClient(create_app(settings)) as client:
        sessions = client.app.state.ctx.jobs.sessions  # type: ignore[attr-defined]
        fid = upload(client, image)
        # Long enough to be running still when the answer is read.
        body = {"app": "sleep", "job_inputs": {"seconds": 1}, "data_inputs": fid}
        for _ in range(2):
            r = client.post(f"{API}/job", json=body)
            assert r.status_code == 202, r.text
            job_id = r.json()["job_id"]
            with sessions() as s:
                answered = s.get(JobRecord, job_id)
            assert wait_state(client, job_id, {"SUCCESS", "FAILURE"}, 60)["state"] == "SUCCESS"
        assert threads[0] == "local-dispatcher" and threads[1] != "local-dispatcher"
        assert answered is not None and answered.pid is not None  # the second job's
        assert answered.message == "Job running"


def test_serving_never_waits_for_a_starting_server(tmp_path: Path) -> None:
    srv = ForkServer(["numpy"], env=launch_environment(1))
    try:
        assert not srv.serving()  # not started
        srv.start()
        started = time.monotonic()
        while not srv.serving():
            assert time.monotonic() - started < 60
            time.sleep(0.01)
        assert srv.pid is not None and srv.info["ready"]
        srv.close()
        assert not srv.serving()
    finally:
        srv.close()


def test_off_starts_every_job_cold(tmp_path: Path, image: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path, job_fork_server="off"))) as client:
        assert client.app.state.ctx.jobs.backends["local"].fork_server is None  # type: ignore[attr-defined]
        job_id, status = run_job(client, upload(client, image), "sleep", {"seconds": 0}, 30)
        assert status["state"] == "SUCCESS", status
        assert "warm start" not in job_log(client, job_id)


# What a warm caesar job still imports itself, after the server's default preload (the module
# names a run adds; a new heavy import on the run's way shows here and costs every job).
_NEW_IMPORTS = """
import importlib, json, os, runpy, sys
from caesar_rest.settings import Settings
for name in Settings().job_fork_server_preload:
    importlib.import_module(name)
before = set(sys.modules)
sys.argv = ["caesar_run", "--input", sys.argv[1], "--outdir", os.getcwd(), "--fitsources",
            "--no-extendedsearch", "--no-mpi"]
try:
    runpy.run_module("caesar_rest.apps.caesar_run", run_name="__main__", alter_sys=True)
except SystemExit as exc:
    assert not exc.code, exc.code
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_the_default_preload_covers_a_caesar_run(tmp_path: Path, s17: Path) -> None:
    env = {**launch_environment(1), "OMP_NUM_THREADS": "1"}
    out = subprocess.run(  # noqa: S603 - argument list, no shell
        [sys.executable, "-c", _NEW_IMPORTS, str(s17)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    added = json.loads(out.stdout.strip().splitlines()[-1])
    heavy = [m for m in added if m.split(".")[0] in {"numpy", "scipy", "astropy", "PIL"}]
    ours = [m for m in added if m.startswith("caesar_rest.")]
    assert heavy == [] and ours == [], (heavy, ours)
    assert (tmp_path / "catalog.vot").exists()
