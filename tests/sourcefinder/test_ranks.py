"""Tiles over MPI ranks: launcher detection, tile reads from the file, and a 2-rank run of the
caesar app that gives the single-process catalogue (``mpiexec`` with mpi4py and OpenMPI)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from caesar_rest.imaging.fits_image import load_image, read_pixels
from caesar_rest.sourcefinder.ranks import connect, launched_ranks

from tests.sourcefinder.sf_synth import RMS, point_sources, ranks_field, write
from tests.support.paths import REPO

#: The options of the runs: 9 tiles of 140 px on a 420 x 420 field (classes and previews on:
#: the classifier's islands and the catalogue files are shared among the ranks too).
TILES = ["--tilesplit", "--tilesize=140"]
#: Files that must be the same with one rank and two.
SAME = ("components.csv", "islands.csv", "islands.vot", "catalog.reg", "islands.reg")


def test_launched_ranks_from_the_launchers_variables() -> None:
    assert launched_ranks({}) == 1
    assert launched_ranks({"OMPI_COMM_WORLD_SIZE": "4"}) == 4
    assert launched_ranks({"PMI_SIZE": "2"}) == 2
    assert launched_ranks({"OMPI_COMM_WORLD_SIZE": "1"}) == 1
    # SLURM_NTASKS alone is a batch script's allocation, not a step's ranks.
    assert launched_ranks({"SLURM_NTASKS": "8"}) == 1
    assert launched_ranks({"SLURM_NTASKS": "8", "SLURM_STEP_ID": "0"}) == 8
    assert connect({}) is None  # outside MPI, mpi4py is not even imported


def test_read_pixels_is_the_loaded_image(tmp_path: Path) -> None:
    img = point_sources(120, [(60.0, 50.0, 20 * RMS)], seed=2).astype(np.float32)
    img[10:20, 30:40] = np.nan
    img[5, 7] = np.inf
    path = write(tmp_path / "p.fits", img)
    whole = load_image(path)
    box = read_pixels(path, 0, (25, 70, 3, 60))
    np.testing.assert_array_equal(box, whole.data[3:60, 25:70])
    assert box.dtype == np.float32 and np.isnan(box[7:17, 5:15]).all()
    assert np.isnan(read_pixels(path, 0, (0, 10, 0, 10))[5, 7])


def _mpiexec() -> str | None:
    here = Path(sys.executable).parent / "mpiexec"
    found = str(here) if here.exists() else shutil.which("mpiexec")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    return found


def _run(cmd: list[str], out: Path) -> tuple[str, dict[str, Any]]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    env.update(OMPI_MCA_btl_tcp_if_include="lo", OMPI_MCA_oob_tcp_if_include="lo")
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    summary["stdout"] = done.stdout
    return (out / "catalog.csv").read_text(), summary


def test_two_ranks_give_the_single_process_catalogue(tmp_path: Path) -> None:
    mpiexec = _mpiexec()
    if mpiexec is None:
        if os.environ.get("CI") == "true":
            pytest.fail("mpiexec and mpi4py are required (requirements.lock, .ci/run)")
        pytest.skip("no mpiexec / mpi4py here")
    image = ranks_field(tmp_path / "f.fits")
    app = [sys.executable, "-m", "caesar_rest.apps.caesar_run", "--input", str(image)]
    one, s1 = _run([*app, "--outdir", str(tmp_path / "one"), *TILES, "--nproc=1"], tmp_path / "one")
    mpi = [mpiexec, "--allow-run-as-root", "--oversubscribe", "-n", "2"]
    two, s2 = _run(
        [*mpi, *app, "--outdir", str(tmp_path / "two"), *TILES, "--nproc=1"], tmp_path / "two"
    )
    assert s1["n_tiles"] == s2["n_tiles"] == 9
    assert (s1["stats"]["n_ranks"], s2["stats"]["n_ranks"]) == (1, 2)
    assert s1["n_sources"] == s2["n_sources"] == 31
    assert one == two and "class_score" in one.splitlines()[0]
    assert s1["classes"] == s2["classes"]
    # The classifier's islands and the catalogue files were shared (rank 1 wrote some).
    assert "islands shared among 2 ranks" in s2["stdout"]
    assert "write_all" in s2["timings_s"] and "write_all" not in s1["timings_s"]
    assert sorted(s1["files"].items()) == sorted(s2["files"].items())
    for name in SAME:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    # no-mpi: rank 0 alone, the same catalogue; the other rank only waits.
    out = tmp_path / "solo"
    solo, s3 = _run([*mpi, *app, "--outdir", str(out), *TILES, "--nproc=1", "--no-mpi"], out)
    assert s3["stats"]["n_ranks"] == 1
    assert solo == one


@pytest.mark.parametrize("size", [2, 3])
def test_tiles_are_dealt_as_the_ranks_ask_each_once(size: int) -> None:
    import time

    from caesar_rest.sourcefinder.ranks import Ranks

    from tests.support.thread_comm import run_ranks

    def work(ranks: Ranks) -> list[int]:
        got = []
        for i in ranks.deal(40):
            got.append(i)
            # Rank 0 slow, the others fast: the fast ones take most of the tiles.
            time.sleep(0.05 if ranks.rank == 0 else 0.002)
        return got

    got = run_ranks(size, work)
    assert sorted(i for part in got for i in part) == list(range(40))
    assert all(part == sorted(part) for part in got)
    assert len(got[0]) < 40 // size < min(len(part) for part in got[1:])


def test_without_threads_the_tiles_go_round() -> None:
    from caesar_rest.sourcefinder.ranks import Ranks

    from tests.support.thread_comm import ThreadComm, _Shared

    shared = _Shared(3)
    assert [list(Ranks(ThreadComm(shared, r), threads=False).deal(8)) for r in range(3)] == [
        [0, 3, 6],
        [1, 4, 7],
        [2, 5],
    ]


def test_rank_0_makes_no_collective_while_its_dealer_thread_runs() -> None:
    # Under MPI_THREAD_SERIALIZED only one thread may call MPI at a time.
    from caesar_rest.sourcefinder.ranks import Ranks

    from tests.support.thread_comm import ThreadComm, _Shared

    shared = _Shared(2)
    rank0, rank1 = Ranks(ThreadComm(shared, 0)), Ranks(ThreadComm(shared, 1))
    mine = rank0.deal(3)
    assert next(mine) == 0
    with pytest.raises(RuntimeError, match="dealer thread"):
        rank0.bcast(None)
    assert list(rank1.deal(3)) == [1, 2]  # rank 1 told that none is left: the thread ends
    assert list(mine) == []
