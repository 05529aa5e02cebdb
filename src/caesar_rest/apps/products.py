"""Writing what an app program found: catalogues, maps, previews and ``summary.json``.

Every file name comes from the app's :class:`~caesar_rest.apps.base.ResultSpec` declarations
(``App.results``); nothing here spells one. A product the app does not declare is not written,
so the declaration, the files in the job folder and the results the service lists cannot
disagree.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from astropy.coordinates import FK5
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time
from astropy.wcs.utils import wcs_to_celestial_frame

import caesar_rest
from caesar_rest.apps.base import App
from caesar_rest.apps.console import say
from caesar_rest.catalogue.writers import (
    VOTableMeta,
    VOTableParam,
    with_group_column,
    write_csv,
    write_ds9_regions,
    write_json,
    write_votable,
)
from caesar_rest.imaging.fits_image import FitsImage
from caesar_rest.jobs.folder import read_spec

#: Longest side of the thumbnail, in pixels.
THUMBNAIL_SIDE = 256

FloatMap = npt.NDArray[np.floating[Any]]
#: Writes one product into the path it is given (named by the app's ResultSpec).
ProductWriter = Callable[[Path], object]


@dataclass(frozen=True)
class CatalogueNames:
    """Result names of one catalogue in its four formats (file names come from the app)."""

    votable: str
    csv: str
    json: str
    regions: str

    def formats(self) -> tuple[tuple[str, str], ...]:
        """``(result name, format)`` pairs in the order the files are written."""
        return (
            (self.votable, "votable"),
            (self.csv, "csv"),
            (self.json, "json"),
            (self.regions, "regions"),
        )


#: The source catalogue (``CATALOGUE_RESULTS``), the component catalogue (``COMPONENT_RESULTS``)
#: and an island catalogue.
SOURCES = CatalogueNames("catalog", "catalog-csv", "catalog-json", "regions")
COMPONENTS = CatalogueNames("components", "components-csv", "components-json", "components-regions")
ISLANDS = CatalogueNames("islands", "islands-csv", "islands-json", "islands-regions")


@dataclass(frozen=True)
class MapStyle:
    """How an app's FITS maps are written.

    Attributes
    ----------
    origin
        Value of the ORIGIN keyword.
    blank
        Whether pixels blank in the image are written as NaN.
    bunit
        BUNIT when the image has none.
    """

    origin: str
    blank: bool = True
    bunit: str = "JY/BEAM"


@dataclass(frozen=True)
class MapKind:
    """What a kind of map holds, for its header and data type.

    Attributes
    ----------
    bunit
        BUNIT of the map: None for the image's own unit (intensity maps), ``""`` for a
        dimensionless quantity.
    btype
        BTYPE card (what the values are), or None.
    labels
        Whether the map holds integer labels (written as int32, 0 = no label, no BUNIT).
    """

    bunit: str | None = None
    btype: str | None = None
    labels: bool = False


#: Map kinds by the ``what`` of a map; kinds not listed are intensity maps in the image's unit.
MAP_KINDS: dict[str, MapKind] = {
    "significance": MapKind("", "significance: (image - background) / rms, in units of rms"),
    "saliency": MapKind("", "saliency: dimensionless, higher where structure stands out"),
    "segmented": MapKind(None, "segmentation: island label per pixel, 0 outside", labels=True),
}


@dataclass(frozen=True)
class RunInfo:
    """Who made the products from what: the preview title and the VOTable provenance.

    Attributes
    ----------
    app
        The app's name.
    options
        The options of the run.
    input_name
        The user's name of the input file (display text only, never a path to open).
    input_sha256
        SHA-256 of the input file (hex).
    """

    app: str
    options: Mapping[str, Any]
    input_name: str
    input_sha256: str


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks.

    Parameters
    ----------
    path
        The file.

    Returns
    -------
    str
        Hex digest.
    """
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_identity(input_path: Path, out_dir: Path) -> tuple[str, str]:
    """The user's name and the SHA-256 of the input file.

    A job the service runs has its ``job.json`` in the output folder, with the name the user
    uploaded the file under and the hash taken at upload (the stored file is named by its id).
    Elsewhere (``caesar-rest find``, a program run by hand) they are the file's own name and
    hash.

    Parameters
    ----------
    input_path
        The input image.
    out_dir
        The output folder (the job folder for a service job).

    Returns
    -------
    name, sha256
        Display name and hex digest.
    """
    try:
        spec = read_spec(out_dir)
    except (OSError, ValueError, KeyError):
        spec = None
    if (
        spec is not None
        and spec.input_name
        and spec.input_file
        and Path(spec.input_file).resolve() == input_path.resolve()
    ):
        return display_name(spec.input_name), spec.input_sha256 or file_sha256(input_path)
    return input_path.name, file_sha256(input_path)


