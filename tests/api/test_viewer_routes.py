"""The viewer's routes: image description, PNG tiles (cached by the browser), pixel values,
overlays (ellipses and island contours)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient

from tests.support.app_jobs import run_job
from tests.support.paths import SHARED_DATA
from tests.support.synth_images import Synth

API = "/caesar/api/v1.0"
IMAGE = SHARED_DATA / "ScorpioS17Field.fits"


def _upload(client: TestClient, path: Path) -> str:
    with path.open("rb") as fh:
        r = client.post(f"{API}/upload", files={"file": (path.name, fh)})
    assert r.status_code == 200, r.text
    file_id: str = r.json()["uuid"]
    return file_id


def test_image_tiles_and_pixel(app_client: TestClient) -> None:
    fid = _upload(app_client, IMAGE)
    info = app_client.get(f"{API}/file/{fid}/image").json()
    assert (info["shape"], info["tile"], info["levels"], info["bunit"]) == (
        [1000, 1000],
        256,
        3,
        "JY/BEAM",
    )
    assert info["wcs"]["CTYPE1"] == "RA---SIN" and info["intervals"][-1] == 100.0
    lo, hi = info["percentiles"]["0.25"], info["percentiles"]["99.75"]
    r = app_client.get(
        f"{API}/file/{fid}/tiles/2/0/0", params={"lo": lo, "hi": hi, "scale": "asinh"}
    )
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["cache-control"] == "private, max-age=86400, immutable"
    assert r.content[16:24] == (250).to_bytes(4, "big") * 2  # IHDR: 250 x 250 (level 2)
    edge = app_client.get(f"{API}/file/{fid}/tiles/0/3/3")  # default limits: 99.5 %
    assert edge.content[16:24] == (232).to_bytes(4, "big") * 2  # 1000 - 3 * 256

    px = app_client.get(f"{API}/file/{fid}/pixel", params={"x": 500, "y": 500}).json()
    assert px["x"] == px["y"] == 500 and px["bunit"] == "JY/BEAM"
    assert px["value"] == 0.003924321383237839
    assert round(px["ra"], 6) == 257.12324 and round(px["dec"], 6) == -43.212342


def test_viewer_routes_refuse_bad_input(app_client: TestClient) -> None:
    fid = _upload(app_client, IMAGE)
    tile = f"{API}/file/{fid}/tiles"
    r = app_client.get(f"{tile}/0/9/0", params={"lo": 0, "hi": 1})
    assert r.status_code == 400
    assert r.json()["status"] == "tile (9, 0) is outside level 0 (1000x1000 pixels)"
    r = app_client.get(f"{tile}/5/0/0", params={"lo": 0, "hi": 1})
    assert r.status_code == 400 and r.json()["status"] == "level must be in 0..2, got 5"
    r = app_client.get(f"{tile}/0/0/0", params={"lo": 1, "hi": 0})
    assert r.status_code == 400 and "hi > lo" in r.json()["status"]
    assert app_client.get(f"{tile}/0/0/0", params={"lo": 0, "hi": 1, "cmap": "jet"}).is_client_error
    r = app_client.get(f"{tile}/log/0/0")
    assert r.status_code == 400 and r.json()["status"] == "level must be an integer, got 'log'"
    r = app_client.get(f"{API}/file/{fid}/pixel")
    assert r.status_code == 400 and r.json()["status"].startswith("give the pixel as x=")
    r = app_client.get(f"{API}/file/{fid}/pixel", params={"x": -3, "y": 0})
    assert r.status_code == 400 and "outside the image" in r.json()["status"]
    other = "0" * 32
    assert app_client.get(f"{API}/file/{other}/image").status_code == 404
    assert app_client.get(f"{API}/file/not-an-id/image").status_code == 400
    assert app_client.get(f"{API}/job/{other}/overlay").status_code == 404


def test_caesar_overlay_has_island_contours_linked_to_rows(
    app_client: TestClient, synth_factory: Callable[..., Synth]
) -> None:
    """A caesar job's overlay: one contour per island row, each around its catalogue rows."""
    fid = _upload(app_client, synth_factory().path)
    job_id, status = run_job(app_client, fid, "caesar", {"convertregionstowcs": True}, timeout=120)
    assert status["state"] == "SUCCESS", status
    body = app_client.get(f"{API}/job/{job_id}/overlay").json()
    isl = body["islands"]
    islands_json = app_client.get(f"{API}/job/{job_id}/results/islands-json").json()
    assert isl["from"] == "islands.reg" and not isl["truncated"]
    regions = app_client.get(f"{API}/job/{job_id}/results/islands-regions").text
    assert regions.splitlines()[2] == "fk5"  # polygons in RA/Dec: the WCS places them
    assert isl["table"]["sources"] == islands_json["sources"]
    assert len(isl["contours"]) == len(islands_json["sources"]) >= 5
    rows = sorted(r for c in isl["contours"] for r in c["rows"])
    assert rows == list(range(len(body["sources"])))  # every catalogue row in one island
    for c in isl["contours"]:
        assert c["name"] == f"S{c['island_id']}" and c["row"] == c["island_id"]
        xs, ys = c["points"][0::2], c["points"][1::2]
        for r in c["rows"]:  # sky polygons placed back on the pixels: around their peaks
            island = isl["table"]["sources"][c["row"]]
            assert min(xs) <= island["x"] <= max(xs) and min(ys) <= island["y"] <= max(ys)
            assert body["sources"][r]["island_id"] == c["island_id"]
