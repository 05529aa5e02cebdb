"""The predecessor's Celery worker command and systemd unit run our jobs; the result backend is
checked at start-up and by /readyz."""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from caesar_rest.api.app import create_app
from caesar_rest.backends.celery_app import ResultBackendError, make_celery, worker_argv
from caesar_rest.backends.cli import legacy_backend_env
from caesar_rest.settings import CelerySettings, Settings

from tests.backends.backend_support import (
    REDIS_URL,
    ancestors,
    celery_env,
    delete_queue,
    job_folder,
    require_broker,
    require_redis,
    submit_sleep,
    upload,
    wait_file,
    wait_for,
)
from tests.support.paths import REPO
from tests.support.server import LiveServer, free_port, make_settings

pytestmark = pytest.mark.celery

CELERY = Path(sys.executable).parent / "celery"
SYSTEMD = REPO / "deploy" / "systemd"
MONGO = "mongodb://127.0.0.1:27017/caesardb"


def _worker_env(env: dict[str, str]) -> dict[str, str]:
    """The service settings of the environment, without the broker and result backend: the
    documented command gives those on its command line."""
    out = {k: v for k, v in env.items() if k != "CAESAR_REST_CELERY_QUEUE"}
    out.pop("CAESAR_REST_BROKER_URL")
    out.pop("CAESAR_REST_RESULT_BACKEND")
    return out


@pytest.fixture
def server(tmp_path: Path, pg_url: str) -> Iterator[tuple[LiveServer, dict[str, str]]]:
    """A live server on the celery backend with the default queue (no CAESAR_REST_CELERY_QUEUE).

    The default queue is Celery's ``celery``, shared on this broker: it is emptied before and
    removed after the test.
    """
    broker, redis = require_broker(), require_redis()
    env = celery_env(tmp_path, pg_url, broker, redis)
    del env["CAESAR_REST_CELERY_QUEUE"]
    delete_queue(broker, "celery")
    keep = {k: v for k, v in env.items() if k.startswith("CAESAR_REST_") or k == "PYTHONPATH"}
    srv = LiveServer(tmp_path / "srv", db_url=pg_url, **keep)
    srv.start(timeout=60)
    yield srv, env
    srv.stop()
    delete_queue(broker, "celery")