def display_name(name: str) -> str:
    """A file name fit for a title: its last path part, control characters dropped, at most
    200 characters (it is text shown to the user, nothing else is done with it).

    Parameters
    ----------
    name
        The name as given.

    Returns
    -------
    str
        The name to show.
    """
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    clean = "".join(ch for ch in base if ch.isprintable())
    return clean[:200]


@dataclass
class Extraction:
    """What a finder's ``extract()`` hands to the shared run to write and summarise.

    Attributes
    ----------
    table
        The source catalogue (shared schema): ``catalog.*``.
    background, rms
        Full background and rms maps, written when ``save-bkgmap``/``save-rmsmap`` are set; None
        when the finder keeps no such maps (it may give them in :attr:`maps` instead).
    n_islands
        Islands found (for the summary).
    timings
        Seconds per step of the extraction.
    components, islands
        Component and island catalogues, for finders that have them.
    tool
        Name and version of the third-party tool, for the summary.
    counts
        Summary entries after ``n_sources`` and before ``n_islands``.
    summary
        Summary entries after ``image``.
    maps
        Further maps: result name to ``(what, data)``.
    writers
        Products the finder formats itself: result name to a function writing the file.
    written
        Result names of files the finder wrote itself into the output folder (listed when
        present).
    """

    table: Table
    background: FloatMap | None = None
    rms: FloatMap | None = None
    n_islands: int = 0
    timings: dict[str, float] = field(default_factory=dict)
    components: Table | None = None
    islands: Table | None = None
    tool: str | None = None
    counts: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    maps: dict[str, tuple[str, FloatMap]] = field(default_factory=dict)
    writers: dict[str, ProductWriter] = field(default_factory=dict)
    written: tuple[str, ...] = ()


def result_files(app: App) -> dict[str, str]:
    """File names of the app's results, by result name.

    Parameters
    ----------
    app
        The app.

    Returns
    -------
    dict
        Result name to file name, in declaration order.
    """
    return {r.name: r.filename for r in app.results}


def image_summary(image: FitsImage) -> dict[str, Any]:
    """The ``image`` block of ``summary.json``.

    Parameters
    ----------
    image
        The image.

    Returns
    -------
    dict
        Shape, beam, beam source, pixel scale, beam area, BUNIT, blank pixels and frame.
    """
    ny, nx = image.shape
    bmaj, bmin, bpa = image.beam
    return {
        "shape": [ny, nx],
        "beam": {"bmaj_arcsec": bmaj, "bmin_arcsec": bmin, "bpa_deg": bpa},
        "beam_source": image.beam_source,
        "pixel_scale_arcsec": image.pixel_scale_arcsec,
        "beam_area_pix": image.beam_area_pix,
        "bunit": image.bunit,
        "n_blank": int(image.mask.sum()),
        "frame": image.frame,
    }


