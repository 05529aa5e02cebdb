"""The whole source-finding run (spec section 1.2), with timings.

:func:`find_sources` is the library entry point: it takes a FITS path (or a loaded
:class:`~caesar_rest.imaging.FitsImage`) and :class:`FinderOptions`, and returns a
:class:`SourceFinderResult` holding the islands, nested sources, fitted components, optional
maps and the time spent in each step. The run on one array is :mod:`.array`'s; large images
are split into overlapping tiles processed by worker processes (:mod:`.tiling`).
"""

from __future__ import annotations

import pickle
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from caesar_rest.imaging.fits_image import (
    FitsImage,
    header_image,
    load_image,
    without_empty_mask,
)
from caesar_rest.sourcefinder import tiling
from caesar_rest.sourcefinder.array import BeamPix, Sources, beam_pixels, find_in_array
from caesar_rest.sourcefinder.islands import label_image
from caesar_rest.sourcefinder.options import FinderOptions
from caesar_rest.sourcefinder.ranks import Ranks, TileJob


@dataclass
class SourceFinderResult:
    """Result of :func:`find_sources` for a whole image."""

    image: FitsImage
    beam: BeamPix
    options: FinderOptions
    sources: Sources
    timings: dict[str, float]
    n_tiles: int = 1


def find_sources(
    image: FitsImage | str | Path,
    opts: FinderOptions | None = None,
    want_maps: frozenset[str] | None = None,
    ranks: Ranks | None = None,
) -> SourceFinderResult:
    """Find sources in a FITS image.

    Parameters
    ----------
    image
        A loaded image or a FITS path (read with ``opts.subimage`` and ``opts.beam_fallback``).
    opts
        Options (default: the legacy app's defaults).
    want_maps
        Maps to keep (default: ``opts.save_maps``).
    ranks
        The MPI ranks of the run when this is rank 0 of several (:mod:`.ranks`): the tiles are
        shared among them (and among ``nproc`` processes on each); an image that needs no
        tiles leaves them idle.

    Returns
    -------
    SourceFinderResult
        Everything found, with timings.
    """
    opts = opts or FinderOptions()
    t0 = time.perf_counter()
    if not isinstance(image, FitsImage):
        image = load_image(image, beam_fallback=opts.beam_fallback, subimage=opts.subimage)
    # The pipeline only reads and slices the mask: no array for an image without blanks.
    image = without_empty_mask(image)
    t_load = time.perf_counter() - t0
    beam = beam_pixels(image)
    maps = opts.save_maps if want_maps is None else want_maps
    plan = _plan(image, beam, opts, ranks)
    if ranks is not None:
        job = _tile_job(image, beam, plan, opts, maps)
        if ranks.sent and not _same_job(ranks.job, job):
            # Sent before the pixels were read (send_early): the other ranks work on it until
            # Ranks.close withdraws it.
            raise RuntimeError("the tile job sent early is not the loaded image's")
        ranks.send(job, _deal_at_send(plan, opts, ranks))
    if len(plan) <= 1:
        src = find_in_array(
            image.data, beam, opts, image.origin, _full_shape(image), maps, blank=image.mask
        )
        n_tiles = 1
    else:
        src = tiling.run_tiles(image, beam, opts, plan, maps, ranks)
        n_tiles = len(plan)
    if "segmented" in maps:
        # Labels in catalogue order (island S<k> is label k + 1), after the selection.
        labels = label_image(src.isl, image.shape, image.origin)
        src.maps["segmented"] = labels.astype(np.float32)
    timings = {"load": t_load, **src.timings}
    timings["total"] = time.perf_counter() - t0
    return SourceFinderResult(image, beam, opts, src, timings, n_tiles)


def _plan(
    image: FitsImage, beam: BeamPix, opts: FinderOptions, ranks: Ranks | None
) -> list[tiling.Tile]:
    # The workers of every rank count for the automatic tiling (one plan for the job sent
    # early and the loaded image's).
    workers = opts.nproc * (ranks.size if ranks is not None else 1)
    return tiling.plan_tiles(image.shape, beam, opts.with_(nproc=workers))


def _tile_job(
    image: FitsImage,
    beam: BeamPix,
    plan: list[tiling.Tile],
    opts: FinderOptions,
    maps: frozenset[str],
) -> TileJob | None:
    if len(plan) <= 1:
        return None
    return TileJob(
        str(image.path), image.hdu_index, image.origin, image.shape, plan, beam, opts, maps
    )


def _same_job(sent: object, loaded: object) -> bool:
    """Whether the job sent early equals the loaded image's; by pickled bytes where ``==``
    says no, since a NaN field (a beam or an option) is never equal to itself."""
    return bool(sent == loaded) or pickle.dumps(sent) == pickle.dumps(loaded)


def send_early(path: str | Path, opts: FinderOptions, ranks: Ranks) -> None:
    """Rank 0: send the other ranks their tile job from the file's header, before the pixels
    are read, so they begin their tiles while rank 0 loads the image (:func:`find_sources`
    then checks that the loaded image gives the same job). Nothing is sent for a sub-image.

    Parameters
    ----------
    path
        The FITS file.
    opts
        The options :func:`find_sources` will be given (``want_maps`` not given).
    ranks
        The MPI ranks of the run (this is rank 0).
    """
    if opts.subimage is not None or ranks.sent:
        return
    image = header_image(path, beam_fallback=opts.beam_fallback)
    beam = beam_pixels(image)
    plan = _plan(image, beam, opts, ranks)
    ranks.send(_tile_job(image, beam, plan, opts, opts.save_maps), _deal_at_send(plan, opts, ranks))


def _deal_at_send(plan: list[tiling.Tile], opts: FinderOptions, ranks: Ranks) -> bool:
    # Rank 0 runs its tiles in this process (no pool to fork after the dealer's thread).
    return tiling.pool_processes(plan, ranks.mine(len(plan)), opts.nproc) <= 1


def _full_shape(image: FitsImage) -> tuple[int, int]:
    ny, nx = image.shape
    return ny + image.origin[1], nx + image.origin[0]
