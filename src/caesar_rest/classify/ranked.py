"""The classifier's islands shared among MPI ranks (:mod:`caesar_rest.sourcefinder.ranks`).

:func:`~caesar_rest.classify.features.find_islands` is a pass over the whole image (the noise
grid) and a second one (the islands above 3 sigma, band by band of rows). Under ``mpirun``
:class:`IslandsTask` deals both passes out in bands (:meth:`~caesar_rest.sourcefinder.ranks.
Ranks.deal`, each rank asking for its next band when done with one): bands of
:data:`GRID_BLOCK_ROWS` block rows of the grid, whose statistics the ranks compute (the other
ranks read their rows from the file) and exchange (small); then bands of :data:`LABEL_ROWS`
rows, whose islands each rank labels; rank 0 joins the bands in row order
(:func:`~caesar_rest.classify.features.join_parts`, the same join as between bands) and
measures the islands. The result is the one of ``find_islands``, to the bit: every block and
every pixel is computed by the same code on the same values.

:func:`start_islands` lets the other ranks begin while rank 0 builds the catalogues (they take
the grid's bands meanwhile); rank 0 joins in when it classifies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from caesar_rest.classify.features import (
    F32,
    Islands,
    LabelPart,
    NoiseMaps,
    RowReader,
    fill_grid,
    grid_rows,
    grid_shape,
    island_box,
    islands_from,
    join_parts,
    label_rows,
    memory_rows,
)
from caesar_rest.imaging.fits_image import FitsImage, read_pixels
from caesar_rest.sourcefinder.ranks import Ranks


def file_rows(path: str, hdu: int, origin: tuple[int, int], nx: int) -> RowReader:
    """A :data:`~caesar_rest.classify.features.RowReader` of an image's rows in its FITS file
    (only the rows asked for are read), NaN and blank as in the loaded image.

    Parameters
    ----------
    path, hdu
        The file and the image HDU.
    origin
        ``(x0, y0)`` of the image in the HDU (a sub-image's corner).
    nx
        The image's width.

    Returns
    -------
    RowReader
        The reader.
    """
    ox, oy = origin

    def read(y0: int, y1: int) -> tuple[F32, npt.NDArray[np.bool_]]:
        data = read_pixels(Path(path), hdu, (ox, ox + nx, oy + y0, oy + y1))
        return data, np.isnan(data)

    return read


#: Block rows of the noise grid per band dealt (about 1,200 image rows at 16384^2).
GRID_BLOCK_ROWS = 32
#: Image rows per band of the labelling dealt.
LABEL_ROWS = 1024


@dataclass
class Begun:
    """Rank 0's side of an :class:`IslandsTask` the other ranks began (:func:`start_islands`).

    Attributes
    ----------
    image
        The image.
    grid
        Rank 0's bands of the grid: its dealer answers the other ranks from the start.
    """

    image: FitsImage
    grid: Iterator[int]


@dataclass(frozen=True)
class IslandsTask:
    """:func:`~caesar_rest.classify.features.find_islands` over the ranks (a
    :class:`~caesar_rest.sourcefinder.ranks.Task`).

    Attributes
    ----------
    path, hdu, origin
        Where the other ranks read the image.
    shape
        ``(ny, nx)`` of the image.
    box
        The noise grid's block side (:func:`~caesar_rest.classify.features.island_box`).
    """

    path: str
    hdu: int
    origin: tuple[int, int]
    shape: tuple[int, int]
    box: int

    def run(self, ranks: Ranks, local: Any) -> Islands | None:
        """This rank's bands of the grid and of the labels; on rank 0 (``local`` the loaded
        image, or :class:`Begun`) the islands.

        Parameters
        ----------
        ranks
            The communicator.
        local
            The image or :class:`Begun` on rank 0, None elsewhere.

        Returns
        -------
        Islands or None
            The image's islands on rank 0.
        """
        ny, nx = self.shape
        g = grid_shape(ny, nx, self.box)
        image: FitsImage | None = local.image if isinstance(local, Begun) else local
        if image is not None:
            read = memory_rows(image.data, image.mask)
        else:
            read = file_rows(self.path, self.hdu, self.origin, nx)
        bands = local.grid if isinstance(local, Begun) else ranks.deal(self.grid_bands())
        step = GRID_BLOCK_ROWS
        mine = [(k, grid_rows(read, g, k * step, min(g.by, (k + 1) * step))) for k in bands]
        grids = ranks.gather_all(mine)
        bkg, rms = fill_grid(
            np.concatenate([m for m, _ in grids]), np.concatenate([d for _, d in grids])
        )
        labelled = [
            (k, label_rows(read, bkg, rms, g.cell, self.shape, a, min(ny, a + LABEL_ROWS)))
            for k in ranks.deal(-(-ny // LABEL_ROWS))
            for a in (k * LABEL_ROWS,)
        ]
        parts: list[LabelPart] | None = ranks.gather(labelled)
        del labelled
        if image is None or parts is None:
            return None
        maps = NoiseMaps(image.data, image.mask, bkg, rms, g.cell)
        joined = join_parts(parts)
        del parts  # joined: the bands' pixels are not kept beside their copies
        return islands_from(maps, *joined)

    def grid_bands(self) -> int:
        """The number of bands of the grid dealt."""
        ny, nx = self.shape
        return -(-grid_shape(ny, nx, self.box).by // GRID_BLOCK_ROWS)


def _task(image: FitsImage) -> IslandsTask:
    shape = (int(image.shape[0]), int(image.shape[1]))
    return IslandsTask(str(image.path), image.hdu_index, image.origin, shape, island_box(image))


def ranked_islands(image: FitsImage, ranks: Ranks) -> Islands:
    """The classifier's islands of ``image`` (rank 0's loaded image), shared among the ranks.

    Parameters
    ----------
    image
        The image, loaded from its file.
    ranks
        The communicator (the other ranks waiting for tasks).

    Returns
    -------
    Islands
        As :func:`~caesar_rest.classify.features.find_islands` gives them.
    """
    islands: Islands = ranks.run(_task(image), image)
    return islands


def start_islands(image: FitsImage, ranks: Ranks) -> Callable[[], Islands]:
    """Let the other ranks begin the classifier's islands of ``image`` now (they take the
    grid's bands while rank 0 does other work); rank 0 joins in with the function returned.

    Parameters
    ----------
    image
        The image, loaded from its file (rank 0's).
    ranks
        The communicator (the other ranks waiting for tasks).

    Returns
    -------
    callable
        ``finish()``: rank 0's share; the islands, as
        :func:`~caesar_rest.classify.features.find_islands` gives them.
    """
    task = _task(image)
    finish = ranks.start(task)
    begun = Begun(image, ranks.deal(task.grid_bands()))

    def islands() -> Islands:
        result: Islands = finish(begun)
        return result

    return islands
