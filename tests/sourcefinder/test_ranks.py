"""Tiles over MPI ranks: launcher detection, tile reads from the file, and a 2-rank run of the
caesar app that gives the single-process catalogue (``mpiexec`` with mpi4py and OpenMPI)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from caesar_rest.imaging.fits_image import ImageError, load_image, read_pixels
from caesar_rest.sourcefinder.ranks import Ranks, TileJob, connect, launched_ranks, serve

from tests.sourcefinder.sf_synth import RMS, point_sources, ranks_field, write
from tests.support.paths import REPO
from tests.support.thread_comm import ThreadComm, _Shared, run_ranks

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


def _mpi() -> list[str]:
    mpiexec = _mpiexec()
    if mpiexec is None:
        if os.environ.get("CI") == "true":
            pytest.fail("mpiexec and mpi4py are required (requirements.lock, .ci/run)")
        pytest.skip("no mpiexec / mpi4py here")
    return [mpiexec, "--allow-run-as-root", "--oversubscribe", "-n", "2"]


def _launch(
    cmd: list[str], level: str = "multiple", timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """``cmd`` with mpi4py asking for the MPI thread level ``level`` (Open MPI gives it)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "MPI4PY_RC_THREAD_LEVEL": level}
    env.update(OMPI_MCA_btl_tcp_if_include="lo", OMPI_MCA_oob_tcp_if_include="lo")
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def _run(cmd: list[str], out: Path, level: str = "multiple") -> tuple[str, dict[str, Any]]:
    done = _launch(cmd, level)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    summary = json.loads((out / "summary.json").read_text())
    summary["stdout"] = done.stdout
    return (out / "catalog.csv").read_text(), summary


def test_two_ranks_give_the_single_process_catalogue(tmp_path: Path) -> None:
    mpi = _mpi()
    image = ranks_field(tmp_path / "f.fits")
    app = [sys.executable, "-m", "caesar_rest.apps.caesar_run", "--input", str(image)]
    one, s1 = _run([*app, "--outdir", str(tmp_path / "one"), *TILES, "--nproc=1"], tmp_path / "one")
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
    # MPI_THREAD_SERIALIZED: the dealer's thread and rank 0's classifier bands and writes
    # (their MPI calls one at a time under Ranks' lock) give the same files.
    out = tmp_path / "serialized"
    ser, s4 = _run([*mpi, *app, "--outdir", str(out), *TILES, "--nproc=1"], out, "serialized")
    assert "tiles dealt as the ranks ask" in s4["stdout"]
    assert "islands shared among 2 ranks" in s4["stdout"]
    assert ser == one
    for name in SAME:
        assert (tmp_path / "one" / name).read_bytes() == (out / name).read_bytes()


