"""The celery backend with the rclone remote volume: real RabbitMQ, Redis, PostgreSQL, server
and worker processes, and a real ``rclone serve webdav`` remote on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from tests.backends.backend_support import (
    RigFactory,
    require_broker,
    require_redis,
    submit_sleep,
    upload,
)
from tests.support.server import wait_state
from tests.support.webdav_remote import WebdavRemote

pytestmark = [pytest.mark.celery, pytest.mark.postgres]


@pytest.fixture
def rigs(tmp_path: Path, pg_url: str) -> Iterator[RigFactory]:
    factory = RigFactory(tmp_path, pg_url, require_broker(), require_redis())
    yield factory
    factory.close()


def test_celery_job_stages_its_folder_to_the_remote(rigs: RigFactory, tmp_path: Path) -> None:
    """Upload on the remote before 200; the worker's job ends SUCCESS only with its whole
    folder on the remote, and the input is staged in on the worker when it is not cached."""
    webdav = WebdavRemote(tmp_path / "remote").start()
    try:
        rig = rigs(
            CAESAR_REST_MOUNT_RCLONE_VOLUME="true",
            CAESAR_REST_RCLONE_STORAGE_NAME=webdav.remote,
            CAESAR_REST_RCLONE_STORAGE_PATH="appdata",
        )
        rig.worker()
        image = tmp_path / "in.fits"
        fits.PrimaryHDU(np.ones((48, 48), np.float32)).writeto(image)
        with rig.srv.client() as c:
            fid = upload(c, image)
            owner_dir = next(iter(webdav.files("appdata/data"))).split("/")[0]
            assert webdav.files("appdata/data") == {f"{owner_dir}/{fid}.fits": image.stat().st_size}
            (rig.srv.datadir / owner_dir / f"{fid}.fits").unlink()  # not cached: staged in
            job_id = submit_sleep(c, fid, 0.2)
            st = wait_state(c, job_id, {"SUCCESS", "FAILURE"}, timeout=60)
        assert st["state"] == "SUCCESS", st
        on_remote = webdav.files(f"appdata/jobs/{owner_dir}/job_{job_id}")
        assert {"job.json", "job.log", "exit.json"} <= set(on_remote)
        jdir = rig.srv.jobdir / owner_dir / f"job_{job_id}"
        assert on_remote == {p.name: p.stat().st_size for p in jdir.iterdir() if p.is_file()}
        assert (rig.srv.datadir / owner_dir / f"{fid}.fits").read_bytes() == image.read_bytes()
    finally:
        webdav.stop()
