"""The ``sep`` app: fast island detection with SEP (Source Extractor as a Python library)."""

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

SEP_OPTIONS: tuple[Option, ...] = (
    sigma_threshold_option(
        "seedthr",
        "Seed threshold in sigma: keep sources whose peak pixel is at least this many times "
        "the local rms",
        5.0,
        _DETECTION,
    ),
    sigma_threshold_option(
        "mergethr",
        "Extraction threshold in sigma: pixels above this many times the local rms make up "
        "the islands",
        3.0,
        _DETECTION,
    ),
    Option(
        "npixmin",
        "int",
        "Minimum number of pixels of an island",
        default=3,
        min=1,
        max=100000,
        category=_DETECTION,
    ),
    Option(
        "filter",
        "none",
        "Convolve the image with the beam before detection (helps with uncorrelated noise; "
        "radio images are usually already beam-smoothed)",
        default=False,
        category=_DETECTION,
        advanced=True,
    ),
    Option(
        "bkgbox",
        "int",
        "Size in pixels of the boxes of the local background and rms maps",
        default=64,
        min=4,
        max=10000,
        category=_BACKGROUND,
    ),
    *background_filter_options(_BACKGROUND),
    Option(
        "globalbkg",
        "none",
        "Use one global background and rms (sigma-clipped median and standard deviation) "
        "instead of local maps",
        default=False,
        category=_BACKGROUND,
    ),
    *deblend_options(
        _DEBLEND,
        levels=("deblend-nthresh", "Number of thresholds used for deblending"),
        contrast=(
            "deblend-cont",
            "Minimum contrast ratio (fraction of the island flux) for a branch to become a "
            "separate source",
        ),
        unit="island",
    ),
    *beam_fallback_options(_BEAM),
    *map_output_options(_OUTPUT),
    *preview_options(_OUTPUT),
    *classify_options(_OUTPUT),
)

SEP_RESULTS: tuple[ResultSpec, ...] = CATALOGUE_MAP_RESULTS


@dataclass
class SepApp(App):
    """Island detection and moment measurements with SEP, written in the shared catalogue."""

    name: str = "sep"
    description: str = (
        "Fast source finder based on SEP (Source Extractor): local background and rms maps, "
        "thresholded islands, deblending, and moment-based positions, fluxes and shapes"
    )
    options: tuple[Option, ...] = SEP_OPTIONS
    results: tuple[ResultSpec, ...] = field(default=SEP_RESULTS)
    cores: int = 1

    program: ClassVar[str] = "caesar_rest.apps.sep_run"
