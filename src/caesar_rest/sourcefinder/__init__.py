"""A Python implementation of the CAESAR source finder (spec: caesar-algorithm.md).

One module per step: :mod:`.options`, :mod:`.background`, :mod:`.detection`,
:mod:`.islands`, :mod:`.selection`, :mod:`.nesting`, :mod:`.fitting`, :mod:`.extended`,
:mod:`.tiling`, :mod:`.catalogue`, and :mod:`.pipeline` for the whole run::

    from caesar_rest.sourcefinder import FinderOptions, find_sources, build_catalogues
    result = find_sources("image.fits", FinderOptions(fit_sources=True))
    cats = build_catalogues(result)
    cats.components.write("components.vot", format="votable")
"""

from caesar_rest.sourcefinder.catalogue import Catalogues
from caesar_rest.sourcefinder.catalogue import build as build_catalogues
from caesar_rest.sourcefinder.options import FinderOptions, from_legacy
from caesar_rest.sourcefinder.pipeline import SourceFinderResult, find_sources

__all__ = [
    "Catalogues",
    "FinderOptions",
    "SourceFinderResult",
    "build_catalogues",
    "find_sources",
    "from_legacy",
]
