"""A Python implementation of the CAESAR source finder (spec: caesar-algorithm.md).

One module per step: :mod:`.options`, :mod:`.background`, :mod:`.detection`,
:mod:`.islands`, :mod:`.selection`, :mod:`.nesting`, :mod:`.fitting` (with its solver in
:mod:`.lm`), :mod:`.extended`, :mod:`.saliency`, :mod:`.tiling`, :mod:`.catalogue`; :mod:`.array`
runs them on one array (an image or a tile), and :mod:`.pipeline` is the whole run::

    from caesar_rest.sourcefinder import FinderOptions, find_sources, build_catalogues
    from caesar_rest.sourcefinder.options import FitSettings
    result = find_sources("image.fits", FinderOptions(fit=FitSettings(enabled=True)))
    cats = build_catalogues(result)
    cats.components.write("components.vot", format="votable")
"""

from importlib import import_module
from typing import Any

# Lazy exports: the service imports the option tables (``.options``) at start-up, and the
# numerical modules (scipy.signal, scipy.stats, ...) would add seconds to every API process.
_EXPORTS = {
    "Catalogues": ("caesar_rest.sourcefinder.catalogue", "Catalogues"),
    "build_catalogues": ("caesar_rest.sourcefinder.catalogue", "build"),
    "FinderOptions": ("caesar_rest.sourcefinder.options", "FinderOptions"),
    "from_legacy": ("caesar_rest.sourcefinder.options", "from_legacy"),
    "SourceFinderResult": ("caesar_rest.sourcefinder.pipeline", "SourceFinderResult"),
    "find_sources": ("caesar_rest.sourcefinder.pipeline", "find_sources"),
}


def __getattr__(name: str) -> Any:
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    return getattr(import_module(module), attr)


__all__ = [
    "Catalogues",
    "FinderOptions",
    "SourceFinderResult",
    "build_catalogues",
    "find_sources",
    "from_legacy",
]
