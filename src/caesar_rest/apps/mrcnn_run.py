"""Run the ``mrcnn`` app's native model: ``python -m caesar_rest.apps.mrcnn_run --input X ...``.

Steps (see :mod:`caesar_rest.apps.mrcnn_app`):

1. the network (:mod:`caesar_rest.apps.mrcnn_net`, a small U-Net in NumPy) gives each pixel a
   class (background, compact, extended, extended-multisland, spurious, diffuse) and its
   probability, from the significance map of the classifier's noise maps resampled to the
   network's beam;
2. objects: connected pixels of one class (the pieces of a multi-island, spurious or diffuse
   object within a few beams grouped), of at least 3 pixels with one above 5 sigma (diffuse:
   25 beams of area instead); score: the mean probability of the object's class over its mask;
3. post-processing as Mask R-CNN's: objects scoring below ``scoreThr`` are dropped, then of two
   objects whose bounding boxes overlap with IoU above ``iouThr`` the lower-scored one;
4. measurement: intensity-weighted moments of each mask (position, FWHM sizes, angle, flux);
   an object cut by the image edge or blank pixels that is not spurious is ``flagged``, as the
   classifier's rule has it.

Writes the shared catalogue (``class`` and ``class_score`` the network's) and ``segmented.fits``
(the mask of row ``k`` labelled ``k + 1``, 0 elsewhere).

:func:`detect_islands` is the previous native model (the classifier's 3-sigma islands and its
tree classifier, no network), kept for ``benchmarks/mrcnn.py`` to compare against.

With ``CAESAR_REST_MRCNN_PATH`` set the site's original program runs instead and its detections
are converted (:mod:`caesar_rest.apps.mrcnn_external`, :func:`convert_external`): the same
files, with the program's classes, scores and masks.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from caesar_rest.apps import mrcnn_net
from caesar_rest.apps.adapt import Moments, moments_table, truncated_labels
from caesar_rest.apps.console import say
from caesar_rest.apps.mrcnn_app import DEFAULT_WEIGHTS, MrcnnApp
from caesar_rest.apps.mrcnn_external import (
    Detection,
    ExternalError,
    external_command,
    label_map,
    read_detections,
    run_program,
)
from caesar_rest.apps.products import Extraction, MapStyle
from caesar_rest.apps.program import Finder, program_main
from caesar_rest.catalogue.schema import CLASS_COLUMNS, FLAG_TRUNCATED
from caesar_rest.catalogue.writers import make_table
from caesar_rest.classify import classify_table
from caesar_rest.classify.features import Islands, beam_fwhm_pix, find_islands
from caesar_rest.imaging.fits_image import FWHM_PER_SIGMA, FitsImage, ImageError

PROG = "mrcnn_run"
#: Peak significance an island needs to be an object (:func:`detect_islands`).
OBJECT_SNR = 5.0
#: Pixels an object needs.
OBJECT_NPIX = 3

F64 = npt.NDArray[np.float64]


def _moments(image: FitsImage, isl: Islands, ids: npt.NDArray[np.intp]) -> Moments:
    """Intensity-weighted moments of the islands ``ids``."""
    labels = isl.labels
    pick = np.zeros(len(isl.npix), dtype=bool)
    pick[ids] = True
    idx = np.flatnonzero(pick[labels.ravel()])
    lab = labels.ravel()[idx]
    yy, xx = np.divmod(idx, labels.shape[1])
    flux = (isl.sig.ravel()[idx] * isl.rms.ravel()[idx]).astype(np.float64)
    w = np.maximum(flux, 0.0)
    m = len(isl.npix)

    def total(weights: F64) -> F64:
        return np.bincount(lab, weights=weights, minlength=m).astype(np.float64)

    ws = np.maximum(total(w), 1e-30)
    cx, cy = total(w * xx) / ws, total(w * yy) / ws
    dx, dy = xx - cx[lab], yy - cy[lab]
    sxx, syy, sxy = total(w * dx * dx) / ws, total(w * dy * dy) / ws, total(w * dx * dy) / ws
    tr, det = sxx + syy, sxx * syy - sxy * sxy
    disc = np.sqrt(np.maximum(tr * tr / 4 - det, 0.0))
    l1, l2 = tr / 2 + disc, np.maximum(tr / 2 - disc, 1.0 / 12.0)
    peak = np.zeros(m)
    np.maximum.at(peak, lab, flux)
    pos = ndimage.maximum_position(isl.sig, labels, ids)
    py = np.array([p[0] for p in pos], dtype=np.intp)
    px = np.array([p[1] for p in pos], dtype=np.intp)
    n = len(ids)
    var = (isl.rms[py, px].astype(np.float64) ** 2) * l1[ids] / np.maximum(isl.npix[ids], 1)
    cov = np.zeros((n, 2, 2))
    cov[:, 0, 0] = cov[:, 1, 1] = var * max(1.0, image.beam_area_pix)
    flags = np.zeros(n, dtype=np.int64)
    flags[np.isin(ids, list(truncated_labels(labels, image.mask)))] |= FLAG_TRUNCATED
    rms_pk = isl.rms[py, px].astype(np.float64)
    return Moments(
        x=cx[ids],
        y=cy[ids],
        a=FWHM_PER_SIGMA * np.sqrt(l1[ids]),
        b=FWHM_PER_SIGMA * np.sqrt(l2[ids]),
        theta=0.5 * np.arctan2(2 * sxy[ids], sxx[ids] - syy[ids]),
        cov=cov,
        peak=peak[ids],
        pixel_flux=total(flux)[ids],
        npix=isl.npix[ids],
        rms=rms_pk,
        bkg=(image.data[py, px] - isl.sig[py, px] * rms_pk).astype(np.float64),
        island_of=ids.astype(np.int64),
        flags=flags,
    )


def suppress(boxes: F64, scores: F64, iou_thr: float) -> npt.NDArray[np.intp]:
    """Indices kept by non-maximum suppression of ``(x0, y0, x1, y1)`` boxes, best first.

    Parameters
    ----------
    boxes
        One box per object (inclusive pixel bounds).
    scores
        Object scores.
    iou_thr
        Of two boxes overlapping with a larger IoU, the lower-scored one goes.

    Returns
    -------
    numpy.ndarray
        Kept indices.
    """
    order = np.argsort(-scores, kind="stable")
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    keep: list[int] = []
    for i in order:
        if keep:
            k = np.asarray(keep)
            ix = np.minimum(boxes[k, 2], boxes[i, 2]) - np.maximum(boxes[k, 0], boxes[i, 0]) + 1
            iy = np.minimum(boxes[k, 3], boxes[i, 3]) - np.maximum(boxes[k, 1], boxes[i, 1]) + 1
            inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
            iou = inter / (area[k] + area[i] - inter)
            if (iou > iou_thr).any():
                continue
        keep.append(int(i))
    return np.asarray(keep, dtype=np.intp)


def detect_islands(
    image: FitsImage, opts: Mapping[str, Any]
) -> tuple[Any, npt.NDArray[np.int32], int]:
    """The previous native model (no network): islands above 3 sigma peaking above 5, the
    tree classifier, the score cut and box NMS.

    Parameters
    ----------
    image
        The image.
    opts
        Resolved options (``scoreThr``, ``iouThr``).

    Returns
    -------
    table, masks, n_candidates
        Shared-schema catalogue with classes, label map of the kept objects.
    """
    isl = find_islands(image)
    ids = np.flatnonzero((isl.peak >= OBJECT_SNR) & (isl.npix >= OBJECT_NPIX))
    ids = ids[ids > 0]
    masks = np.zeros(image.shape, dtype=np.int32)
    if not ids.size:
        return make_table(None), masks, 0
    table = classify_table(image, moments_table(image, _moments(image, isl, ids)), islands=isl)
    # moments_table numbers islands in the order of their ids (ids are sorted, one row each).
    score = np.asarray(table["class_score"], dtype=np.float64)
    objs = ndimage.find_objects(isl.labels)
    boxes = np.array(
        [
            [
                objs[i - 1][1].start,
                objs[i - 1][0].start,
                objs[i - 1][1].stop - 1,
                objs[i - 1][0].stop - 1,
            ]
            for i in ids
        ],
        dtype=np.float64,
    )
    kept = _kept(boxes, score, opts)
    table = table[kept]
    table["island_id"] = np.arange(len(kept))
    return table, _relabel(isl.labels, ids[kept], len(isl.npix)), int(ids.size)


def _kept(
    boxes: npt.NDArray[np.float64], scores: npt.NDArray[np.float64], opts: Mapping[str, Any]
) -> npt.NDArray[np.intp]:
    """Indices (sorted) of the candidates passing the ``scoreThr`` cut and box NMS at
    ``iouThr``."""
    good = np.flatnonzero(scores >= float(opts["scoreThr"]))
    return np.sort(good[suppress(boxes[good], scores[good], float(opts["iouThr"]))])


def _relabel(
    labels: npt.NDArray[Any], kept_labels: npt.NDArray[Any], size: int
) -> npt.NDArray[np.int32]:
    """The label map with the labels ``kept_labels`` renumbered 1, 2, ... and the rest 0."""
    lut = np.zeros(size, dtype=np.int32)
    lut[kept_labels] = np.arange(1, len(kept_labels) + 1, dtype=np.int32)
    relabelled: npt.NDArray[np.int32] = lut[labels]
    return relabelled


def detect(
    image: FitsImage, opts: Mapping[str, Any], net: mrcnn_net.Net | None = None
) -> tuple[Any, npt.NDArray[np.int32], int]:
    """Objects of ``image`` found by the network: the catalogue, the mask map and the number of
    candidates before the cuts.

    Parameters
    ----------
    image
        The image.
    opts
        Resolved options (``scoreThr``, ``iouThr``).
    net
        The network's weights (default: the shipped ones).

    Returns
    -------
    table, masks, n_candidates
        Shared-schema catalogue with the network's classes and scores (row ``k`` is the mask
        labelled ``k + 1``), and the label map of the kept objects.
    """
    isl = find_islands(image)
    fwhm = beam_fwhm_pix(image)
    obj = mrcnn_net.objects(*mrcnn_net.class_maps(isl.sig, fwhm, net), fwhm, isl.sig)
    n_cand = len(obj.scores)
    kept = _kept(obj.boxes, obj.scores, opts)
    if not kept.size:
        empty = make_table(None)
        set_classes(empty, np.zeros(0, dtype="U19"), np.zeros(0))
        return empty, np.zeros(image.shape, dtype=np.int32), n_cand
    table = measure(image, obj.labels, (kept + 1).astype(np.intp), islands=isl)
    names = obj.classes[kept]
    truncated = (np.asarray(table["flags"], dtype=np.int64) & FLAG_TRUNCATED) != 0
    names = np.where(truncated & (names != "spurious"), "flagged", names)
    set_classes(table, names, np.round(obj.scores[kept], 4))
    table["island_id"] = np.arange(len(kept))
    return table, _relabel(obj.labels, kept + 1, n_cand + 1), n_cand


def set_classes(table: Any, names: npt.NDArray[np.str_], scores: npt.NDArray[np.float64]) -> None:
    """Set a catalogue's ``class`` and ``class_score`` columns (with the schema's metadata).

    Parameters
    ----------
    table
        The catalogue (changed in place).
    names, scores
        One class and score per row.
    """
    # ``group_id`` is added by the catalogue writer: an mrcnn object is whole (one mask).
    for col, values in zip(CLASS_COLUMNS[:2], (names, scores), strict=True):
        table[col.name] = np.asarray(values, dtype=col.dtype)
        table[col.name].unit = None
        table[col.name].description = col.description
        table[col.name].meta["ucd"] = col.ucd


def measure(
    image: FitsImage,
    labels: npt.NDArray[np.int32],
    ids: npt.NDArray[np.intp],
    islands: Islands | None = None,
) -> Any:
    """The shared-schema rows of the objects ``ids`` of a label map (moments of each mask).

    Parameters
    ----------
    image
        The image.
    labels
        Object label per pixel (0 outside), for example an external program's masks.
    ids
        The labels to measure, ascending; row ``k`` of the table is ``ids[k]``.
    islands
        The image's islands (:func:`~caesar_rest.classify.features.find_islands`; computed
        when not given): their significance and noise maps are used.

    Returns
    -------
    astropy.table.Table
        One row per object (without classes).
    """
    isl = islands if islands is not None else find_islands(image)
    npix = np.bincount(labels.ravel(), minlength=int(labels.max()) + 1).astype(np.float64)
    flat = np.flatnonzero(labels.ravel()).astype(np.int64)
    own = replace(isl, pixels=flat, pixel_labels=labels.ravel()[flat].astype(np.int32), npix=npix)
    return moments_table(image, _moments(image, own, ids))


def convert_external(
    image: FitsImage, detections: Sequence[Detection]
) -> tuple[Any, npt.NDArray[np.int32]]:
    """The shared catalogue and the mask map of an external program's detections.

    Parameters
    ----------
    image
        The image the program ran on.
    detections
        Its objects (:func:`~caesar_rest.apps.mrcnn_external.read_detections`).

    Returns
    -------
    table, masks
        One row per object that kept pixels (``island_id`` = its label - 1, ``class`` and
        ``class_score`` the program's; flagged truncated at the image edge), and the label map
        renumbered 1..n in row order.
    """
    labels = label_map(detections, image.shape)
    ids = np.flatnonzero(np.bincount(labels.ravel(), minlength=len(detections) + 1)[1:]) + 1
    if not ids.size:
        return make_table(None), np.zeros(image.shape, dtype=np.int32)
    table = measure(image, labels, ids)
    picked = [detections[int(i) - 1] for i in ids]
    table["class"] = np.array([d.cls for d in picked], dtype="U19")
    table["class_score"] = np.array([d.score for d in picked], dtype=np.float64)
    edge = np.array([d.edge for d in picked])
    table["flags"][edge] |= FLAG_TRUNCATED
    lut = np.zeros(len(detections) + 1, dtype=np.int32)
    lut[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)
    return table, lut[labels]


class MrcnnFinder(Finder):
    """The ``mrcnn`` program: the native :func:`detect`, or the site's original program
    (``CAESAR_REST_MRCNN_PATH``) and :func:`convert_external`."""

    prog = PROG
    description = "Detect and classify radio objects with masks (native model or caesar-mrcnn)."
    maps = MapStyle("caesar-rest mrcnn")
    #: One BLAS thread: the network's many small products lose with more on a busy machine.
    threads = 1
    #: The input image (the external program reads it from its file).
    input_path: Path | None = None
    #: The external program and its weights file (``--external``, ``--external-weights``).
    external: Path | None = None
    weights: str = ""

    def load(self, input_path: Path, opts: Mapping[str, Any]) -> FitsImage:
        """Load the image and remember its file for the external program."""
        self.input_path = input_path
        return super().load(input_path, opts)

    def extract(self, image: FitsImage, opts: Mapping[str, Any], out_dir: Path) -> Extraction:
        """Detect, classify and select the objects (see :func:`detect`), or have the external
        program do it and convert its output."""
        if self.external is not None:
            return self._external(self.external, image, opts, out_dir)
        table, masks, n_cand = detect(image, opts)
        say(
            PROG,
            f"{n_cand} candidate objects from the network, {len(table)} kept with score >= "
            f"{opts['scoreThr']} after NMS at IoU {opts['iouThr']}",
        )
        names = [str(c) for c in table["class"]] if len(table) else []
        return Extraction(
            table=table,
            n_islands=len(table),
            counts={"n_candidates": n_cand},
            summary={
                "model": "native: U-Net (caesar_rest.apps.mrcnn_net, mrcnn_weights.npz)",
                "classes": {c: names.count(c) for c in sorted(set(names))},
            },
            maps={"segmented-map": ("segmented", masks.astype(np.float64))},
        )

    def _external(
        self, program: Path, image: FitsImage, opts: Mapping[str, Any], out_dir: Path
    ) -> Extraction:
        assert self.input_path is not None
        argv = external_command(program, self.weights, self.input_path.resolve(), opts)
        say(PROG, "running " + " ".join(argv))
        try:
            detections = read_detections(run_program(argv, out_dir))
            table, masks = convert_external(image, detections)
        except ExternalError as exc:
            raise ImageError(str(exc)) from None
        say(PROG, f"{len(detections)} objects from {program.name}, {len(table)} with pixels")
        names = [str(c) for c in table["class"]] if len(table) else []
        return Extraction(
            table=table,
            n_islands=len(table),
            counts={"n_candidates": len(detections)},
            summary={
                "model": f"external: {program}",
                "classes": {c: names.count(c) for c in sorted(set(names))},
            },
            maps={"segmented-map": ("segmented", masks.astype(np.float64))},
        )


FINDER = MrcnnFinder()


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see :func:`~caesar_rest.apps.program.program_main`), with
    ``--external PROGRAM --external-weights FILE`` to run the site's caesar-mrcnn instead of
    the native model."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--external", type=Path)
    pre.add_argument("--external-weights", default=DEFAULT_WEIGHTS)
    ns, rest = pre.parse_known_args(sys.argv[1:] if argv is None else list(argv))
    finder = MrcnnFinder()
    finder.external, finder.weights = ns.external, ns.external_weights
    return program_main(MrcnnApp(), finder, rest)


if __name__ == "__main__":
    sys.exit(main())
