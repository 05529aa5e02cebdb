"""The predecessor's command-line options: single-dash names, --logfile_maxsize 5.0,
--secretfile, --ssl, --dbhost/--dbport/--dbname, and a truthful ``migrate``."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy.engine import make_url

from caesar_rest.auth.oidc import read_client_secrets
from caesar_rest.backends.cli import legacy_db_url
from caesar_rest.cli import LEGACY_SINGLE_DASH, build_parser, legacy_argv, self_signed_pair
from caesar_rest.db.migrate import revisions

from tests.support.oidc_provider import AUDIENCE, OIDCProvider
from tests.support.paths import child_pythonpath
from tests.support.server import free_port

CLI = [sys.executable, "-m", "caesar_rest.cli"]
HEAD = revisions()[-1]


def child_env(**extra: str) -> dict[str, str]:
    """The test's environment without any CAESAR_REST_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAESAR_REST_")}
    env["PYTHONPATH"] = child_pythonpath(os.environ.get("PYTHONPATH"))
    return {**env, **extra}


def run(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *args], capture_output=True, text=True, timeout=120, cwd=cwd, env=child_env(**env)
    )


class Serve:
    """``caesar-rest serve ARGS`` in ``root``, stopped at the end of the ``with``."""

    def __init__(self, root: Path, *args: str, **env: str):
        self.root, self.port = root, free_port()
        self.args, self.env = args, env
        self.log = root / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Serve:
        cmd = [*CLI, "serve", "--host", "127.0.0.1", "--port", str(self.port), *self.args]
        with open(self.log, "wb") as log:
            self.proc = subprocess.Popen(
                cmd, cwd=self.root, env=child_env(**self.env), stdout=log, stderr=log
            )
        return self

    def wait(self, scheme: str, verify: bool | str | ssl.SSLContext = False) -> httpx.Response:
        """The first answer of /healthz over ``scheme``."""
        assert self.proc is not None
        deadline = time.time() + 90
        while time.time() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"server exited: {self.log.read_text()[-3000:]}")
            try:
                return httpx.get(f"{scheme}://127.0.0.1:{self.port}/healthz", verify=verify)
            except httpx.ConnectError:
                time.sleep(0.2)
        pytest.fail(f"server did not answer: {self.log.read_text()[-3000:]}")

    def __exit__(self, *exc: object) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


# --- single-dash names ---------------------------------------------------------------------


def test_legacy_argv_rewrites_only_the_predecessor_names() -> None:
    argv = ["serve", "-datadir", "d", "-logfile_maxsize=5.0", "-ssl", "-x", "--", "-jobdir"]
    assert legacy_argv(argv) == [
        "serve",
        "--datadir",
        "d",
        "--logfile_maxsize=5.0",
        "--ssl",
        "-x",
        "--",
        "-jobdir",
    ]
    assert legacy_argv(["monitor", "-dbhost", "h", "-datadir", "d"]) == [
        "monitor",
        "--dbhost",
        "h",
        "-datadir",  # run_jobmonitor.py had no -datadir
        "d",
    ]
    assert legacy_argv(["find", "-datadir"]) == ["find", "-datadir"]
    assert legacy_argv(["serve", "-1"]) == ["serve", "-1"]


@pytest.mark.parametrize("command", sorted(LEGACY_SINGLE_DASH))
def test_every_single_dash_name_is_an_option(command: str) -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    options = sub.choices[command]._option_string_actions
    missing = [n for n in LEGACY_SINGLE_DASH[command] if f"--{n}" not in options]
    assert missing == []


def test_single_dash_options_parse_like_double_dash() -> None:
    parser = build_parser()
    args, rest = parser.parse_known_args(
        legacy_argv(["serve", "-datadir", "/d", "-logfile_maxsize", "5.0", "-aai", "-dbport", "1"])
    )
    assert rest == []
    assert (args.datadir, args.logfile_maxsize, args.aai, args.dbport) == ("/d", 5.0, True, "1")
    args, rest = parser.parse_known_args(legacy_argv(["monitor", "-job_monitoring_period", "7"]))
    assert rest == [] and args.job_monitoring_period == 7.0


# --- TLS -----------------------------------------------------------------------------------


@pytest.fixture
def pair(tmp_path: Path) -> tuple[Path, Path]:
    folder = tmp_path / "tls"
    folder.mkdir()
    return self_signed_pair(folder, "127.0.0.1")


