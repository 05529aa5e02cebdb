"""Tiles in a process pool only when it pays (issue 19), with the same catalogue either way."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from caesar_rest.sourcefinder import build_catalogues, find_sources, tiling
from caesar_rest.sourcefinder.options import FinderOptions, FitSettings
from caesar_rest.sourcefinder.tiling import POOL_MIN_PIXELS, Tile, pool_processes

from tests.sourcefinder.sf_synth import point_sources, write


def _grid(side: int, n: int) -> list[Tile]:
    """``n x n`` tiles of ``side`` pixels (no margins)."""
    return [
        Tile(i * side, (i + 1) * side, j * side, (j + 1) * side, 0, 0, 0, 0, j * n + i)
        for j in range(n)
        for i in range(n)
    ]


def test_pool_only_for_enough_tile_pixels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tiling, "usable_cpus", lambda: 4)
    small = _grid(200, 3)  # the test images' tiles: 0.36 Mpix in all
    assert pool_processes(small, list(range(9)), 2) == 1
    big = _grid(2048, 2)  # a 4096^2 image's automatic tiles
    assert POOL_MIN_PIXELS <= 4 * 2048 * 2048
    assert pool_processes(big, [0, 1, 2, 3], 2) == 2
    assert pool_processes(big, [0, 1, 2, 3], 8) == 4  # at most the CPUs (and the tiles)
    assert pool_processes(big, [0, 1], 8) == 2
    assert pool_processes(big, [3], 2) == 1  # one tile: this process
    assert pool_processes(big, [0, 1, 2, 3], 1) == 1
    # The threshold counts this machine's tiles only (an MPI rank's share).
    edge = _grid(512, 4)
    assert pool_processes(edge, [0, 1, 2, 3], 2) == 2
    assert pool_processes(edge, [0, 1, 2], 2) == 1


def test_pool_and_one_process_give_the_same_catalogue(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(7)
    srcs = [(float(x), float(y), 30e-4) for x, y in rng.uniform(20, 380, (20, 2))]
    path = write(tmp_path / "t.fits", point_sources(400, srcs, seed=7))
    opts = FinderOptions(fit=FitSettings(enabled=True)).with_(
        tile_split=True, tile_size=200, nproc=2, extended={"enabled": False}
    )
    used: list[int] = []
    run_local = tiling._run_local

    def spy(indices: list[int], nproc: int) -> list[tiling.Sources]:
        used.append(nproc)
        return run_local(indices, nproc)

    monkeypatch.setattr(tiling, "_run_local", spy)
    serial = build_catalogues(find_sources(path, opts))
    monkeypatch.setattr(tiling, "POOL_MIN_PIXELS", 0)
    pooled = build_catalogues(find_sources(path, opts))
    assert used == [1, 2]
    assert serial.components_dat == pooled.components_dat
    assert serial.islands_dat == pooled.islands_dat
