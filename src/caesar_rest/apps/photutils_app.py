"""The ``photutils`` app: image segmentation with deblending and a source catalogue (photutils)."""

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
    background_filter_options,
    beam_fallback_options,
    classify_options,
    deblend_options,
    map_output_options,
    preview_options,
    sigma_threshold_option,
)

_DETECTION = "detection"
_BACKGROUND = "background"
_DEBLEND = "deblending"
_BEAM = "beam"
_OUTPUT = "output"

PHOTUTILS_OPTIONS: tuple[Option, ...] = (
    sigma_threshold_option(
        "seedthr",
        "Seed threshold in sigma: keep sources whose peak pixel is at least this many times the "
        "local rms",
        5.0,
        _DETECTION,
    ),
    sigma_threshold_option(
        "mergethr",
        "Segmentation threshold in sigma: connected pixels above it make up the segments",
        3.0,
        _DETECTION,
    ),
    Option(
        "npixmin",
        "int",
        "Minimum number of connected pixels of a segment (and of a deblended part)",
        default=3,
        min=1,
        max=100000,
        category=_DETECTION,
    ),
    Option(
        "bkgbox",
        "int",
        "Size in pixels of the boxes of the background and rms maps (photutils Background2D)",
        default=64,
        min=4,
        max=10000,
        category=_BACKGROUND,
    ),
    *background_filter_options(_BACKGROUND),
    *deblend_options(
        _DEBLEND,
        levels=("deblend-nlevels", "Number of multi-thresholding levels used for deblending"),
        contrast=(
            "deblend-contrast",
            "Minimum fraction of the segment flux a local peak must hold to become a separate "
            "source",
        ),
        unit="segment",
    ),
    *beam_fallback_options(_BEAM),
    *map_output_options(_OUTPUT),
    *preview_options(_OUTPUT),
    *classify_options(_OUTPUT),
)

PHOTUTILS_RESULTS: tuple[ResultSpec, ...] = CATALOGUE_MAP_RESULTS


@dataclass
class PhotutilsApp(App):
    """Segmentation, deblending and moment measurements with photutils."""

    name: str = "photutils"
    description: str = (
        "photutils segmentation: Background2D maps, threshold segmentation, multi-threshold "
        "deblending and a moment-based source catalogue (robust and simple; like sep, but "
        "pure Python and easier to extend)"
    )
    options: tuple[Option, ...] = PHOTUTILS_OPTIONS
    results: tuple[ResultSpec, ...] = field(default=PHOTUTILS_RESULTS)
    cores: int = 1

    program: ClassVar[str] = "caesar_rest.apps.photutils_run"
