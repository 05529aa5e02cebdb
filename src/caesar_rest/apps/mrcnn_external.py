"""Run the original caesar-mrcnn (or caesar-yolo) program and convert its output.

The program (``CAESAR_REST_MRCNN_PATH``, see :mod:`caesar_rest.apps.mrcnn_app`) is run with the
predecessor's command line (``--runmode=detect --weights=<file> --scoreThr --iouThr
--image=<input>``) in a scratch folder of the job, ``external/``. Its detections are a JSON file
written there (caesar-mrcnn's ``Analyzer.write_json_results``, the same layout in caesar-yolo)::

    {"image_id": "...", "objs": [
        {"name": "S1", "x1": 10, "x2": 20, "y1": 30, "y2": 44,   # box, 0-based pixels
         "class_id": 2, "class_name": "compact", "score": 0.93,
         "pixels": [[y, x], ...],                               # the mask (np.argwhere)
         "vertexes": [[[x, y], ...], ...],                      # its contours
         "edge": false}, ...]}

(a parallel run's merged catalogue holds the same objects under ``"sources"``). The converter
reads every such file of the folder (tile files ``*_tid<N>.json`` only when there is no other),
makes a label map with one label per object (the mask's pixels; else its contours filled; else
its box), measures each object on the image with the native model's moments
(:func:`caesar_rest.apps.mrcnn_run.measure`) and gives it the program's class and score, so that
the job writes the shared catalogue and ``segmented.fits`` like the native model.

Class names: caesar-yolo's and the newer caesar-mrcnn's (``compact``, ``extended``,
``extended-multisland``, ``spurious``, ``flagged``) are kept; the first caesar-mrcnn's
(``{"sidelobe": 1, "source": 2, "galaxy": 3}``, ``galaxy_C1..C3`` by number of components) are
mapped (:data:`CLASS_MAP`). An object of another class fails the job with its name.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from skimage.draw import polygon as fill_polygon

from caesar_rest.catalogue.schema import CLASSES

#: The program's class names in the shared classes.
CLASS_MAP: dict[str, str] = {
    **{c: c for c in CLASSES},
    "sidelobe": "spurious",
    "source": "compact",
    "galaxy": "extended",
    "galaxy_C1": "extended",
    "galaxy_C2": "extended-multisland",
    "galaxy_C3": "extended-multisland",
}
#: Scratch folder of the program's own files, in the job's output folder.
SCRATCH = "external"


class ExternalError(RuntimeError):
    """The external program failed, or its output cannot be read."""


@dataclass(frozen=True)
class Detection:
    """One object of the program's output.

    Attributes
    ----------
    name
        The program's object name.
    cls
        The shared class (:data:`CLASS_MAP` applied).
    score
        The program's class score.
    box
        ``(x1, y1, x2, y2)``, inclusive 0-based pixels.
    pixels
        ``(n, 2)`` array of the mask's ``(y, x)`` pixels (may be empty).
    contours
        The mask's contours as ``(m, 2)`` arrays of ``(x, y)`` vertices.
    edge
        The program found the object at the image edge.
    """

    name: str
    cls: str
    score: float
    box: tuple[int, int, int, int]
    pixels: npt.NDArray[np.intp]
    contours: tuple[npt.NDArray[np.float64], ...]
    edge: bool


def external_command(
    program: Path, weights: str, input_path: Path, options: Mapping[str, Any]
) -> list[str]:
    """The predecessor's command line of the program.

    Parameters
    ----------
    program
        ``run_mrcnn.sh`` (or the caesar-yolo entry point named by the setting).
    weights
        The weights file.
    input_path
        The FITS image.
    options
        The job's options (``scoreThr`` and ``iouThr`` are passed on).

    Returns
    -------
    list of str
        The argument list.
    """
    args = [f"--{k}={options[k]}" for k in ("scoreThr", "iouThr") if k in options]
    return [
        str(program),
        "--runmode=detect",
        f"--weights={weights}",
        *args,
        f"--image={input_path}",
    ]


def run_program(argv: Sequence[str], out_dir: Path, timeout: float | None = None) -> Path:
    """Run the program in ``out_dir/external`` (its output goes to the job log).

    Parameters
    ----------
    argv
        From :func:`external_command`.
    out_dir
        The job's output folder.
    timeout
        Seconds (None: the job's own time limit applies).

    Returns
    -------
    pathlib.Path
        The scratch folder holding the program's files.

    Raises
    ------
    ExternalError
        The program could not be started or ended with a non-zero status.
    """
    scratch = out_dir / SCRATCH
    scratch.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    try:
        done = subprocess.run(  # noqa: S603 - the site's configured program, no shell
            list(argv), cwd=scratch, stdout=sys.stdout, stderr=sys.stdout, timeout=timeout
        )
    except OSError as exc:
        raise ExternalError(f"cannot run {argv[0]}: {exc}") from None
    if done.returncode != 0:
        raise ExternalError(f"{os.path.basename(argv[0])} exited with status {done.returncode}")
    return scratch


def _objects(doc: Any) -> list[dict[str, Any]] | None:
    if not isinstance(doc, dict):
        return None
    for key in ("objs", "sources"):
        value = doc.get(key)
        if isinstance(value, list):
            return [o for o in value if isinstance(o, dict)]
    return None


def read_detections(folder: Path) -> list[Detection]:
    """Every object of the program's JSON output files in ``folder``.

    Parameters
    ----------
    folder
        The scratch folder.

    Returns
    -------
    list of Detection
        In file-name order, then in the files' order.

    Raises
    ------
    ExternalError
        No output file, a malformed object or an unknown class.
    """
    found: list[tuple[Path, list[dict[str, Any]]]] = []
    for path in sorted(folder.glob("*.json")):
        try:
            objs = _objects(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
        if objs is not None:
            found.append((path, objs))
    whole = [(p, o) for p, o in found if "_tid" not in p.stem]
    chosen = whole or found
    if not chosen:
        raise ExternalError(f"the program wrote no detection file (*.json with 'objs') in {folder}")
    return [_detection(obj, path.name) for path, objs in chosen for obj in objs]


def _detection(obj: Mapping[str, Any], where: str) -> Detection:
    try:
        label = str(obj["class_name"])
        box = (int(obj["x1"]), int(obj["y1"]), int(obj["x2"]), int(obj["y2"]))
        score = float(obj["score"])
        pixels = np.asarray(obj.get("pixels") or np.zeros((0, 2)), dtype=np.intp).reshape(-1, 2)
        contours = tuple(
            np.asarray(c, dtype=np.float64).reshape(-1, 2) for c in obj.get("vertexes") or ()
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ExternalError(f"{where}: malformed object {obj.get('name', '?')!r}: {exc}") from None
    cls = CLASS_MAP.get(label)
    if cls is None:
        raise ExternalError(f"{where}: object {obj.get('name', '?')!r} has unknown class {label!r}")
    return Detection(
        str(obj.get("name", "")), cls, score, box, pixels, contours, bool(obj.get("edge"))
    )


def label_map(detections: Sequence[Detection], shape: tuple[int, int]) -> npt.NDArray[np.int32]:
    """One label per object (``index + 1``), 0 elsewhere; where masks overlap, the higher
    score wins.

    Parameters
    ----------
    detections
        The objects.
    shape
        The image's ``(ny, nx)``.

    Returns
    -------
    numpy.ndarray
        The label map.
    """
    ny, nx = shape
    labels = np.zeros(shape, dtype=np.int32)
    for i in np.argsort([d.score for d in detections], kind="stable"):
        d = detections[int(i)]
        if len(d.pixels):
            yy, xx = d.pixels[:, 0], d.pixels[:, 1]
        elif d.contours:
            parts = [fill_polygon(c[:, 1], c[:, 0], shape) for c in d.contours]
            yy = np.concatenate([p[0] for p in parts])
            xx = np.concatenate([p[1] for p in parts])
        else:
            x1, y1, x2, y2 = d.box
            yy, xx = np.mgrid[max(y1, 0) : min(y2, ny - 1) + 1, max(x1, 0) : min(x2, nx - 1) + 1]
            yy, xx = yy.ravel(), xx.ravel()
        ok = (yy >= 0) & (yy < ny) & (xx >= 0) & (xx < nx)
        labels[yy[ok], xx[ok]] = int(i) + 1
    return labels


__all__ = [
    "CLASS_MAP",
    "Detection",
    "ExternalError",
    "external_command",
    "label_map",
    "read_detections",
    "run_program",
]
