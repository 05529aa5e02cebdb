"""Run the ``caesar`` app: ``python -m caesar_rest.apps.caesar_run --input X --outdir D [...]``.

Loads the image, runs :func:`caesar_rest.sourcefinder.find_sources` with the options (legacy
names, see :mod:`caesar_rest.sourcefinder.options`), and writes, through the shared run
(:mod:`caesar_rest.apps.program`) and under the names :class:`CaesarApp` declares:

* ``catalog.vot/.csv/.json`` and ``catalog.reg``: the component catalogue in the shared schema
  (the main catalogue);
* ``components.vot/.csv/.json``: the same rows with the CAESAR extra columns;
* ``islands.vot/.csv/.json``: one row per island (shared schema); ``islands.reg`` polygons;
* ``catalog.dat`` and ``catalog_fitcomp.dat``: CAESAR-style island and component tables;
* optional FITS maps, ``preview.png``, ``preview-thumb.png`` and ``summary.json``.

Exit codes: 0 success, 2 bad input or options (clear message on stderr), 1 unexpected error.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from caesar_rest.apps.caesar_app import CaesarApp
from caesar_rest.apps.common_options import CLASSIFY
from caesar_rest.apps.console import say
from caesar_rest.apps.grant import granted_cores
from caesar_rest.apps.products import CatalogueWrite, Extraction, MapStyle, Offload, WriteTask
from caesar_rest.apps.program import Finder, classification_wanted, program_main
from caesar_rest.catalogue.schema import COLUMN_NAMES
from caesar_rest.imaging.fits_image import FitsImage, ImageError, load_image, pixel_to_radec
from caesar_rest.sourcefinder import build_catalogues, find_sources
from caesar_rest.sourcefinder.allocator import keep_freed_blocks
from caesar_rest.sourcefinder.islands import island_order
from caesar_rest.sourcefinder.options import FinderOptions, from_legacy, ineffective_given
from caesar_rest.sourcefinder.pipeline import send_early
from caesar_rest.sourcefinder.ranks import MPIUnavailable, Ranks, connect, serve
from caesar_rest.sourcefinder.selection import contour
from caesar_rest.sourcefinder.tiling import tile_from_file

PROG = "caesar_run"
#: Images of at most this many pixels are processed with freed memory kept for reuse
#: (:func:`~caesar_rest.sourcefinder.allocator.keep_freed_blocks`); larger ones keep glibc's
#: default, which gives large blocks back (the memory of a large image stays bounded).
SMALL_IMAGE_PIXELS = 2048 * 2048
#: Result names (see :class:`CaesarApp`) of the finder's maps, by map key.
_MAP_RESULTS = {
    "input": "input-map",
    "bkg": "background-map",
    "rms": "rms-map",
    "significance": "significance-map",
    "residual": "residual-map",
    "saliency": "saliency-map",
    "segmented": "segmented-map",
}
_LEVELS = {"DEBUG": 10, "INFO": 20, "WARN": 30, "ERROR": 40, "OFF": 100}
log = logging.getLogger(PROG)


def resolve_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate option values (None = absent) with :meth:`CaesarApp.validate`.

    Parameters
    ----------
    options
        Option names to values.

    Returns
    -------
    dict
        The given options, typed (false flags left out: they are the defaults).

    Raises
    ------
    OptionError
        On unknown names or bad values.
    """
    given = {
        k: v for k, v in options.items() if v is not None and (v is not False or k == CLASSIFY)
    }
    return CaesarApp().validate(given)


def finder_options(opts: Mapping[str, Any]) -> dict[str, Any]:
    """The options of the CAESAR pipeline: ``opts`` without the shared run's own (``classify``)."""
    return {k: v for k, v in opts.items() if k != CLASSIFY}


def pipeline_options(opts: Mapping[str, Any]) -> FinderOptions:
    """The pipeline's settings for the given options; ``nproc`` when not given is the cores the
    job was granted (:func:`~caesar_rest.apps.grant.granted_cores`).

    Parameters
    ----------
    opts
        The given options, typed (:func:`resolve_options`).

    Returns
    -------
    FinderOptions
        The settings.
    """
    fo = from_legacy(finder_options(opts))
    if opts.get("nproc") is None:
        fo = fo.with_(nproc=granted_cores())
    return fo


