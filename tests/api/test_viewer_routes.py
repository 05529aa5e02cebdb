"""The viewer's routes: image description, PNG tiles (cached by the browser), pixel values."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient

from tests.support.paths import SHARED_DATA

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
