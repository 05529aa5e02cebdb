"""The ``mrcnn`` app: detection of objects with masks, and their classification.

The predecessor ran caesar-mrcnn (a Mask R-CNN trained on radio images) with the options
``scoreThr`` and ``iouThr`` and a weights file from its configuration. This app takes the same
options and, by default, runs a native model (:mod:`caesar_rest.apps.mrcnn_run`): a small
fully convolutional network (a U-Net, :mod:`caesar_rest.apps.mrcnn_net`, trained on simulated
fields by ``scripts/train_mrcnn.py`` and run in NumPy) that classifies every pixel; objects are
the connected pixels of one class, scored by the mean probability of their class over their
mask, then cut as Mask R-CNN's are (``scoreThr``: the score threshold; ``iouThr``: of two
objects whose bounding boxes overlap with a larger IoU, the lower-scored one is dropped). The
object masks are written in ``segmented.fits``.

When a site installs the original program, ``CAESAR_REST_MRCNN_PATH`` names it (the
predecessor's ``run_mrcnn.sh``, or a folder holding it; caesar-yolo's entry point works the
same) and ``CAESAR_REST_MRCNN_WEIGHTS`` its weights file; the job's program then runs it as the
predecessor did (``--runmode=detect --weights=<file> --image=<input>``, in the job's
``external/`` folder) and converts its detections to the shared catalogue and
``segmented.fits`` (:mod:`caesar_rest.apps.mrcnn_external`). The settings are read by the
service (jobs do not get its ``CAESAR_REST_*`` environment) and passed to the job's program as
``--external <program> --external-weights <file>``: the paths must be valid where the job runs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from caesar_rest.apps.base import CATALOGUE_RESULTS, App, Option, ResultSpec
from caesar_rest.apps.common_options import preview_options

#: Environment variable naming the external program (or its folder).
PATH_ENV = "CAESAR_REST_MRCNN_PATH"
#: Environment variable naming the external program's weights file.
WEIGHTS_ENV = "CAESAR_REST_MRCNN_WEIGHTS"
#: The predecessor's entry point.
PROGRAM = "run_mrcnn.sh"
#: The predecessor's default weights file (``MASKRCNN_WEIGHTS``).
DEFAULT_WEIGHTS = "/opt/Software/MaskR-CNN/install/share/mrcnn_weights.h5"

MRCNN_OPTIONS: tuple[Option, ...] = (
    Option(
        "image",
        "str",
        "Input image (accepted for compatibility: the input is the job's data_inputs file)",
        default="",
        category="INPUT",
        effective=False,
    ),
    Option(
        "scoreThr",
        "float",
        "Detected object score threshold: objects whose class score is lower are dropped",
        default=0.7,
        min=0.0,
        max=1.0,
        category="DETECT",
    ),
    Option(
        "iouThr",
        "float",
        "IoU threshold: of two objects whose bounding boxes overlap more, the lower-scored one "
        "is dropped",
        default=0.6,
        min=0.0,
        max=1.0,
        category="DETECT",
    ),
    *preview_options("OUTPUT"),
)

MRCNN_RESULTS: tuple[ResultSpec, ...] = (
    *CATALOGUE_RESULTS,
    ResultSpec("segmented-map", "segmented.fits", "application/fits"),
)


def weights_path() -> str:
    """The external program's weights file (``CAESAR_REST_MRCNN_WEIGHTS``, else the
    predecessor's default)."""
    return os.environ.get(WEIGHTS_ENV, "").strip() or DEFAULT_WEIGHTS


def find_program() -> Path | None:
    """The external program named by ``CAESAR_REST_MRCNN_PATH``, or None (native model).

    Returns
    -------
    pathlib.Path or None
        The executable.
    """
    configured = os.environ.get(PATH_ENV, "").strip()
    if not configured:
        return None
    path = Path(configured)
    return path / PROGRAM if path.is_dir() else path


@dataclass
class MrcnnApp(App):
    """Object detection with masks and classification (native model or caesar-mrcnn)."""

    name: str = "mrcnn"
    description: str = (
        "Detection of radio objects with masks and their classification (compact, extended, "
        "extended-multisland, spurious, flagged, diffuse); native model: a small U-Net "
        "segmentation network, or the original caesar-mrcnn when the site configures it"
    )
    options: tuple[Option, ...] = MRCNN_OPTIONS
    results: tuple[ResultSpec, ...] = field(default=MRCNN_RESULTS)
    cores: int = 1

    program: ClassVar[str] = "caesar_rest.apps.mrcnn_run"

    def availability(self) -> tuple[bool, str | None]:
        """Always available natively; a configured external program must be executable."""
        program = find_program()
        if program is None:
            return True, None
        if not program.is_file() or not os.access(program, os.X_OK):
            return False, f"{PATH_ENV}={program} is not an executable {PROGRAM}"
        return True, None

    def command(self, input_path: Path, options: Mapping[str, Any], out_dir: Path) -> list[str]:
        """The in-tree program, told which external program to run when one is configured.

        Parameters
        ----------
        input_path
            The FITS image.
        options
            Validated options.
        out_dir
            Output folder.

        Returns
        -------
        list of str
            The argument list.
        """
        argv = super().command(input_path, options, out_dir)
        program = find_program()
        if program is None:
            return argv
        return [*argv, "--external", str(program), "--external-weights", weights_path()]
