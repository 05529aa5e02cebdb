"""Run the ``caesar`` app: ``python -m caesar_rest.apps.caesar_run --input X --outdir D [...]``.

Loads the image, runs :func:`caesar_rest.sourcefinder.find_sources` with the options (legacy
names, see :mod:`caesar_rest.sourcefinder.options`), and writes into the output folder:

* ``catalog.vot/.csv/.json`` and ``catalog.reg``: the component catalogue in the shared schema
  (the main catalogue);
* ``components.vot/.csv/.json``: the same rows with the CAESAR extra columns;
* ``islands.vot/.csv/.json``: one row per island (shared schema); ``islands.reg`` polygons;
* ``catalog.dat`` and ``catalog_fitcomp.dat``: CAESAR-style island and component tables;
* optional FITS maps, ``preview.png`` and ``summary.json`` (counts and timings).

Exit codes: 0 success, 2 bad input or options (clear message on stderr), 1 unexpected error.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from astropy.io import fits

from caesar_rest.apps.caesar_app import CaesarApp
from caesar_rest.apps.program import ProgramParser, add_option_arguments, run_reporting_errors
from caesar_rest.catalogue.writers import write_all, write_csv, write_votable
from caesar_rest.imaging.fits_image import FitsImage, ImageError, pixel_to_radec
from caesar_rest.sourcefinder import build_catalogues, find_sources
from caesar_rest.sourcefinder.allocator import release_large_blocks
from caesar_rest.sourcefinder.catalogue import write_components_json
from caesar_rest.sourcefinder.options import from_legacy, ineffective_given
from caesar_rest.sourcefinder.selection import contour

PROG = "caesar_run"
_MAP_FILES = {
    "input": ("input-map", "input.fits"),
    "bkg": ("background-map", "background.fits"),
    "rms": ("rms-map", "rms.fits"),
    "significance": ("significance-map", "significance.fits"),
    "residual": ("residual-map", "residual.fits"),
    "saliency": ("saliency-map", "saliency.fits"),
    "segmented": ("segmented-map", "segmented.fits"),
}
_LEVELS = {"DEBUG": 10, "INFO": 20, "WARN": 30, "ERROR": 40, "OFF": 100}
log = logging.getLogger(PROG)


def build_parser() -> argparse.ArgumentParser:
    """Command-line parser built from :class:`CaesarApp` options.

    Returns
    -------
    argparse.ArgumentParser
        ``--input``, ``--outdir``, ``--no-preview`` and one ``--name`` per app option.
    """
    parser = ProgramParser(prog=PROG, description="Find sources with the CAESAR pipeline.")
    parser.add_argument("--input", required=True, type=Path, help="input FITS image")
    parser.add_argument("--outdir", required=True, type=Path, help="output folder")
    parser.add_argument("--no-preview", action="store_true", help="do not draw preview.png")
    add_option_arguments(parser, CaesarApp(), {"int": str, "float": str, "str": str})
    return parser


def resolve_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate option values (None = absent) with :meth:`CaesarApp.validate`.

    Parameters
    ----------
    options
        Option names to values.

    Returns
    -------
    dict
        The given options, typed.

    Raises
    ------
    OptionError
        On unknown names or bad values.
    """
    given = {k: v for k, v in options.items() if v is not None and v is not False}
    return CaesarApp().validate(given)


def _write_map(path: Path, data: npt.NDArray[np.float32], image: FitsImage, what: str) -> Path:
    header = image.wcs.to_header()
    header["BUNIT"] = image.bunit or ""
    header["BMAJ"] = image.beam[0] / 3600.0
    header["BMIN"] = image.beam[1] / 3600.0
    header["BPA"] = image.beam[2]
    header["ORIGIN"] = "caesar-rest caesar"
    header["COMMENT"] = f"{what} map of {image.path.name}"
    fits.PrimaryHDU(np.asarray(data, dtype=np.float32), header=header).writeto(path, overwrite=True)
    return path