def image_header(image: FitsImage, origin: str, bunit: str = "JY/BEAM") -> fits.Header:
    """A clean 2-D header for ``image`` (celestial WCS, beam, BUNIT), e.g. for maps or copies.

    Parameters
    ----------
    image
        The image.
    origin
        Value of the ORIGIN keyword.
    bunit
        BUNIT when the image has none.

    Returns
    -------
    astropy.io.fits.Header
        The header; the beam is the one :func:`~caesar_rest.imaging.load_image` settled on (from
        the header, an AIPS HISTORY card or the options), so every tool sees the same beam.
    """
    header = image.wcs.to_header()
    header["BUNIT"] = image.bunit or bunit
    header["BMAJ"] = image.beam[0] / 3600.0
    header["BMIN"] = image.beam[1] / 3600.0
    header["BPA"] = image.beam[2]
    header["ORIGIN"] = origin
    return header


def write_map(
    path: Path, data: FloatMap, image: FitsImage, what: str, style: MapStyle, name: str = ""
) -> Path:
    """Write a map with the image's WCS, its BUNIT and data type by its kind (:data:`MAP_KINDS`).

    Intensity maps (input, background, rms, residual) carry the image's BUNIT (or the style's
    default) as float32; significance and saliency maps ``BUNIT = ''`` (dimensionless) as
    float32; label maps (segmented) no BUNIT, as int32.

    Parameters
    ----------
    path
        Output file (overwritten).
    data
        The map, shape ``image.shape``.
    image
        The image it belongs to.
    what
        What the map is (for the COMMENT card), e.g. ``"background"``.
    style
        ORIGIN, blanking and default BUNIT.
    name
        The input's name for the COMMENT card (default: the image's file name).

    Returns
    -------
    pathlib.Path
        The file written.
    """
    kind = MAP_KINDS.get(what, MapKind())
    header = image_header(image, style.origin, style.bunit)
    if kind.labels:
        del header["BUNIT"]  # labels are no quantity
    elif kind.bunit is not None:
        header["BUNIT"] = kind.bunit
    if kind.btype:
        header["BTYPE"] = kind.btype
    header["COMMENT"] = f"{what} map of {name or image.path.name}"
    out: npt.NDArray[Any]
    if kind.labels:
        out = np.nan_to_num(np.asarray(data, dtype=np.float64), nan=0.0).astype(np.int32)
        if style.blank:
            out = np.where(image.mask, np.int32(0), out)
    else:
        out = np.asarray(data, dtype=np.float32)
        if style.blank:
            out = np.where(image.mask, np.float32(np.nan), out)
        out = out.astype(np.float32)
    fits.PrimaryHDU(out, header=header).writeto(path, overwrite=True)
    return path


def write_maps(
    app: App,
    opts: Mapping[str, Any],
    out_dir: Path,
    image: FitsImage,
    found: Extraction,
    style: MapStyle,
    name: str = "",
) -> dict[str, str]:
    """Write the background and rms maps ``save-bkgmap``/``save-rmsmap`` ask for, and the
    finder's further maps.

    Parameters
    ----------
    app
        The app (its results name the files).
    opts
        Resolved option values.
    out_dir
        Output folder.
    image
        The image the maps belong to.
    found
        The extraction.
    style
        How maps are written.
    name
        The input's name for the COMMENT cards (default: the image's file name).

    Returns
    -------
    dict
        Result name to file name of the maps written.
    """
    maps: dict[str, tuple[str, FloatMap]] = {}
    if opts.get("save-bkgmap") and found.background is not None:
        maps["background-map"] = ("background", found.background)
    if opts.get("save-rmsmap") and found.rms is not None:
        maps["rms-map"] = ("rms", found.rms)
    maps.update(found.maps)
    names = result_files(app)
    files: dict[str, str] = {}
    for key, (what, data) in maps.items():
        if key in names:
            files[key] = write_map(out_dir / names[key], data, image, what, style, name).name
    return files


