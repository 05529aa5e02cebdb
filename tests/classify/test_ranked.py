"""The classifier's islands shared among ranks (ranks as threads: tests/support/thread_comm)
are those of one process, bit for bit, with blank pixels and a sub-image."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from caesar_rest.classify import ranked
from caesar_rest.classify.features import (
    Islands,
    find_islands,
    grid_rows,
    grid_shape,
    island_box,
    label_rows,
    memory_rows,
)
from caesar_rest.classify.ranked import IslandsTask, file_rows, start_islands
from caesar_rest.imaging.fits_image import FitsImage, load_image
from caesar_rest.sourcefinder.ranks import Ranks

from tests.sourcefinder.sf_synth import RMS, gaussian, point_sources, write
from tests.support.thread_comm import run_ranks

FIELDS = ("pixels", "pixel_labels", "npix", "flux", "peak", "mean_rms", "cx", "cy", "ecc")


def _image(tmp_path: Path, subimage: tuple[int, int, int, int] | None = None) -> FitsImage:
    rng = np.random.default_rng(5)
    srcs = [
        (float(x), float(y), float(rng.uniform(5, 80) * RMS))
        for x, y in rng.uniform(5, 295, (40, 2))
    ]
    img = point_sources(300, srcs, seed=5, ny=260)
    img += gaussian(300, 150.0, 130.0, 6 * RMS, 30.0, 12.0, 0.3, ny=260)  # across the ranges
    img[40:70, 20:90] = np.nan  # blank pixels in one rank's rows
    return load_image(write(tmp_path / "f.fits", img), subimage=subimage, compact_mask=True)


@pytest.mark.parametrize("size", [2, 3])
@pytest.mark.parametrize("subimage", [None, (11, 280, 7, 250)])
@pytest.mark.parametrize("bands", [(32, 1024), (1, 37)])
def test_islands_over_ranks_are_those_of_one_process(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    size: int,
    subimage: tuple[int, int, int, int] | None,
    bands: tuple[int, int],
) -> None:
    # The defaults (one band of each on this image) and bands of 1 block row and 37 rows
    # (several per rank, dealt as the ranks ask, across the islands).
    monkeypatch.setattr(ranked, "GRID_BLOCK_ROWS", bands[0])
    monkeypatch.setattr(ranked, "LABEL_ROWS", bands[1])
    image = _image(tmp_path, subimage)
    whole = find_islands(image)
    shape = (int(image.shape[0]), int(image.shape[1]))
    task = IslandsTask(str(image.path), image.hdu_index, image.origin, shape, island_box(image))

    def work(ranks: Ranks) -> Islands | None:
        return task.run(ranks, image if ranks.rank == 0 else None)

    got = run_ranks(size, work)
    assert got[1:] == [None] * (size - 1)
    shared = got[0]
    assert whole.pixels.size > 100 and len(whole.npix) > 20
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(shared, name), getattr(whole, name), err_msg=name)
    np.testing.assert_array_equal(shared.maps.rms_grid, whole.maps.rms_grid)
    assert shared.median_rms == whole.median_rms


def test_the_file_rows_are_the_loaded_rows(tmp_path: Path) -> None:
    image = _image(tmp_path, (11, 280, 7, 250))
    nx = image.shape[1]
    d1, m1 = file_rows(str(image.path), image.hdu_index, image.origin, nx)(30, 80)
    d0, m0 = memory_rows(image.data, image.mask)(30, 80)
    np.testing.assert_array_equal(d1, d0)
    np.testing.assert_array_equal(m1, m0)
    assert m1.any()


def test_a_rank_without_rows_gives_an_empty_part(tmp_path: Path) -> None:
    image = _image(tmp_path)
    g = grid_shape(260, 300, island_box(image))
    read = memory_rows(image.data, image.mask)
    med, mad = grid_rows(read, g, 2, 2)
    assert med.shape == (0, g.bx) and mad.shape == (0, g.bx)
    part = label_rows(read, med, mad, g.cell, (260, 300), 100, 100)
    assert part.n == 0 and part.first is None and part.pixels.size == 0


def test_islands_begun_by_the_other_ranks_are_those_of_one_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    monkeypatch.setattr(ranked, "GRID_BLOCK_ROWS", 1)
    monkeypatch.setattr(ranked, "LABEL_ROWS", 37)
    image = _image(tmp_path)
    whole = find_islands(image)

    def work(ranks: Ranks) -> Islands | None:
        if ranks.rank > 0:  # as caesar_rest.sourcefinder.ranks.serve: the task from rank 0
            task = ranks.bcast(None)
            return task.run(ranks, None)  # type: ignore[no-any-return]
        ranks.sent = ranks.serving = True  # as after the tiles
        finish = start_islands(image, ranks)
        time.sleep(0.5)  # rank 0 busy elsewhere: the other ranks take the grid's bands
        return finish()

    got = run_ranks(2, work)
    assert got[1] is None
    for name in FIELDS:
        np.testing.assert_array_equal(getattr(got[0], name), getattr(whole, name), err_msg=name)


def test_file_rows_reads_a_one_row_band(tmp_path: Path) -> None:
    # The last band of an image of k * LABEL_ROWS + 1 rows is one row (read_pixels once took
    # two at least): a rank that took it failed with "subimage ... is too small".
    image = _image(tmp_path)
    read = file_rows(str(image.path), image.hdu_index, image.origin, image.shape[1])
    for y0 in (0, 259):
        data, mask = read(y0, y0 + 1)
        assert data.shape == (1, 300)
        np.testing.assert_array_equal(data, image.data[y0 : y0 + 1])
        np.testing.assert_array_equal(mask, np.isnan(image.data[y0 : y0 + 1]))
