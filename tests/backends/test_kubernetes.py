"""The kubernetes backend through the official client, against an in-process fake of the API
(no cluster can run on our machines): the Job it builds, the mapping of every condition, cancel,
and, with the fake playing the kubelet, the end-to-end sequence and the deadline."""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from caesar_rest.api.app import create_app

from tests.backends.backend_support import job_folder, submit_uws, upload, wait_for
from tests.backends.kube_fake import FakeKube
from tests.support.e2e import run_curl_sequence
from tests.support.paths import SUPPORT
from tests.support.server import LiveServer, make_settings

API = "/caesar/api/v1.0"


def kube_settings(fake: FakeKube, root: Path) -> dict[str, Any]:
    return {
        "job_scheduler": "kubernetes",
        "kube_config": fake.kubeconfig(root / "kubeconfig"),
        "kube_image": "registry.example.org/caesar-rest-job:1.0",
        "kube_pvc": "caesar-storage",
        "kube_data_subpath": "data",
        "kube_jobs_subpath": "jobs",
        "kube_python": sys.executable,
        "kube_ttl_seconds": 300,
        "backend_poll_interval": 0,  # the tests drive reconciliation
        "job_time_limit": 120,
    }


@pytest.fixture
def fake() -> Iterator[FakeKube]:
    f = FakeKube().start()
    yield f
    f.stop()


@pytest.fixture
def client(fake: FakeKube, tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, **kube_settings(fake, tmp_path))
    with TestClient(create_app(settings)) as c:
        yield c


def _backend(client: TestClient) -> Any:
    return client.app.state.ctx.jobs.backends["kubernetes"]  # type: ignore[attr-defined]


def _submit(client: TestClient, s17: Path, seconds: float = 30) -> str:
    with open(s17, "rb") as fh:
        fid = client.post(f"{API}/upload", files={"file": (s17.name, fh)}).json()["uuid"]
    r = client.post(
        f"{API}/job",
        json={"app": "sleep", "job_inputs": {"seconds": seconds}, "data_inputs": fid},
    )
    assert r.status_code == 202, r.text
    return str(r.json()["job_id"])


def _status(client: TestClient, job_id: str) -> dict:
    return client.get(f"{API}/job/{job_id}/status").json()


