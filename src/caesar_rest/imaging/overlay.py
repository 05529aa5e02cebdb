"""A job's overlay for the viewer: its catalogue's ellipses and its islands' contours, in pixels.

The ellipses come from ``catalog.json`` (:func:`caesar_rest.imaging.tiles.catalogue_overlay`).
The island contours come from the first of

* ``islands.reg`` (the ``caesar`` app): one DS9 polygon per island, in image pixels (1-based)
  or in sky coordinates (``fk5``, ``fk4``, ``galactic``, ``icrs``), tagged ``text={S<k>}`` and
  ``tag={label <k+1>}``;
* ``segmented.fits`` (``caesar`` with ``save-segmentedmap``, ``mrcnn``): the island label map
  (``island_id + 1``, 0 elsewhere), traced here with marching squares (the same outline as
  the region file's).

Each island is linked to the catalogue rows whose ``island_id`` is its own, and to its row in
``islands.json`` when the job wrote one. The size of the answer is bounded: at most
:data:`MAX_ISLANDS` islands and :data:`MAX_VERTICES` vertices in all (outlines are thinned to
fit), a region file of at most :data:`MAX_REGION_BYTES`, a label map of at most
:data:`MAX_LABEL_PIXELS` pixels.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from caesar_rest.errors import NotFound
from caesar_rest.imaging.tiles import ImageView, catalogue_overlay

if TYPE_CHECKING:
    from caesar_rest.db.models import JobRecord
    from caesar_rest.jobs.service import JobService

#: Most islands drawn (the first ones, in the file's order).
MAX_ISLANDS = 20_000
#: Most vertices over all the contours of one answer.
MAX_VERTICES = 400_000
#: Most vertices of one contour (the region writer's own cap).
MAX_PER_ISLAND = 200
#: Fewest vertices a thinned contour keeps.
MIN_PER_ISLAND = 8
#: Largest ``islands.reg`` read.
MAX_REGION_BYTES = 64 * 1024 * 1024
#: Largest label map traced (an 8192^2 map: 256 MiB of int32 labels).
MAX_LABEL_PIXELS = 8192 * 8192
#: The DS9 coordinate systems understood, with their astropy frame (None: image pixels).
REGION_FRAMES: Mapping[str, str | None] = {
    "image": None,
    "fk5": "fk5",
    "j2000": "fk5",
    "fk4": "fk4",
    "b1950": "fk4",
    "galactic": "galactic",
    "icrs": "icrs",
}
#: The result names read, in the order they are tried for the contours.
CATALOGUE_RESULT = "catalog-json"
REGIONS_RESULT = "islands-regions"
LABELS_RESULT = "segmented-map"
ISLAND_TABLE_RESULT = "islands-json"

_POLYGON = re.compile(r"polygon\(([^)]*)\)(.*)$", re.IGNORECASE)
_TEXT = re.compile(r"text=\{([^}]*)\}")
_LABEL = re.compile(r"tag=\{label (\d+)\}")


@dataclass
class Contour:
    """One island's outline: ``island_id``, its name, and ``(n, 2)`` vertices (0-based x, y)."""

    island_id: int
    name: str
    points: npt.NDArray[np.float64]


@dataclass
class OverlayFiles:
    """The result files an overlay is made of (None: the job has no such result)."""

    catalogue: Path
    regions: Path | None = None
    labels: Path | None = None
    island_table: Path | None = None


def overlay_for_job(jobs: JobService, job: JobRecord, view: ImageView) -> dict[str, Any]:
    """The overlay of a finished job: catalogue ellipses and island contours.

    Parameters
    ----------
    jobs
        The job service (the job's results and their files).
    job
        A successful job.
    view
        Its input image.

    Returns
    -------
    dict
        As :func:`job_overlay`.

    Raises
    ------
    NotFound
        The job has no ``catalog.json``.
    """
    rows = {r.name: r for r in jobs.results(job)}
    if CATALOGUE_RESULT not in rows:
        raise NotFound(f"Job {job.id} ({job.app}) has no catalog.json", job_id=job.id)

    def path(name: str) -> Path | None:
        return jobs.result_path(job, rows[name]) if name in rows else None

    files = OverlayFiles(
        catalogue=jobs.result_path(job, rows[CATALOGUE_RESULT]),
        regions=path(REGIONS_RESULT),
        labels=path(LABELS_RESULT),
        island_table=path(ISLAND_TABLE_RESULT),
    )
    return job_overlay(view, files)


