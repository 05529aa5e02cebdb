"""Run the ``pybdsf`` app: ``python -m caesar_rest.apps.pybdsf_run --input X --outdir D [...]``.

Steps: load the image (beam from the header, an AIPS HISTORY card or the options), write a clean
2-D copy into a scratch folder inside the output folder (PyBDSF writes its log next to its input,
so it never writes next to the user's file), run ``bdsf.process_image`` with explicit background
and rms maps, export its source list (``srl``) and Gaussian list (``gaul``) and convert them to
the shared schema: sources become the catalogue, Gaussians the component catalogue. PyBDSF's log
is kept as ``pybdsf.log``; the scratch folder is removed at the end.

Exit codes: 0 success, 2 bad input or options (clear message on stderr), 1 unexpected error.
"""

from __future__ import annotations

import math
import shutil
import sys
import tempfile
import time
import warnings
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
from caesar_rest.apps.console import say
from caesar_rest.apps.products import Extraction, MapStyle, result_files
from caesar_rest.apps.program import Finder, program_main
from caesar_rest.apps.pybdsf_app import RMS_MAP_VALUES, PybdsfApp
from caesar_rest.catalogue.writers import make_table
from caesar_rest.imaging.fits_image import FitsImage, ImageError

PROG = "pybdsf_run"
ORIGIN = "caesar-rest pybdsf"
#: Frequency given to PyBDSF when neither the header nor the options hold one.
DEFAULT_FREQUENCY_HZ = 1.4e9


def header_frequency(header: fits.Header) -> float | None:
    """The observing frequency in Hz from a FITS header, if it states one.

    Parameters
    ----------
    header
        The image header (the original one, with its degenerate spectral axis if any).

    Returns
    -------
    float or None
        CRVAL of a ``FREQ*`` axis, else RESTFRQ/RESTFREQ/FREQ, else None.
    """
    naxis = max(int(header.get("NAXIS", 0) or 0), 4)
    for i in range(1, naxis + 1):
        ctype = str(header.get(f"CTYPE{i}", "")).upper()
        if ctype.startswith("FREQ"):
            value = header.get(f"CRVAL{i}")
            if isinstance(value, int | float) and math.isfinite(value) and value > 0:
                return float(value)
    for key in ("RESTFRQ", "RESTFREQ", "FREQ"):
        value = header.get(key)
        if isinstance(value, int | float) and math.isfinite(value) and value > 0:
            return float(value)
    return None


def _read_list(path: Path) -> Table | None:
    # PyBDSF writes no file when a list is empty.
    return Table.read(path, format="fits") if path.is_file() else None


def _column(table: Table, name: str, scale: float = 1.0) -> npt.NDArray[np.float64]:
    return np.asarray(table[name], dtype=np.float64) * scale


def _at(
    arr: npt.NDArray[np.float32], x: npt.NDArray[np.float64], y: npt.NDArray[np.float64]
) -> Any:
    ny, nx = arr.shape
    xi = np.clip(np.rint(np.nan_to_num(x)).astype(np.intp), 0, nx - 1)
    yi = np.clip(np.rint(np.nan_to_num(y)).astype(np.intp), 0, ny - 1)
    return arr[yi, xi].astype(np.float64)


