"""Shared fixtures: real services (a live server process, PostgreSQL) and test data."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from caesar_rest.api.app import create_app
from caesar_rest.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SUPPORT = Path(__file__).resolve().parent / "support"
SHARED_DATA = REPO.parent / "shared" / "data"
PG_ADMIN_URL = os.environ.get("CAESAR_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

sys.path.insert(0, str(SUPPORT))
from oidc_provider import AUDIENCE, OIDCProvider  # noqa: E402
from synth_images import STANDARD_SOURCES, Src, Synth, write_synth  # noqa: E402

# Job processes started in-process (TestClient) must find the test apps too.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(SUPPORT), os.environ.get("PYTHONPATH", "")) if p
)


def make_settings(root: Path, **kw: object) -> Settings:
    """Settings for an in-process app in ``root``."""
    base: dict[str, object] = {
        "datadir": root / "data",
        "jobdir": root / "jobs",
        "extra_apps": ["caesar_test_apps:SleepApp"],
        "job_poll_interval": 0.1,
        "job_kill_grace": 1.0,
        "max_concurrent_jobs": 2,
    }
    base.update(kw)
    return Settings(**base)  # type: ignore[arg-type]


@pytest.fixture
def app_client(tmp_path: Path) -> Iterator[TestClient]:
    """An in-process app on SQLite with its local runner started."""
    with TestClient(create_app(make_settings(tmp_path))) as client:
        yield client


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real radio images (``<repo>/../shared/data``)."""
    if not (SHARED_DATA / "ScorpioS17Field.fits").is_file():
        pytest.fail(f"real images missing in {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def s17(shared_data: Path) -> Path:
    """ScorpioS17Field.fits."""
    return shared_data / "ScorpioS17Field.fits"


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def pg_admin() -> str:
    """The PostgreSQL server on 127.0.0.1:5432 (started before the session; fails if down)."""
    import psycopg

    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}")
    return PG_ADMIN_URL


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh database: a SQLite file, then a PostgreSQL database (the test runs on each)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite3'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def pg_url(pg_admin: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    import psycopg

    name = f"caesar_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class LiveServer:
    """A ``caesar-rest serve`` process on a free port."""

    def __init__(self, root: Path, db_url: str | None = None, **env: str):
        self.root = root
        self.datadir = root / "data"
        self.jobdir = root / "jobs"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = f"{self.url}/caesar/api/v1.0"
        self.db_url = db_url
        self.env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]),
            "CAESAR_REST_EXTRA_APPS": '["caesar_test_apps:SleepApp"]',
            "CAESAR_REST_JOB_POLL_INTERVAL": "0.2",
            "CAESAR_REST_JOB_KILL_GRACE": "1",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        root.mkdir(parents=True, exist_ok=True)
        self.log = root / "server.log"
        self._log_start = 0

    def start(self, timeout: float = 120.0) -> LiveServer:
        """Start and wait until ``/healthz`` answers."""
        cmd = [
            sys.executable,
            "-m",
            "caesar_rest.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--datadir",
            str(self.datadir),
            "--jobdir",
            str(self.jobdir),
        ]
        if self.db_url:
            cmd += ["--db-url", self.db_url]
        self._log_start = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603
                cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not start: {self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL the server (its job processes live on in their own sessions)."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        """Graceful stop; the server's errors go to the test's output (shown on failure)."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        with contextlib.suppress(OSError):
            # This run's part of the log (it is appended to by restarts).
            text = self.log.read_bytes()[self._log_start :].decode(errors="replace")
            if "Traceback" in text or '"level": "error"' in text:
                print(f"--- {self.log} (last 4000 characters) ---\n{text[-4000:]}", file=sys.stderr)

    def client(self) -> httpx.Client:
        """An HTTP client on the v1.0 API."""
        return httpx.Client(base_url=self.api, timeout=60)


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A server on SQLite in a temporary folder."""
    srv = LiveServer(tmp_path).start()
    yield srv
    srv.stop()


def wait_state(
    client: httpx.Client | TestClient,
    job_id: str,
    states: set[str],
    timeout: float = 60,
    prefix: str = "",
) -> dict:
    """Poll the v1.0 status until the job's state is in ``states``.

    ``prefix`` is the API prefix when the client's base URL lacks it (TestClient).
    """
    deadline = time.time() + timeout
    last: dict = {}
    while time.time() < deadline:
        r = client.get(f"{prefix}/job/{job_id}/status")
        assert r.status_code == 200, r.text
        last = r.json()
        if last["state"] in states:
            return last
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} stuck in {last}")


@pytest.fixture(scope="session")
def oidc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OIDCProvider]:
    """A real OIDC provider (npm oidc-provider) on a free port, for the whole session."""
    keys = tmp_path_factory.mktemp("oidc") / "keys.json"
    provider = OIDCProvider(free_port(), keys).start()
    yield provider
    provider.stop()


def auth_env(provider: OIDCProvider, **extra: str) -> dict[str, str]:
    """Server settings that turn authentication on against ``provider``."""
    return {
        "CAESAR_REST_AAI": "true",
        "CAESAR_REST_OIDC_ISSUER": provider.issuer,
        "CAESAR_REST_OIDC_AUDIENCE": AUDIENCE,
        "CAESAR_REST_OIDC_LEEWAY": "0",
        "CAESAR_REST_OIDC_JWKS_REFRESH": "0",
        "CAESAR_REST_OIDC_INTROSPECTION": "true",
        "CAESAR_REST_OIDC_CLIENT_ID": "caesar-rest",
        "CAESAR_REST_OIDC_CLIENT_SECRET": "caesar-rest-secret",
        **extra,
    }


@pytest.fixture
def synth_factory(tmp_path: Path) -> Callable[..., Synth]:
    """Factory writing synthetic images into ``tmp_path``."""

    def make(name: str = "synth.fits", sources: Sequence[Src] | None = None, **kw: object) -> Synth:
        src = STANDARD_SOURCES if sources is None else sources
        return write_synth(tmp_path / name, src, **kw)  # type: ignore[arg-type]

    return make


@pytest.fixture
def standard_sources() -> list[Src]:
    """The sources of the standard field: bright, S/N 30, S/N 15, elliptical, pair, edge."""
    return list(STANDARD_SOURCES)
