"""The job-log lines every app program prints (``prog: message`` on stdout).

Kept apart from :mod:`caesar_rest.apps.program` and :mod:`caesar_rest.apps.products` so that both
can log without importing each other.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # only for annotations: this module stays free of NumPy/astropy
    from caesar_rest.imaging.fits_image import FitsImage


def say(prog: str, message: str) -> None:
    """Print one line of the job log.

    Parameters
    ----------
    prog
        Program name, the prefix of the line.
    message
        The text.
    """
    print(f"{prog}: {message}", flush=True)


def say_options(prog: str, opts: Mapping[str, Any]) -> None:
    """Log the options in effect (unset and false ones left out).

    Parameters
    ----------
    prog
        Program name.
    opts
        Option values by name.
    """
    shown = " ".join(f"{k}={v}" for k, v in opts.items() if v is not None and v is not False)
    say(prog, f"options: {shown or '(defaults)'}")


def describe_image(prog: str, image: FitsImage) -> None:
    """Log the image geometry, beam and unit.

    Parameters
    ----------
    prog
        Program name.
    image
        The loaded image.
    """
    ny, nx = image.shape
    bmaj, bmin, bpa = image.beam
    say(
        prog,
        f"image: {image.path.name} {nx}x{ny} px (HDU {image.hdu_index}), BUNIT '{image.bunit}', "
        f"pixel {image.pixel_scale_arcsec:.4g} arcsec, {int(image.mask.sum())} blank pixels",
    )
    say(
        prog,
        f"beam: {bmaj:.4g} x {bmin:.4g} arcsec, PA {bpa:.4g} deg ({image.beam_source}); "
        f"{image.beam_area_pix:.4g} pixels per beam",
    )
    if image.bunit and image.bunit.upper().replace(" ", "") not in ("JY/BEAM", "JY/BM"):
        say(prog, f"warning: BUNIT is '{image.bunit}', fluxes assume Jy/beam")
