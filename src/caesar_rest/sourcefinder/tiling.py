"""Tiles with overlap, processed in parallel processes, and merging of edge sources (spec 8).

The image is cut into a grid of *cores* (a partition of the image); each tile is its core
grown by a margin on every side that is not an image edge. The margin is at least twice the
reach of the background grid (``step + box/2``) plus room for islands, so that inside the core
the background, noise, islands and fits of a tile equal those of the untiled run (background
grids are aligned on full-image pixels).

Each island is reported exactly once:

* complete in its tile (not touching an inner tile border) and peak in the tile's core: the
  tile processes it;
* complete but peaked in another tile's core, where it is complete too: dropped (the other
  tile reports it);
* otherwise (cut by a tile border somewhere): the tile sends its piece to the master, which
  merges touching pieces from all tiles (union of pixels, spec 8 "merging on master") and
  runs the nested search and the fit on the merged island (the recommended behaviour).

Tiles run in a :mod:`multiprocessing` pool (``fork``: the image is shared, not copied) when
it pays (:func:`pool_processes`: ``nproc > 1``, several tiles, at least
:data:`POOL_MIN_PIXELS` tile pixels); otherwise, as with ``nproc = 1``, one after the other
(tiling then only bounds the memory). Under
``mpirun`` the tiles are shared among the MPI ranks as well (:mod:`.ranks`): the merge is the
same, so the catalogue is the one of a single process; each rank asks for its next tile when
it is done with one, so the ranks finish their tiles together.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import queue
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from caesar_rest.apps.grant import usable_cpus
from caesar_rest.imaging.fits_image import FitsImage, read_pixels
from caesar_rest.sourcefinder import fitting, islands, nesting
from caesar_rest.sourcefinder._types import F32, I64, B
from caesar_rest.sourcefinder.array import (
    BeamPix,
    Classifier,
    Sources,
    find_in_array,
    process_islands,
)
from caesar_rest.sourcefinder.islands import MORPH_EXTENDED, IslandSet
from caesar_rest.sourcefinder.lm import NPAR
from caesar_rest.sourcefinder.options import FinderOptions
from caesar_rest.sourcefinder.ranks import Ranks, TileJob

#: Default core size of automatic tiles (pixels).
AUTO_TILE = 2048
#: Extra margin for islands beyond the background reach (pixels).
ISLAND_MARGIN = 48


@dataclass(frozen=True)
class Tile:
    """One tile, in image-array pixel coordinates (half-open ranges).

    Attributes
    ----------
    x0, x1, y0, y1
        The tile (core plus margins).
    cx0, cx1, cy0, cy1
        The core.
    index
        Position in the plan.
    """

    x0: int
    x1: int
    y0: int
    y1: int
    cx0: int
    cx1: int
    cy0: int
    cy1: int
    index: int = 0


def _edges(n: int, core: int) -> list[int]:
    k = max(1, int(round(n / core)))
    return [int(round(i * n / k)) for i in range(k + 1)]


#: Tile margin of the extended search, in units of its largest scale.
EXT_MARGIN_SCALES = 3


def plan_tiles(shape: tuple[int, int], beam: BeamPix, opts: FinderOptions) -> list[Tile]:
    """Tiles of an image (a single tile when no tiling is needed).

    Tiling is used with ``tile_split``, or automatically when a side exceeds
    ``opts.auto_tile_above`` pixels, or when ``nproc > 1`` and a side exceeds twice the
    automatic tile size.

    Parameters
    ----------
    shape
        ``(ny, nx)``.
    beam
        The beam.
    opts
        Options (``tile_split``, ``tile_size``, ``tile_step``, ``nproc``).

    Returns
    -------
    list of Tile
        The plan.
    """
    ny, nx = shape
    auto = max(nx, ny) > opts.auto_tile_above or (opts.nproc > 1 and max(nx, ny) >= 2 * AUTO_TILE)
    if not (opts.tile_split or auto):
        return [Tile(0, nx, 0, ny, 0, nx, 0, ny, 0)]
    core = opts.tile_size if opts.tile_size > 0 else AUTO_TILE
    box = opts.background.box_px(beam.width_px)
    reach = math.ceil(max(1.0, opts.background.grid * box) + box / 2.0) + 1
    margin = 2 * reach + ISLAND_MARGIN
    if opts.extended.enabled:
        # The extended search reaches as far as its largest wavelet scale, twice.
        margin = max(margin, EXT_MARGIN_SCALES * 2**opts.extended.wt_scale_max)
    if opts.tile_step < 1.0:
        margin = max(margin, int(math.ceil((1.0 - opts.tile_step) * core)))
    xe = _edges(nx, core)
    ye = _edges(ny, core)
    tiles: list[Tile] = []
    for j in range(len(ye) - 1):
        for i in range(len(xe) - 1):
            cx0, cx1, cy0, cy1 = xe[i], xe[i + 1], ye[j], ye[j + 1]
            tiles.append(
                Tile(
                    max(0, cx0 - margin),
                    min(nx, cx1 + margin),
                    max(0, cy0 - margin),
                    min(ny, cy1 + margin),
                    cx0,
                    cx1,
                    cy0,
                    cy1,
                    len(tiles),
                )
            )
    return tiles


def _complete_in(isl: IslandSet, t: Tile, nx: int, ny: int, ox: int, oy: int) -> B:
    # Not touching a border of tile t that is not an image edge.
    xmin, xmax = isl.xmin - ox, isl.xmax - ox
    ymin, ymax = isl.ymin - oy, isl.ymax - oy
    bad = np.zeros(isl.n, dtype=bool)
    if t.x0 > 0:
        bad |= xmin <= t.x0
    if t.x1 < nx:
        bad |= xmax >= t.x1 - 1
    if t.y0 > 0:
        bad |= ymin <= t.y0
    if t.y1 < ny:
        bad |= ymax >= t.y1 - 1
    return ~bad


def classifier(
    tile: Tile, plan: list[Tile], shape: tuple[int, int], origin: tuple[int, int]
) -> Classifier:
    """The island classifier of a tile (see the module description).

    Parameters
    ----------
    tile
        The tile.
    plan
        All tiles.
    shape
        Image shape.
    origin
        Image origin in full-image pixels.

    Returns
    -------
    callable
        ``f(islands) -> (process_here, send_to_master)``.
    """
    ny, nx = shape
    ox, oy = origin
    xe = sorted({t.cx0 for t in plan} | {t.cx1 for t in plan})
    ye = sorted({t.cy0 for t in plan} | {t.cy1 for t in plan})
    ncol = len(xe) - 1

    def classify(isl: IslandSet) -> tuple[B, B]:
        complete = _complete_in(isl, tile, nx, ny, ox, oy)
        px, py = isl.xpk - ox, isl.ypk - oy
        in_core = (px >= tile.cx0) & (px < tile.cx1) & (py >= tile.cy0) & (py < tile.cy1)
        own = complete & in_core
        send = ~complete
        other = np.flatnonzero(complete & ~in_core)
        if other.size:
            col = np.clip(np.searchsorted(xe, px[other], side="right") - 1, 0, ncol - 1)
            row = np.clip(np.searchsorted(ye, py[other], side="right") - 1, 0, len(ye) - 2)
            for k, u in zip(other, row * ncol + col, strict=True):
                owner = plan[int(u)]
                sub = isl.subset(np.array([k]))
                if not _complete_in(sub, owner, nx, ny, ox, oy)[0]:
                    send[k] = True
        return own, send

    return classify


# Worker state (inherited through fork).
_STATE: dict[str, Any] = {}

#: Reads a tile's pixels: a native, C-contiguous float32 array, NaN at blank pixels.
TileReader = Callable[[Tile], F32]


def tile_sources(
    read: TileReader,
    plan: list[Tile],
    index: int,
    shape: tuple[int, int],
    origin: tuple[int, int],
    beam: BeamPix,
    opts: FinderOptions,
    maps: frozenset[str],
) -> Sources:
    """The sources of one tile (its maps cut to the tile's core).

    Parameters
    ----------
    read
        Reads the tile's pixels.
    plan
        All tiles.
    index
        The tile.
    shape, origin
        The image's shape and origin.
    beam, opts, maps
        As in :func:`run_tiles`.

    Returns
    -------
    Sources
        The tile's sources, its island pieces for the master, its maps' cores.
    """
    t = plan[index]
    ox, oy = origin
    ny, nx = shape
    src = find_in_array(
        read(t),
        beam,
        opts,
        (ox + t.x0, oy + t.y0),
        (oy + ny, ox + nx),
        maps,
        classifier(t, plan, shape, origin),
        (ox, oy),
    )
    # Keep only the cores of the maps (the master pastes them).
    src.maps = {
        k: np.ascontiguousarray(v[t.cy0 - t.y0 : t.cy1 - t.y0, t.cx0 - t.x0 : t.cx1 - t.x0])
        for k, v in src.maps.items()
    }
    return src


def _memory_reader(image: FitsImage) -> TileReader:
    def read(t: Tile) -> F32:
        return np.ascontiguousarray(image.data[t.y0 : t.y1, t.x0 : t.x1])

    return read


def tile_from_file(job: TileJob, index: int) -> Sources:
    """The sources of tile ``index`` of ``job``, reading only its pixels from the file (the
    ranks other than 0 of an MPI run, :func:`caesar_rest.sourcefinder.ranks.serve`).

    Parameters
    ----------
    job
        What rank 0 sent.
    index
        The tile.

    Returns
    -------
    Sources
        As :func:`tile_sources`.
    """
    ox, oy = job.origin

    def read(t: Tile) -> F32:
        return read_pixels(Path(job.path), job.hdu, (ox + t.x0, ox + t.x1, oy + t.y0, oy + t.y1))

    return tile_sources(read, job.plan, index, job.shape, job.origin, job.beam, job.opts, job.maps)


def _work(index: int) -> Sources:
    return tile_sources(
        _STATE["read"],
        _STATE["plan"],
        index,
        _STATE["shape"],
        _STATE["origin"],
        _STATE["beam"],
        _STATE["opts"],
        _STATE["maps"],
    )


#: Tile pixels (the areas of this machine's tiles summed) below which the tiles run one
#: after the other even with ``nproc > 1``: a fork pool costs tens of milliseconds to start
#: and to send the results back, about what the finder spends on 0.1-0.2 Mpix, so below
#: 1 Mpix it cannot pay back (measured in docs/benchmarks.md, "pool only when it pays").
POOL_MIN_PIXELS = 1 << 20


def pool_processes(plan: list[Tile], indices: list[int], nproc: int) -> int:
    """Processes for this machine's tiles: a pool only when it pays.

    Parameters
    ----------
    plan
        All tiles.
    indices
        The tiles this machine processes.
    nproc
        Processes allowed (``nproc``).

    Returns
    -------
    int
        1 (this process, one tile after the other) with one tile, ``nproc = 1``, no ``fork``
        start method, or fewer than :data:`POOL_MIN_PIXELS` tile pixels; else ``nproc``,
        at most one per tile and per usable CPU.
    """
    if nproc <= 1 or len(indices) <= 1 or "fork" not in mp.get_all_start_methods():
        return 1
    pixels = sum((plan[i].x1 - plan[i].x0) * (plan[i].y1 - plan[i].y0) for i in indices)
    if pixels < POOL_MIN_PIXELS:
        return 1
    return max(1, min(nproc, len(indices), usable_cpus()))


def _run_local(indices: list[int], nproc: int) -> list[Sources]:
    if nproc > 1 and len(indices) > 1:
        ctx = mp.get_context("fork")
        with ctx.Pool(min(nproc, len(indices)), maxtasksperchild=None) as pool:
            return pool.map(_work, indices, chunksize=1)
    return [_work(i) for i in indices]


def _run_dealt(deal: Callable[[], Iterator[int]], nproc: int) -> list[tuple[int, Sources]]:
    """The tiles an MPI rank is dealt (``deal()``:
    :meth:`~caesar_rest.sourcefinder.ranks.Ranks.deal`), ``(index, sources)``: in ``nproc``
    pool processes, each asking for the next tile when it is done with one (the pool is
    forked before the dealer's thread starts)."""
    if nproc <= 1:
        return [(i, _work(i)) for i in deal()]
    out: list[tuple[int, Sources]] = []
    done: queue.SimpleQueue[tuple[int, Sources | None, BaseException | None]]
    done = queue.SimpleQueue()
    with mp.get_context("fork").Pool(nproc, maxtasksperchild=None) as pool:
        indices = deal()

        def submit() -> int:
            i = next(indices, None)
            if i is None:
                return 0
            pool.apply_async(
                _work,
                (i,),
                callback=lambda r: done.put((i, r, None)),
                error_callback=lambda e: done.put((i, None, e)),
            )
            return 1

        running = sum(submit() for _ in range(nproc))
        while running:
            i, result, error = done.get()
            if error is not None:
                raise error
            assert result is not None
            out.append((i, result))
            running += submit() - 1
    return out


def _process_tiles(
    image: FitsImage,
    beam: BeamPix,
    opts: FinderOptions,
    plan: list[Tile],
    maps: frozenset[str],
    ranks: Ranks | None,
) -> list[Sources]:
    """Every tile's sources in plan order: this machine's share in ``nproc`` processes, and
    under MPI the other ranks' shares gathered (a failure of rank 0's own tiles is left to
    :meth:`~caesar_rest.sourcefinder.ranks.Ranks.close`, which withdraws the others'; one of
    the gather aborts every rank)."""
    _STATE.update(
        read=_memory_reader(image),
        plan=plan,
        shape=image.shape,
        origin=image.origin,
        beam=beam,
        opts=opts,
        maps=maps,
    )
    try:
        if ranks is None:
            every = list(range(len(plan)))
            local = _run_local(every, pool_processes(plan, every, opts.nproc))
        else:
            if ranks.job is None:  # the other ranks would wait for it for ever
                raise RuntimeError("the tile job is not sent (find_sources sends it)")
            # The pool's size from this rank's share of a fixed round.
            procs = pool_processes(plan, ranks.mine(len(plan)), opts.nproc)
            local = ranks.gather_tiles(_run_dealt(lambda: ranks.tiles(len(plan)), procs))
    finally:
        _STATE.clear()
    return local


def run_tiles(
    image: FitsImage,
    beam: BeamPix,
    opts: FinderOptions,
    plan: list[Tile],
    maps: frozenset[str],
    ranks: Ranks | None = None,
) -> Sources:
    """Process the tiles and merge their sources.

    Parameters
    ----------
    image
        The image.
    beam
        The beam.
    opts
        Options.
    plan
        Tiles from :func:`plan_tiles`.
    maps
        Maps to assemble.
    ranks
        MPI ranks sharing the tiles (rank 0 calls this, once it has sent them the job:
        :func:`~caesar_rest.sourcefinder.pipeline.find_sources`; :mod:`.ranks`), or None:
        this machine's processes only.

    Returns
    -------
    Sources
        All sources, with per-step timings summed over tiles (``tiles_wall`` is the elapsed
        time of the tile stage).
    """
    t0 = time.perf_counter()
    results = _process_tiles(image, beam, opts, plan, maps, ranks)
    t1 = time.perf_counter()
    timings: dict[str, float] = {}
    for r in results:
        for k, v in r.timings.items():
            timings[k] = timings.get(k, 0.0) + v
    timings["tiles_wall"] = t1 - t0
    pieces = [r.edge for r in results if r.edge is not None and r.edge.n]
    parts: list[Sources] = list(results)
    n_merged = 0
    if pieces:
        # A piece of an island that some tile holds complete (and reports) is dropped.
        ny, nx = image.shape
        w = nx + image.origin[0] + 2
        owned = np.unique(
            np.concatenate([(r.isl.ys.astype(np.int64) + 1) * w + r.isl.xs + 1 for r in results])
        )
        kept = []
        for pc in pieces:
            key = (pc.ys.astype(np.int64) + 1) * w + pc.xs + 1
            pos = np.clip(np.searchsorted(owned, key), 0, max(owned.size - 1, 0))
            hit = owned[pos] == key if owned.size else np.zeros(key.size, dtype=bool)
            overlaps = np.maximum.reduceat(hit, pc.offsets[:-1]).astype(bool)
            if (~overlaps).any():
                kept.append(pc.subset(~overlaps))
        pieces = kept
    if pieces:
        merged = merge_pieces(pieces, image.shape, image.origin)
        n_merged = merged.n
        if merged.n:
            fittable = merged.npix / beam.area_pix <= opts.fit.max_nbeams
            merged.morph = np.where(
                (merged.morph == MORPH_EXTENDED) & ~fittable, MORPH_EXTENDED, merged.morph
            )
            parts.append(process_islands(merged, _image_reader(image), beam, opts))
    out = concat_sources(parts)
    out.timings = {**timings, "edge_merge": time.perf_counter() - t1}
    out.stats = {
        "global_bkg": float(np.median([r.stats["global_bkg"] for r in results])),
        "global_rms": float(np.median([r.stats["global_rms"] for r in results])),
        "median_rms": float(np.median([r.stats["median_rms"] for r in results])),
        "median_bkg": float(np.median([r.stats["median_bkg"] for r in results])),
        "n_compact_islands": int(sum(r.stats["n_compact_islands"] for r in results)),
        "n_extended_regions": int(sum(r.stats["n_extended_regions"] for r in results)),
        "bkg_box_px": results[0].stats["bkg_box_px"],
        "bkg_step_px": results[0].stats["bkg_step_px"],
        "n_edge_pieces": int(sum(p.n for p in pieces)),
        "n_merged_edge_islands": n_merged,
        "n_ranks": ranks.size if ranks is not None else 1,
    }
    if maps:
        ny, nx = image.shape
        for name in maps:
            if not all(name in r.maps for r in results):
                continue
            full = np.full((ny, nx), np.nan, dtype=np.float32)
            for t, r in zip(plan, results, strict=True):
                full[t.cy0 : t.cy1, t.cx0 : t.cx1] = r.maps[name]
            out.maps[name] = full
    return out


def _image_reader(image: FitsImage) -> nesting.Reader:
    ny, nx = image.shape
    ox, oy = image.origin

    def read(x0: int, x1: int, y0: int, y1: int) -> F32:
        a0, a1 = max(x0, 0) - ox, min(x1 - ox, nx)
        b0, b1 = max(y0, 0) - oy, min(y1 - oy, ny)
        return np.asarray(image.data[max(b0, 0) : b1, max(a0, 0) : a1], dtype=np.float32)

    return read


def merge_pieces(
    pieces: list[IslandSet], shape: tuple[int, int], origin: tuple[int, int] = (0, 0)
) -> IslandSet:
    """Merge island pieces that share or touch pixels (8-neighbourhood) into islands.

    Parameters
    ----------
    pieces
        Island sets from the tiles.
    shape
        Image shape.
    origin
        Image origin.

    Returns
    -------
    IslandSet
        One island per connected group of pieces (union of pixels, each pixel once, values
        from the first piece holding it), measured.
    """
    allp = islands.concat(pieces)
    if allp.n == 0:
        return allp
    ny, nx = shape
    w = nx + origin[0] + 2
    key = (allp.ys.astype(np.int64) + 1) * w + (allp.xs.astype(np.int64) + 1)
    owner = allp.island_index()
    order = np.argsort(key, kind="stable")
    skey, sown = key[order], owner[order]
    rows: list[I64] = []
    cols: list[I64] = []
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            k2 = key + dy * w + dx
            pos = np.searchsorted(skey, k2)
            pos = np.minimum(pos, skey.size - 1)
            # Every piece pixel holding key k2 (runs of equal keys): take the first and last.
            for p in (pos, np.searchsorted(skey, k2, side="right") - 1):
                p = np.clip(p, 0, skey.size - 1)
                hit = skey[p] == k2
                rows.append(owner[hit])
                cols.append(sown[p[hit]])
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    # Imported here: only tiled runs need scipy.sparse (~12 MiB).
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    g = coo_matrix((np.ones(r.size), (r, c)), shape=(allp.n, allp.n))
    ng, comp = connected_components(g, directed=False)
    pix_group = comp[owner]
    # Unique pixels per group (first occurrence wins).
    gk = pix_group.astype(np.int64) * (w * (ny + origin[1] + 2)) + key
    _, first = np.unique(gk, return_index=True)
    first = np.sort(first)
    grp = pix_group[first]
    o2 = np.argsort(grp, kind="stable")
    sel = first[o2]
    counts = np.bincount(grp, minlength=ng)
    is_ext = np.zeros(ng, dtype=bool)
    np.logical_or.at(is_ext, comp, allp.morph == MORPH_EXTENDED)
    border = np.zeros(ng, dtype=bool)
    np.logical_or.at(border, comp, allp.border)
    out = IslandSet(
        offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        xs=allp.xs[sel],
        ys=allp.ys[sel],
        flux=allp.flux[sel],
        bkg=allp.bkg[sel],
        rms=allp.rms[sel],
        morph=np.where(is_ext, MORPH_EXTENDED, islands.MORPH_COMPACT).astype(np.int64),
        parent=np.full(ng, -1, dtype=np.int64),
        border=border,
        good=np.ones(ng, dtype=bool),
    )
    return out.measure()


def concat_sources(parts: list[Sources]) -> Sources:
    """Concatenate :class:`~caesar_rest.sourcefinder.array.Sources` (indices remapped).

    Parameters
    ----------
    parts
        Sources of tiles (and of merged edge islands).

    Returns
    -------
    Sources
        All of them.
    """
    if len(parts) == 1:
        return parts[0]
    sets = []
    fits = []
    off = 0
    for p in parts:
        s = p.isl
        parent = np.where(s.parent >= 0, s.parent + off, -1)
        sets.append(
            IslandSet(
                s.offsets, s.xs, s.ys, s.flux, s.bkg, s.rms, s.morph, parent, s.border, s.good
            )
        )
        if p.fit is not None:
            fits.append((p.fit, p.unit_source + off))
        off += s.n
    isl = islands.concat(sets)
    fit = None
    us = np.zeros(0, dtype=np.int64)
    if fits:
        fit, us = concat_fits(fits)
    out = Sources(isl, fit, us)
    return out


def concat_fits(fits: list[tuple[fitting.FitResult, I64]]) -> tuple[fitting.FitResult, I64]:
    """Concatenate fit results (unit indices remapped).

    Parameters
    ----------
    fits
        ``(fit, unit_source)`` pairs.

    Returns
    -------
    fit, unit_source
        Combined.
    """
    uoff = 0
    comp_fields: dict[str, list[Any]] = {
        k: [] for k in ("unit", "comp", "params", "errors", "flux", "flux_err")
    }
    unit_fields: dict[str, list[Any]] = {
        k: []
        for k in (
            "chi2",
            "ndf",
            "status",
            "quality",
            "ncomp",
            "offset",
            "noise",
            "flux_total",
            "flux_total_err",
            "fitted",
            "point_model",
        )
    }
    us = []
    for f, u in fits:
        comp_fields["unit"].append(f.unit + uoff)
        for k in ("comp", "params", "errors", "flux", "flux_err"):
            comp_fields[k].append(getattr(f, k))
        for k in unit_fields:
            unit_fields[k].append(getattr(f, k))
        us.append(u)
        uoff += f.n_units
    kw = {k: np.concatenate(v) for k, v in comp_fields.items()}
    kw["params"] = kw["params"].reshape(-1, NPAR)
    kw["errors"] = kw["errors"].reshape(-1, NPAR)
    kw.update({k: np.concatenate(v) for k, v in unit_fields.items()})
    return fitting.FitResult(**kw), np.concatenate(us)
