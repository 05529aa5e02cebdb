"""The images built and the stack run in them (scripts/docker.sh, ``make images`` and
``make stack-up``): the predecessor README's requests go through nginx in a container to the
API in a container, the job runs in the Celery worker's container and ends SUCCESS, its
catalogue is read; the job image runs the job wrapper with a read-only root; nothing stays
running. The engine is installed and started when missing (Debian's docker.io), the base
image and the wheelhouse are cached in /var/cache/caesar-rest."""

from __future__ import annotations

import json
import os
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pytest
import yaml

from tests.api.test_legacy_readme import (
    DOWNLOAD,
    FILEIDS,
    OUTPUT,
    README_FILE_ID,
    README_OUTPUT_JOB,
    README_STATUS_JOB,
    STATUS,
    SUBMIT,
    UPLOAD,
    Readme,
)
from tests.support.containers import REPO, Stack, containers, docker, logs
from tests.support.server import LiveServer
from tests.support.synth_images import STANDARD_SOURCES, write_synth

pytestmark = pytest.mark.timeout(1200)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    s = Stack(tmp_path_factory.mktemp("stack"))
    s.images()
    try:
        s.up()
        yield s
    finally:
        s.down()
    assert containers() == [], "containers left behind"


def test_images_are_built_as_the_manifests_name_them(stack: Stack) -> None:
    image, job_image = stack.value("CAESAR_REST_IMAGE"), stack.value("CAESAR_REST_JOB_IMAGE")
    version = stack.value("CAESAR_REST_IMAGE").split(":")[1]
    cm = yaml.safe_load((REPO / "deploy/kubernetes/configmap.yaml").read_text())["data"]
    assert cm["CAESAR_REST_KUBE_IMAGE"].rsplit("/", 1)[1] == job_image
    kust = yaml.safe_load((REPO / "deploy/kubernetes/kustomization.yaml").read_text())
    assert kust["images"] == [{"name": "registry.example.org/caesar-rest", "newTag": version}]
    for name in (image, job_image):
        cfg = json.loads(docker("image", "inspect", name))[0]["Config"]
        assert cfg["User"] == "1000:1000", name
        assert cfg["Healthcheck"]["Test"][0] == "CMD", name
        # No compiler, no test tool; uid 1000; the root file system cannot be written.
        probe = (
            "id -u; for t in gcc cc c++ make ld; do command -v $t; done; "
            "python3 -c 'import pytest' 2>/dev/null && echo pytest; "
            "python3 -c 'import mypy' 2>/dev/null && echo mypy; "
            "touch /opt/x 2>/dev/null && echo writable; echo end"
        )
        out = docker("run", "--rm", "--read-only", "--network", "host", "--entrypoint", "sh",
                     name, "-c", probe)  # fmt: skip
        assert out.split() == ["1000", "end"], (name, out)


def test_job_image_runs_the_wrapper_read_only(stack: Stack, tmp_path: Path) -> None:
    """What a Kubernetes job pod runs: the wrapper in the job folder, /tmp in memory."""
    job = tmp_path / "job"
    job.mkdir()
    os.chown(job, 1000, 1000)
    docker(
        "run", "--rm", "--read-only", "--tmpfs", "/tmp", "--network", "host",
        "-v", f"{job}:/job", "-w", "/job", stack.value("CAESAR_REST_JOB_IMAGE"),
        "python3", "-m", "caesar_rest.backends.wrapper", "--",
        "python3", "-c", "import sep, astropy; print('sep', sep.__version__)",
    )  # fmt: skip
    end = json.loads((job / "exit.json").read_text())
    assert end["exit_code"] == 0, end


def test_readme_sequence_through_nginx_to_the_worker(stack: Stack, tmp_path: Path) -> None:
    work = tmp_path / "client"
    work.mkdir()
    write_synth(work / "VGPS_cont_MOS017.fits", STANDARD_SOURCES)
    # Readme substitutes the README's host by .url and reads .api: nginx's address here.
    r = Readme(cast(LiveServer, stack), work)
    up = r.json(UPLOAD)
    assert isinstance(up, dict) and up["status"] == "File uploaded with success"
    file_id = up["uuid"]
    r.subs[README_FILE_ID] = file_id
    rc, code, _ = r.run(DOWNLOAD)
    assert (rc, code) == (0, 200)
    assert (work / "data.fits").read_bytes() == (work / "VGPS_cont_MOS017.fits").read_bytes()
    files = r.json(FILEIDS)
    assert isinstance(files, list) and [f["fileid"] for f in files] == [file_id]
    # The upload is in the stack's data folder, written by the API container as uid 1000.
    stored = [p for p in (stack.root / "data").rglob(f"{file_id}*") if p.is_file()]
    assert stored and all(p.stat().st_uid == 1000 for p in stored), stored

    sub = r.json(SUBMIT, 202)
    assert isinstance(sub, dict) and sub["state"] == "PENDING"
    job_id = sub["job_id"]
    r.subs[README_STATUS_JOB] = job_id
    status: dict = {}
    deadline = time.time() + 240
    while time.time() < deadline:
        status = cast(dict, r.json(STATUS))
        if status["state"] not in ("PENDING", "STARTED", "RUNNING"):
            break
        time.sleep(0.5)
    assert status["state"] == "SUCCESS", status
    assert status["status"] == "Process terminated with success" and status["exit_code"] == 0
    # It ran in the worker's container (the Celery backend; the API runs no jobs itself).
    assert job_id in logs("caesar-stack-worker")
    r.subs[README_OUTPUT_JOB] = job_id
    rc, code, _ = r.run(OUTPUT)
    assert (rc, code) == (0, 200)
    with tarfile.open(work / "job_output.tar.gz") as tar:
        assert f"job_{job_id}/catalog.csv" in tar.getnames()
    sources = r.json(f"curl -X GET --url '{stack.api}/job/{job_id}/sources'")
    assert isinstance(sources, dict) and len(sources["sources"]) >= 5  # 7 true, one on the edge
    jobs = r.json(f"curl -X GET --url '{stack.api}/jobs'")
    assert isinstance(jobs, list) and [(j["job_id"], j["state"]) for j in jobs] == [
        (job_id, "SUCCESS")
    ]
    # nginx logged the requests (its JSON access log, the API container behind it).
    log = logs("caesar-stack-nginx")
    assert f"/caesar/api/v1.0/job/{job_id}/status" in log and '"upstream":"127.0.0.1:' in log