def write_island_regions(result: Any, path: Path, wcs_frame: str | None) -> Path:
    """Island contours as DS9 polygons (image pixels, 1-based; or sky coordinates).

    Parameters
    ----------
    result
        The run.
    path
        Output file.
    wcs_frame
        None for image coordinates, else ``fk5``, ``fk4`` or ``galactic``.

    Returns
    -------
    pathlib.Path
        The file.
    """
    s = result.sources.isl
    colours = {0: "white", 1: "blue", 2: "red", 3: "green", 4: "magenta"}
    lines = [
        "# Region file format: DS9 version 4.1",
        'global color=red font="helvetica 8 normal" edit=1 move=1 delete=1 include=1',
        wcs_frame or "image",
    ]
    ox, oy = result.image.origin
    for i in range(s.n):
        c = contour(s, i)
        if c.shape[0] < 3:
            continue
        c = c[:: max(1, c.shape[0] // 200)]
        if wcs_frame is None:
            pts = ",".join(f"{x + 1:.1f},{y + 1:.1f}" for x, y in c)
        else:
            ra, dec = pixel_to_radec(result.image.wcs, c[:, 0] - ox, c[:, 1] - oy)
            if wcs_frame != "fk5":
                from astropy.coordinates import SkyCoord

                sc = SkyCoord(ra, dec, unit="deg", frame="icrs").transform_to(wcs_frame)
                ra, dec = sc.spherical.lon.deg, sc.spherical.lat.deg
            pts = ",".join(f"{a:.5f},{d:.5f}" for a, d in zip(ra, dec, strict=True))
        lines.append(f"polygon({pts}) # color={colours.get(int(s.morph[i]), 'red')}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def run(input_path: Path, out_dir: Path, options: Mapping[str, Any], preview: bool = True) -> Any:
    """Run the app and write every output file.

    Parameters
    ----------
    input_path
        The FITS image.
    out_dir
        Output folder (created if missing).
    options
        Legacy option values by name (validated here).
    preview
        Whether to draw ``preview.png``.

    Returns
    -------
    dict
        The summary also written to ``summary.json``.

    Raises
    ------
    OptionError, ImageError
        On bad options or input.
    """
    t_start = time.perf_counter()
    given = resolve_options(options)
    level = _LEVELS.get(str(given.get("loglevel", "INFO")), 20)
    logging.basicConfig(level=level, format=f"{PROG}: %(message)s", stream=sys.stdout, force=True)
    shown = " ".join(f"{k}={v}" for k, v in given.items())
    log.info("options: %s", shown or "(defaults)")
    unused = ineffective_given(given)
    if unused:
        log.warning(
            "options without effect on this run (not implemented here, or for another "
            "extsfinder method): %s",
            ", ".join(unused),
        )
    opts = from_legacy(given)
    try:
        result = find_sources(input_path, opts)
    except ValueError as exc:
        if isinstance(exc, ImageError):
            raise
        raise ImageError(str(exc)) from None
    image = result.image
    ny, nx = image.shape
    log.info(
        "image: %s %dx%d px, beam %.4g x %.4g arcsec PA %.4g (%s), %.4g px per beam",
        input_path.name,
        nx,
        ny,
        *image.beam,
        image.beam_source,
        image.beam_area_pix,
    )
    t_cat = time.perf_counter()
    cats = build_catalogues(result)
    out_dir.mkdir(parents=True, exist_ok=True)
    main = cats.components[[c for c in cats.components.colnames][:25]]
    frame = "fk5" if image.frame == "fk5" else "icrs"
    files = {k: p.name for k, p in write_all(main, out_dir, frame=frame).items()}
    files["components"] = write_votable(cats.components, out_dir / "components.vot").name
    files["components-csv"] = write_csv(cats.components, out_dir / "components.csv").name
    files["components-json"] = write_components_json(
        cats.components_json, out_dir / "components.json"
    ).name
    (out_dir / "catalog_fitcomp.dat").write_text(cats.components_dat, encoding="utf-8")
    files["components-dat"] = "catalog_fitcomp.dat"
    isl_files = write_all(cats.islands, out_dir / "_islands", frame=frame)
    for key, name in (
        ("catalog", "islands.vot"),
        ("catalog-csv", "islands.csv"),
        ("catalog-json", "islands.json"),
    ):
        isl_files[key].replace(out_dir / name)
    for p in (out_dir / "_islands").iterdir():
        p.unlink()
    (out_dir / "_islands").rmdir()
    files.update(
        {"islands": "islands.vot", "islands-csv": "islands.csv", "islands-json": "islands.json"}
    )
    (out_dir / "catalog.dat").write_text(cats.islands_dat, encoding="utf-8")
    files["islands-dat"] = "catalog.dat"
    wframe = None
    if opts.regions_wcs:
        wframe = {"J2000": "fk5", "B1950": "fk4", "GALACTIC": "galactic"}[opts.region_frame]
    files["islands-regions"] = write_island_regions(result, out_dir / "islands.reg", wframe).name
    maps = dict(result.sources.maps)
    if "input" in opts.save_maps:
        maps["input"] = image.data
    for key, data in maps.items():
        if key in _MAP_FILES:
            rname, fname = _MAP_FILES[key]
            files[rname] = _write_map(out_dir / fname, data, image, key).name
    timings = dict(result.timings)
    timings["catalogue"] = time.perf_counter() - t_cat
    if preview:
        t_prev = time.perf_counter()
        from caesar_rest.catalogue.preview import write_preview  # matplotlib is slow to import

        files["preview"] = write_preview(image, main, out_dir / "preview.png").name
        timings["preview"] = time.perf_counter() - t_prev
    timings["total"] = time.perf_counter() - t_start
    comps = cats.components
    fitted = np.asarray(comps["fitted"], dtype=bool)
    summary: dict[str, Any] = {
        "app": "caesar",
        "input": input_path.name,
        "catalogue": "components",
        "n_sources": len(comps),
        "n_components_fitted": int(fitted.sum()),
        "n_islands": len(cats.islands),
        "n_nested": int((result.sources.isl.parent >= 0).sum()),
        "n_tiles": result.n_tiles,
        "image": {
            "shape": [ny, nx],
            "beam": dict(zip(("bmaj_arcsec", "bmin_arcsec", "bpa_deg"), image.beam, strict=True)),
            "beam_source": image.beam_source,
            "pixel_scale_arcsec": image.pixel_scale_arcsec,
            "beam_area_pix": image.beam_area_pix,
            "bunit": image.bunit,
            "n_blank": int(image.mask.sum()),
        },
        "stats": result.sources.stats,
        "options": given,
        "ineffective_options": unused,
        "files": files,
        "timings_s": {k: round(v, 4) for k, v in timings.items()},
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    log.info(
        "found %d islands, %d catalogue rows (%d fitted components)",
        len(cats.islands),
        len(comps),
        int(fitted.sum()),
    )
    log.info("timings: %s", ", ".join(f"{k} {v:.3f} s" for k, v in summary["timings_s"].items()))
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point.

    Parameters
    ----------
    argv
        Arguments (default ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 for bad input or options, 1 for an unexpected error.
    """
    parser = build_parser()
    try:
        ns = parser.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code) if isinstance(exc.code, int) else 2
    values = vars(ns)
    options = {o.name: values[o.name] for o in CaesarApp().options}
    return run_reporting_errors(
        PROG,
        lambda: run(
            Path(values["input"]), Path(values["outdir"]), options, not values["no_preview"]
        ),
    )


if __name__ == "__main__":
    # A process of its own (the service and `caesar-rest find` run it so): give its freed
    # image-sized blocks back to the system. Not in main(), which tests call in-process.
    release_large_blocks()
    sys.exit(main())