def island_regions(result: Any, wcs_frame: str | None) -> str:
    """Island contours as DS9 polygons (image pixels, 1-based; or sky coordinates).

    One polygon per row of the island catalogue, in its order (line ``k`` after the header
    is island ``S<k>``, label ``k + 1`` of the segmentation map), tagged with the name.

    Parameters
    ----------
    result
        The run.
    wcs_frame
        None for image coordinates, else ``fk5``, ``fk4`` or ``galactic``.

    Returns
    -------
    str
        The region file's text.
    """
    s = result.sources.isl
    colours = {0: "white", 1: "blue", 2: "red", 3: "green", 4: "magenta"}
    lines = [
        "# Region file format: DS9 version 4.1",
        'global color=red font="helvetica 8 normal" edit=1 move=1 delete=1 include=1',
        wcs_frame or "image",
    ]
    ox, oy = result.image.origin
    for k, i in enumerate(island_order(s)):
        c = _outline(s, int(i))
        if wcs_frame is None:
            pts = ",".join(f"{x + 1:.1f},{y + 1:.1f}" for x, y in c)
        else:
            ra, dec = pixel_to_radec(result.image.wcs, c[:, 0] - ox, c[:, 1] - oy)
            if wcs_frame != "fk5":
                from astropy.coordinates import SkyCoord

                sc = SkyCoord(ra, dec, unit="deg", frame="icrs").transform_to(wcs_frame)
                ra, dec = sc.spherical.lon.deg, sc.spherical.lat.deg
            pts = ",".join(f"{a:.5f},{d:.5f}" for a, d in zip(ra, dec, strict=True))
        colour = colours.get(int(s.morph[i]), "red")
        lines.append(f"polygon({pts}) # color={colour} text={{S{k}}} tag={{label {k + 1}}}")
    return "\n".join(lines) + "\n"


