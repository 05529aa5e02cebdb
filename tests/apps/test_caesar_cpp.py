"""The caesar-cpp app: listed but unavailable without the C++ program; refused before any start."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from caesar_rest.apps.caesar_cpp_app import PATH_ENV, PROGRAM, CaesarCppApp, find_program
from caesar_rest.apps.registry import default_registry

from tests.support.app_jobs import API, assert_refused, service, upload


@pytest.fixture
def no_program(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Neither the variable nor PATH lead to the program."""
    monkeypatch.delenv(PATH_ENV, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))


def _fake_program(folder: Path, executable: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / PROGRAM
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755 if executable else 0o644)
    return path


def test_unavailable_without_program(no_program: None) -> None:
    app = CaesarCppApp()
    ok, why = app.availability()
    assert ok is False and why is not None
    assert PROGRAM in why and PATH_ENV in why
    assert "caesar-cpp" in default_registry().names()
    with pytest.raises(RuntimeError, match="not installed"):
        app.command(Path("/i.fits"), {}, Path("/o"))


def test_configured_by_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    prog = _fake_program(tmp_path / "caesar" / "scripts")
    for configured in (prog, prog.parent):  # the script or its folder
        monkeypatch.setenv(PATH_ENV, str(configured))
        assert find_program() == (prog, "")
        assert CaesarCppApp().availability() == (True, None)
    app = CaesarCppApp()
    opts = app.validate({"seedthr": 6, "fitsources": True, "nthreads": 2})
    assert app.command(Path("/d/i.fits"), opts, Path("/job")) == [
        str(prog),
        "--run",
        "--save-summaryplot",
        "--save-regions",
        "--save-catalog-to-json",
        "--seedthr=6.0",
        "--fitsources",
        "--nthreads=2",
        "--inputfile=/d/i.fits",
        "--outdir=/job",
    ]
    monkeypatch.setenv(PATH_ENV, str(tmp_path / "nowhere"))
    ok, why = CaesarCppApp().availability()
    assert not ok and why and "does not name" in why
    plain = _fake_program(tmp_path / "noexec", executable=False)
    monkeypatch.setenv(PATH_ENV, str(plain))
    ok, why = CaesarCppApp().availability()
    assert not ok and why and "not executable" in why


def test_found_on_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    prog = _fake_program(tmp_path / "bin")
    monkeypatch.delenv(PATH_ENV, raising=False)
    monkeypatch.setenv("PATH", f"{prog.parent}{os.pathsep}{os.environ['PATH']}")
    assert find_program()[0] == prog


def test_api_lists_and_refuses(no_program: None, tmp_path: Path, s17: Path) -> None:
    with service(tmp_path / "srv") as client:
        apps = client.get(f"{API}/apps").json()
        assert "caesar-cpp" in apps["apps"]
        detail = {d["name"]: d for d in apps["details"]}["caesar-cpp"]
        assert detail["available"] is False and PROGRAM in detail["reason"]
        assert {d["name"]: d for d in apps["details"]}["sep"]["available"] is True
        described = client.get(f"{API}/app/caesar-cpp/describe").json()
        assert described["seedthr"]["default"] == 5.0 and described["mergethr"]["default"] == 2.6
        fid = upload(client, s17)
        # Refused with the reason, before a folder or a process exists; even valid options.
        assert_refused(client, fid, "caesar-cpp", {"seedthr": 5}, "not available")
        assert_refused(client, fid, "caesar-cpp", {}, PROGRAM)
