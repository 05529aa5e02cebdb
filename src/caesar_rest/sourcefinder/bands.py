"""Image-sized arrays walked by bands of rows, so that NumPy's temporaries stay small.

Whole-image expressions allocate whole-image temporaries (and ``np.bincount`` or fancy
indexing copy int32 labels as int64); the pipeline's steps run them band by band instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import numpy.typing as npt

#: Pixels per band (each band's temporaries are a few times this many values).
BAND_PIXELS = 1 << 18


def row_bands(ny: int, nx: int, pixels: int = BAND_PIXELS) -> Iterator[tuple[int, int]]:
    """Row ranges ``(y0, y1)`` covering ``ny`` rows of ``nx`` pixels, ``pixels`` at a time.

    Parameters
    ----------
    ny, nx
        Rows and pixels per row.
    pixels
        Pixels per band (at least one row).

    Yields
    ------
    y0, y1
        Consecutive row ranges.
    """
    rows = max(1, pixels // max(1, nx))
    for y0 in range(0, ny, rows):
        yield y0, min(ny, y0 + rows)


def assemble(
    shape: tuple[int, int], rows: Callable[[int, int], npt.NDArray[np.float32]]
) -> npt.NDArray[np.float32]:
    """A float32 image of ``shape`` filled band by band from ``rows(y0, y1)``.

    Parameters
    ----------
    shape
        ``(ny, nx)``.
    rows
        The values of rows ``y0:y1``.

    Returns
    -------
    numpy.ndarray
        The image.
    """
    out = np.empty(shape, dtype=np.float32)
    for y0, y1 in row_bands(*shape):
        out[y0:y1] = rows(y0, y1)
    return out