def _outline(s: Any, i: int) -> Any:
    """Outer contour of island ``i`` (at most ~200 vertices); its pixel box if it has none."""
    c = contour(s, i)
    if c.shape[0] < 3:
        x0, x1 = float(s.xmin[i]) - 0.5, float(s.xmax[i]) + 0.5
        y0, y1 = float(s.ymin[i]) - 0.5, float(s.ymax[i]) + 0.5
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]])
    return c[:: max(1, c.shape[0] // 200)]


def _text_writer(text: str) -> Any:
    def write(path: Path) -> None:
        path.write_text(text, encoding="utf-8")

    return write


class CaesarFinder(Finder):
    """The ``caesar`` program: :func:`~caesar_rest.sourcefinder.find_sources` and its catalogues.

    Its options are the given ones only (the finder's option model holds the defaults), and
    its maps keep the values the finder computed at blank pixels.
    """

    prog = PROG
    description = "Find sources with the CAESAR pipeline."
    #: The MPI ranks when this process is rank 0 of several (set by :func:`main`).
    ranks: Ranks | None = None
    #: The ranks the run shares its work with (:attr:`ranks` unless ``no-mpi``; set by
    #: :meth:`extract`).
    active: Ranks | None = None
    #: Rank 0's share of the classifier's islands, begun by the other ranks in
    #: :meth:`extract` (:func:`~caesar_rest.classify.ranked.start_islands`).
    _islands: Callable[[], Any] | None = None
    maps = MapStyle("caesar-rest caesar", blank=False, bunit="")

    def resolve(self, app: Any, options: Mapping[str, Any]) -> dict[str, Any]:
        """The given options, typed (see :func:`resolve_options`)."""
        return resolve_options(options)

    def load(self, input_path: Path, opts: Mapping[str, Any]) -> FitsImage:
        """Load the image with the finder's beam fallback and sub-image options (and no
        image-sized mask when no pixel is blank: the finder only reads and slices it); under
        MPI the tile job is sent to the other ranks first (:func:`~caesar_rest.sourcefinder.
        pipeline.send_early`)."""
        fo = pipeline_options(opts)
        if self.ranks is not None and not opts.get("no-mpi"):
            # The other ranks begin their tiles while this one reads the pixels.
            send_early(input_path, fo, self.ranks)
        image = load_image(
            input_path, beam_fallback=fo.beam_fallback, subimage=fo.subimage, compact_mask=True
        )
        if image.data.size <= SMALL_IMAGE_PIXELS:
            keep_freed_blocks()  # its temporaries then come from the heap, without page faults
        return image

    def extract(self, image: FitsImage, opts: Mapping[str, Any], out_dir: Path) -> Extraction:
        """Run the CAESAR pipeline and build its catalogues and maps."""
        level = _LEVELS.get(str(opts.get("loglevel", "INFO")), 20)
        logging.basicConfig(
            level=level, format=f"{PROG}: %(message)s", stream=sys.stdout, force=True
        )
        unused = ineffective_given(finder_options(opts))
        if unused:
            log.warning(
                "options without effect on this run (not implemented here, or for another "
                "extsfinder method): %s",
                ", ".join(unused),
            )
        fo = pipeline_options(opts)
        log.info("nproc %d%s", fo.nproc, "" if opts.get("nproc") else " (the cores granted)")
        try:
            self.active = None if opts.get("no-mpi") else self.ranks
            result = find_sources(image, fo, ranks=self.active)
        except ValueError as exc:
            if isinstance(exc, ImageError):
                raise
            raise ImageError(str(exc)) from None
        self._islands = None
        ranks = self._serving()
        if ranks is not None and classification_wanted(CaesarApp(), opts):
            from caesar_rest.classify.ranked import start_islands

            # The other ranks begin the classifier's islands while this one builds the
            # catalogues.
            self._islands = start_islands(image, ranks)
        t_cat = time.perf_counter()
        cats = build_catalogues(result)
        wframe = None
        if fo.regions_wcs:
            wframe = {"J2000": "fk5", "B1950": "fk4", "GALACTIC": "galactic"}[fo.region_frame]
        maps = dict(result.sources.maps)
        if "input" in fo.save_maps:
            maps["input"] = image.data
        comps = cats.components
        fitted = int(np.asarray(comps["fitted"], dtype=bool).sum())
        timings = {k: v for k, v in result.timings.items() if k not in ("load", "total")}
        timings["catalogue"] = time.perf_counter() - t_cat
        log.info(
            "found %d islands, %d catalogue rows (%d fitted components)",
            len(cats.islands),
            len(comps),
            fitted,
        )
        return Extraction(
            table=comps[list(COLUMN_NAMES)],
            n_islands=len(cats.islands),
            timings=timings,
            components=comps,
            islands=cats.islands,
            counts={"n_components_fitted": fitted},
            summary={
                "catalogue": "components",
                "n_nested": int((result.sources.isl.parent >= 0).sum()),
                "n_tiles": result.n_tiles,
                "stats": result.sources.stats,
                "ineffective_options": unused,
            },
            maps={_MAP_RESULTS[k]: (k, v) for k, v in maps.items() if k in _MAP_RESULTS},
            writers={
                "components-json": cats.write_components_json,
                "components-dat": _text_writer(cats.components_dat),
                "islands-dat": _text_writer(cats.islands_dat),
                "islands-regions": _text_writer(island_regions(result, wframe)),
            },
        )

    def _serving(self) -> Ranks | None:
        """The ranks, when they shared the tiles and wait for more work."""
        ranks = self.active
        return ranks if ranks is not None and ranks.serving else None

    def classifier_islands(self, image: FitsImage) -> Any:
        """The classifier's islands, shared among the MPI ranks when there are several
        (:mod:`caesar_rest.classify.ranked`; begun by the other ranks in :meth:`extract`)."""
        begun, self._islands = self._islands, None
        ranks = self._serving()
        if ranks is None:
            return super().classifier_islands(image)
        log.info("classifier's islands shared among %d ranks", ranks.size)
        if begun is not None:
            return begun()
        from caesar_rest.classify.ranked import ranked_islands

        return ranked_islands(image, ranks)

    def offload(self) -> Offload | None:
        """Under MPI, the other ranks write the component and island catalogues while rank 0
        writes the main one, the CAESAR tables and the previews (:class:`WriteTask`)."""
        ranks = self._serving()
        if ranks is None:
            return None
        serving = ranks

        def offload(writes: list[CatalogueWrite], own: Callable[[], Any]) -> Any:
            return serving.run(WriteTask(tuple(writes)), own)

        return offload


FINDER = CaesarFinder()


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point (see :func:`~caesar_rest.apps.program.program_main`).

    Under ``mpirun`` with several ranks, rank 0 runs the program and shares the tiles with the
    others (:mod:`caesar_rest.sourcefinder.ranks`), which only process tiles
    (:func:`rank_main`).
    """
    try:
        ranks = connect()
    except MPIUnavailable as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    return rank_main(ranks, argv)


def rank_main(ranks: Ranks | None, argv: Sequence[str] | None = None) -> int:
    """The program on one rank of a run: rank 0 (or the only process) runs it, the other
    ranks serve rank 0 (:func:`~caesar_rest.sourcefinder.ranks.serve`).

    Parameters
    ----------
    ranks
        The run's MPI ranks (:func:`~caesar_rest.sourcefinder.ranks.connect`), or None.
    argv
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit code: rank 0's as :func:`~caesar_rest.apps.program.program_main` maps it
        (bad input 2 with every rank), 0 on the other ranks.
    """
    if ranks is None:
        return program_main(CaesarApp(), FINDER, argv)
    if ranks.rank > 0:
        return serve(ranks, tile_from_file)
    how = "dealt as the ranks ask" if ranks.threads else "in a fixed round (MPI without threads)"
    say(PROG, f"{ranks.size} MPI ranks, tiles {how}")
    FINDER.ranks = ranks
    try:
        return program_main(CaesarApp(), FINDER, argv)
    finally:
        ranks.close()  # no tiles, a failure before them, or no more tasks
        FINDER.ranks = FINDER.active = None
        FINDER._islands = None


if __name__ == "__main__":
    sys.exit(main())