def test_ssl_with_files_serves_tls_and_single_dash_options(
    tmp_path: Path, pair: tuple[Path, Path]
) -> None:
    cert, key = pair
    args = ("-datadir", "d", "-jobdir", "j", "-logtofile", "-logdir", "logs")
    args += ("-logfile_maxsize", "5.0", "-ssl", "--ssl-certfile", str(cert))
    with Serve(tmp_path, *args, "--ssl-keyfile", str(key)) as srv:
        # The server's certificate is ours: it verifies against it as the only CA.
        assert srv.wait("https", verify=ssl.create_default_context(cafile=cert)).json()["status"]
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{srv.port}/healthz", timeout=5)
    out = srv.log.read_text()
    assert f"serving on https://127.0.0.1:{srv.port}" in out
    assert (tmp_path / "d").is_dir() and (tmp_path / "j").is_dir()  # -datadir/-jobdir taken
    assert (tmp_path / "logs" / "caesar-rest.json").is_file()  # -logtofile -logdir taken


def test_ssl_without_files_serves_a_self_signed_pair(tmp_path: Path) -> None:
    with Serve(tmp_path, "--ssl", "--datadir", "d", "--jobdir", "j") as srv:
        r = srv.wait("https", verify=False)
        assert r.status_code == 200
        with pytest.raises(httpx.ConnectError):  # self-signed: verification must fail
            httpx.get(f"https://127.0.0.1:{srv.port}/healthz", timeout=5)
    assert "tls_self_signed" in srv.log.read_text()