def convert_list(
    image: FitsImage,
    raw: Table | None,
    background: npt.NDArray[np.float32],
    rms: npt.NDArray[np.float32],
    truncated: Mapping[str, Any],
    kind: str,
) -> Table:
    """Convert a PyBDSF source list or Gaussian list to the shared catalogue.

    Parameters
    ----------
    image
        The image PyBDSF ran on (same pixel grid and WCS).
    raw
        PyBDSF's FITS list (``RA``/``DEC``/``E_RA``/``E_DEC`` in degrees, ``Peak_flux`` Jy/beam,
        ``Total_flux`` Jy, ``Maj``/``Min`` FWHM in degrees, ``PA`` degrees east of north,
        ``Isl_id``), or None when PyBDSF found nothing.
    background, rms
        PyBDSF's maps in NumPy orientation (``(ny, nx)``), sampled at each position.
    truncated
        ``{"labels": label map, "cut": set of truncated labels}`` for the truncation flag.
    kind
        ``"srl"`` (sources) or ``"gaul"`` (Gaussians): sources share an island when there is
        more than one in it, Gaussians likewise.

    Returns
    -------
    astropy.table.Table
        The catalogue, sorted by island and component.
    """
    if raw is None or len(raw) == 0:
        return make_table(None)
    pos = sky_positions(
        image, _column(raw, "RA"), _column(raw, "DEC"), _column(raw, "E_RA"), _column(raw, "E_DEC")
    )
    x0, y0 = image.origin
    values = {
        "peak_flux": _column(raw, "Peak_flux"),
        "peak_flux_err": nan_sentinels(_column(raw, "E_Peak_flux")),
        "flux": _column(raw, "Total_flux"),
        "flux_err": nan_sentinels(_column(raw, "E_Total_flux")),
        "maj": _column(raw, "Maj", 3600.0),
        "maj_err": nan_sentinels(_column(raw, "E_Maj", 3600.0)),
        "min": _column(raw, "Min", 3600.0),
        "min_err": nan_sentinels(_column(raw, "E_Min", 3600.0)),
        "pa": np.mod(_column(raw, "PA"), 180.0),
        "pa_err": nan_sentinels(_column(raw, "E_PA")),
        "local_rms": _at(rms, pos.x - x0, pos.y - y0),
        "local_bkg": _at(background, pos.x - x0, pos.y - y0),
    }
    isl = np.asarray(raw["Isl_id"], dtype=np.int64)
    flags = np.zeros(len(raw), dtype=np.int64)
    truncation = (truncated["labels"], truncated["cut"])
    return fitted_table(image, pos, isl, flags, truncation, values)


def _frequency(image: FitsImage, opts: Mapping[str, Any]) -> tuple[float, str]:
    # The header's frequency, else the option's, else a default (PyBDSF needs one).
    freq = header_frequency(image.header)
    if freq is not None:
        return freq, "header"
    freq = float(opts["frequency"] or DEFAULT_FREQUENCY_HZ)
    source = "option" if opts["frequency"] else "default"
    say(PROG, f"no frequency in the header; giving PyBDSF {freq:.6g} Hz ({source})")
    return freq, source


def _process(work: Path, opts: Mapping[str, Any], freq: float) -> Any:
    import bdsf  # heavy import only once the input is known to be good

    box, step = int(opts["rms_box"]), int(opts["rms_box_step"])
    try:
        with warnings.catch_warnings():
            # PyBDSF 1.14 calls NumPy APIs deprecated in NumPy 2 (hundreds of notes).
            warnings.simplefilter("ignore", DeprecationWarning)
            return bdsf.process_image(
                str(work),
                thresh_pix=float(opts["thresh_pix"]),
                thresh_isl=float(opts["thresh_isl"]),
                rms_box=(box, step),
                rms_map=RMS_MAP_VALUES[str(opts["rms_map"])],
                mean_map=str(opts["mean_map"]),
                adaptive_rms_box=bool(opts["adaptive_rms_box"]),
                group_by_isl=bool(opts["group_by_isl"]),
                atrous_do=bool(opts["atrous_do"]),
                ncores=int(opts["ncores"]),
                frequency=freq,
                quiet=True,
            )
    except RuntimeError as exc:  # PyBDSF reports bad input this way (no beam, no data...)
        raise ImageError(f"PyBDSF could not process the image: {exc}") from None


