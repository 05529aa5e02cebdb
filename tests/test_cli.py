"""The caesar-rest command: help texts, migrate and find."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "caesar_rest.cli"]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)  # noqa: S603


@pytest.mark.parametrize("cmd", [[], ["serve"], ["migrate"], ["find"]])
def test_help(cmd: list[str]) -> None:
    r = run(*cmd, "--help")
    assert r.returncode == 0 and "usage:" in r.stdout


def test_serve_accepts_legacy_option_names() -> None:
    r = run("serve", "--help")
    for name in (
        "--datadir",
        "--jobdir",
        "--job_scheduler",
        "--loglevel",
        "--logtofile",
        "--logdir",
        "--logfile",
        "--logfile_maxsize",
        "--debug",
        "--ssl",
        "--aai",
        "--db-url",
    ):
        assert name in r.stdout


def test_migrate(tmp_path: Path) -> None:
    r = run("migrate", "--db-url", f"sqlite:///{tmp_path / 'm.sqlite3'}")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "m.sqlite3").is_file()


def test_find_on_real_image(tmp_path: Path, s17: Path) -> None:
    out = tmp_path / "out"
    r = run("find", str(s17), "--app", "sep", "--out", str(out), "--seedthr", "6", "--quiet")
    assert r.returncode == 0, r.stderr + r.stdout
    for name in ("catalog.csv", "catalog.vot", "catalog.json", "catalog.reg", "job.log"):
        assert (out / name).is_file(), name
    rows = list(csv.DictReader((out / "catalog.csv").open()))
    assert len(rows) == 35  # a deterministic run
    assert all(float(r["snr"]) >= 6 for r in rows)
    # The program ran in the CLI's own process and its output still reached job.log.
    log = (out / "job.log").read_text()
    assert "sep_run: timings:" in log and "wrote 35 sources" in log
    assert r.stdout.strip().startswith("wrote catalog.vot")  # --quiet: no log on the terminal


def test_find_refuses_bad_options(tmp_path: Path, s17: Path) -> None:
    r = run("find", str(s17), "--app", "sep", "--out", str(tmp_path), "--seedthr", "-1")
    assert r.returncode == 2 and "below its minimum" in r.stderr
    r = run("find", str(s17), "--app", "sep", "--out", str(tmp_path), "--nosuch", "1")
    assert r.returncode == 2 and "nosuch" in r.stderr
    r = run("find", str(s17), "--app", "nosuchapp")
    assert r.returncode == 2 and "unknown app" in r.stderr
    r = run("find", str(tmp_path / "missing.fits"))
    assert r.returncode == 2 and "no such file" in r.stderr


def test_find_reads_extra_apps_without_the_settings_unless_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from caesar_rest.cli import EXTRA_APPS_ENV, find_extra_apps
    from caesar_rest.settings import Settings, env_name, get_settings

    assert env_name(Settings, "extra_apps") == EXTRA_APPS_ENV
    calls: list[int] = []

    def counted() -> Settings:
        calls.append(1)
        return Settings()

    monkeypatch.setattr("caesar_rest.settings.get_settings", counted)
    assert find_extra_apps({}, tmp_path) == [] and not calls  # nothing can set it
    spec = "caesar_test_apps:SleepApp"
    monkeypatch.setenv(EXTRA_APPS_ENV.lower(), f'["{spec}"]')  # any case, as the settings
    assert find_extra_apps(None, tmp_path) == [spec] and calls
    monkeypatch.delenv(EXTRA_APPS_ENV.lower())
    (tmp_path / ".env").write_text(f"{EXTRA_APPS_ENV}='[\"{spec}\"]'\n")
    monkeypatch.chdir(tmp_path)
    assert find_extra_apps({}, tmp_path) == [spec]
    get_settings.cache_clear()