def _wait_ready(proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = log.read_text() if log.exists() else ""
        if re.search(r"^caesar-rest worker .* ready$", text, re.M):
            return
        assert proc.poll() is None, f"worker exited {proc.returncode}:\n{text[-4000:]}"
        time.sleep(0.2)
    raise AssertionError(f"worker not ready:\n{log.read_text()[-4000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)  # Celery's warm shutdown
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # the pool processes, should any be left
    proc.wait(timeout=10)


@pytest.mark.postgres
def test_the_documented_worker_command_runs_a_job(
    server: tuple[LiveServer, dict[str, str]], tmp_path: Path, s17: Path
) -> None:
    """The predecessor README's worker command, verbatim, consumes the jobs the API sends."""
    srv, env = server
    broker, backend = env["CAESAR_REST_BROKER_URL"], env["CAESAR_REST_RESULT_BACKEND"]
    command = (
        f"celery --broker={broker} --result-backend={backend} --app=caesar_rest worker "
        "--loglevel=INFO --concurrency=2 -Q celery"
    )
    argv = command.split()
    argv[0] = str(CELERY)  # the celery of this environment
    log = tmp_path / "worker.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv,
            env=_worker_env(env),
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        _wait_ready(proc, log)
        with srv.client() as c:
            job_id = submit_sleep(c, upload(c, s17), 0.5)
            doc = wait_for(c, job_id, {"SUCCESS", "FAILURE", "CANCELED"}, timeout=90)
            assert doc["state"] == "SUCCESS", (doc, log.read_text()[-4000:])
            assert doc["backend"] == "celery"
            assert "Celery worker" in doc["events"][2]["message"]
            assert c.get(f"/job/{job_id}/output").status_code == 200
        # That worker, consuming the queue `celery`, ran the job.
        text = log.read_text()
        assert "[queues]" in text and ".> celery" in text
        assert f"Task caesar_rest.run_job[{job_id}] received" in text
    finally:
        _stop(proc)


def _unit_env(path: Path) -> dict[str, str]:
    """The variables of a systemd EnvironmentFile (KEY="value" lines)."""
    out: dict[str, str] = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip().strip('"')
    return out


def _exec_line(unit: str, key: str) -> str:
    """The shell script of an ``Exec*=/bin/sh -c '...'`` line (continuations joined)."""
    joined = unit.replace("\\\n", " ")
    m = re.search(rf"^{key}=/bin/sh -c '(.*)'\s*$", joined, re.M)
    assert m, f"no {key}=/bin/sh -c '...' in the unit"
    return m[1]


@pytest.mark.postgres
def test_the_predecessor_style_systemd_unit_runs_a_job(
    server: tuple[LiveServer, dict[str, str]], tmp_path: Path, s17: Path
) -> None:
    """deploy/systemd/caesar-rest-celery.service (celery multi, CELERY_APP="caesar_rest"):
    its ExecStart and ExecStop, with its environment file, start a worker that runs our jobs
    and stop it (paths moved into the test's folder; systemd itself does not run here)."""
    srv, env = server
    unit = (SYSTEMD / "caesar-rest-celery.service").read_text()
    assert "EnvironmentFile=/etc/caesar-rest/caesar-rest-celery.env" in unit
    assert "Type=forking" in unit
    unit_env = _unit_env(SYSTEMD / "caesar-rest-celery.env")
    assert unit_env["CELERY_APP"] == "caesar_rest"
    unit_env["CELERY_BIN"] = str(CELERY)
    unit_env["CELERYD_PID_FILE"] = str(tmp_path / "run" / "%n.pid")
    unit_env["CELERYD_LOG_FILE"] = str(tmp_path / "logs" / "%n%I.json")
    (tmp_path / "run").mkdir()
    (tmp_path / "logs").mkdir()
    run_env = {**env, **unit_env}
    start = _exec_line(unit, "ExecStart")
    stop = _exec_line(unit, "ExecStop")
    r = subprocess.run(
        ["/bin/sh", "-c", start], env=run_env, cwd=tmp_path, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    pidfile = None
    deadline = time.time() + 60
    while pidfile is None and time.time() < deadline:  # written by the detached worker
        pidfile = next((p for p in (tmp_path / "run").glob("*.pid") if p.read_text()), None)
        time.sleep(0.2)
    try:
        assert pidfile is not None, r.stdout + r.stderr
        worker_pid = int(pidfile.read_text())
        with srv.client() as c:
            fid = upload(c, s17)
            job_id = submit_sleep(c, fid, 2)
            wait_for(c, job_id, {"RUNNING", "SUCCESS"}, timeout=120)
            app_pid = int(wait_file(job_folder(srv, job_id) / "pids.txt").split()[0])
            assert worker_pid in ancestors(app_pid)  # run by the unit's worker
            doc = wait_for(c, job_id, {"SUCCESS", "FAILURE", "CANCELED"}, timeout=60)
            assert doc["state"] == "SUCCESS", doc
        logs = "".join(p.read_text() for p in (tmp_path / "logs").glob("*.json*"))
        assert job_id in logs  # the worker logs to the unit's log file
    finally:
        r = subprocess.run(
            ["/bin/sh", "-c", stop], env=run_env, cwd=tmp_path, capture_output=True, text=True,
            timeout=120,
        )  # fmt: skip
        if pidfile is not None and pidfile.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pidfile.read_text()), signal.SIGKILL)
    assert r.returncode == 0, r.stdout + r.stderr
    assert not list((tmp_path / "run").glob("*.pid"))  # stopwait waited for the worker


# --- the result backend: refused when unusable, checked by /readyz ------------------------
def _pymongo_missing() -> bool:
    try:
        import pymongo  # noqa: F401
    except ImportError:
        return True
    return False


def test_legacy_mongodb_options_make_a_mongodb_url() -> None:
    """``--result_backend_proto mongodb``: the predecessor's defaults (27017, caesardb) and,
    as it did, no user or password in the URL unless given."""
    opts = {f"result_backend_{n}": None for n in ("host", "port", "user", "pass", "dbname")}
    ns = argparse.Namespace(result_backend_proto="mongodb", **opts)
    env = legacy_backend_env(ns, "backend_poll_interval")
    assert env["CAESAR_REST_RESULT_BACKEND"] == "mongodb://localhost:27017/caesardb"
    ns = argparse.Namespace(
        **{**opts, "result_backend_proto": "mongodb", "result_backend_host": "db",
           "result_backend_user": "u", "result_backend_pass": "p@ss",
           "result_backend_dbname": "jobs"}
    )  # fmt: skip
    env = legacy_backend_env(ns, "backend_poll_interval")
    assert env["CAESAR_REST_RESULT_BACKEND"] == "mongodb://u:p%40ss@db:27017/jobs"


@pytest.mark.skipif(not _pymongo_missing(), reason="pymongo is installed here")
def test_mongodb_result_backend_without_pymongo_is_refused() -> None:
    with pytest.raises(ResultBackendError) as err:
        make_celery(CelerySettings(result_backend="mongodb://u:secret@db:27017/caesardb"))
    text = str(err.value)
    assert "pymongo" in text and "caesar-rest[mongodb]" in text and "redis://" in text
    assert "secret" not in text  # the password stays out of the message


@pytest.mark.skipif(not _pymongo_missing(), reason="pymongo is installed here")
def test_mongodb_result_backend_refused_at_app_start(tmp_path: Path) -> None:
    """The API does not start (rather than fail every job at dispatch)."""
    settings = make_settings(
        tmp_path, job_scheduler="celery", result_backend=MONGO, backend_poll_interval=0
    )
    with pytest.raises(ResultBackendError, match="pymongo"), TestClient(create_app(settings)):
        pass


@pytest.mark.skipif(not _pymongo_missing(), reason="pymongo is installed here")
def test_serve_with_the_legacy_mongodb_options_exits_with_the_reason(tmp_path: Path) -> None:
    """``caesar-rest serve --result_backend_proto mongodb``: a clear message, a failed start."""
    env = {
        **os.environ,
        "CAESAR_REST_DATADIR": str(tmp_path / "data"),
        "CAESAR_REST_JOBDIR": str(tmp_path / "jobs"),
        "CAESAR_REST_DB_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
    }
    argv = [
        *(sys.executable, "-m", "caesar_rest.cli", "serve"),
        *("--port", str(free_port()), "--job_scheduler", "celery"),
        *("--result_backend_proto", "mongodb", "--result_backend_host", "127.0.0.1"),
    ]
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr[-3000:]
    assert "result_backend_unusable" in r.stderr and "caesar-rest[mongodb]" in r.stderr
    assert "serving on" not in r.stdout  # refused before it serves


@pytest.mark.skipif(not _pymongo_missing(), reason="pymongo is installed here")
def test_the_documented_worker_command_refuses_mongodb(tmp_path: Path) -> None:
    """The worker, too, stops at start-up (before it consumes any job)."""
    argv = [
        str(CELERY),
        f"--broker={require_broker()}",
        f"--result-backend={MONGO}",
        *("--app=caesar_rest", "worker", "--loglevel=INFO", "--concurrency=2", "-Q", "celery"),
    ]
    r = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0
    assert "pymongo" in r.stdout + r.stderr


@pytest.mark.skipif(not _pymongo_missing(), reason="pymongo is installed here")
def test_caesar_rest_worker_refuses_mongodb(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "CAESAR_REST_DATADIR": str(tmp_path / "data"),
        "CAESAR_REST_JOBDIR": str(tmp_path / "jobs"),
        "CAESAR_REST_DB_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "CAESAR_REST_RESULT_BACKEND": MONGO,
    }
    argv = [sys.executable, "-m", "caesar_rest.cli", "worker", "--concurrency", "1"]
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stdout + r.stderr[-3000:]
    assert "result_backend_unusable" in r.stderr and "caesar-rest[mongodb]" in r.stderr


@pytest.mark.parametrize("reachable", [True, False])
def test_readyz_checks_the_result_backend(tmp_path: Path, reachable: bool) -> None:
    """/readyz reports the result backend the service will use, reached with a ping."""
    broker = require_broker()
    backend = REDIS_URL if reachable else f"redis://127.0.0.1:{free_port()}/0"
    if reachable:
        require_redis()
    settings = make_settings(
        tmp_path, broker_url=broker, result_backend=backend, backend_poll_interval=0
    )
    with TestClient(create_app(settings)) as c:
        r = c.get("/readyz")
    body = r.json()
    assert body["checks"]["broker"] == "ok", body
    if reachable:
        assert r.status_code == 200 and body["checks"]["result_backend"] == "ok", body
    else:
        assert r.status_code == 503, body
        assert body["checks"]["result_backend"] == "error: ConnectionError", body


def test_readyz_without_celery_has_no_result_backend_check(tmp_path: Path) -> None:
    with TestClient(create_app(make_settings(tmp_path))) as c:
        body = c.get("/readyz").json()
    assert "result_backend" not in body["checks"] and "broker" not in body["checks"]


def test_the_package_exposes_the_service_celery_app_lazily() -> None:
    """``caesar_rest.celery`` is built from the CAESAR_REST_* settings on first use; importing
    the package loads neither Celery nor the settings."""
    code = (
        "import sys, caesar_rest; "
        "assert 'celery' not in sys.modules and 'caesar_rest.settings' not in sys.modules; "
        "app = caesar_rest.celery; "
        "from celery import Celery; assert isinstance(app, Celery); "
        "assert caesar_rest.celery is app; "
        "print(app.conf.task_default_queue, app.conf.broker_url, "
        "sorted(t for t in app.tasks if t.startswith('caesar_rest')))"
    )
    env = {
        **os.environ,
        "CAESAR_REST_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
        "CAESAR_REST_CELERY_QUEUE": "q-from-env",
    }
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == [
        "q-from-env",
        "amqp://guest:guest@127.0.0.1:5672//",
        "['caesar_rest.run_job']",
    ]
    with pytest.raises(AttributeError):
        import caesar_rest

        _ = caesar_rest.app  # Celery's find_app tries .app first: it must not exist


def test_the_default_queue_is_the_one_the_documented_command_consumes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The API sends to, and ``caesar-rest worker`` consumes, the queue ``-Q celery`` names."""
    monkeypatch.delenv("CAESAR_REST_CELERY_QUEUE", raising=False)
    settings = Settings()
    assert settings.celery.queue == "celery"
    assert make_celery(settings.celery).conf.task_default_queue == "celery"
    argv = worker_argv(settings)
    assert argv[argv.index("--queues") + 1] == "celery"


def test_the_mongodb_extra_the_message_names_is_declared() -> None:
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert [d.split(">")[0] for d in project["optional-dependencies"]["mongodb"]] == ["pymongo"]