def test_the_job_manifest(client: TestClient, fake: FakeKube, tmp_path: Path, s17: Path) -> None:
    """What reached the API server: no privilege, limits, deadline, TTL, PVC volumes."""
    job_id = _submit(client, s17)
    assert _status(client, job_id)["phase"] == "QUEUED"
    (ns, name), job = next(iter(fake.jobs.items()))
    assert ns == "caesar" and name == f"caesar-{job_id}"
    spec = job["spec"]
    assert spec["backoffLimit"] == 0
    assert spec["activeDeadlineSeconds"] == 120
    assert spec["ttlSecondsAfterFinished"] == 300
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        assert not pod.get(key)
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True and sc["runAsNonRoot"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert c["image"] == "registry.example.org/caesar-rest-job:1.0"
    res = c["resources"]
    assert res["requests"]["cpu"] == res["limits"]["cpu"] == "1"
    assert res["requests"]["memory"] == "1Gi" and res["limits"]["memory"] == "4Gi"
    # Volumes: the PVC only (data read-only), plus a memory emptyDir for /tmp; no hostPath.
    assert all("hostPath" not in v for v in pod["volumes"])
    claims = {
        v["name"]: v["persistentVolumeClaim"]
        for v in pod["volumes"]
        if "persistentVolumeClaim" in v
    }
    assert {c["claimName"] for c in claims.values()} == {"caesar-storage"}
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/data"]["readOnly"] is True and mounts["/data"]["subPath"] == "data"
    assert mounts["/jobs"]["subPath"] == "jobs" and not mounts["/jobs"].get("readOnly")
    # The wrapper runs in the job folder, with paths as the container sees them.
    reldir = job_folder_rel(tmp_path, job_id)
    assert c["workingDir"] == f"/jobs/{reldir}"
    cmd = c["command"]
    assert cmd[:4] == ["/bin/sh", "-c", 'exec "$@" >>job.log 2>&1', "caesar-job"]
    assert cmd[5:8] == ["-m", "caesar_rest.backends.wrapper", "--"]
    assert cmd[cmd.index("--input") + 1].startswith("/data/")
    assert str(tmp_path) not in json.dumps(c)  # no path of the API host leaks into the pod


def job_folder_rel(root: Path, job_id: str) -> str:
    (found,) = (root / "jobs").glob(f"*/job_{job_id}")
    return str(found.relative_to(root / "jobs"))


def _write_outcome(root: Path, job_id: str, code: int) -> None:
    jdir = root / "jobs" / job_folder_rel(root, job_id)
    (jdir / "result.txt").write_text("done\n")
    (jdir / "exit.json").write_text(json.dumps({"exit_code": code, "signal": None, "elapsed": 1.5}))


def _cond(kind: str, reason: str = "CompletionsReached", message: str = "") -> dict:
    return {"type": kind, "status": "True", "reason": reason, "message": message}


BACKOFF = "Job has reached the specified backoff limit"
DEADLINE = "Job was active longer than specified deadline"
RUNNING = {"active": 1, "ready": 1, "startTime": "2026-01-01T00:00:00Z"}
CASES = [
    # (Job status, exit code written by the wrapper, legacy state, phase)
    ({}, None, "PENDING", "QUEUED"),
    ({"active": 1, "ready": 0}, None, "PENDING", "QUEUED"),
    (RUNNING, None, "RUNNING", "EXECUTING"),
    ({"active": 1}, None, "RUNNING", "EXECUTING"),  # clusters without .status.ready
    ({**RUNNING, "conditions": [_cond("Suspended", "JobSuspended")]}, None, "RUNNING", "SUSPENDED"),
    ({"succeeded": 1, "conditions": [_cond("Complete")]}, 0, "SUCCESS", "COMPLETED"),
    ({"conditions": [_cond("SuccessCriteriaMet")]}, 0, "SUCCESS", "COMPLETED"),
    ({"conditions": [_cond("Failed", "BackoffLimitExceeded", BACKOFF)]}, 3, "FAILURE", "ERROR"),
    ({"conditions": [_cond("Failed", "DeadlineExceeded", DEADLINE)]}, None, "TIMED-OUT", "ERROR"),
    ({"conditions": [_cond("FailureTarget", "DeadlineExceeded")]}, None, "TIMED-OUT", "ERROR"),
    ({"conditions": [_cond("FailureTarget", "PodFailurePolicy")]}, None, "FAILURE", "ERROR"),
]


@pytest.mark.parametrize(("status", "exit_code", "state", "phase"), CASES)
def test_state_from_job_conditions(
    client: TestClient,
    fake: FakeKube,
    tmp_path: Path,
    s17: Path,
    status: dict,
    exit_code: int | None,
    state: str,
    phase: str,
) -> None:
    job_id = _submit(client, s17)
    name = f"caesar-{job_id}"
    if phase == "SUSPENDED":  # suspension happens to a running job
        fake.set_status(name, {"active": 1, "ready": 1})
        _backend(client).reconcile()
    if exit_code is not None:
        _write_outcome(tmp_path, job_id, exit_code)
    fake.set_status(name, status)
    _backend(client).reconcile()
    doc = _status(client, job_id)
    assert (doc["state"], doc["phase"]) == (state, phase), doc
    if exit_code is not None:
        assert doc["exit_code"] == exit_code
    for cond in status.get("conditions", []):
        if phase == "ERROR":
            assert cond["reason"] in doc["status"] or "deadline" in doc["status"]


def test_cancel_deletes_the_job_and_its_pods(client: TestClient, fake: FakeKube, s17: Path) -> None:
    job_id = _submit(client, s17)
    r = client.post(f"{API}/job/{job_id}/cancel")
    assert r.status_code == 200, r.text
    doc = _status(client, job_id)
    assert (doc["state"], doc["phase"]) == ("CANCELED", "ABORTED")
    assert not fake.jobs
    deletes = [(p, b) for m, p, b in fake.requests if m == "DELETE"]
    assert len(deletes) == 1
    path, body = deletes[0]
    assert path.split("?")[0].endswith(f"/namespaces/caesar/jobs/caesar-{job_id}")
    policy = (body or {}).get("propagationPolicy") or path.split("propagationPolicy=")[1].split(
        "&"
    )[0]
    assert policy in ("Background", "Foreground")


def test_vanished_job(client: TestClient, fake: FakeKube, tmp_path: Path, s17: Path) -> None:
    """A Job deleted behind our back (TTL, kubectl): settled from exit.json, else lost."""
    settled, lost = _submit(client, s17), _submit(client, s17)
    _write_outcome(tmp_path, settled, 0)
    fake.delete("caesar", f"caesar-{settled}")
    fake.delete("caesar", f"caesar-{lost}")
    backend = _backend(client)
    backend.reconcile()
    assert _status(client, settled)["state"] == "SUCCESS"
    assert _status(client, lost)["phase"] == "QUEUED"  # unseen, but within the bound
    backend.core = dataclasses.replace(backend.core, lost_after=0.5)
    time.sleep(0.6)
    backend.reconcile()
    doc = _status(client, lost)
    assert doc["state"] == "FAILURE" and "no longer exists" in doc["status"], doc


# --- with the fake playing the kubelet ---------------------------------------------------
@pytest.fixture(scope="module")
def kube_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp_path = tmp_path_factory.mktemp("kube")
    root = tmp_path / "srv"
    fake = FakeKube(pvcs={"caesar-storage": root}, env={"PYTHONPATH": str(SUPPORT)}).start()
    s = kube_settings(fake, tmp_path)
    env = {f"CAESAR_REST_{k.upper()}": str(v) for k, v in s.items()}
    env["CAESAR_REST_BACKEND_POLL_INTERVAL"] = "0.3"
    srv = LiveServer(root, **env).start(timeout=60)
    yield srv
    srv.stop()
    fake.stop()


def test_curl_sequence_kubernetes(kube_srv: LiveServer, s17: Path, tmp_path: Path) -> None:
    run_curl_sequence(kube_srv, s17, tmp_path)


def test_deadline_exceeded(kube_srv: LiveServer, s17: Path) -> None:
    with kube_srv.client() as c:
        fid = upload(c, s17)
    job_id = submit_uws(kube_srv, fid, seconds=60, limit=2)
    with kube_srv.client() as c:
        doc = wait_for(c, job_id, {"TIMED-OUT", "FAILURE", "SUCCESS"}, timeout=30)
    assert doc["state"] == "TIMED-OUT", doc
    assert job_folder(kube_srv, job_id).is_dir()


def test_the_job_manifest_with_an_rclone_volume(fake: FakeKube, tmp_path: Path) -> None:
    """mount_rclone_volume: no PVC, no FUSE, no privilege: an emptyDir to work in, the rclone
    Secret read-only, and the wrapper's staging (input in, folder out) in the environment."""
    from astropy.io import fits
    from kubernetes.client import ApiClient, V1Job

    from caesar_rest.storage.remote import STORAGE_ENV, Staging

    from tests.support.webdav_remote import WebdavRemote

    remote = WebdavRemote(tmp_path / "remote").start()
    try:
        kube = {k: v for k, v in kube_settings(fake, tmp_path).items() if k != "kube_pvc"}
        settings = make_settings(
            tmp_path,
            **kube,
            mount_rclone_volume=True,
            rclone_storage_name=remote.remote,
            rclone_storage_path="appdata",
        )
        image = tmp_path / "in.fits"
        fits.PrimaryHDU(np.zeros((32, 32), np.float32)).writeto(image)
        with TestClient(create_app(settings)) as client:
            job_id = _submit(client, image)
        fid = next(iter(remote.files("appdata/data/anonymous")))
    finally:
        remote.stop()
    (_, job), *_ = fake.jobs.items()
    pod = job["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    assert c["securityContext"]["privileged"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    assert all("persistentVolumeClaim" not in v and "hostPath" not in v for v in pod["volumes"])
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["work"] == {"name": "work", "emptyDir": {}}
    assert volumes["rclone-config"]["secret"]["secretName"] == "rclone-secret"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert mounts["/mnt/storage"]["name"] == "work"
    assert mounts["/etc/rclone"] == {
        "name": "rclone-config",
        "mountPath": "/etc/rclone",
        "readOnly": True,
    }
    reldir = job_folder_rel(tmp_path, job_id)
    assert c["workingDir"] == "/mnt/storage"
    assert c["command"][3] == f"/mnt/storage/jobs/{reldir}"
    env = {e["name"]: e["value"] for e in c["env"]}
    staging = Staging.from_env(env[STORAGE_ENV])
    assert staging.remote.config == "/etc/rclone/rclone.conf"
    assert staging.remote.target == remote.remote and staging.remote.root == "appdata"
    assert staging.job_rel == f"jobs/{reldir}"
    assert staging.input_rel == f"data/anonymous/{fid}"
    assert staging.input_local == f"/mnt/storage/data/anonymous/{fid}"
    cmd = c["command"]
    assert cmd[cmd.index("--input") + 1] == f"/mnt/storage/data/anonymous/{fid}"
    assert str(tmp_path) not in json.dumps(c)
    # The manifest is a valid V1Job for the official client (round trip through its model).
    body = ApiClient().sanitize_for_serialization(V1Job.from_dict(job))
    assert body["spec"]["template"]["spec"]["volumes"] == pod["volumes"]