def job_overlay(view: ImageView, files: OverlayFiles) -> dict[str, Any]:
    """The catalogue with its ellipses, and the islands with their contours.

    Parameters
    ----------
    view
        The image the job ran on.
    files
        The job's result files.

    Returns
    -------
    dict
        :func:`~caesar_rest.imaging.tiles.catalogue_overlay`'s keys, and ``islands``: None
        when the job wrote no island outline, else ``from`` (the file read), ``contours``
        (per island: ``island_id``, ``name``, ``points`` as a flat ``[x0, y0, x1, y1, ...]``
        list of 0-based pixels, ``rows``: the catalogue rows of the island, ``class``: the
        class of its brightest row, ``row``: its row in ``table``), ``table`` (the
        ``columns`` and ``sources`` of ``islands.json``, or None) and ``truncated`` (more
        islands than :data:`MAX_ISLANDS`).
    """
    body = catalogue_overlay(view, files.catalogue)
    found = _read_contours(view, files)
    if found is None:
        body["islands"] = None
        return body
    source, contours = found
    truncated = len(contours) > MAX_ISLANDS
    contours = contours[:MAX_ISLANDS]
    table = _read_table(files.island_table)
    body["islands"] = {
        "from": source,
        "contours": _describe(contours, body["sources"], table),
        "table": table,
        "truncated": truncated,
    }
    return body


def _read_contours(view: ImageView, files: OverlayFiles) -> tuple[str, list[Contour]] | None:
    regions = files.regions
    if regions is not None and regions.is_file() and regions.stat().st_size <= MAX_REGION_BYTES:
        text = regions.read_text(encoding="utf-8", errors="replace")
        return regions.name, region_contours(view, text)
    if files.labels is not None and files.labels.is_file():
        contours = label_contours(files.labels, view.shape)
        if contours is not None:
            return files.labels.name, contours
    return None


def _read_table(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    doc = json.loads(path.read_text(encoding="utf-8"))
    return {"columns": doc.get("columns", []), "sources": doc.get("sources", [])}


def region_contours(view: ImageView, text: str) -> list[Contour]:
    """The polygons of a DS9 region file, in 0-based pixels of ``view``.

    Parameters
    ----------
    view
        The image (its WCS places polygons given in sky coordinates).
    text
        The region file. Lines naming a coordinate system (``image``, ``fk5``, ...; also as
        ``fk5; polygon(...)``) apply to the polygons after them; other shapes are skipped.

    Returns
    -------
    list of Contour
        In the file's order; ``island_id`` is ``label - 1`` from ``tag={label <n>}``, else the
        polygon's index; the name is ``text={...}``, else ``S<island_id>``.
    """
    frame: str | None = None
    found: list[tuple[str | None, int, str, npt.NDArray[np.float64]]] = []
    parts = (part for line in text.splitlines() for part in line.split(";"))
    for part in parts:
        word = part.strip().lower()
        if word in REGION_FRAMES:
            frame = REGION_FRAMES[word]
            continue
        parsed = _polygon(part, len(found))
        if parsed is not None:
            found.append((frame, *parsed))
            if len(found) > MAX_ISLANDS:  # one more than kept: the answer says truncated
                break
    pixels = _to_pixels(view, [(fr, pts) for fr, _, _, pts in found])
    return [
        Contour(island_id, name, pts)
        for (_, island_id, name, _), pts in zip(found, pixels, strict=True)
    ]


def _polygon(text: str, index: int) -> tuple[int, str, npt.NDArray[np.float64]] | None:
    m = _POLYGON.search(text)
    if m is None:
        return None
    try:
        values = [float(v) for v in m.group(1).split(",")]
    except ValueError:
        return None
    if len(values) < 6 or len(values) % 2:
        return None
    label = _LABEL.search(m.group(2))
    island_id = int(label.group(1)) - 1 if label else index
    name = _TEXT.search(m.group(2))
    pts = np.asarray(values, dtype=np.float64).reshape(-1, 2)
    return island_id, name.group(1) if name else f"S{island_id}", pts


def _to_pixels(
    view: ImageView, polygons: Sequence[tuple[str | None, npt.NDArray[np.float64]]]
) -> list[npt.NDArray[np.float64]]:
    """Each polygon in 0-based pixels (sky ones in one transform per frame)."""
    out: list[npt.NDArray[np.float64]] = [pts - 1.0 for _, pts in polygons]
    by_frame: dict[str, list[int]] = defaultdict(list)
    for i, (frame, _) in enumerate(polygons):
        if frame is not None:
            by_frame[frame].append(i)
    for frame, index in by_frame.items():
        from astropy.coordinates import SkyCoord

        sky = np.concatenate([polygons[i][1] for i in index])
        coords = SkyCoord(sky[:, 0], sky[:, 1], unit="deg", frame=frame)
        x, y = view.wcs.world_to_pixel(coords)
        xy = np.column_stack([np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)])
        ends = np.cumsum([polygons[i][1].shape[0] for i in index])[:-1]
        for i, part in zip(index, np.split(xy, ends), strict=True):
            out[i] = part
    return out


