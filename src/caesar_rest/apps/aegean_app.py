"""The ``aegean`` app: BANE background and noise maps, then Aegean's Gaussian fitting.

The option names, kinds, defaults and bounds of the predecessor's nine ``aegean`` options are kept
(``bkgbox``, ``bkggrid``, ``seedthr``, ``mergethr``, ``fit-maxcomponents``, ``ncores``,
``save-bkgmap``, ``save-rmsmap``, ``no-logredir``); a few more cover what Aegean needs on real
images (beam fallback, covariance-free fitting, no preview).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from caesar_rest.apps.base import (
    App,
    Option,
    ResultSpec,
)
from caesar_rest.apps.common_options import (
    CATALOGUE_MAP_RESULTS,
    beam_fallback_options,
    classify_options,
    map_output_options,
    preview_options,
    sigma_threshold_option,
)

_OUTPUT = "OUTPUT"
_BKG = "IMGBKG"
_COMPACT = "COMPACT-SOURCES"
_RUN = "RUN"

AEGEAN_OPTIONS: tuple[Option, ...] = (
    *map_output_options(
        _OUTPUT,
        background="Save the BANE background map (background.fits)",
        rms="Save the BANE rms map (rms.fits)",
        default=None,
    ),
    Option(
        "bkgbox",
        "int",
        "Box size in pixels over which BANE computes the local background and rms",
        default=100,
        min=5,
        max=10000,
        category=_BKG,
    ),
    Option(
        "bkggrid",
        "int",
        "Grid step in pixels at which BANE evaluates the background and rms (interpolated "
        "in between); at most bkgbox",
        default=20,
        min=5,
        max=1000,
        category=_BKG,
    ),
    sigma_threshold_option(
        "seedthr",
        "Seed threshold in sigma (Aegean --seedclip): islands need a pixel this significant",
        5.0,
        _COMPACT,
    ),
    sigma_threshold_option(
        "mergethr",
        "Merge threshold in sigma (Aegean --floodclip): islands grow over pixels above it",
        2.6,
        _COMPACT,
    ),
    Option(
        "fit-maxcomponents",
        "int",
        "Maximum number of components fitted per island (Aegean --maxsummits); further summits "
        "are reported with their initial estimates (flagged as not fitted). 0 fits none",
        default=3,
        min=0,
        max=100,
        category=_COMPACT,
        subcategory="FITTING",
    ),
    Option(
        "no-logredir",
        "none",
        "Accepted for compatibility: the job log always holds the program output",
        category=_RUN,
        effective=False,
    ),
    Option(
        "ncores",
        "int",
        "Cores used by BANE and by Aegean's fitting",
        default=1,
        min=1,
        max=100,
        category=_RUN,
    ),
    Option(
        "nocov",
        "none",
        "Fit without the noise covariance of the beam-correlated pixels (faster on large "
        "islands; errors are then underestimated)",
        default=False,
        category=_COMPACT,
        subcategory="FITTING",
        advanced=True,
    ),
    *beam_fallback_options(_BKG, advanced=True),
    *preview_options(_OUTPUT),
    *classify_options(_OUTPUT),
)

AEGEAN_RESULTS: tuple[ResultSpec, ...] = CATALOGUE_MAP_RESULTS


@dataclass
class AegeanApp(App):
    """BANE + Aegean, with the component catalogue converted to the shared schema."""

    name: str = "aegean"
    description: str = (
        "Aegean compact source finder: BANE background and rms maps, flood-fill islands and "
        "multi-Gaussian fits of their summits (good positions, peak fluxes and sizes of "
        "compact sources)"
    )
    options: tuple[Option, ...] = AEGEAN_OPTIONS
    results: tuple[ResultSpec, ...] = field(default=AEGEAN_RESULTS)
    cores: int = 1

    at_most: ClassVar[tuple[tuple[str, str], ...]] = (("bkggrid", "bkgbox"),)

    program: ClassVar[str] = "caesar_rest.apps.aegean_run"
