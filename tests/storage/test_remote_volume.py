"""Data and job folders on an rclone remote, against a real ``rclone serve webdav`` server.

The service runs in process (local runner, real job processes); the remote is a real WebDAV
server on 127.0.0.1 that the tests stop and start again: uploads and job results are on the
remote (verified) before they are reported stored, a remote that goes away gives 503 or a job
FAILURE with the reason, nothing half-registered, and the same requests work once it is back.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from astropy.io import fits
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from caesar_rest.api.app import create_app
from caesar_rest.db.models import FileRecord
from caesar_rest.storage.files import FileService
from caesar_rest.storage.remote import (
    Remote,
    RemoteUnavailable,
    check_rel,
    remote_target,
    rfc3339_epoch,
)
from caesar_rest.storage.volume import StorageUnavailable, remote_volume

from tests.support.server import free_port, make_settings, wait_state
from tests.support.synth_images import Synth
from tests.support.webdav_remote import WebdavRemote

API = "/caesar/api/v1.0"


@pytest.fixture
def webdav(tmp_path: Path) -> Iterator[WebdavRemote]:
    srv = WebdavRemote(tmp_path / "remote").start()
    yield srv
    srv.stop()


def _settings(root: Path, webdav: WebdavRemote, **kw: Any) -> Any:
    return make_settings(
        root,
        mount_rclone_volume=True,
        rclone_storage_name=webdav.remote,
        rclone_storage_path="appdata",
        rclone_timeout=60,
        **kw,
    )


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _upload(c: TestClient, path: Path) -> httpx.Response:
    with open(path, "rb") as fh:
        return c.post(f"{API}/upload", files={"file": (path.name, fh)})


def _records(c: TestClient) -> int:
    ctx = c.app.state.ctx  # type: ignore[attr-defined]
    with ctx.sessions() as s:
        return int(s.scalar(select(func.count(FileRecord.id))))


def test_upload_caesar_job_download_and_tar_from_the_remote(
    tmp_path: Path, webdav: WebdavRemote, synth_factory: Callable[..., Synth]
) -> None:
    image = synth_factory("field.fits", n=192).path
    with TestClient(create_app(_settings(tmp_path, webdav))) as c:
        r = _upload(c, image)
        assert r.status_code == 200, r.text
        fid = r.json()["uuid"]
        remote_file = webdav.folder / "appdata" / "data" / "anonymous" / f"{fid}.fits"
        assert _sha(remote_file) == _sha(image)
        # The local copy is only a cache: the job stages its input in from the remote.
        local = tmp_path / "data" / "anonymous" / f"{fid}.fits"
        local.unlink()
        body = {"app": "caesar", "job_inputs": {"no-extendedsearch": True}, "data_inputs": fid}
        r = c.post(f"{API}/job", json=body)
        assert r.status_code == 202, r.text
        job_id = r.json()["job_id"]
        st = wait_state(c, job_id, {"SUCCESS", "FAILURE"}, timeout=90, prefix=API)
        assert st["state"] == "SUCCESS", st
        assert _sha(local) == _sha(image)  # staged in, checked against the upload's hash
        on_remote = webdav.files(f"appdata/jobs/anonymous/job_{job_id}")
        jdir = tmp_path / "jobs" / "anonymous" / f"job_{job_id}"
        here = {p.name: p.stat().st_size for p in jdir.iterdir() if p.is_file()}
        assert on_remote == here  # every file of the folder, same sizes
        assert {"exit.json", "job.log", "catalog.json"} <= set(on_remote)
        catalogue = (jdir / "catalog.json").read_bytes()
        # Downloads and the tar come from the remote when the local folder is gone.
        for p in jdir.iterdir():
            p.unlink()
        jdir.rmdir()
        r = c.get(f"{API}/job/{job_id}/output")
        assert r.status_code == 200, r.text
        with tarfile.open(fileobj=io.BytesIO(r.content), mode="r:gz") as tar:
            names = set(tar.getnames())
            member = tar.extractfile(f"job_{job_id}/catalog.json")
            assert member is not None and member.read() == catalogue
        assert f"job_{job_id}/exit.json" in names
        # A file download from the remote (the local cache is gone again), then the delete
        # removes both copies.
        local.unlink()
        r = c.get(f"{API}/download/{fid}")
        assert r.status_code == 200 and r.content == image.read_bytes()
        # Accounting: the stored bytes are what the remote holds.
        ctx = c.app.state.ctx  # type: ignore[attr-defined]
        volume = remote_volume(ctx.settings)
        assert volume is not None
        data_bytes, job_bytes = volume.stored_bytes("anonymous")
        assert (
            data_bytes
            == image.stat().st_size
            == FileService(ctx.settings, ctx.sessions).stored_bytes("anonymous")
        )
        assert job_bytes == sum(on_remote.values())
        ctx.jobs.delete(ctx.jobs.get("anonymous", job_id))
        assert webdav.files("appdata/jobs/anonymous") == {}
        r = c.post(f"{API}/delete/{fid}")
        assert r.status_code == 200, r.text
        assert webdav.files("appdata/data/anonymous") == {}


def _noise_fits(path: Path, n: int) -> Path:
    """A plain n x n float32 FITS image of noise (quick to make, any size)."""
    data = np.random.default_rng(7).normal(0, 1e-4, (n, n)).astype(np.float32)
    fits.PrimaryHDU(data).writeto(path)
    return path


def test_remote_gone_in_the_middle_of_an_upload(tmp_path: Path, webdav: WebdavRemote) -> None:
    """rclone sends at 1 MiB/s (reads back at full speed); the server is killed half-way:
    503 with the reason, no record, no file here or there (a temporary name only on the
    remote); the same upload succeeds once the server is back, and removes that one."""
    image = _noise_fits(tmp_path / "big.fits", 768)  # 2.3 MiB
    settings = _settings(tmp_path, webdav, rclone_flags=["--bwlimit", "1M:off"])
    with TestClient(create_app(settings)) as c:
        answer: dict[str, httpx.Response] = {}
        t = threading.Thread(target=lambda: answer.setdefault("r", _upload(c, image)))
        t.start()
        deadline = time.time() + 60
        while not webdav.files("appdata/data"):
            assert time.time() < deadline, "the copy to the remote did not begin"
            time.sleep(0.05)  # the copy has begun (its first bytes are on the remote)
        time.sleep(0.5)
        webdav.stop()
        t.join(60)
        r = answer["r"]
        assert r.status_code == 503, r.text
        assert r.json()["reason"] == "remote_storage"
        assert "Remote storage unavailable" in r.json()["status"]
        assert _records(c) == 0
        assert list((tmp_path / "data" / "anonymous").glob("*.fits")) == []
        assert list((tmp_path / "data" / ".incoming").iterdir()) == []
        webdav.start()
        # The partial copy has a temporary name only, never the file's own.
        (partial,) = webdav.files("appdata/data")
        assert partial.startswith(".incoming/") and partial.endswith(".fits.part")
        r = _upload(c, image)
        assert r.status_code == 200, r.text
        fid = r.json()["uuid"]
        # ... and the next upload removed it.
        assert webdav.files("appdata/data") == {f"anonymous/{fid}.fits": image.stat().st_size}
        assert _records(c) == 1


def test_remote_gone_during_a_job_then_retried(tmp_path: Path, webdav: WebdavRemote) -> None:
    """The remote goes away while the job runs: FAILURE with the reason in the status and the
    log; the same job submitted again once it is back succeeds with its folder on the remote."""
    image = _noise_fits(tmp_path / "small.fits", 64)
    with TestClient(create_app(_settings(tmp_path, webdav))) as c:
        fid = _upload(c, image).json()["uuid"]
        body = {"app": "sleep", "job_inputs": {"seconds": 1.5}, "data_inputs": fid}
        job_id = c.post(f"{API}/job", json=body).json()["job_id"]
        wait_state(c, job_id, {"RUNNING"}, timeout=30, prefix=API)
        webdav.stop()
        st = wait_state(c, job_id, {"SUCCESS", "FAILURE"}, timeout=60, prefix=API)
        assert st["state"] == "FAILURE"
        assert st["status"].startswith("remote storage unavailable, results not stored:"), st
        log = (tmp_path / "jobs" / "anonymous" / f"job_{job_id}" / "job.log").read_text()
        assert "[caesar-rest] remote storage unavailable, results not stored" in log
        # While it is away, a job whose input is not cached here cannot start its app.
        (tmp_path / "data" / "anonymous" / f"{fid}.fits").unlink()
        body_now = {**body, "job_inputs": {"seconds": 0}}
        early = c.post(f"{API}/job", json=body_now).json()["job_id"]
        st = wait_state(c, early, {"SUCCESS", "FAILURE"}, timeout=60, prefix=API)
        assert st["status"].startswith("remote storage unavailable, input not staged in:"), st
        webdav.start()
        assert webdav.files(f"appdata/jobs/anonymous/job_{job_id}").get("exit.json") is None
        again = c.post(f"{API}/job", json=body).json()["job_id"]
        st = wait_state(c, again, {"SUCCESS", "FAILURE"}, timeout=60, prefix=API)
        assert st["state"] == "SUCCESS", st
        assert "exit.json" in webdav.files(f"appdata/jobs/anonymous/job_{again}")


def test_rclone_is_given_checked_paths_only(tmp_path: Path) -> None:
    assert remote_target("neanias-nextcloud") == "neanias-nextcloud:"
    assert remote_target(":webdav,url='http://x':") == ":webdav,url='http://x':"
    for bad in ("a/b", "--config=/etc/x", ""):
        with pytest.raises(ValueError):
            remote_target(bad)
    for bad in ("../x", "a/../b", "/abs", "-rf", "a//b", "a/./b", "a b"):
        with pytest.raises(ValueError):
            check_rel(bad)
    remote = Remote("nc:", "appdata")
    assert remote.path("data/u/f.fits") == "nc:appdata/data/u/f.fits"
    assert Remote("nc:", ".").path("jobs/u") == "nc:jobs/u"
    # A remote that is not there: a clear error, quickly.
    gone = Remote(remote_target(f":webdav,url='http://127.0.0.1:{free_port()}':"), "x")
    start = time.time()
    with pytest.raises(Exception, match="connection refused"):
        gone.put_file(_one_file(tmp_path), "data/f.bin")
    assert time.time() - start < 10


def _one_file(root: Path) -> Path:
    path = root / "f.bin"
    path.write_bytes(b"x" * 100)
    return path


def test_verification_by_hash_or_size(tmp_path: Path, webdav: WebdavRemote) -> None:
    """``rclone_verify=hash`` on a remote without hashes compares sizes: a copy cut short is
    refused; ``download`` also catches a copy of the same size with other bytes."""
    local = _one_file(tmp_path)
    for verify in ("hash", "download"):
        remote = Remote(webdav.remote, "v", verify=verify)
        remote.put_file(local, f"{verify}.bin")
        assert (webdav.folder / "v" / f"{verify}.bin").read_bytes() == local.read_bytes()
    (webdav.folder / "v" / "hash.bin").write_bytes(b"x" * 10)
    with pytest.raises(RemoteUnavailable, match="wrong size"):
        Remote(webdav.remote, "v", verify="hash").check_hashes(local, "hash.bin", 100)
    (webdav.folder / "v" / "download.bin").write_bytes(b"y" * 100)
    assert Remote(webdav.remote, "v").remote_sha256("download.bin")[1] == 100
    assert Remote(webdav.remote, "v").remote_sha256("download.bin")[0] != _sha(local)


def test_slurm_jobs_get_the_staging_with_cluster_paths(tmp_path: Path) -> None:
    """A Slurm job's environment carries the staging: the input where the cluster reads it
    (slurm_datadir), its remote path and hash, the job folder's remote path."""
    import json

    from caesar_rest.apps.registry import default_registry
    from caesar_rest.backends.slurm import SlurmBackend
    from caesar_rest.db.engine import make_engine, make_sessionmaker
    from caesar_rest.db.models import JobRecord
    from caesar_rest.jobs.service import JobService
    from caesar_rest.settings import Settings
    from caesar_rest.storage.remote import STORAGE_ENV, Staging

    settings = Settings(
        datadir=tmp_path / "data",
        jobdir=tmp_path / "jobs",
        slurm_url="http://slurm:6820",
        slurm_token="t",
        slurm_datadir=Path("/cluster/data"),
        slurm_jobdir=Path("/cluster/jobs"),
        mount_rclone_volume=True,
        rclone_storage_name="neanias-nextcloud",
        rclone_storage_path="appdata",
        rclone_flags=["--bwlimit", "50M"],
    )
    svc = JobService(
        settings,
        make_sessionmaker(make_engine(f"sqlite:///{tmp_path / 'db.sqlite3'}")),
        default_registry(),
    )
    jdir = tmp_path / "jobs" / "u" / "job_abc"
    jdir.mkdir(parents=True)
    input_file = str((tmp_path / "data" / "u" / "f.fits").resolve())
    spec = {"command": ["x", "--input", input_file], "input_file": input_file}
    (jdir / "job.json").write_text(json.dumps({**spec, "input_sha256": "ab" * 32}))
    job = JobRecord(id="abc", app="sep", reldir="u/job_abc", time_limit=90, cores=1, owner="u")
    env = SlurmBackend(svc, settings.slurm).job_spec(job).environment
    staging = Staging.from_env(env[STORAGE_ENV])
    assert staging.remote == Remote(
        "neanias-nextcloud:", "appdata", None, ("--bwlimit", "50M"), 600
    )
    assert (staging.input_local, staging.input_rel) == ("/cluster/data/u/f.fits", "data/u/f.fits")
    assert (staging.input_sha256, staging.job_rel) == ("ab" * 32, "jobs/u/job_abc")


