"""The predecessor's README, replayed: every request of its "Usage" section, verbatim.

The commands below are the README's own text (SKA-INAF/caesar-rest, "Usage": data upload,
download, file ids, app list and description, job submission, status, output, cancel, job ids),
with its headers and bodies unchanged. Only three things are substituted, as a README reader
would: the server address (``http://localhost:8080``), and the README's example ids (the
file ``67a49bf7...``, the jobs ``f135bcee-...`` and ``c3c9348a-...``) by the ids this server
returned. They run with curl, as the README shows them, against a live ``caesar-rest serve``
process; the documented job submission (``job_inputs.inputfile`` as an upload's path, with
``run``, ``envfile``, ``no-logredir`` and ``no-mpi``) runs the ``caesar`` app to SUCCESS on
a small synthetic image stored under the README's file name.

Not replayed: the README's ``/datasets`` route (a later README, for apps this service does not
have) and its describe example of the ``umap`` app, which this service lacks (answered 400
"Unknown app", as the predecessor answered for an app it did not know); its ``mrcnn`` example
is answered with that app's options.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from tests.support.server import LiveServer
from tests.support.synth_images import STANDARD_SOURCES, write_synth

README_HOST = "http://localhost:8080"
README_FILE_ID = "67a49bf7555b41739095681bf52a1f99"
README_STATUS_JOB = "f135bcee-562b-4f01-ad9b-103c35b13b36"
README_OUTPUT_JOB = "c3c9348a-bea0-4141-8fe9-7f64076a2327"

# The README's commands, each joined on one line (its lines end in "\").
UPLOAD = (
    "curl -X POST -H 'Content-Type: multipart/form-data' -F 'file=@VGPS_cont_MOS017.fits' "
    "--url 'http://localhost:8080/caesar/api/v1.0/upload'"
)
DOWNLOAD = (
    "curl  -X GET --fail -o data.fits "
    "--url 'http://localhost:8080/caesar/api/v1.0/download/67a49bf7555b41739095681bf52a1f99'"
)
FILEIDS = "curl  -X GET --url 'http://localhost:8080/caesar/api/v1.0/fileids'"
APPS_URL = "http://localhost:8080/caesar/api/v1.0/apps"
DESCRIBE_URL = "http://localhost:8080/caesar/api/v1.0/app/{app_name}/describe"
SUBMIT = (
    "curl -X POST -H 'Content-Type: application/json' -d "
    '\'{"app":"caesar","job_inputs":{"inputfile":"/opt/caesar-rest/data/'
    '67a49bf7555b41739095681bf52a1f99.fits","run":true,"no-logredir":true,'
    '"envfile":"/home/riggi/Software/setvars.sh","no-mpi":true,"no-nestedsearch":true,'
    '"no-extendedsearch":true}}\' '
    "--url 'http://localhost:8080/caesar/api/v1.0/job'"
)
STATUS = (
    "curl -X GET "
    "--url 'http://localhost:8080/caesar/api/v1.0/job/f135bcee-562b-4f01-ad9b-103c35b13b36/status'"
)
OUTPUT = (
    "curl -X GET --fail -o job_output.tar.gz "
    "--url 'http://localhost:8080/caesar/api/v1.0/job/c3c9348a-bea0-4141-8fe9-7f64076a2327/output'"
)
# "Cancel job" and "Get job ids" give the URL, the method and "Request header: None".
CANCEL_URL = "http://localhost:8080/caesar/api/v1.0/job/[job_id]/cancel"
JOBS_URL = "http://localhost:8080/caesar/api/v1.0/jobs"

# What the README's job request sends besides the input: the predecessor's run-control keys.
WITHOUT_EFFECT = ["envfile", "no-logredir", "run"]


class Readme:
    """Runs README commands against one server from one folder."""

    def __init__(self, srv: LiveServer, cwd: Path):
        self.srv = srv
        self.cwd = cwd
        self.subs: dict[str, str] = {README_HOST: srv.url}

    def run(self, command: str) -> tuple[int, int, bytes]:
        """Run ``command`` (README text); return (curl exit code, HTTP status, body)."""
        for old, new in self.subs.items():
            command = command.replace(old, new)
        argv = shlex.split(command)
        assert argv[0] == "curl"
        out = subprocess.run(  # noqa: S603
            [argv[0], "-s", "-S", "-w", "\n%{http_code}", *argv[1:]],
            capture_output=True,
            cwd=self.cwd,
            timeout=120,
            check=False,
        )
        body, _, code = out.stdout.rpartition(b"\n")
        return out.returncode, int(code), body

    def json(self, command: str, status: int = 200) -> object:
        """Run ``command``; it must succeed with ``status`` and a JSON body."""
        rc, code, body = self.run(command)
        assert rc == 0 and code == status, (rc, code, body[:2000])
        return json.loads(body)


@pytest.fixture
def readme(tmp_path: Path) -> object:
    srv = LiveServer(tmp_path / "srv").start()
    work = tmp_path / "client"
    work.mkdir()
    # The README uploads VGPS_cont_MOS017.fits: a small image with 7 known sources here.
    write_synth(work / "VGPS_cont_MOS017.fits", STANDARD_SOURCES)
    yield Readme(srv, work)
    srv.stop()


def test_readme_requests_verbatim(readme: Readme) -> None:
    r, cwd = readme, readme.cwd
    image = cwd / "VGPS_cont_MOS017.fits"

    # Data upload (with the README's explicit multipart Content-Type header).
    up = r.json(UPLOAD)
    assert isinstance(up, dict)
    assert up["status"] == "File uploaded with success"
    assert up["filename_orig"] == "VGPS_cont_MOS017.fits" and up["format"] == "fits"
    assert up["size"] == pytest.approx(image.stat().st_size / 1024**2)
    assert {"date", "uuid"} <= set(up)
    file_id = up["uuid"]

    # Data download: first as written (the README's id is not a file here: --fail makes curl
    # fail, and without -o the body is the README's JSON message) ...
    rc, code, body = r.run(DOWNLOAD)
    assert (rc, code) == (22, 404) and not (cwd / "data.fits").exists()
    rc, code, body = r.run(DOWNLOAD.replace("--fail -o data.fits ", ""))
    assert code == 404
    assert json.loads(body) == {
        "status": f"File with uuid {README_FILE_ID} not found on the system!"
    }
    # ... then with the id the upload returned.
    r.subs[README_FILE_ID] = file_id
    rc, code, _ = r.run(DOWNLOAD)
    assert (rc, code) == (0, 200)
    assert (cwd / "data.fits").read_bytes() == image.read_bytes()

    # Uploaded data ids (the predecessor's code answered a list of file documents).
    files = r.json(FILEIDS)
    assert isinstance(files, list) and [f["fileid"] for f in files] == [file_id]

    # App list and description.
    apps = r.json(f"curl -X GET --url '{APPS_URL}'")
    assert isinstance(apps, dict) and "caesar" in apps["apps"]
    schema = r.json(f"curl -X GET --url '{DESCRIBE_URL.format(app_name='caesar')}'")
    assert isinstance(schema, dict)
    for name in ("no-logredir", "no-mpi", "no-nestedsearch", "no-extendedsearch"):
        assert schema[name]["type"] == "none", name
    # no-mpi takes effect (tiles over MPI ranks when launched under mpirun); no-logredir does not.
    assert not schema["no-logredir"]["effective"] and schema["no-mpi"]["effective"]
    mrcnn = r.json(f"curl -X GET --url '{DESCRIBE_URL.format(app_name='mrcnn')}'")
    assert mrcnn["scoreThr"]["default"] == 0.7 and mrcnn["iouThr"]["default"] == 0.6
    err = r.json(f"curl -X GET --url '{DESCRIBE_URL.format(app_name='umap')}'", 400)
    assert err == {"status": "Unknown app umap!"}

    # Job submission: the README's body, inputfile as the path of the upload.
    sub = r.json(SUBMIT, 202)
    assert isinstance(sub, dict)
    assert sub["status"] == "Job submitted and registered with success"
    assert sub["state"] == "PENDING" and sub["app"] == "caesar"
    assert sub["data_inputs"] == file_id
    assert sub["job_inputs"] == {
        "inputfile": f"/opt/caesar-rest/data/{file_id}.fits",
        "run": True,
        "no-logredir": True,
        "envfile": "/home/riggi/Software/setvars.sh",
        "no-mpi": True,
        "no-nestedsearch": True,
        "no-extendedsearch": True,
    }
    assert sub["ineffective_options"] == WITHOUT_EFFECT
    job_id = sub["job_id"]

    # Job status, polled with the README's request until the job ends.
    r.subs[README_STATUS_JOB] = job_id
    deadline = time.time() + 180
    status: dict = {}
    while time.time() < deadline:
        got = r.json(STATUS)
        assert isinstance(got, dict)
        status = got
        if status["state"] not in ("PENDING", "STARTED", "RUNNING"):
            break
        time.sleep(0.3)
    assert status["state"] == "SUCCESS", status
    assert status["status"] == "Process terminated with success"
    assert status["job_id"] == job_id and status["exit_code"] == 0
    assert status["elapsed_time"] > 0 and status["pid"]

    # Job output: the job folder as a tar.gz; its log names the keys without effect.
    r.subs[README_OUTPUT_JOB] = job_id
    rc, code, _ = r.run(OUTPUT)
    assert (rc, code) == (0, 200)
    with tarfile.open(cwd / "job_output.tar.gz") as tar:
        names = tar.getnames()
        log_member = tar.extractfile(f"job_{job_id}/job.log")
        assert log_member is not None
        log = log_member.read().decode()
    assert f"job_{job_id}/catalog.csv" in names and f"job_{job_id}/catalog.dat" in names
    assert f"inputfile '/opt/caesar-rest/data/{file_id}.fits' is file {file_id}" in log
    assert f"without effect here: {', '.join(WITHOUT_EFFECT)}" in log
    sources = r.json(f"curl -X GET --url '{r.srv.api}/job/{job_id}/sources'")
    assert isinstance(sources, dict) and len(sources["sources"]) >= 5  # 7 true, one on the edge

    # Cancel (POST): the job has ended, so nothing is canceled.
    cancel = r.json(f"curl -X POST --url '{CANCEL_URL.replace('[job_id]', job_id)}'")
    assert cancel == {
        "status": f"Job {job_id} already completed with state SUCCESS, nothing to be canceled.",
        "state": "SUCCESS",
    }

    # Job ids.
    jobs = r.json(f"curl -X GET --url '{JOBS_URL}'")
    assert isinstance(jobs, list) and [j["job_id"] for j in jobs] == [job_id]
    assert jobs[0]["state"] == "SUCCESS" and jobs[0]["data_inputs"] == file_id


def test_readme_inputfile_forms(readme: Readme) -> None:
    """The input as the README's response echoes it (the bare id), and as the predecessor
    stored uploads (``<datadir>/<user>/<id>.<ext>``): both run; another user's or an unknown
    file, a ``..`` path and a wrong extension are refused; unknown names stay a 400."""
    r = readme
    file_id = r.json(UPLOAD)["uuid"]  # type: ignore[index]

    def submit(job_inputs: dict, status: int) -> dict:
        body = json.dumps({"app": "caesar", "job_inputs": job_inputs})
        cmd = (
            f"curl -X POST -H 'Content-Type: application/json' -d '{body}' "
            f"--url '{README_HOST}/caesar/api/v1.0/job'"
        )
        got = r.json(cmd, status)
        assert isinstance(got, dict)
        return got

    quick = {"no-nestedsearch": True, "no-extendedsearch": True}
    ids = []
    for ref in (file_id, f"/opt/caesar-rest/data/anonymous/{file_id}.FITS"):
        sub = submit({"inputfile": ref, **quick}, 202)
        assert sub["data_inputs"] == file_id and sub["ineffective_options"] == []
        ids.append(sub["job_id"])
    for bad, words in (
        (f"/opt/caesar-rest/data/{'0' * 32}.fits", "Cannot find file"),
        (f"/opt/caesar-rest/data/{file_id}.png", "Cannot find file"),
        (f"/opt/caesar-rest/data/../../etc/{file_id}.fits", "file id or an uploaded file"),
        ("/etc/passwd", "file id or an uploaded file"),
    ):
        err = submit({"inputfile": bad, **quick}, 400)
        assert words in err["status"] and err["state"] == "ABORTED", err
    err = submit({"inputfile": file_id, "envfile": 3, "colour": "red", "nsigma": 1}, 400)
    assert err["errors"] == [
        "unknown option(s) for app 'caesar': colour, nsigma",
        "option 'envfile' takes a string, got 3",
    ]
    err = submit({"run": True}, 400)
    assert "Missing 'data_inputs'" in err["status"]
    for job_id in ids:
        deadline = time.time() + 180
        state = ""
        while time.time() < deadline:
            state = r.json(f"curl --url '{r.srv.api}/job/{job_id}/status'")["state"]  # type: ignore[index]
            if state not in ("PENDING", "RUNNING"):
                break
            time.sleep(0.3)
        assert state == "SUCCESS", job_id