def region_frame(image: FitsImage) -> str:
    """DS9 frame for the catalogue's J2000 coordinates.

    Parameters
    ----------
    image
        The image.

    Returns
    -------
    str
        ``fk5`` for an FK5 image, else ``icrs``.
    """
    return "fk5" if image.frame == "fk5" else "icrs"


def write_catalogue(
    table: Table,
    out_dir: Path,
    which: CatalogueNames,
    names: Mapping[str, str],
    frame: str,
    colour: str = "green",
    meta: VOTableMeta | None = None,
) -> dict[str, str]:
    """Write a catalogue in the formats the app declares for it.

    Parameters
    ----------
    table
        A shared-schema table (extra columns are kept in VOTable, CSV and JSON).
    out_dir
        Output folder.
    which
        Result names of the catalogue's four formats.
    names
        Result name to file name of the results to write (others are skipped).
    frame
        DS9 frame (``fk5`` or ``icrs``).
    colour
        DS9 colour of the regions.
    meta
        COOSYS and provenance of the VOTable (see :func:`votable_meta`).

    Returns
    -------
    dict
        Result name to file name.
    """
    files: dict[str, str] = {}
    table = with_group_column(table)
    for key, kind in which.formats():
        if key not in names:
            continue
        path = out_dir / names[key]
        if kind == "votable":
            write_votable(table, path, meta=meta)
        elif kind == "csv":
            write_csv(table, path)
        elif kind == "json":
            write_json(table, path)
        else:
            write_ds9_regions(table, path, frame, colour)
        files[key] = path.name
    return files


def catalogue_coosys(image: FitsImage) -> tuple[str, str | None]:
    """COOSYS ``system`` and ``equinox`` of the catalogue's ``ra``/``dec``.

    They follow :func:`~caesar_rest.imaging.fits_image.pixel_to_radec`: an FK5 J2000 image keeps
    its FK5 coordinates; ICRS, galactic, FK4 and other equinoxes give ICRS.

    Parameters
    ----------
    image
        The image the catalogue comes from.

    Returns
    -------
    system, equinox
        ``("eq_FK5", "J2000")`` or ``("ICRS", None)``.
    """
    try:
        frame = wcs_to_celestial_frame(image.wcs)
    except Exception:
        return "ICRS", None
    if isinstance(frame, FK5) and abs(frame.equinox.jyear - Time("J2000").jyear) < 1e-6:
        return "eq_FK5", "J2000"
    return "ICRS", None


def median_rms(found: Extraction) -> float:
    """The image's median rms as the finder reports it (Jy/beam), NaN when it reports none."""
    value = found.summary.get("rms_median")
    if value is None:
        stats = found.summary.get("stats")
        value = stats.get("median_rms") if isinstance(stats, Mapping) else None
    try:
        return float(value) if value is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


def votable_meta(image: FitsImage, found: Extraction, run: RunInfo) -> VOTableMeta:
    """The COOSYS and the provenance written into every VOTable of a run.

    INFO elements: ``app``, ``caesar_rest_version``, ``tool`` (when the finder is a
    third-party tool), ``options`` (JSON), ``input_file`` (the user's file name),
    ``input_sha256``, ``image_frame``; PARAM elements: the beam (``beam_major``,
    ``beam_minor`` in arcsec, ``beam_pa`` in deg) and ``rms_median`` (Jy/beam, when the finder
    reports it).

    Parameters
    ----------
    image
        The image.
    found
        The extraction.
    run
        App, options and input file of the run.

    Returns
    -------
    VOTableMeta
        What :func:`~caesar_rest.catalogue.writers.write_votable` writes besides the rows.
    """
    system, equinox = catalogue_coosys(image)
    infos: list[tuple[str, str]] = [
        ("app", run.app),
        ("caesar_rest_version", caesar_rest.__version__),
    ]
    if found.tool:
        infos.append(("tool", found.tool))
    options = json.dumps(dict(run.options), sort_keys=True, default=_json_default)
    infos += [("options", options), ("input_file", run.input_name)]
    if run.input_sha256:
        infos.append(("input_sha256", run.input_sha256))
    infos.append(("image_frame", image.frame))
    bmaj, bmin, bpa = image.beam
    params = (
        VOTableParam(
            "beam_major", bmaj, "arcsec", "instr.beam;phys.angSize.smajAxis", "Beam major axis FWHM"
        ),
        VOTableParam(
            "beam_minor", bmin, "arcsec", "instr.beam;phys.angSize.sminAxis", "Beam minor axis FWHM"
        ),
        VOTableParam(
            "beam_pa", bpa, "deg", "instr.beam;pos.posAng", "Beam position angle, east of north"
        ),
        VOTableParam(
            "rms_median",
            median_rms(found),
            "Jy/beam",
            "stat.stdev;phot.flux.density",
            "Median of the image's rms (noise) map",
        ),
    )
    return VOTableMeta(system=system, equinox=equinox, infos=tuple(infos), params=params)


