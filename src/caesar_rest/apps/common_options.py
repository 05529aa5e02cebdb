"""Option declarations and result specs shared by several apps.

Each function returns a tuple of :class:`~caesar_rest.apps.base.Option` so that an app can splice
it into its own option tuple (``*beam_fallback_options(_BEAM)``) at the place it wants: the order
of the options is the order of ``describe()``, which clients rely on.
"""

from __future__ import annotations

from caesar_rest.apps.base import CATALOGUE_RESULTS, Option, ResultSpec
from caesar_rest.catalogue.schema import CLASSES

#: Optional background and rms map files (written when ``save-bkgmap``/``save-rmsmap`` are set).
MAP_RESULTS: tuple[ResultSpec, ...] = (
    ResultSpec("background-map", "background.fits", "application/fits"),
    ResultSpec("rms-map", "rms.fits", "application/fits"),
)

#: Results of the apps that write the shared catalogue and the optional maps.
CATALOGUE_MAP_RESULTS: tuple[ResultSpec, ...] = (*CATALOGUE_RESULTS, *MAP_RESULTS)

#: Largest value a threshold in sigma may take.
MAX_SIGMA = 10000.0


def sigma_threshold_option(name: str, description: str, default: float, category: str) -> Option:
    """A detection threshold in units of the local rms (``seedthr``, ``mergethr``): 0 to 10000.

    Parameters
    ----------
    name
        Option name.
    description
        Help text.
    default
        Default value in sigma.
    category
        Category of the option.

    Returns
    -------
    Option
        The float option.
    """
    return Option(
        name, "float", description, default=default, min=0.0, max=MAX_SIGMA, category=category
    )


def beam_fallback_options(category: str, *, advanced: bool = False) -> tuple[Option, ...]:
    """The ``bmaj``/``bmin``/``bpa`` options giving the beam when the image header has none.

    Parameters
    ----------
    category
        Category of the three options.
    advanced
        Whether they are advanced options.

    Returns
    -------
    tuple of Option
        ``bmaj``, ``bmin`` (arcsec, 0-3600) and ``bpa`` (degrees, 0-180), all without default.
    """
    return (
        Option(
            "bmaj",
            "float",
            "Beam major axis FWHM in arcsec, used only when the image header has no beam",
            default=None,
            min=0.0,
            max=3600.0,
            category=category,
            advanced=advanced,
        ),
        Option(
            "bmin",
            "float",
            "Beam minor axis FWHM in arcsec, used only when the image header has no beam",
            default=None,
            min=0.0,
            max=3600.0,
            category=category,
            advanced=advanced,
        ),
        Option(
            "bpa",
            "float",
            "Beam position angle in degrees east of north, used only when the image header has "
            "no beam",
            default=None,
            min=0.0,
            max=180.0,
            category=category,
            advanced=advanced,
        ),
    )


def map_output_options(
    category: str,
    *,
    background: str = "Write the background map (background.fits)",
    rms: str = "Write the rms map (rms.fits)",
    default: bool | None = False,
) -> tuple[Option, ...]:
    """The ``save-bkgmap``/``save-rmsmap`` flags (see :data:`MAP_RESULTS`).

    Parameters
    ----------
    category
        Category of the two flags.
    background, rms
        Descriptions of ``save-bkgmap`` and ``save-rmsmap``.
    default
        Declared default of both flags.

    Returns
    -------
    tuple of Option
        ``save-bkgmap`` and ``save-rmsmap``.
    """
    return (
        Option("save-bkgmap", "none", background, default=default, category=category),
        Option("save-rmsmap", "none", rms, default=default, category=category),
    )


def preview_options(category: str) -> tuple[Option, ...]:
    """The ``no-preview`` flag (skip ``preview.png`` and ``preview-thumb.png``).

    Parameters
    ----------
    category
        Category of the flag.

    Returns
    -------
    tuple of Option
        ``no-preview``.
    """
    return (
        Option(
            "no-preview",
            "none",
            "Do not draw the preview image (preview.png, preview-thumb.png)",
            default=False,
            category=category,
        ),
    )


def background_filter_options(category: str) -> tuple[Option, ...]:
    """The ``bkgfilter`` option: median filter size (in boxes) of the background and rms maps.

    Parameters
    ----------
    category
        Category of the option.

    Returns
    -------
    tuple of Option
        ``bkgfilter`` (1-51, default 3).
    """
    return (
        Option(
            "bkgfilter",
            "int",
            "Size (in boxes) of the median filter applied to the background and rms maps",
            default=3,
            min=1,
            max=51,
            category=category,
        ),
    )


def deblend_options(
    category: str, levels: tuple[str, str], contrast: tuple[str, str], unit: str
) -> tuple[Option, ...]:
    """Multi-threshold deblending as in SExtractor: levels, contrast and ``no-deblend``.

    Parameters
    ----------
    category
        Category of the options.
    levels, contrast
        Name and help text of the number-of-levels option (1-1024, default 32) and of the
        contrast option (0-1, default 0.005): the apps keep their tools' names.
    unit
        What a detection is called (``segment``, ``island``), for the ``no-deblend`` help.

    Returns
    -------
    tuple of Option
        The levels, contrast and ``no-deblend`` options.
    """
    return (
        Option(
            levels[0],
            "int",
            levels[1],
            default=32,
            min=1,
            max=1024,
            category=category,
            advanced=True,
        ),
        Option(
            contrast[0],
            "float",
            contrast[1],
            default=0.005,
            min=0.0,
            max=1.0,
            category=category,
            advanced=True,
        ),
        Option(
            "no-deblend",
            "none",
            f"Do not deblend: one source per {unit}",
            default=False,
            category=category,
        ),
    )


#: Name of the option turning the classification of the catalogue rows on or off.
CLASSIFY = "classify"


def classify_options(category: str) -> tuple[Option, ...]:
    """The ``classify`` flag (on by default): add ``class`` and ``class_score`` to the catalogue.

    Parameters
    ----------
    category
        Category of the flag.

    Returns
    -------
    tuple of Option
        ``classify``; its description lists the classes.
    """
    return (
        Option(
            CLASSIFY,
            "none",
            "Classify every catalogue row (columns class and class_score); classes: "
            + ", ".join(CLASSES)
            + "; false turns it off",
            default=True,
            category=category,
        ),
    )