def test_ssl_with_one_file_refused(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    r = run("serve", "--ssl", "--ssl-certfile", str(pair[0]), "--datadir", "d", cwd=tmp_path)
    assert r.returncode == 2 and "needs both --ssl-certfile and --ssl-keyfile" in r.stderr
    r = run("serve", "--ssl", "--ssl-certfile", "nope", "--ssl-keyfile", "no", cwd=tmp_path)
    assert r.returncode == 2 and "no such TLS file" in r.stderr


# --- --secretfile --------------------------------------------------------------------------


def write_secrets(path: Path, **web: str) -> Path:
    path.write_text(json.dumps({"web": web}))
    return path


def test_read_client_secrets(tmp_path: Path) -> None:
    f = write_secrets(
        tmp_path / "a.json", issuer="https://idp/x", client_id="c", client_secret="s", auth_uri="u"
    )
    assert read_client_secrets(f) == {
        "issuer": "https://idp/x",
        "client_id": "c",
        "client_secret": "s",
    }
    # flask-oidc files for Keycloak often have no issuer: it is the realm URL of the endpoints.
    kc = "https://kc.example/auth/realms/neanias-development"
    f = write_secrets(
        tmp_path / "b.json", client_id="c", auth_uri=f"{kc}/protocol/openid-connect/auth"
    )
    assert read_client_secrets(f) == {"issuer": kc, "client_id": "c"}
    (tmp_path / "c.json").write_text("{")
    for bad in (tmp_path / "c.json", write_secrets(tmp_path / "d.json"), tmp_path / "none"):
        with pytest.raises(ValueError):
            read_client_secrets(bad)


def test_secretfile_configures_oidc(tmp_path: Path, oidc: OIDCProvider) -> None:
    secrets = write_secrets(
        tmp_path / "client_secrets.json",
        issuer=oidc.issuer,
        client_id="caesar-rest",
        client_secret="caesar-rest-secret",
        token_introspection_uri=f"{oidc.issuer}/token/introspection",
    )
    env = {"CAESAR_REST_OIDC_AUDIENCE": AUDIENCE, "CAESAR_REST_OIDC_LEEWAY": "0"}
    args = ("-aai", "-secretfile", str(secrets), "-datadir", "d", "-jobdir", "j")
    with Serve(tmp_path, *args, **env) as srv:
        srv.wait("http")
        api = f"http://127.0.0.1:{srv.port}/caesar/api/v1.0"

        def user(token: str) -> httpx.Response:
            return httpx.get(f"{api}/accounting", headers={"Authorization": f"Bearer {token}"})

        assert httpx.get(f"{api}/fileids").status_code == 401
        # A JWT: the issuer came from the file.
        assert user(oidc.token("alice")).json()["user"] == "alice"
        # An opaque token: introspected with the file's client id and secret.
        opaque = oidc.token("opaque")
        assert opaque.count(".") != 2
        assert user(opaque).json()["user"] == "opaque"


def test_secretfile_unreadable_refused(tmp_path: Path) -> None:
    r = run("serve", "--aai", "--secretfile", "missing.json", cwd=tmp_path)
    assert r.returncode == 2 and "cannot read the client secrets file" in r.stderr
    assert "Traceback" not in r.stderr


# --- --dbhost/--dbport/--dbname ------------------------------------------------------------


def test_legacy_db_url() -> None:
    ns = argparse.Namespace
    assert legacy_db_url(ns(db_url=None, dbhost=None, dbport=None, dbname=None)) is None
    assert (
        legacy_db_url(ns(db_url=None, dbhost="db", dbport=None, dbname=None))
        == "postgresql+psycopg://db:5432/caesardb"
    )
    assert (
        legacy_db_url(ns(db_url=None, dbhost=None, dbport="6000", dbname="c"))
        == "postgresql+psycopg://localhost:6000/c"
    )
    for bad in (ns(db_url="sqlite://", dbhost="h"), ns(dbport="x")):
        with pytest.raises(ValueError):
            legacy_db_url(bad)


@pytest.fixture
def pg_name(pg_admin: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database on 127.0.0.1:5432 by name, dropped afterwards."""
    name = f"caesar_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield name
    with psycopg.connect(pg_admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_monitor_and_migrate_take_dbhost_dbport_dbname(tmp_path: Path, pg_name: str) -> None:
    db = ("-dbhost", "127.0.0.1", "-dbport", "5432", "-dbname", pg_name)
    long = ("--dbhost", "127.0.0.1", "--dbport", "5432", "--dbname", pg_name)
    r = run("migrate", *long, cwd=tmp_path, PGUSER="postgres")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"database at {HEAD}: postgresql+psycopg://127.0.0.1:5432/{pg_name}"
    r = run("monitor", "--once", *db, cwd=tmp_path, PGUSER="postgres")
    assert r.returncode == 0, r.stderr
    # A database that does not exist, or has no schema: one line and exit code 2.
    missing = ("--dbhost", "127.0.0.1", "--dbname", f"{pg_name}_missing")
    r = run("monitor", "--once", *missing, cwd=tmp_path, PGUSER="postgres")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "does not exist" in r.stderr
    empty = f"sqlite:///{tmp_path / 'empty.sqlite3'}"
    r = run("monitor", "--once", "--db-url", empty, cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().endswith("run `caesar-rest migrate` first")
    r = run("monitor", "--once", "--db-url", "sqlite://", "--dbhost", "h", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.strip().endswith("not both")


# --- migrate -------------------------------------------------------------------------------


def alembic_version(url: str) -> str:
    if url.startswith("sqlite"):
        with sqlite3.connect(url.removeprefix("sqlite:///")) as conn:
            return str(conn.execute("SELECT version_num FROM alembic_version").fetchone()[0])
    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        assert row is not None
        return str(row[0])


def test_migrate_goes_where_asked_and_says_so(tmp_path: Path, db_url: str) -> None:
    where = make_url(db_url).render_as_string(hide_password=True)
    for revision, expected in (("head", HEAD), ("0001", "0001"), ("0001", "0001"), ("head", HEAD)):
        r = run("migrate", "--db-url", db_url, "--revision", revision, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == f"database at {expected}: {where}"
        assert alembic_version(db_url) == expected
    r = run("migrate", "--db-url", db_url, "--revision", "0009", cwd=tmp_path)
    assert r.returncode == 2 and "unknown revision '0009'" in r.stderr
    assert alembic_version(db_url) == HEAD
    assert not (tmp_path / "caesar-data").exists()  # no data folders for a given database


@pytest.mark.postgres
def test_migrate_missing_postgres_database(tmp_path: Path, pg_admin: str) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/caesar_missing_{uuid.uuid4().hex[:8]}"
    r = run("migrate", "--db-url", url, cwd=tmp_path)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "does not exist" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "caesar-data").exists()


def test_migrate_default_sqlite_creates_only_its_folder(tmp_path: Path) -> None:
    r = run("migrate", "--datadir", "store/data", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "store" / "caesar-rest.sqlite3").is_file()
    assert not (tmp_path / "store" / "data").exists() and not (tmp_path / "caesar-data").exists()
