"""The predecessor README's curl sequence, shared by the end-to-end tests of every deployment.

Used on a live server (tests/api), behind nginx (tests/deploy) and on each job backend
(tests/backends).
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Protocol


class ApiBase(Protocol):
    """A live server or a proxy in front of one: anything with the v1.0 API's base URL."""

    api: str


def curl(*args: str) -> tuple[int, bytes]:
    """Run curl with an argument list; return (HTTP status, body)."""
    out = subprocess.run(  # noqa: S603
        ["curl", "-s", "-S", "-w", "\n%{http_code}", *args],  # noqa: S607
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout
    body, _, code = out.rpartition(b"\n")
    return int(code), body


def run_curl_sequence(srv: ApiBase, image: Path, tmp: Path) -> None:
    """Run the predecessor README's curl sequence on ``srv`` with ``image``, checking each answer.

    ``srv`` needs only ``api`` (the v1.0 base URL); ``tmp`` receives the downloaded archive.
    """
    api = srv.api
    # 1. upload
    code, body = curl("-F", f"file=@{image}", "-F", "tag=e2e", f"{api}/upload")
    assert code == 200, body
    up = json.loads(body)
    file_id = up["uuid"]
    assert up["filename_orig"] == image.name
    assert up["format"] == "fits"
    assert up["tag"] == "e2e"
    assert up["size_bytes"] == image.stat().st_size
    # 2. list files
    code, body = curl(f"{api}/fileids")
    assert code == 200
    files = json.loads(body)
    assert [f["fileid"] for f in files] == [file_id]
    # 3. apps and describe
    code, body = curl(f"{api}/apps")
    assert code == 200 and "sep" in json.loads(body)["apps"]
    code, body = curl(f"{api}/app/sep/describe")
    schema = json.loads(body)
    assert code == 200 and schema["seedthr"]["type"] == "float"
    # 4. submit
    req = {
        "app": "sep",
        "job_inputs": {"seedthr": 5.0, "npixmin": 5},
        "data_inputs": file_id,
        "tag": "e2e-job",
    }
    code, body = curl(
        "-X", "POST", "-H", "Content-Type: application/json", "-d", json.dumps(req), f"{api}/job"
    )
    assert code == 202, body
    sub = json.loads(body)
    assert sub["state"] == "PENDING"
    job_id = sub["job_id"]
    # 5. poll to SUCCESS
    deadline = time.time() + 120
    status: dict = {}
    while time.time() < deadline:
        code, body = curl(f"{api}/job/{job_id}/status")
        assert code == 200
        status = json.loads(body)
        if status["state"] not in ("PENDING", "STARTED", "RUNNING"):
            break
        time.sleep(0.3)
    assert status["state"] == "SUCCESS", status
    assert status["exit_code"] == 0 and status["elapsed_time"] > 0
    # The state history, oldest first (read in one statement on PostgreSQL, two on SQLite).
    changes = [(e["from"], e["to"]) for e in status["events"]]
    assert changes[0] == (None, "PENDING") and changes[-1][1] == "COMPLETED", changes
    assert all(a[1] == b[0] for a, b in zip(changes, changes[1:], strict=False)), changes
    code, body = curl(f"{api}/job/{'0' * 32}/status")
    assert code == 404 and json.loads(body)["job_id"] == "0" * 32
    code, body = curl(f"{api}/jobs")
    assert code == 200 and json.loads(body)[0]["job_id"] == job_id
    # 6. download and unpack the archive
    archive = tmp / "out.tar.gz"
    code, _ = curl("-o", str(archive), f"{api}/job/{job_id}/output")
    assert code == 200
    with tarfile.open(archive) as tar:
        tar.extractall(tmp / "unpacked", filter="data")
    cat = tmp / "unpacked" / f"job_{job_id}" / "catalog.csv"
    rows = list(csv.DictReader(io.StringIO(cat.read_text())))
    assert len(rows) == 59  # sep on ScorpioS17Field.fits is deterministic
    assert {"name", "ra", "dec", "peak_flux", "flux"} <= set(rows[0])
    # catalogue as JSON through the legacy route
    code, body = curl(f"{api}/job/{job_id}/sources")
    assert code == 200 and len(json.loads(body)["sources"]) == len(rows)
    # 7. delete the file
    code, body = curl(f"{api}/delete/{file_id}")
    assert code == 200, body
    code, body = curl(f"{api}/fileids")
    assert json.loads(body) == []
    code, _ = curl(f"{api}/download/{file_id}")
    assert code == 404