@dataclass(frozen=True)
class CatalogueWrite:
    """One :func:`write_catalogue` call, picklable (for another MPI rank to make).

    Attributes
    ----------
    table, out_dir, which, names, frame, colour, meta
        The arguments of :func:`write_catalogue`.
    """

    table: Table
    out_dir: Path
    which: CatalogueNames
    names: Mapping[str, str]
    frame: str
    colour: str = "green"
    meta: VOTableMeta | None = None

    def write(self) -> dict[str, str]:
        """Write the files; result name to file name."""
        return write_catalogue(
            self.table, self.out_dir, self.which, self.names, self.frame, self.colour, self.meta
        )


#: ``offload(writes, own)``: make ``writes`` elsewhere while ``own()`` runs here; ``own()``'s
#: result and the files written elsewhere (result name to file name).
Offload = Callable[[list[CatalogueWrite], Callable[[], Any]], tuple[Any, dict[str, str]]]


@dataclass(frozen=True)
class WriteTask:
    """Catalogue files written by the other ranks of an MPI run while rank 0 writes the rest
    (a :class:`~caesar_rest.sourcefinder.ranks.Task`): rank ``r > 0`` of ``n`` writes
    ``writes[r - 1], writes[r - 1 + (n - 1)], ...``.

    Attributes
    ----------
    writes
        The other ranks' files.
    """

    writes: tuple[CatalogueWrite, ...]

    def run(self, ranks: Any, local: Any) -> tuple[Any, dict[str, str]]:
        """Rank 0 runs ``local()`` (its own files), the others write their :attr:`writes`.

        Parameters
        ----------
        ranks
            The communicator (:class:`~caesar_rest.sourcefinder.ranks.Ranks`).
        local
            Rank 0's work; None elsewhere.

        Returns
        -------
        own, files
            On rank 0: ``local()``'s result and rank 1's files.
        """
        own: Any = None
        files: dict[str, str] = {}
        if ranks.rank == 0:
            own = local()
        else:
            for w in self.writes[ranks.rank - 1 :: ranks.size - 1]:
                files.update(w.write())
        parts = ranks.collect(files)
        return own, {k: v for part in parts or [] for k, v in part.items()}


