"""The caesar program's own steps (the shared run is tested in test_program.py)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from caesar_rest.apps import caesar_run


@pytest.mark.parametrize(("limit", "calls"), [(caesar_run.SMALL_IMAGE_PIXELS, 1), (0, 0)])
def test_small_images_keep_freed_blocks(
    synth_factory: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, limit: int, calls: int
) -> None:
    # A small image is processed with freed memory kept for reuse; a larger one is not.
    seen: list[bool] = []
    monkeypatch.setattr(caesar_run, "keep_freed_blocks", lambda: seen.append(True) or True)
    monkeypatch.setattr(caesar_run, "SMALL_IMAGE_PIXELS", limit)
    caesar_run.FINDER.load(synth_factory().path, {})
    assert len(seen) == calls


def _over_ranks(
    argv: list[str], threads: bool = True, tile: Callable[[Any, int], Any] | None = None
) -> list[int]:
    """``rank_main`` on two thread ranks (tests/support/thread_comm: MPI calls of two threads
    of a rank at once fail the run); rank 1 serves with ``tile`` (default: the app's)."""
    from caesar_rest.sourcefinder.ranks import serve

    from tests.support.thread_comm import run_ranks

    def one(ranks: Any) -> int:
        if ranks.rank > 0 and tile is not None:
            return serve(ranks, tile)
        return caesar_run.rank_main(ranks, argv)

    return run_ranks(2, one, threads=threads, hold_s=0.0002)


def test_two_thread_ranks_give_the_single_process_files(tmp_path: Path) -> None:
    # The tile dealer's thread runs beside rank 0's own tiles, then beside its catalogues
    # while rank 1 takes the classifier's bands, and rank 1 writes catalogue files: the files
    # are those of one process, and no two MPI calls of rank 0 overlap.
    from tests.sourcefinder.sf_synth import ranks_field

    image = ranks_field(tmp_path / "f.fits")
    args = ["--input", str(image), "--tilesplit", "--tilesize=140", "--nproc=1"]
    assert caesar_run.main([*args, "--outdir", str(tmp_path / "one")]) == 0
    assert _over_ranks([*args, "--outdir", str(tmp_path / "two")]) == [0, 0]
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["stats"]["n_ranks"] == 2 and "write_all" in summary["timings_s"]
    for name in ("catalog.csv", "components.csv", "islands.csv", "islands.vot", "islands.reg"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


@pytest.mark.filterwarnings("ignore:File may have been truncated")
@pytest.mark.parametrize("threads", [True, False])
def test_bad_input_after_the_early_job_over_thread_ranks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], threads: bool
) -> None:
    # The header reads (the job is sent early), the pixels do not: exit code 2 and the
    # message of one process; rank 1 is told that no tile is left and exits 0.
    from tests.sourcefinder.sf_synth import ranks_field

    whole = ranks_field(tmp_path / "f.fits").read_bytes()
    cut = tmp_path / "cut.fits"
    cut.write_bytes(whole[: len(whole) // 2])
    args = ["--input", str(cut), "--tilesplit", "--tilesize=140", "--nproc=1"]
    assert caesar_run.main([*args, "--outdir", str(tmp_path / "one")]) == 2
    alone = _errors(capsys.readouterr().err)
    assert len(alone) == 1 and "end early" in alone[0]
    assert _over_ranks([*args, "--outdir", str(tmp_path / "two")], threads) == [2, 0]
    assert _errors(capsys.readouterr().err) == alone


def test_a_rank_that_cannot_read_the_file_is_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Rank 0 loads the image, rank 1 cannot read its tiles (no such file on its node): exit
    # code 2 with rank 1's message, no abort.
    from caesar_rest.imaging.fits_image import ImageError

    from tests.sourcefinder.sf_synth import ranks_field

    def unreadable(job: Any, index: int) -> Any:
        raise ImageError(f"input image not found: {job.path}")

    image = ranks_field(tmp_path / "f.fits")
    args = ["--input", str(image), "--tilesplit", "--tilesize=140", "--nproc=1"]
    assert _over_ranks([*args, "--outdir", str(tmp_path / "two")], tile=unreadable) == [2, 0]
    assert _errors(capsys.readouterr().err) == [
        f"caesar_run: error: rank 1: input image not found: {image}"
    ]


def _errors(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("caesar_run: error:")]
