"""The ``caesar`` app: the CAESAR source finder, re-implemented in Python.

It accepts the predecessor's 156 option names (kinds, defaults, bounds, categories and
"advanced" marks as the legacy service advertised them, except ``extsfinder``, whose default
here is the wavelet method), plus a few options of its own
(``EXTENSION_OPTIONS``: the point-model test of the fits). Options with no meaning in this
implementation are accepted, reported once in the job log and shown with ``effective: false``
by ``describe``. The main catalogue (``catalog.*``) is the component catalogue: one row per
fitted Gaussian component, plus one row per island that was not fitted as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from caesar_rest.apps.base import (
    CATALOGUE_RESULTS,
    App,
    Option,
    ResultSpec,
)
from caesar_rest.apps.common_options import classify_options
from caesar_rest.sourcefinder.options import ALL_OPTIONS, LegacyOption

_KINDS = {"flag": "none", "int": "int", "float": "float", "enum": "str"}


def _option(o: LegacyOption) -> Option:
    return Option(
        o.name,
        _KINDS[o.kind],  # type: ignore[arg-type]
        o.description,
        default=False if o.kind == "flag" else o.default,
        min=o.min,
        max=o.max,
        allowed_values=o.values,
        category=o.category,
        subcategory=o.subcategory,
        advanced=o.advanced,
        effective=o.effective,
    )


CAESAR_OPTIONS: tuple[Option, ...] = (
    *(_option(o) for o in ALL_OPTIONS),
    *classify_options("OUTPUT"),
)

CAESAR_RESULTS: tuple[ResultSpec, ...] = (
    *CATALOGUE_RESULTS,
    ResultSpec("components", "components.vot", "application/x-votable+xml"),
    ResultSpec("components-json", "components.json", "application/json"),
    ResultSpec("components-csv", "components.csv", "text/csv"),
    ResultSpec("components-dat", "catalog_fitcomp.dat", "text/plain"),
    ResultSpec("islands", "islands.vot", "application/x-votable+xml"),
    ResultSpec("islands-json", "islands.json", "application/json"),
    ResultSpec("islands-csv", "islands.csv", "text/csv"),
    ResultSpec("islands-dat", "catalog.dat", "text/plain"),
    ResultSpec("islands-regions", "islands.reg", "text/plain"),
    ResultSpec("input-map", "input.fits", "application/fits"),
    ResultSpec("background-map", "background.fits", "application/fits"),
    ResultSpec("rms-map", "rms.fits", "application/fits"),
    ResultSpec("significance-map", "significance.fits", "application/fits"),
    ResultSpec("residual-map", "residual.fits", "application/fits"),
    ResultSpec("saliency-map", "saliency.fits", "application/fits"),
    ResultSpec("segmented-map", "segmented.fits", "application/fits"),
)


@dataclass
class CaesarApp(App):
    """CAESAR-style compact and extended source finding with Gaussian fits."""

    name: str = "caesar"
    description: str = (
        "CAESAR source finder (Python implementation): local background and noise maps, "
        "seeded flood-fill islands, nested blobs, multi-component Gaussian fits, wavelet "
        "search of extended emission, tiled parallel runs"
    )
    options: tuple[Option, ...] = CAESAR_OPTIONS
    results: tuple[ResultSpec, ...] = field(default=CAESAR_RESULTS)
    cores: int = 1

    program: ClassVar[str] = "caesar_rest.apps.caesar_run"