def test_rclone_time_stamps() -> None:
    assert rfc3339_epoch("2026-12-02T07:00:00.123456789Z") == 1796194800.123456
    assert rfc3339_epoch("2026-12-02T08:00:00+01:00") == 1796194800.0


def test_stale_partial_copies_removed_at_start(tmp_path: Path, webdav: WebdavRemote) -> None:
    """Partial upload copies of dead processes on the remote (``.incoming/*.part`` older than
    the grace hour) and stale local fetches go at start-up; a copy in progress, and what is
    not a partial copy, stay. A remote that is away is reported, the sweep fails cleanly."""
    incoming = webdav.folder / "appdata" / "data" / ".incoming"
    incoming.mkdir(parents=True)
    old = time.time() - 7200
    for name, size in (("dead.fits.part", 1000), ("notes.txt", 5)):
        (incoming / name).write_bytes(b"x" * size)
        os.utime(incoming / name, (old, old))
    (incoming / "live.fits.part").write_bytes(b"y" * 10)
    stage = tmp_path / "data" / "anonymous" / ".abc.fits.4242.stage"
    stage.parent.mkdir(parents=True)
    stage.write_bytes(b"partial")
    os.utime(stage, (old, old))
    with TestClient(create_app(_settings(tmp_path, webdav))) as c:
        deadline = time.time() + 20
        while ".incoming/dead.fits.part" in webdav.files("appdata/data"):
            assert time.time() < deadline, "the start-up sweep did not run"
            time.sleep(0.1)
        assert webdav.files("appdata/data") == {
            ".incoming/live.fits.part": 10,
            ".incoming/notes.txt": 5,
        }
        assert not stage.exists()
        assert c.get("/healthz").status_code == 200
        volume = remote_volume(c.app.state.ctx.settings)  # type: ignore[attr-defined]
        assert volume is not None
        assert volume.sweep_partials(now=time.time() + 7200) == [".incoming/live.fits.part"]
        webdav.stop()
        with pytest.raises(StorageUnavailable, match="Remote storage unavailable"):
            volume.sweep_partials()
