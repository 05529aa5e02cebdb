"""The ``cutex`` app: compact sources from the curvature of the image (CuTEx, Molinari et al.
2011, A&A 530, A133), re-implemented here.

The predecessor ran the original CuTEx (IDL) in a container with six options; this app takes
the same six (``seedthr``, ``npixmin``, ``npixpsf``, ``psflimmin``, ``psflimmax``,
``no-logredir``) and runs the method natively (see :mod:`caesar_rest.apps.cutex_run`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from caesar_rest.apps.base import App, Option, ResultSpec
from caesar_rest.apps.common_options import (
    CATALOGUE_MAP_RESULTS,
    beam_fallback_options,
    classify_options,
    map_output_options,
    preview_options,
)

_DETECTION = "COMPACT-SOURCES"
_FITTING = "FITTING"
_OUTPUT = "OUTPUT"

CUTEX_OPTIONS: tuple[Option, ...] = (
    Option(
        "seedthr",
        "float",
        "Detection threshold: a pixel is a candidate when its curvature in all four directions "
        "exceeds this many times the rms of the curvature map",
        default=5.0,
        min=0.0,
        max=10000.0,
        category=_DETECTION,
    ),
    Option(
        "npixmin",
        "int",
        "Minimum number of pixels of a cluster of significant curvature",
        default=4,
        min=1,
        max=10000,
        category=_DETECTION,
    ),
    Option(
        "npixpsf",
        "float",
        "Pixels sampling the PSF (its FWHM in pixels): the initial size of the fitted Gaussians "
        "and the distance within which candidates are fitted together",
        default=2.7,
        min=1.0,
        max=10000.0,
        category=_DETECTION,
    ),
    Option(
        "psflimmin",
        "float",
        "Lower bound of the fitted source size, as a fraction of the initial (PSF) size",
        default=0.5,
        min=0.0001,
        max=100.0,
        category=_FITTING,
    ),
    Option(
        "psflimmax",
        "float",
        "Upper bound of the fitted source size, as a fraction of the initial (PSF) size",
        default=2.0,
        min=0.0001,
        max=100.0,
        category=_FITTING,
    ),
    Option(
        "no-logredir",
        "none",
        "Do not redirect the logs (accepted for compatibility: job.log always holds them)",
        default=False,
        category="RUN",
        effective=False,
    ),
    *beam_fallback_options("beam", advanced=True),
    *map_output_options(_OUTPUT),
    *preview_options(_OUTPUT),
    *classify_options(_OUTPUT),
)


@dataclass
class CutexApp(App):
    """Curvature-threshold detection and multi-Gaussian fits (CuTEx), native."""

    name: str = "cutex"
    description: str = (
        "CuTEx-style compact source extraction (Molinari et al. 2011), native: second "
        "derivatives in four directions, curvature threshold, clusters of candidates, "
        "multi-Gaussian fits with bounded sizes"
    )
    options: tuple[Option, ...] = CUTEX_OPTIONS
    results: tuple[ResultSpec, ...] = field(default=CATALOGUE_MAP_RESULTS)
    cores: int = 1
    at_most: ClassVar[tuple[tuple[str, str], ...]] = (("psflimmin", "psflimmax"),)

    program: ClassVar[str] = "caesar_rest.apps.cutex_run"
