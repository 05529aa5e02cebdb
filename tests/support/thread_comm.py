"""An in-process stand-in for an mpi4py communicator: ranks as threads.

:func:`run_ranks` runs ``work(ranks)`` on ``size`` threads, each with a
:class:`~caesar_rest.sourcefinder.ranks.Ranks` over a :class:`ThreadComm` that implements the
collectives the ranks' tasks use (``bcast``, ``gather``, ``allgather``, ``Ibarrier``,
``Abort``) and the tile dealer's messages (``send``, ``irecv``, ``iprobe``, ``recv``), so the
tasks' sharing can be tested without ``mpiexec``.

Each rank's communicator also checks ``MPI_THREAD_SERIALIZED``: a call (or a request's test)
begun while another thread of the same rank is inside one is recorded in ``overlaps``, and
:func:`run_ranks` fails on any (``hold_s`` keeps each call open that long, so that overlaps
are not missed).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from caesar_rest.sourcefinder.ranks import Ranks


class _Shared:
    def __init__(self, size: int, hold_s: float = 0.0):
        self.size = size
        self.hold_s = hold_s
        self.barrier = threading.Barrier(size, timeout=60)
        self.slots: list[Any] = [None] * size
        self.lock = threading.Lock()
        #: Point-to-point messages by (source, dest, tag), in the order sent.
        self.boxes: dict[tuple[int, int, int], list[Any]] = {}
        #: Calls of a rank begun while another thread of that rank was in one.
        self.overlaps: list[str] = []


class _Receive:
    """A posted receive: done once a message of its source and tag has arrived."""

    def __init__(self, comm: ThreadComm, key: tuple[int, int, int]):
        self.comm = comm
        self.key = key

    def test(self) -> tuple[bool, Any]:
        with self.comm.inside("test"):
            return self.comm.take(self.key)


class _Done:
    """A completed request."""

    def __init__(self, comm: ThreadComm):
        self.comm = comm

    def Test(self) -> bool:  # noqa: N802
        with self.comm.inside("Test"):
            return True


class ThreadComm:
    """One rank's view of a group of threads (collectives in the same order on all, and
    messages)."""

    def __init__(self, shared: _Shared, rank: int):
        self.shared = shared
        self.rank = rank
        self._guard = threading.Lock()
        self._in: threading.Thread | None = None

    @contextmanager
    def inside(self, name: str) -> Iterator[None]:
        """A call of this rank's MPI (records an overlap with another thread's call)."""
        me = threading.current_thread()
        with self._guard:
            if self._in is not None and self._in is not me:
                self.shared.overlaps.append(f"rank {self.rank}: {name} during {self._in.name}")
            outer, self._in = self._in, me
        try:
            if self.shared.hold_s:
                time.sleep(self.shared.hold_s)
            yield
        finally:
            with self._guard:
                self._in = outer

    def take(self, key: tuple[int, int, int]) -> tuple[bool, Any]:
        with self.shared.lock:
            box = self.shared.boxes.get(key)
            if not box:
                return False, None
            return True, box.pop(0)

    def Get_rank(self) -> int:  # noqa: N802 (mpi4py's name)
        return self.rank

    def Get_size(self) -> int:  # noqa: N802
        return self.shared.size

    def allgather(self, value: Any) -> list[Any]:
        with self.inside("allgather"):
            self.shared.slots[self.rank] = value
            self.shared.barrier.wait()
            out = list(self.shared.slots)
            self.shared.barrier.wait()
            return out

    def gather(self, value: Any, root: int = 0) -> list[Any] | None:
        out = self.allgather(value)
        return out if self.rank == root else None

    def bcast(self, value: Any, root: int = 0) -> Any:
        return self.allgather(value)[root]

    def send(self, value: Any, dest: int, tag: int = 0) -> None:
        with self.inside("send"), self.shared.lock:
            self.shared.boxes.setdefault((self.rank, dest, tag), []).append(value)

    def irecv(self, source: int, tag: int = 0) -> _Receive:
        with self.inside("irecv"):
            return _Receive(self, (source, self.rank, tag))

    def iprobe(self, source: int, tag: int = 0) -> bool:
        with self.inside("iprobe"), self.shared.lock:
            return bool(self.shared.boxes.get((source, self.rank, tag)))

    def recv(self, source: int, tag: int = 0) -> Any:
        with self.inside("recv"):
            while True:
                done, value = self.take((source, self.rank, tag))
                if done:
                    return value
                time.sleep(0.001)

    def Ibarrier(self) -> _Done:  # noqa: N802
        with self.inside("Ibarrier"):
            self.shared.barrier.wait()
            return _Done(self)

    def Abort(self, code: int) -> None:  # noqa: N802
        self.shared.barrier.abort()
        raise RuntimeError(f"aborted ({code})")


def run_ranks(
    size: int, work: Callable[[Ranks], Any], threads: bool = True, hold_s: float = 0.0
) -> list[Any]:
    """``work(ranks)`` on ``size`` threads; every rank's result (an exception re-raised).

    ``threads``: the ranks' :attr:`~caesar_rest.sourcefinder.ranks.Ranks.threads` (false: no
    dealer thread, fixed rounds); ``hold_s``: see the module. Overlapping MPI calls of a rank
    fail the run.
    """
    shared = _Shared(size, hold_s)
    results: list[Any] = [None] * size
    errors: list[BaseException] = []

    def one(rank: int) -> None:
        try:
            results[rank] = work(Ranks(ThreadComm(shared, rank), threads))
        except BaseException as exc:  # noqa: BLE001 (re-raised below)
            errors.append(exc)
            shared.barrier.abort()

    # Daemon threads: a rank left waiting for one that failed (mpirun would abort it) must not
    # keep the test process alive (a failing test hung a CI run at exit this way).
    threads_ = [threading.Thread(target=one, args=(r,), daemon=True) for r in range(size)]
    for t in threads_:
        t.start()
    deadline = time.monotonic() + 120
    while any(t.is_alive() for t in threads_) and time.monotonic() < deadline:
        if errors:  # the others get a few seconds to end, then the failure is reported
            deadline = min(deadline, time.monotonic() + 5)
        for t in threads_:
            t.join(timeout=0.05)
    if errors:
        raise errors[0]
    waiting = [r for r, t in enumerate(threads_) if t.is_alive()]
    if waiting:
        raise AssertionError(f"ranks {waiting} still running after 120 s")
    assert not shared.overlaps, f"MPI calls of two threads at once: {shared.overlaps[:5]}"
    return results
