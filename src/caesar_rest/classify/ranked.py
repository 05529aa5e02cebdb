"""The classifier's islands shared among MPI ranks (:mod:`caesar_rest.sourcefinder.ranks`).

:func:`~caesar_rest.classify.features.find_islands` is a pass over the whole image (the noise
grid) and a second one (the islands above 3 sigma, band by band of rows). Under ``mpirun``
:class:`IslandsTask` gives each rank a contiguous range of block rows of the grid: every rank
computes its blocks' statistics (the other ranks read their rows from the file, a band at a
time) and they exchange the grid (small); then every rank labels the islands of its rows,
and rank 0 joins the ranges (:func:`~caesar_rest.classify.features.join_parts`, the same join
as between bands) and measures the islands. The result is the one of ``find_islands``, to the
bit: every block and every pixel is computed by the same code on the same values.
"""

from __future__ import annotations

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


def share(n: int, size: int, rank: int) -> tuple[int, int]:
    """Rank ``rank``'s contiguous part ``[a, b)`` of ``n`` items split among ``size`` ranks."""
    return n * rank // size, n * (rank + 1) // size


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
        """This rank's blocks and rows; on rank 0 (``local`` the loaded image) the islands.

        Parameters
        ----------
        ranks
            The communicator.
        local
            The image on rank 0, None elsewhere.

        Returns
        -------
        Islands or None
            The image's islands on rank 0.
        """
        ny, nx = self.shape
        image: FitsImage | None = local
        if image is not None:
            read = memory_rows(image.data, image.mask)
        else:
            read = file_rows(self.path, self.hdu, self.origin, nx)
        g = grid_shape(ny, nx, self.box)
        j0, j1 = share(g.by, ranks.size, ranks.rank)
        grids = ranks.exchange(grid_rows(read, g, j0, j1))
        bkg, rms = fill_grid(
            np.concatenate([m for m, _ in grids]), np.concatenate([d for _, d in grids])
        )
        part = label_rows(
            read, bkg, rms, g.cell, self.shape, min(ny, j0 * g.cell), min(ny, j1 * g.cell)
        )
        parts: list[LabelPart] | None = ranks.collect(part)
        if image is None or parts is None:
            return None
        maps = NoiseMaps(image.data, image.mask, bkg, rms, g.cell)
        return islands_from(maps, *join_parts(parts))


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
    shape = (int(image.shape[0]), int(image.shape[1]))
    task = IslandsTask(str(image.path), image.hdu_index, image.origin, shape, island_box(image))
    islands: Islands = ranks.run(task, image)
    return islands
