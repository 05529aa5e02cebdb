"""The ``caesar-cpp`` app: the original C++ CAESAR through its ``SFinderSubmitter.sh`` script.

The program is not part of this package. It is found through ``CAESAR_REST_CAESAR_CPP_PATH``
(the script itself, or a folder holding it) or else on ``PATH``; without it the app is listed with
``available: false`` and the reason, and jobs are refused before anything starts. Only a few of
the predecessor's 156 CAESAR options are offered: the native ``caesar`` app is the full
replacement; this one exists for sites that still have the C++ build.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from caesar_rest.apps.base import App, Option, ResultSpec
from caesar_rest.apps.common_options import sigma_threshold_option

#: Environment variable naming the program (or its folder).
PATH_ENV = "CAESAR_REST_CAESAR_CPP_PATH"
#: The predecessor's entry point (``SFinderSubmitter.sh`` wraps ``FindSourceApp``).
PROGRAM = "SFinderSubmitter.sh"
#: Arguments the predecessor always passed (§4.2 of the legacy notes), without trailing spaces.
DEFAULT_ARGS: tuple[str, ...] = (
    "--run",
    "--save-summaryplot",
    "--save-regions",
    "--save-catalog-to-json",
)

CAESAR_CPP_OPTIONS: tuple[Option, ...] = (
    sigma_threshold_option(
        "seedthr",
        "Seed threshold (in sigmas) used in flood-fill",
        5.0,
        "COMPACT-SOURCES",
    ),
    sigma_threshold_option(
        "mergethr",
        "Merge threshold (in sigmas) used in flood-fill",
        2.6,
        "COMPACT-SOURCES",
    ),
    Option(
        "npixmin",
        "int",
        "Minimum number of pixels to form a compact source",
        default=5,
        min=0,
        max=10000,
        category="COMPACT-SOURCES",
    ),
    Option("globalbkg", "none", "Use a global background (default: local)", category="IMGBKG"),
    Option(
        "bkgbox",
        "float",
        "Box size (multiple of the beam size) used to compute the local background",
        default=20.0,
        min=0.01,
        max=1000.0,
        category="IMGBKG",
    ),
    Option(
        "fitsources",
        "none",
        "Fit compact point-like sources with multi-component Gaussians",
        category="COMPACT-SOURCES",
        subcategory="FITTING",
    ),
    Option(
        "nthreads",
        "int",
        "Number of OpenMP threads (-1 = all available)",
        default=1,
        min=-1,
        max=1000,
        category="RUN",
    ),
)


def find_program() -> tuple[Path | None, str]:
    """Locate ``SFinderSubmitter.sh``.

    Returns
    -------
    path, reason
        The executable, or None with the reason it is unusable.
    """
    configured = os.environ.get(PATH_ENV, "").strip()
    if configured:
        path = Path(configured)
        if path.is_dir():
            path = path / PROGRAM
        if not path.is_file():
            return None, f"{PATH_ENV}={configured} does not name {PROGRAM} or a folder holding it"
        if not os.access(path, os.X_OK):
            return None, f"{path} is not executable"
        return path, ""
    found = shutil.which(PROGRAM)
    if found is None:
        return None, (
            f"the original C++ CAESAR ({PROGRAM}) is not installed on this machine; set "
            f"{PATH_ENV} to its path or put it on PATH"
        )
    return Path(found), ""


@dataclass
class CaesarCppApp(App):
    """The original C++ CAESAR, run as an external program when a site has it."""

    name: str = "caesar-cpp"
    description: str = (
        "The original C++ CAESAR source finder (SFinderSubmitter.sh / FindSourceApp), for sites "
        "that have it installed; outputs are CAESAR's own files (in the job archive)"
    )
    options: tuple[Option, ...] = CAESAR_CPP_OPTIONS
    # CAESAR names its files after the input image, so only the log and the archive are
    # registered by name; every file is in the archive.
    results: tuple[ResultSpec, ...] = field(default=())
    cores: int = 1

    def availability(self) -> tuple[bool, str | None]:
        """Available only when the program is found (see :func:`find_program`)."""
        path, reason = find_program()
        return (True, None) if path is not None else (False, reason)

    def command(self, input_path: Path, options: Mapping[str, Any], out_dir: Path) -> list[str]:
        """The predecessor's command line: default args, options, then ``--inputfile``.

        Parameters
        ----------
        input_path
            The FITS image.
        options
            Validated options.
        out_dir
            Folder receiving CAESAR's files (``--outdir``).

        Returns
        -------
        list of str
            The argument list.

        Raises
        ------
        RuntimeError
            When the program is not available (jobs are refused before this is called).
        """
        program, reason = find_program()
        if program is None:
            raise RuntimeError(reason)
        return [
            str(program),
            *DEFAULT_ARGS,
            *self.option_args(options),
            f"--inputfile={input_path}",
            f"--outdir={out_dir}",
        ]
