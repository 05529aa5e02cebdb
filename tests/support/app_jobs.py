"""Helpers for the app tests: run a job through the API and check the shared output model."""

from __future__ import annotations

import hashlib
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import astropy.units as u
from astropy.io import fits
from astropy.io.votable import parse
from astropy.table import Table
from fastapi.testclient import TestClient
from regions import Regions

from caesar_rest.api.app import create_app

from tests.support.server import make_settings

API = "/caesar/api/v1.0"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

#: Units the shared catalogue must carry in its VOTable.
EXPECTED_UNITS = {
    "x": u.pix,
    "ra": u.deg,
    "dec": u.deg,
    "ra_err": u.arcsec,
    "peak_flux": u.Jy / u.beam,
    "flux": u.Jy,
    "maj": u.arcsec,
    "min": u.arcsec,
    "pa": u.deg,
    "local_rms": u.Jy / u.beam,
}


@contextmanager
def service(root: Path) -> Iterator[TestClient]:
    """An in-process service (SQLite, local runner) in ``root``, as the ``app_client`` fixture."""
    with TestClient(create_app(make_settings(root))) as client:
        yield client


def wait_state(
    client: TestClient, job_id: str, states: set[str], timeout: float = 240
) -> dict[str, Any]:
    """Poll the status until the job's state is in ``states``."""
    deadline = time.time() + timeout
    last: dict[str, Any] = {}
    while time.time() < deadline:
        r = client.get(f"{API}/job/{job_id}/status")
        assert r.status_code == 200, r.text
        last = r.json()
        if last["state"] in states:
            return last
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} stuck in {last}")


def upload(client: TestClient, image: Path) -> str:
    """Upload ``image``; return its file id."""
    with open(image, "rb") as fh:
        r = client.post(f"{API}/upload", files={"file": (image.name, fh)})
    assert r.status_code == 200, r.text
    return str(r.json()["uuid"])


def run_job(
    client: TestClient, file_id: str, app: str, job_inputs: dict[str, Any], timeout: float = 240
) -> tuple[str, dict[str, Any]]:
    """Submit a job and wait until it ends; return its id and final status."""
    r = client.post(
        f"{API}/job", json={"app": app, "job_inputs": job_inputs, "data_inputs": file_id}
    )
    assert r.status_code == 202, r.text
    job_id = str(r.json()["job_id"])
    status = wait_state(client, job_id, {"SUCCESS", "FAILURE", "TIMED-OUT", "CANCELED"}, timeout)
    return job_id, status


def job_log(client: TestClient, job_id: str) -> str:
    """The job's log (for assertion messages)."""
    r = client.get(f"{API}/job/{job_id}/results/log")
    return r.text if r.status_code == 200 else f"(no log: {r.status_code})"


def result_bytes(client: TestClient, job_id: str, name: str) -> bytes:
    """The content of result ``name``."""
    r = client.get(f"{API}/job/{job_id}/results/{name}")
    assert r.status_code == 200, (name, r.text[:500])
    return r.content


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG (checks the signature and the IHDR chunk)."""
    assert data[:8] == PNG_SIGNATURE, "not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def check_outputs(client: TestClient, job_id: str, image: Path, tmp: Path) -> Table:
    """Check the shared output model of a finished job; return its catalogue (from the VOTable).

    VOTable with units, DS9 regions that ``regions`` parses (one per source), preview and
    thumbnail PNGs with the image's aspect ratio, summary and legacy routes.
    """
    listing = client.get(f"{API}/job/{job_id}/results").json()
    names = {item["name"]: item for item in listing["results"]}
    for name in ("catalog", "catalog-csv", "catalog-json", "regions", "preview", "preview-thumb"):
        assert name in names, (name, sorted(names))
    assert {"log", "archive", "summary"} <= set(names)

    vot = tmp / f"{job_id}.vot"
    vot.write_bytes(result_bytes(client, job_id, "catalog"))
    table = Table.read(vot, format="votable")
    for col, unit in EXPECTED_UNITS.items():
        assert table[col].unit == unit, (col, table[col].unit)
    check_provenance(vot, image)
    reg = tmp / f"{job_id}.reg"
    reg.write_bytes(result_bytes(client, job_id, "regions"))
    assert len(Regions.read(str(reg), format="ds9")) == len(table)

    with fits.open(image) as hdul:
        ny, nx = hdul[0].data.shape[-2:]
    for name, limit in (("preview", 2000), ("preview-thumb", 256)):
        w, h = png_size(result_bytes(client, job_id, name))
        assert max(w, h) <= limit, (name, w, h)
        assert abs(w / h - nx / ny) < 0.02, (name, w, h, nx, ny)

    # The legacy routes read the same model.
    r = client.get(f"{API}/job/{job_id}/sources")
    assert r.status_code == 200 and len(r.json()["sources"]) == len(table)
    r = client.get(f"{API}/job/{job_id}/output-sources")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert len(Table.read(r.text, format="ascii.csv")) == len(table)
    assert png_size(client.get(f"{API}/job/{job_id}/output-plot").content) == png_size(
        result_bytes(client, job_id, "preview")
    )
    summary = client.get(f"{API}/job/{job_id}/results/summary").json()
    assert summary["n_sources"] == len(table)
    return table


def check_provenance(vot: Path, image: Path) -> None:
    """The VOTable of a job on the upload of ``image`` names the uploaded file (not the stored
    file's id) with its hash, and its ra/dec refer to a COOSYS."""
    resource = parse(str(vot)).resources[0]
    infos = {i.name: str(i.value) for i in resource.infos}
    assert infos["input_file"] == image.name, infos
    assert infos["input_sha256"] == hashlib.sha256(image.read_bytes()).hexdigest()
    (coosys,) = resource.coordinate_systems
    refs = {f.name: f.ref for f in resource.tables[0].fields}
    assert refs["ra"] == refs["dec"] == coosys.ID


def assert_refused(
    client: TestClient, file_id: str, app: str, job_inputs: dict[str, Any], option: str
) -> None:
    """A bad submission is answered 400 naming ``option``, and nothing is created or started."""
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    jobdir = Path(ctx.settings.jobdir)
    before = sorted(p.name for p in jobdir.rglob("job_*"))
    jobs_before = client.get(f"{API}/jobs").json()
    r = client.post(
        f"{API}/job", json={"app": app, "job_inputs": job_inputs, "data_inputs": file_id}
    )
    assert r.status_code == 400, (job_inputs, r.text)
    body = r.json()
    assert body["state"] == "ABORTED" and body["job_id"] == ""
    assert option in body["status"], (option, body["status"])
    time.sleep(0.05)
    assert sorted(p.name for p in jobdir.rglob("job_*")) == before, "a job folder was created"
    assert client.get(f"{API}/jobs").json() == jobs_before, "a job was registered"
