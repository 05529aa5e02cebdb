"""Simulated fields with per-pixel class and object truth, for the ``mrcnn`` network.

:func:`truth_field` builds the field :func:`caesar_rest.classify.simfields.make_field` builds
for the same seed and size (the same calls in the same order, so the image is identical; a
test checks it), keeping what that function drops: where each object was placed. From the
noise-free class models and those positions it makes

* a class map: per pixel, 0 (background) or 1 + the index in :data:`NET_CLASSES` ``[1:]`` of
  the class whose model is brightest there, where that model reaches :data:`TRUTH_SIGMA` times
  the noise (simfields' own rule for the class of a position);
* an object map: each class pixel belongs to the nearest object of its class (a radio
  galaxy's core and lobes are one object; the sidelobes around one bright source are one
  spurious object, the bright source itself a compact one).

Used by ``scripts/train_mrcnn.py``, ``benchmarks/mrcnn.py`` and the tests; the service never
imports it. It reads simfields' private helpers, so a change of :func:`make_field` that this
module does not follow shows as the identity test failing.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy.spatial import cKDTree

from caesar_rest.classify import simfields as sf
from caesar_rest.imaging.fits_image import FitsImage, load_image

#: The network's classes: index 0 is the background.
NET_CLASSES = ("background", "compact", "extended", "extended-multisland", "spurious", "diffuse")
#: A pixel belongs to a class where that class's noise-free model reaches this many sigma.
TRUTH_SIGMA = 2.0


@dataclass
class TruthField:
    """A simulated field and its per-pixel truth.

    Attributes
    ----------
    field
        The simfields field (image, class models, beam, header).
    classes
        uint8 class index per pixel (:data:`NET_CLASSES`).
    objects
        int32 object label per pixel (0: background), 1..n.
    object_class
        Class index of each object (index 0 unused).
    """

    field: sf.Field
    classes: npt.NDArray[np.uint8]
    objects: npt.NDArray[np.int32]
    object_class: npt.NDArray[np.int64]


def _placed(pl: sf._Placer, start: int) -> list[tuple[float, float]]:
    return [(x, y) for x, y, _ in pl.taken[start:]]


def truth_field(seed: int, n: int = 1024, density: float = 1.0) -> TruthField:
    """The field of ``make_field(seed, n, density)`` with its class and object maps.

    Parameters
    ----------
    seed, n, density
        As for :func:`caesar_rest.classify.simfields.make_field`.

    Returns
    -------
    TruthField
        The field and its truth.
    """
    rng = np.random.default_rng(seed)
    bmaj = float(rng.uniform(5.0, 8.0))
    beam = (bmaj, bmaj * float(rng.uniform(0.75, 1.0)), float(rng.uniform(0, 180)))
    scale = density * (n / 1024) ** 2
    models = np.zeros((len(sf.MODEL_CLASSES), n, n), dtype=np.float32)
    pl = sf._Placer(rng, n)
    art = np.zeros((n, n), dtype=np.float32)
    centres: dict[int, list[tuple[float, float]]] = {}

    def count(per_field: int) -> int:
        return max(1, round(per_field * scale))

    sf._add_artefacts(models[0], art, rng, pl, beam, count(3))
    centres[4] = _placed(pl, 0)
    start = len(pl.taken)
    galaxies = np.zeros((n, n), dtype=np.int16)
    sf._add_galaxies(models[2], galaxies, rng, pl, beam, count(6))
    centres[3], start = _placed(pl, start), len(pl.taken)
    sf._add_diffuse(models[4], rng, pl, beam, count(2))
    centres[5], start = _placed(pl, start), len(pl.taken)
    sf._add_extended(models[1], rng, pl, beam, count(25))
    centres[2], start = _placed(pl, start), len(pl.taken)
    sf._add_compact(models[0], rng, pl, beam, count(180))
    centres[1] = _placed(pl, start)
    centres[1] += centres[4]  # the bright source of each artefact is a compact object
    img = sf._noise(rng, n, beam)
    yv, xv = np.mgrid[0:n, 0:n].astype(np.float32) / np.float32(n)
    img += (2e-5 * (xv - 0.5) + 1.5e-5 * (yv - 0.5)).astype(np.float32)
    img += models[0] + models[1] + models[2] + models[4] + art
    models[3] = np.abs(art)
    field = sf.Field(
        image=img.astype(np.float32),
        models=models,
        beam=beam,
        header=sf.header(n, beam),
        galaxies=galaxies,
    )
    classes = class_map(models)
    objects, object_class = object_map(classes, centres)
    return TruthField(field=field, classes=classes, objects=objects, object_class=object_class)


def class_map(models: npt.NDArray[np.float32]) -> npt.NDArray[np.uint8]:
    """Per-pixel class index of a field's class models (see the module notes)."""
    best = np.argmax(models, axis=0).astype(np.uint8) + 1
    strong = models.max(axis=0) >= TRUTH_SIGMA * sf.RMS
    return np.where(strong, best, 0).astype(np.uint8)


def object_map(
    classes: npt.NDArray[np.uint8], centres: dict[int, list[tuple[float, float]]]
) -> tuple[npt.NDArray[np.int32], npt.NDArray[np.int64]]:
    """Object labels: each class pixel goes to the nearest placed object of its class.

    Parameters
    ----------
    classes
        Class map.
    centres
        ``(x, y)`` of the placed objects per class index.

    Returns
    -------
    objects, object_class
        Label map (1..n, objects without pixels dropped) and the class of each label.
    """
    objects = np.zeros(classes.shape, dtype=np.int32)
    owner: list[int] = [0]
    for cls, pts in sorted(centres.items()):
        ys, xs = np.nonzero(classes == cls)
        if not pts or not ys.size:
            continue
        _, nearest = cKDTree(np.asarray(pts)).query(np.column_stack([xs, ys]))
        used, local = np.unique(nearest, return_inverse=True)
        objects[ys, xs] = len(owner) + local.astype(np.int32)
        owner += [cls] * len(used)
    return objects, np.asarray(owner, dtype=np.int64)


def image_of(field: sf.Field) -> FitsImage:
    """A simfields field as a loaded FITS image (through a temporary file)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "field.fits"
        sf.write_field(field, str(path))
        return load_image(path)
