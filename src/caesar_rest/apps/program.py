"""The one run of every in-tree app program (``python -m caesar_rest.apps.<app>_run``).

A program is an app (its options and result files, :mod:`caesar_rest.apps.base`) and a
:class:`Finder` (how to load the image and what ``extract()`` does). :func:`program_main` parses
``--input``/``--outdir`` plus the app's options with the one option-token parser
(:func:`~caesar_rest.apps.base.parse_cli_options`, also used by ``caesar-rest find`` and the
client), and :func:`run` does the rest the same way for every app: resolve the options, load the
image, log it, ``extract()``, write the products (:mod:`caesar_rest.apps.products`) and
``summary.json``.

Exit codes: 0 success, 2 bad input or options (one clear line on stderr), 1 unexpected error.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from caesar_rest.apps.base import App, OptionError, parse_cli_options
from caesar_rest.apps.coldstart import freeze_loaded, skip_exit_collection
from caesar_rest.apps.common_options import CLASSIFY
from caesar_rest.apps.console import describe_image, say, say_options
from caesar_rest.apps.products import (
    Extraction,
    MapStyle,
    Offload,
    RunInfo,
    image_summary,
    input_identity,
    write_maps,
    write_products,
    write_summary,
)
from caesar_rest.imaging.fits_image import Beam, FitsImage, ImageError, load_image


class ProgramParser(argparse.ArgumentParser):
    """An argument parser that reports errors in one line and exits with code 2."""

    def error(self, message: str) -> NoReturn:
        """Print ``prog: error: message`` on stderr and exit with code 2."""
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


class Finder:
    """What an app program does besides the shared run: subclasses implement :meth:`extract`.

    Attributes
    ----------
    prog
        Program name used in the log and in messages.
    description
        One-line description for ``--help``.
    maps
        How the program's FITS maps are written.
    threads
        BLAS/OpenMP threads per process, for finders that parallelise with processes (None:
        leave the environment as it is).
    """

    prog: str = "app_run"
    description: str = ""
    maps: MapStyle = MapStyle("caesar-rest")
    threads: int | None = None

    def resolve(self, app: App, options: Mapping[str, Any]) -> dict[str, Any]:
        """The options the run uses (by default validated and completed with the defaults).

        Parameters
        ----------
        app
            The app.
        options
            Option values by name (None: absent).

        Returns
        -------
        dict
            Option values by name.
        """
        return resolve_options(app, options)

    def load(self, input_path: Path, opts: Mapping[str, Any]) -> FitsImage:
        """Load the image (by default with the ``bmaj``/``bmin``/``bpa`` beam fallback).

        Parameters
        ----------
        input_path
            The FITS image.
        opts
            Resolved options.

        Returns
        -------
        FitsImage
            The image.
        """
        return load_image(input_path, beam_fallback=beam_fallback(opts))

    def extract(self, image: FitsImage, opts: Mapping[str, Any], out_dir: Path) -> Extraction:
        """Find the sources in ``image``.

        Parameters
        ----------
        image
            The image.
        opts
            Resolved options.
        out_dir
            Output folder (created), for scratch files of tools that read and write files.

        Returns
        -------
        Extraction
            The catalogues, maps and summary entries.
        """
        raise NotImplementedError

    def classifier_islands(self, image: FitsImage) -> Any:
        """The classifier's islands of ``image`` (by default
        :func:`~caesar_rest.classify.features.find_islands` in this process; a finder run
        over MPI ranks shares them among its ranks).

        Parameters
        ----------
        image
            The image.

        Returns
        -------
        caesar_rest.classify.features.Islands
            The islands.
        """
        from caesar_rest.classify.features import find_islands

        return find_islands(image)

    def offload(self) -> Offload | None:
        """Where part of the catalogue files is written at the same time as the rest (by
        default nowhere: this process writes them all).

        Returns
        -------
        Offload or None
            The other writer.
        """
        return None


def parse_arguments(
    app: App, argv: Sequence[str] | None, prog: str = "app_run", description: str = ""
) -> tuple[Path, Path, dict[str, Any], bool]:
    """Parse a program's command line.

    Parameters
    ----------
    app
        The app whose options follow ``--input`` and ``--outdir``.
    argv
        Arguments (default: ``sys.argv[1:]``).
    prog
        Program name used in messages.
    description
        One-line description for ``--help``.

    Returns
    -------
    input_path, out_dir, options, no_preview
        The option values are as given (strings, or True for a flag), not yet validated;
        ``no_preview`` is the program's own ``--no-preview`` for apps without that option.

    Raises
    ------
    SystemExit
        On ``--help`` (0) or a missing ``--input``/``--outdir`` (2, reported on stderr).
    OptionError
        On an unknown app option or a value missing.
    """
    epilog = "app options: " + " ".join(
        f"--{o.name}" if o.is_flag else f"--{o.name}=<{o.type}>" for o in app.options
    )
    parser = ProgramParser(prog=prog, description=description, epilog=epilog, allow_abbrev=False)
    parser.add_argument("--input", required=True, type=Path, help="input FITS image")
    parser.add_argument("--outdir", required=True, type=Path, help="output folder")
    if "no-preview" not in app.option_map():
        parser.add_argument("--no-preview", action="store_true", help="draw no preview images")
    ns, rest = parser.parse_known_args(argv)
    options = parse_cli_options(app, rest)
    return ns.input, ns.outdir, options, bool(getattr(ns, "no_preview", False))


def resolve_options(app: App, options: Mapping[str, Any]) -> dict[str, Any]:
    """Validate options with the app and fill in the defaults.

    Parameters
    ----------
    app
        The app.
    options
        Option values by name (absent or None means "use the default").

    Returns
    -------
    dict
        Every option name with its value (flags default to False).

    Raises
    ------
    OptionError
        On unknown names or values out of bounds.
    """
    given = {k: v for k, v in options.items() if v is not None}
    checked = app.validate(given)
    out: dict[str, Any] = {}
    for opt in app.options:
        default = False if opt.is_flag and opt.default is None else opt.default
        out[opt.name] = checked.get(opt.name, default)
    return out


def beam_fallback(options: Mapping[str, Any]) -> Beam | None:
    """The beam given by ``bmaj``/``bmin``/``bpa`` options (one size alone: a circular beam).

    Parameters
    ----------
    options
        Resolved options.

    Returns
    -------
    tuple or None
        ``(bmaj_arcsec, bmin_arcsec, bpa_deg)``, or None when neither size is given.
    """
    sizes = [float(v) for v in (options.get("bmaj"), options.get("bmin")) if v is not None]
    if not sizes:
        return None
    bpa = options.get("bpa")
    return sizes[0], sizes[-1], float(bpa) if bpa is not None else 0.0


def limit_threads(n: int = 1) -> None:
    """Cap the BLAS/OpenMP threads of this process and of the processes it starts.

    Finders that parallelise with processes (BANE, Aegean, PyBDSF) lose time when each process
    also spins BLAS threads: Aegean's fits on a 1000x1000 image took 24 s instead of 7 s with
    the default thread pool on a busy 2-core machine.

    Parameters
    ----------
    n
        Threads per process.
    """
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional: the environment still governs child processes
        return
    threadpool_limits(limits=n)


def run(
    app: App,
    finder: Finder,
    input_path: Path,
    out_dir: Path,
    options: Mapping[str, Any],
    *,
    preview: bool = True,
) -> dict[str, Any]:
    """Run an app program and write every output file.

    Parameters
    ----------
    app
        The app (options, result files).
    finder
        What the program does.
    input_path
        The FITS image.
    out_dir
        Output folder (created if missing).
    options
        Option values by name (resolved here with :meth:`Finder.resolve`).
    preview
        Whether to draw the previews (also off with the app's ``no-preview`` option).

    Returns
    -------
    dict
        The summary also written to the app's ``summary`` result.

    Raises
    ------
    OptionError, ImageError
        On bad options or input.
    """
    prog = finder.prog
    t_start = time.perf_counter()
    opts = finder.resolve(app, options)
    say_options(prog, opts)
    if finder.threads is not None:
        limit_threads(finder.threads)
    image = finder.load(input_path, opts)
    t_loaded = time.perf_counter()
    describe_image(prog, image)
    out_dir.mkdir(parents=True, exist_ok=True)
    found = finder.extract(image, opts, out_dir)
    if classification_wanted(app, opts):
        classify_rows(prog, image, found, finder.classifier_islands)
    draw = preview and not opts.get("no-preview", False)
    info = RunInfo(app.name, opts, *input_identity(input_path, out_dir))
    files, write_times = write_products(
        prog, app, image, found, out_dir, preview=draw, run=info, offload=finder.offload()
    )
    files.update(write_maps(app, opts, out_dir, image, found, finder.maps, info.input_name))
    timings = {"load": t_loaded - t_start, **found.timings, **write_times}
    timings["total"] = time.perf_counter() - t_start
    summary = _summary(app, input_path, image, found, opts, files)
    summary["timings_s"] = {k: round(v, 4) for k, v in timings.items()}
    summary_file = write_summary(app, out_dir, summary)
    say(prog, "timings: " + ", ".join(f"{k} {v:.3f} s" for k, v in summary["timings_s"].items()))
    say(prog, f"wrote {', '.join(sorted([*files.values(), summary_file.name]))} to {out_dir}")
    return summary


def _summary(
    app: App,
    input_path: Path,
    image: FitsImage,
    found: Extraction,
    opts: Mapping[str, Any],
    files: Mapping[str, str],
) -> dict[str, Any]:
    # The key order is the order of summary.json.
    summary: dict[str, Any] = {"app": app.name}
    if found.tool is not None:
        summary["tool"] = found.tool
    summary.update(
        {
            "input": input_path.name,
            "n_sources": len(found.table),
            **found.counts,
            "n_islands": found.n_islands,
            "image": image_summary(image),
            **found.summary,
            "options": dict(opts),
            "files": dict(files),
        }
    )
    return summary


def classification_wanted(app: App, opts: Mapping[str, Any]) -> bool:
    """Whether the run classifies its catalogue: the app has the ``classify`` option and it is
    not turned off.

    Parameters
    ----------
    app
        The app.
    opts
        Resolved options (an absent option takes its default).

    Returns
    -------
    bool
        True to classify.
    """
    opt = app.option_map().get(CLASSIFY)
    return opt is not None and bool(opts.get(CLASSIFY, opt.default))


def classify_rows(
    prog: str,
    image: FitsImage,
    found: Extraction,
    islands_of: Callable[[FitsImage], Any] | None = None,
) -> None:
    """Add ``class``, ``class_score`` and ``group_id`` to the extraction's catalogue (and to its
    component catalogue when that holds the same rows), the counts per class and the number of
    multi-island objects to the summary and the time taken to the timings.

    Parameters
    ----------
    prog
        Program name for the log.
    image
        The image.
    found
        The extraction (changed in place).
    islands_of
        The classifier's islands of the image (default:
        :func:`~caesar_rest.classify.features.find_islands`).
    """
    from caesar_rest.catalogue.schema import CLASS_COLUMNS
    from caesar_rest.classify import CLASSES, classify_table
    from caesar_rest.classify.features import find_islands

    t0 = time.perf_counter()
    islands = (islands_of or find_islands)(image)
    t1 = time.perf_counter()
    classify_table(image, found.table, islands=islands)
    found.timings["classify_islands"] = t1 - t0
    comps = found.components
    if comps is not None and comps is not found.table and len(comps) == len(found.table):
        for col in CLASS_COLUMNS:
            comps[col.name] = found.table[col.name]
    labels = [str(c) for c in found.table["class"]]
    counts = {c: labels.count(c) for c in CLASSES}
    found.summary["classes"] = counts
    found.summary["multisland_objects"] = max([int(g) for g in found.table["group_id"]] + [0])
    found.timings["classify"] = time.perf_counter() - t0
    shown = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    say(prog, f"classified {len(labels)} rows: {shown or 'none'}")


def program_main(app: App, finder: Finder, argv: Sequence[str] | None = None) -> int:
    """Parse arguments and run a program, mapping failures to exit codes.

    Parameters
    ----------
    app
        The app whose options the program takes.
    finder
        What the program does.
    argv
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 on success, 2 for bad input or options, 1 for an unexpected error.
    """
    freeze_loaded()  # the collector's passes over the loaded stack find nothing to collect
    skip_exit_collection()
    try:
        input_path, out_dir, options, no_preview = parse_arguments(
            app, argv, finder.prog, finder.description
        )
    except SystemExit as exc:  # --help (0) or a parse error (2, already reported)
        return int(exc.code) if isinstance(exc.code, int) else 2
    except OptionError as exc:
        print(f"{finder.prog}: error: {exc}", file=sys.stderr)
        return 2
    return run_reporting_errors(
        finder.prog,
        lambda: run(app, finder, input_path, out_dir, options, preview=not no_preview),
    )


def run_reporting_errors(prog: str, call: Callable[[], object]) -> int:
    """Call ``call()`` and map its failures to exit codes (messages on stderr).

    Parameters
    ----------
    prog
        Program name used in messages.
    call
        The work; raises ``ImageError`` or ``OptionError`` on bad input.

    Returns
    -------
    int
        0 on success, 2 for ``ImageError``/``OptionError`` (one line on stderr), 1 for any other
        exception (traceback in the job log on stdout, one line on stderr).
    """
    try:
        call()
    except (ImageError, OptionError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        traceback.print_exc(file=sys.stdout)  # full detail in the job log
        print(f"{prog}: unexpected error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0