def _bad_image(tmp_path: Path, kind: str) -> Path:
    """A field whose header reads (the tile job is sent early) but whose pixels do not load:
    the data cut in half, or every pixel blank."""
    if kind == "blank":
        return write(tmp_path / "blank.fits", np.full((420, 420), np.nan))
    whole = ranks_field(tmp_path / "whole.fits").read_bytes()
    path = tmp_path / "cut.fits"
    path.write_bytes(whole[: len(whole) // 2])
    return path


def _errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("caesar_run: error:")]


@pytest.mark.parametrize(
    ("kind", "level"), [("cut", "multiple"), ("cut", "single"), ("blank", "serialized")]
)
def test_bad_input_after_the_early_job_ends_every_rank_as_one_process(
    tmp_path: Path, kind: str, level: str
) -> None:
    # Rank 0 sends the tile job from the header, then cannot load the pixels: exit code 2 and
    # the message of a run on one machine, every rank ended (no MPI_Abort, no hang).
    mpi = _mpi()
    image = _bad_image(tmp_path, kind)
    app = [sys.executable, "-m", "caesar_rest.apps.caesar_run", "--input", str(image)]
    args = ["--outdir", str(tmp_path / "out"), *TILES, "--nproc=1"]
    one = _launch([*app, *args], timeout=60)
    assert one.returncode == 2 and len(_errors(one.stderr)) == 1, one.stderr
    two = _launch([*mpi, *app, *args], level, timeout=60)
    assert two.returncode == 2, two.stdout[-2000:] + two.stderr[-2000:]
    assert _errors(two.stderr) == _errors(one.stderr)
    assert "MPI_ABORT" not in two.stderr and "Traceback" not in two.stdout + two.stderr


@pytest.mark.parametrize("size", [2, 3])
def test_tiles_are_dealt_as_the_ranks_ask_each_once(size: int) -> None:
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
    shared = _Shared(3)
    assert [list(Ranks(ThreadComm(shared, r), threads=False).deal(8)) for r in range(3)] == [
        [0, 3, 6],
        [1, 4, 7],
        [2, 5],
    ]


def test_rank_0_makes_no_collective_while_its_dealer_thread_runs() -> None:
    # Rank 0 meets the others once the dealing is done (they are told that no tile is left).
    shared = _Shared(2)
    rank0, rank1 = Ranks(ThreadComm(shared, 0)), Ranks(ThreadComm(shared, 1))
    mine = rank0.deal(3)
    assert next(mine) == 0
    with pytest.raises(RuntimeError, match="dealer thread"):
        rank0.bcast(None)
    assert list(rank1.deal(3)) == [1, 2]  # rank 1 told that none is left: the thread ends
    assert list(mine) == []


def test_the_mpi_calls_of_two_threads_are_one_at_a_time() -> None:
    # MPI_THREAD_SERIALIZED: calls made through Ranks.call never overlap (the thread comm
    # records overlapping calls; made directly, they do overlap).

    shared = _Shared(1, hold_s=0.002)
    ranks = Ranks(ThreadComm(shared, 0))

    def calls(call: Any) -> None:
        for _ in range(20):
            call(ranks.comm.iprobe, source=0, tag=1)

    def both(call: Any) -> None:
        threads = [threading.Thread(target=calls, args=(call,)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    both(ranks.call)
    assert shared.overlaps == []
    both(lambda fn, **kw: fn(**kw))
    assert shared.overlaps


def _job(n: int) -> TileJob:
    return TileJob("f.fits", 0, (0, 0), (10, 10), list(range(n)), None, None, frozenset())


@pytest.mark.parametrize(("threads", "deal"), [(True, True), (True, False), (False, False)])
def test_rank_0_failing_after_the_job_withdraws_the_tiles(threads: bool, deal: bool) -> None:
    # Rank 0 sends the job, then fails outside MPI (its image does not load): close() tells
    # the others that no tile is left (the dealer, or the word to stop a fixed round); they
    # end the tile they are at, send their sources and exit 0.
    done: list[int] = []

    def tile(job: TileJob, i: int) -> int:
        done.append(i)
        time.sleep(0.02)
        return i

    def work(ranks: Ranks) -> Any:
        if ranks.rank > 0:
            return serve(ranks, tile)
        ranks.send(_job(200), deal)
        time.sleep(0.2)  # loading, the others at work
        assert ranks.tiling
        ranks.close()
        return "closed"

    assert run_ranks(3, work, threads=threads, hold_s=0.0005) == ["closed", 0, 0]
    # Without a dealer begun at the send, the others wait for rank 0's first dealing.
    assert len(done) < 100 and (len(done) > 0) == (deal or not threads)


@pytest.mark.parametrize("threads", [True, False])
def test_a_rank_that_cannot_read_its_tiles_tells_rank_0(threads: bool) -> None:
    # A ValueError in another rank's tile (an unreadable file there) reaches rank 0 as bad
    # input after the gather, not as an abort; the others then exit 0.
    def tile(job: TileJob, i: int) -> int:
        raise ImageError("cannot read image data of HDU 0: cut short")

    def own(i: int) -> tuple[int, int]:
        time.sleep(0.01)  # rank 0 at its tiles: the other rank gets some
        return i, i

    def work(ranks: Ranks) -> Any:
        if ranks.rank > 0:
            return serve(ranks, tile)
        ranks.send(_job(40), deal=True)
        mine = [own(i) for i in ranks.tiles(40)]
        with pytest.raises(ValueError, match=r"^rank \d: cannot read image data"):
            ranks.gather_tiles(mine)
        assert not ranks.tiling and ranks.serving
        ranks.close()
        return "reported"

    assert run_ranks(2, work, threads=threads) == ["reported", 0]
