"""A job's overlay: island contours from a DS9 region file or a label map, linked to rows."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from astropy.coordinates import SkyCoord
from astropy.io import fits

from caesar_rest.imaging import overlay
from caesar_rest.imaging.overlay import (
    OverlayFiles,
    job_overlay,
    label_contours,
    region_contours,
    thin,
)
from caesar_rest.imaging.synthetic import field_header
from caesar_rest.imaging.tiles import ImageView


@pytest.fixture
def view(tmp_path: Path) -> Iterator[ImageView]:
    """A blank 64 x 64 image, 2 arcsec pixels, centred on RA 10, Dec 10 (FK5)."""
    header = field_header(64, 2.0, (6.0, 6.0, 0.0), crval=(10.0, 10.0))
    for key in ("NAXIS", "NAXIS1", "NAXIS2"):
        header.remove(key, ignore_missing=True)
    path = tmp_path / "image.fits"
    fits.PrimaryHDU(np.zeros((64, 64), dtype=np.float32), header).writeto(path)
    v = ImageView.open(path)
    yield v
    v.close()


def sky(view: ImageView, frame: str, xy: list[tuple[float, float]]) -> str:
    """``lon,lat,...`` of 0-based pixels in ``frame``, as a region file writes them."""
    x, y = np.array(xy, dtype=float).T
    c = view.wcs.pixel_to_world(x, y).transform_to(frame)
    lon, lat = (c.l.deg, c.b.deg) if frame == "galactic" else (c.ra.deg, c.dec.deg)
    return ",".join(f"{a:.7f},{d:.7f}" for a, d in zip(lon, lat, strict=True))


def test_region_polygons_in_image_and_sky_coordinates(view: ImageView) -> None:
    square = [(10.0, 10.0), (20.0, 10.0), (20.0, 20.0), (10.0, 20.0)]
    text = "\n".join(
        [
            "# Region file format: DS9 version 4.1",
            'global color=red font="helvetica 8 normal"',
            "image",
            "polygon(1.5,1.5,4.5,1.5,4.5,3.5) # color=red text={S0} tag={label 1}",
            "circle(30,30,4) # not an outline: skipped",
            "polygon(1,2,3) # odd count: skipped",
            f"fk5; polygon({sky(view, 'fk5', square)}) # text={{S1}} tag={{label 2}}",
            f"galactic\npolygon({sky(view, 'galactic', square)}) # no tags",
        ]
    )
    got = region_contours(view, text)
    assert [(c.island_id, c.name) for c in got] == [(0, "S0"), (1, "S1"), (2, "S2")]
    assert got[0].points.tolist() == [[0.5, 0.5], [3.5, 0.5], [3.5, 2.5]]  # 1-based -> 0-based
    for c in got[1:]:
        assert c.points == pytest.approx(np.array(square), abs=1e-4)


def test_label_map_outlines_match_the_pixels(tmp_path: Path) -> None:
    labels = np.zeros((40, 50), dtype=np.float64)
    labels[5:8, 10:14] = 1  # 4 x 3 pixels: x 10..13, y 5..7
    labels[20:30, 30:32] = 3  # label 2 is absent
    labels[0, 0] = np.nan
    path = tmp_path / "segmented.fits"
    fits.PrimaryHDU(labels).writeto(path)
    got = label_contours(path, (40, 50))
    assert got is not None and [(c.island_id, c.name) for c in got] == [(0, "S0"), (2, "S2")]
    pts = got[0].points
    # The 0.5 level runs half a pixel outside the pixel centres (cut corners).
    assert (pts[:, 0].min(), pts[:, 0].max(), pts[:, 1].min(), pts[:, 1].max()) == (
        9.5,
        13.5,
        4.5,
        7.5,
    )
    assert label_contours(path, (50, 40)) is None  # not the image's shape


def test_thin_keeps_at_most_about_cap_vertices() -> None:
    pts = np.arange(1000, dtype=float).reshape(500, 2)
    assert thin(pts, 600) is pts
    assert thin(pts, 100).shape == (100, 2)
    assert thin(pts, 7).shape == (7, 2)  # every 72nd of 500


def write_json(path: Path, sources: list[dict[str, object]]) -> Path:
    path.write_text(json.dumps({"columns": [{"name": k} for k in sources[0]], "sources": sources}))
    return path


def test_job_overlay_links_islands_to_rows(view: ImageView, tmp_path: Path) -> None:
    cat = write_json(
        tmp_path / "catalog.json",
        [
            {"name": "a", "island_id": 0, "x": 2.0, "y": 2.0, "peak_flux": 1.0, "class": "compact"},
            {
                "name": "b",
                "island_id": 1,
                "x": 15.0,
                "y": 15.0,
                "peak_flux": 2.0,
                "class": "spurious",
            },
            {
                "name": "c",
                "island_id": 1,
                "x": 16.0,
                "y": 15.0,
                "peak_flux": 5.0,
                "class": "extended",
            },
            {"name": "d", "island_id": 1, "x": 17.0, "y": 15.0, "peak_flux": 9.0, "class": None},
        ],
    )
    table = write_json(
        tmp_path / "islands.json",
        [{"name": "I1", "island_id": 1}, {"name": "I0", "island_id": 0}],
    )
    reg = tmp_path / "islands.reg"
    reg.write_text(
        "image\npolygon(1,1,4,1,4,4) # text={S0} tag={label 1}\n"
        "polygon(11,11,21,11,21,21,11,21) # text={S1} tag={label 2}\n"
    )
    body = job_overlay(view, OverlayFiles(cat, regions=reg, island_table=table))
    assert len(body["ellipses"]) == 4
    isl = body["islands"]
    assert (isl["from"], isl["truncated"], isl["table"]["sources"][0]["name"]) == (
        "islands.reg",
        False,
        "I1",
    )
    first, second = isl["contours"]
    assert first == {
        "island_id": 0,
        "name": "S0",
        "points": [0.0, 0.0, 3.0, 0.0, 3.0, 3.0],
        "rows": [0],
        "class": "compact",
        "row": 1,
    }
    # The class of the brightest classified row; the table row found by island_id.
    assert (second["rows"], second["class"], second["row"]) == ([1, 2, 3], "extended", 0)

    assert job_overlay(view, OverlayFiles(cat))["islands"] is None  # sep: no islands


def test_job_overlay_bounds_the_answer(
    view: ImageView, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cat = write_json(tmp_path / "catalog.json", [{"name": "a", "x": 1.0, "y": 1.0}])
    ring = ",".join(f"{5 + 3 * np.cos(t):.3f},{5 + 3 * np.sin(t):.3f}" for t in range(300))
    reg = tmp_path / "islands.reg"
    reg.write_text("image\n" + "\n".join(f"polygon({ring})" for _ in range(5)))
    monkeypatch.setattr(overlay, "MAX_ISLANDS", 3)
    monkeypatch.setattr(overlay, "MAX_VERTICES", 60)
    isl = job_overlay(view, OverlayFiles(cat, regions=reg))["islands"]
    assert isl["truncated"] is True and len(isl["contours"]) == 3
    # 60 vertices over 3 islands: 20 each, the floor of 8 not reached.
    assert [len(c["points"]) // 2 for c in isl["contours"]] == [20, 20, 20]
    monkeypatch.setattr(overlay, "MAX_REGION_BYTES", 10)  # too large: the label map is tried
    assert job_overlay(view, OverlayFiles(cat, regions=reg))["islands"] is None


def test_sky_polygons_through_skycoord_match_the_wcs(view: ImageView) -> None:
    """One transform for all the polygons of a frame: each gets its own vertices back."""
    a = [(1.0, 2.0), (3.0, 2.0), (3.0, 5.0)]
    b = [(40.0, 40.0), (50.0, 40.0), (50.0, 50.0), (40.0, 52.0)]
    text = f"icrs\npolygon({sky(view, 'icrs', a)})\npolygon({sky(view, 'icrs', b)})"
    got = region_contours(view, text)
    assert got[0].points == pytest.approx(np.array(a), abs=1e-4)
    assert got[1].points == pytest.approx(np.array(b), abs=1e-4)
    assert isinstance(view.wcs.pixel_to_world(0, 0), SkyCoord)
