"""Run the ``aegean`` app: ``python -m caesar_rest.apps.aegean_run --input X --outdir D [...]``.

Steps: load the image (beam from the header, an AIPS HISTORY card or the options), write a clean
2-D copy into a scratch folder inside the output folder, run BANE on it (background and rms
maps), run Aegean's source finder with those maps through its Python API, and convert Aegean's
components to the shared catalogue (sizes are FWHM in arcsec, PA east of north, ``int_flux`` in
Jy, ``peak_flux`` in Jy/beam; Aegean's -1 errors become NaN). The scratch folder is removed at
the end; nothing is written outside the output folder.

Exit codes: 0 success, 2 bad input or options (clear message on stderr), 1 unexpected error.
"""

from __future__ import annotations

import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from astropy.io import fits
from astropy.table import Table

from caesar_rest.apps.adapt import (
    fitted_table,
    island_labels,
    map_medians,
    nan_sentinels,
    sky_positions,
    truncated_labels,
    write_work_image,
)
from caesar_rest.apps.aegean_app import AegeanApp
from caesar_rest.apps.console import say
from caesar_rest.apps.products import Extraction, MapStyle
from caesar_rest.apps.program import Finder, program_main
from caesar_rest.catalogue.schema import (
    FLAG_FIT_FAILED,
)
from caesar_rest.catalogue.writers import make_table
from caesar_rest.imaging.fits_image import FitsImage

PROG = "aegean_run"
ORIGIN = "caesar-rest aegean (BANE)"
#: Aegean flag bits meaning the reported values are estimates, not a converged fit
#: (AegeanTools.flags: FITERR = 2, NOTFIT = 16, WCSERR = 32).
AEGEAN_NOT_FITTED = 2 | 16 | 32


def _plain_aegean_logging() -> None:
    # AegeanTools logs to stderr with ANSI colours; the job log wants plain lines on stdout.
    logger = logging.getLogger("AegeanTools")
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("aegean: %(levelname)s %(module)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def components_table(
    image: FitsImage,
    components: Sequence[Any],
    background: npt.NDArray[np.float32],
    rms: npt.NDArray[np.float32],
    floodclip: float,
) -> Table:
    """Convert Aegean ``ComponentSource`` objects to the shared catalogue.

    Parameters
    ----------
    image
        The image Aegean ran on (same pixel grid and WCS).
    components
        Aegean components (``island`` and ``source`` numbers, sky position and errors in
        degrees, ``a``/``b`` FWHM in arcsec, ``pa`` in degrees east of north, fluxes in Jy/beam
        and Jy, ``local_rms``, ``background``, ``flags``).
    background, rms
        BANE maps, used to find islands touching the image edge or blank pixels.
    floodclip
        The island threshold in sigma.

    Returns
    -------
    astropy.table.Table
        The catalogue, sorted by island and component.
    """
    n = len(components)
    if n == 0:
        return make_table(None)

    def get(name: str) -> npt.NDArray[np.float64]:
        return np.array([float(getattr(c, name)) for c in components], dtype=np.float64)

    pos = sky_positions(image, get("ra"), get("dec"), get("err_ra"), get("err_dec"))
    aegean_island = np.array([int(c.island) for c in components], dtype=np.int64)
    aegean_flags = np.array([int(c.flags) for c in components], dtype=np.int64)
    flags = np.zeros(n, dtype=np.int64)
    flags[(aegean_flags & AEGEAN_NOT_FITTED) != 0] |= FLAG_FIT_FAILED
    with np.errstate(invalid="ignore", divide="ignore"):
        significant = ((image.data - background) / rms) >= floodclip
    significant &= ~image.mask
    labels, _ = island_labels(significant)
    values = {
        "peak_flux": get("peak_flux"),
        "peak_flux_err": nan_sentinels(get("err_peak_flux")),
        "flux": get("int_flux"),
        "flux_err": nan_sentinels(get("err_int_flux")),
        "maj": get("a"),
        "maj_err": nan_sentinels(get("err_a")),
        "min": get("b"),
        "min_err": nan_sentinels(get("err_b")),
        "pa": np.mod(get("pa"), 180.0),  # Aegean reports -90..90; the schema uses 0..180
        "pa_err": nan_sentinels(get("err_pa")),
        "local_rms": get("local_rms"),
        "local_bkg": get("background"),
    }
    truncation = (labels, truncated_labels(labels, image.mask))
    return fitted_table(image, pos, aegean_island, flags, truncation, values)


class AegeanFinder(Finder):
    """The ``aegean`` program: BANE, then Aegean's source finder, on a clean copy of the image."""

    prog = PROG
    description = "Extract sources from a FITS image with BANE and Aegean."
    maps = MapStyle(ORIGIN)
    threads = 1  # Aegean parallelises with processes (ncores); see limit_threads

    def extract(self, image: FitsImage, opts: Mapping[str, Any], out_dir: Path) -> Extraction:
        """Run BANE and Aegean in a scratch folder inside ``out_dir`` (removed at the end)."""
        import AegeanTools
        from AegeanTools import BANE  # heavy imports only once the input is known to be good
        from AegeanTools.models import ComponentSource
        from AegeanTools.source_finder import SourceFinder

        timings: dict[str, float] = {}
        ncores = int(opts["ncores"])
        box, grid = int(opts["bkgbox"]), int(opts["bkggrid"])
        _plain_aegean_logging()  # after the import, which installs AegeanTools' own handler
        scratch = Path(tempfile.mkdtemp(prefix=".aegean-", dir=out_dir))
        try:
            work = write_work_image(image, scratch / "image.fits", ORIGIN)
            t0 = time.perf_counter()
            BANE.filter_image(
                im_name=str(work),
                out_base=str(scratch / "image"),
                step_size=(grid, grid),
                box_size=(box, box),
                cores=ncores,
            )
            bkg_path, rms_path = scratch / "image_bkg.fits", scratch / "image_rms.fits"
            background = np.asarray(fits.getdata(bkg_path), dtype=np.float32)
            rms = np.asarray(fits.getdata(rms_path), dtype=np.float32)
            t1 = time.perf_counter()
            timings["background"] = t1 - t0
            found = SourceFinder().find_sources_in_image(
                str(work),
                innerclip=float(opts["seedthr"]),
                outerclip=float(opts["mergethr"]),
                max_summits=int(opts["fit-maxcomponents"]),
                cores=ncores,
                rmsin=str(rms_path),
                bkgin=str(bkg_path),
                docov=not opts["nocov"],
                progress=False,
            )
            timings["find"] = time.perf_counter() - t1
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        components = [s for s in found if isinstance(s, ComponentSource)]
        table = components_table(image, components, background, rms, float(opts["mergethr"]))
        n_islands = len({int(c.island) for c in components})
        medians = map_medians(image, background, rms)
        say(
            PROG,
            f"background: BANE box {box} px, grid {grid} px, "
            f"median rms {medians['rms_median']:.4g}",
        )
        say(
            PROG,
            f"detection: {n_islands} islands (seed {opts['seedthr']} sigma, flood "
            f"{opts['mergethr']} sigma), {len(table)} components",
        )
        return Extraction(
            table=table,
            background=background,
            rms=rms,
            n_islands=n_islands,
            timings=timings,
            tool=f"AegeanTools {AegeanTools.__version__}",
            summary=medians,
        )


FINDER = AegeanFinder()


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see :func:`~caesar_rest.apps.program.program_main`)."""
    return program_main(AegeanApp(), FINDER, argv)


if __name__ == "__main__":
    sys.exit(main())