def write_products(
    prog: str,
    app: App,
    image: FitsImage,
    found: Extraction,
    out_dir: Path,
    *,
    preview: bool = True,
    run: RunInfo | None = None,
    offload: Offload | None = None,
) -> tuple[dict[str, str], dict[str, float]]:
    """Write the catalogues, the finder's own products, the preview and the thumbnail.

    Parameters
    ----------
    prog
        Program name for the log.
    app
        The app (its results name the files; undeclared products are not written).
    image
        The image the catalogues come from.
    found
        The extraction.
    out_dir
        Output folder (created if missing).
    preview
        Whether to draw the preview and the thumbnail.
    run
        App, options and input file of the run, for the VOTables' provenance and the preview's
        title (default: the app with no options, the image's own file name).
    offload
        Other writers (the other MPI ranks): the component and island catalogues are written
        there while this process writes the rest and draws the previews.

    Returns
    -------
    files, timings
        Result name to file name; seconds spent writing and drawing here (with an offload,
        ``write_all`` is the time until both writers are done, previews included).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if run is None:
        run = RunInfo(app.name, {}, image.path.name, "")
    meta = votable_meta(image, found, run)
    frame = region_frame(image)
    # Products the finder formats itself are not also written the generic way.
    names = {k: v for k, v in result_files(app).items() if k not in found.writers}
    writes = [CatalogueWrite(found.table, out_dir, SOURCES, names, frame, meta=meta)]
    if found.components is not None:
        # Components in another colour, so both region files can be loaded together in DS9.
        writes.append(
            CatalogueWrite(found.components, out_dir, COMPONENTS, names, frame, "magenta", meta)
        )
    if found.islands is not None:
        writes.append(CatalogueWrite(found.islands, out_dir, ISLANDS, names, frame, meta=meta))
    declared = result_files(app)
    timings: dict[str, float] = {}

    def own(mine: list[CatalogueWrite]) -> dict[str, str]:
        files: dict[str, str] = {}
        for w in mine:
            files.update(w.write())
        for key, writer in found.writers.items():
            writer(out_dir / declared[key])
            files[key] = declared[key]
        t1 = time.perf_counter()
        timings["write"] = t1 - t0
        if preview:
            files.update(write_previews(image, found, out_dir, names, run.input_name))
            timings["preview"] = time.perf_counter() - t1
        return files

    if offload is not None and len(writes) > 1:
        # The main catalogue stays here: sent away too, it made the other rank the longer
        # writer and its tables raised the run's peak memory (docs/benchmarks.md, branch mpi).
        files, elsewhere = offload(writes[1:], lambda: own(writes[:1]))
        files.update(elsewhere)
        timings["write_all"] = time.perf_counter() - t0
    else:
        files = own(writes)
    n_comp = "" if found.components is None else f", {len(found.components)} components"
    say(prog, f"wrote {len(found.table)} sources{n_comp}")
    for key in found.written:
        if (out_dir / declared[key]).is_file():
            files[key] = declared[key]
    return files, timings


def write_previews(
    image: FitsImage,
    found: Extraction,
    out_dir: Path,
    names: Mapping[str, str],
    input_name: str = "",
) -> dict[str, str]:
    """Draw ``preview`` and ``preview-thumb`` where the app declares them.

    Parameters
    ----------
    image
        The image.
    found
        The extraction: its components are drawn where it has them (they show how the sources
        were modelled), else its sources.
    out_dir
        Output folder.
    names
        Result name to file name.
    input_name
        The name the preview is titled with (default: the image's file name).

    Returns
    -------
    dict
        Result name to file name of the images drawn.
    """
    from caesar_rest.catalogue.preview import write_preview, write_thumbnail

    drawn = found.components if found.components is not None else found.table
    files: dict[str, str] = {}
    if "preview" in names:
        path = out_dir / names["preview"]
        files["preview"] = write_preview(image, drawn, path, name=input_name or None).name
    if "preview-thumb" in names:
        thumb = write_thumbnail(image, drawn, out_dir / names["preview-thumb"], THUMBNAIL_SIDE)
        files["preview-thumb"] = thumb.name
    return files


def write_summary(app: App, out_dir: Path, summary: Mapping[str, Any]) -> Path:
    """Write the summary file (result ``summary``) as indented JSON.

    Parameters
    ----------
    app
        The app (its ``summary`` result names the file).
    out_dir
        Output folder.
    summary
        JSON-serialisable summary (NumPy scalars and paths are converted).

    Returns
    -------
    pathlib.Path
        The file written.
    """
    path = out_dir / result_files(app)["summary"]
    path.write_text(json.dumps(summary, indent=2, default=_json_default) + "\n", encoding="utf-8")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
