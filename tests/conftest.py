"""Shared fixtures: real services (a live server process, PostgreSQL) and test data.

Fixtures only; the helpers they use live in ``tests/support`` (``from tests.support.server
import LiveServer``).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from caesar_rest.api.app import create_app

from tests.support.oidc_provider import OIDCProvider
from tests.support.paths import SHARED_DATA, child_pythonpath
from tests.support.server import LiveServer, free_port, make_settings
from tests.support.synth_images import STANDARD_SOURCES, Src, Synth, write_synth

# The CPU affinity guard: a test that narrows the run's affinity is named and undone.
pytest_plugins = ["tests.support.affinity"]

PG_ADMIN_URL = os.environ.get("CAESAR_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")

# Job processes started in-process (TestClient) run the test apps as programs by module name.
os.environ["PYTHONPATH"] = child_pythonpath(os.environ.get("PYTHONPATH"))


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


@pytest.fixture
def live_server(tmp_path: Path) -> Iterator[LiveServer]:
    """A server on SQLite in a temporary folder."""
    srv = LiveServer(tmp_path).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def oidc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OIDCProvider]:
    """A real OIDC provider (npm oidc-provider) on a free port, for the whole session."""
    keys = tmp_path_factory.mktemp("oidc") / "keys.json"
    provider = OIDCProvider(free_port(), keys).start()
    yield provider
    provider.stop()


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