def label_contours(path: Path, shape: tuple[int, int]) -> list[Contour] | None:
    """The outline of each label of a label map (``island_id + 1``; 0: no island).

    Parameters
    ----------
    path
        The FITS label map.
    shape
        The image's ``(ny, nx)``: a map of another shape, or larger than
        :data:`MAX_LABEL_PIXELS`, is not traced.

    Returns
    -------
    list of Contour or None
        By label, each the longest marching-squares contour at 0.5 around the label's pixels;
        None when the map cannot be used.
    """
    from astropy.io import fits
    from scipy import ndimage
    from skimage import measure

    with fits.open(path, memmap=True) as hdul:
        data = hdul[0].data
        if data is None:
            return None
        data = data.reshape(data.shape[-2:]) if data.ndim > 2 else data
        if tuple(data.shape) != tuple(shape) or data.size > MAX_LABEL_PIXELS:
            return None
        labels = _int_labels(data)
    out: list[Contour] = []
    for k, box in enumerate(ndimage.find_objects(labels, max_label=MAX_ISLANDS + 1)):
        if box is None:
            continue
        y0, x0 = box[0].start, box[1].start
        mask = np.pad(labels[box] == k + 1, 1).astype(np.float32)
        lines = measure.find_contours(mask, 0.5)
        if not lines:
            continue
        c = max(lines, key=len)
        pts = np.column_stack([c[:, 1] + x0 - 1, c[:, 0] + y0 - 1])
        out.append(Contour(k, f"S{k}", pts))
    return out


def _int_labels(data: Any, rows: int = 512) -> npt.NDArray[np.int32]:
    """The label map as int32 (blank pixels 0), converted by blocks of rows (no float copy)."""
    labels = np.empty(data.shape, dtype=np.int32)
    for y0 in range(0, data.shape[0], rows):
        block = np.asarray(data[y0 : y0 + rows])
        if block.dtype.kind == "f":
            block = np.where(np.isfinite(block), block, 0.0)
        labels[y0 : y0 + rows] = block
    return labels


def _describe(
    contours: Sequence[Contour],
    sources: Sequence[Mapping[str, Any]],
    table: Mapping[str, Any] | None,
) -> list[dict[str, Any]]:
    """The contours as sent: thinned points, catalogue rows, class and island-table row."""
    rows = _rows_by_island(sources)
    table_rows: dict[int, int] = {}
    if table is not None:
        for i, s in enumerate(table["sources"]):
            if isinstance(s.get("island_id"), int):
                table_rows.setdefault(s["island_id"], i)
    cap = min(MAX_PER_ISLAND, max(MIN_PER_ISLAND, MAX_VERTICES // max(1, len(contours))))
    return [
        {
            "island_id": c.island_id,
            "name": c.name,
            "points": _flat(thin(c.points, cap)),
            "rows": rows.get(c.island_id, []),
            "class": _island_class(sources, rows.get(c.island_id, [])),
            "row": table_rows.get(c.island_id),
        }
        for c in contours
    ]


def thin(points: npt.NDArray[np.float64], cap: int) -> npt.NDArray[np.float64]:
    """Every n-th vertex of an outline, so that at most about ``cap`` remain.

    Parameters
    ----------
    points
        ``(n, 2)`` vertices.
    cap
        Most vertices wanted.

    Returns
    -------
    numpy.ndarray
        ``points`` itself when it has at most ``cap`` vertices, else every
        ``ceil(n / cap)``-th one.
    """
    n = points.shape[0]
    return points if n <= cap else points[:: math.ceil(n / cap)]


def _flat(points: npt.NDArray[np.float64]) -> list[float]:
    return [round(float(v), 2) for v in points.ravel()]


def _rows_by_island(sources: Iterable[Mapping[str, Any]]) -> dict[int, list[int]]:
    out: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(sources):
        island = s.get("island_id")
        if isinstance(island, int):
            out[island].append(i)
    return out


def _island_class(sources: Sequence[Mapping[str, Any]], rows: Sequence[int]) -> str | None:
    """The class of the island's brightest classified row (None without one)."""
    best: tuple[float, str] | None = None
    for i in rows:
        cls, peak = sources[i].get("class"), sources[i].get("peak_flux")
        if not cls:
            continue
        value = float(peak) if isinstance(peak, (int, float)) and math.isfinite(peak) else -math.inf
        if best is None or value > best[0]:
            best = (value, str(cls))
    return best[1] if best else None