def _lists(img: Any, scratch: Path) -> tuple[Table | None, Table | None]:
    # The source list (srl) and Gaussian list (gaul); None when PyBDSF found nothing.
    if int(getattr(img, "nsrc", 0)) <= 0:
        return None, None
    srl_path, gaul_path = scratch / "srl.fits", scratch / "gaul.fits"
    img.write_catalog(outfile=str(srl_path), format="fits", catalog_type="srl", clobber=True)
    img.write_catalog(outfile=str(gaul_path), format="fits", catalog_type="gaul", clobber=True)
    return _read_list(srl_path), _read_list(gaul_path)


class PybdsfFinder(Finder):
    """The ``pybdsf`` program: ``bdsf.process_image`` on a clean copy of the image."""

    prog = PROG
    description = "Extract sources from a FITS image with PyBDSF."
    maps = MapStyle(ORIGIN)
    threads = 1  # PyBDSF parallelises its fits with processes (ncores)

    def extract(self, image: FitsImage, opts: Mapping[str, Any], out_dir: Path) -> Extraction:
        """Run PyBDSF in a scratch folder inside ``out_dir`` (removed at the end); its log is
        kept as the ``pybdsf-log`` result, also when PyBDSF fails."""
        import bdsf

        freq, freq_source = _frequency(image, opts)
        box, step = int(opts["rms_box"]), int(opts["rms_box_step"])
        ny, nx = image.shape
        if box > min(nx, ny):
            raise ImageError(
                f"option 'rms_box' = {box} is larger than the image ({nx}x{ny} pixels)"
            )
        timings: dict[str, float] = {}
        scratch = Path(tempfile.mkdtemp(prefix=".pybdsf-", dir=out_dir))
        try:
            work = write_work_image(image, scratch / "image.fits", ORIGIN)
            t0 = time.perf_counter()
            try:
                img = _process(work, opts, freq)
            finally:
                log = work.with_name(work.name + ".pybdsf.log")
                if log.is_file():
                    shutil.copyfile(log, out_dir / result_files(PybdsfApp())["pybdsf-log"])
            timings["find"] = time.perf_counter() - t0
            # PyBDSF keeps its arrays as [x, y]; NumPy/FITS order is [y, x].
            rms = np.ascontiguousarray(np.asarray(img.rms_arr, dtype=np.float32).T)
            background = np.ascontiguousarray(np.asarray(img.mean_arr, dtype=np.float32).T)
            srl, gaul = _lists(img, scratch)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

        with np.errstate(invalid="ignore", divide="ignore"):
            significant = ((image.data - background) / rms) >= float(opts["thresh_isl"])
        significant &= ~image.mask
        labels, _ = island_labels(significant)
        truncated = {"labels": labels, "cut": truncated_labels(labels, image.mask)}
        table = convert_list(image, srl, background, rms, truncated, "srl")
        components = convert_list(image, gaul, background, rms, truncated, "gaul")
        n_islands = len(set(np.asarray(srl["Isl_id"]).tolist())) if srl is not None else 0
        medians = map_medians(image, background, rms)
        say(PROG, f"background: rms_box ({box}, {step}), median rms {medians['rms_median']:.4g}")
        say(
            PROG,
            f"detection: {n_islands} islands, {len(table)} sources, {len(components)} Gaussians "
            f"(thresh_pix {opts['thresh_pix']}, thresh_isl {opts['thresh_isl']})",
        )
        return Extraction(
            table=table,
            background=background,
            rms=rms,
            n_islands=n_islands,
            timings=timings,
            components=components,
            tool=f"PyBDSF {getattr(bdsf, '__version__', '')}".strip(),
            counts={"n_components": len(components)},
            summary={
                "frequency_hz": freq,
                "frequency_source": freq_source,
                **medians,
            },
            written=("pybdsf-log",),
        )


FINDER = PybdsfFinder()


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see :func:`~caesar_rest.apps.program.program_main`)."""
    return program_main(PybdsfApp(), FINDER, argv)


if __name__ == "__main__":
    sys.exit(main())
