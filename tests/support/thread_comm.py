"""An in-process stand-in for an mpi4py communicator: ranks as threads.

:func:`run_ranks` runs ``work(ranks)`` on ``size`` threads, each with a
:class:`~caesar_rest.sourcefinder.ranks.Ranks` over a :class:`ThreadComm` that implements the
collectives the ranks' tasks use (``bcast``, ``gather``, ``allgather``, ``Ibarrier``,
``Abort``) and the tile dealer's messages (``send``, ``irecv``), so the tasks' sharing can
be tested without ``mpiexec``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from caesar_rest.sourcefinder.ranks import Ranks


class _Shared:
    def __init__(self, size: int):
        self.size = size
        self.barrier = threading.Barrier(size, timeout=60)
        self.slots: list[Any] = [None] * size
        self.lock = threading.Lock()
        #: Point-to-point messages by (source, dest, tag), in the order sent.
        self.boxes: dict[tuple[int, int, int], list[Any]] = {}


class _Receive:
    """A posted receive: done once a message of its source and tag has arrived."""

    def __init__(self, shared: _Shared, key: tuple[int, int, int]):
        self.shared = shared
        self.key = key

    def test(self) -> tuple[bool, Any]:
        with self.shared.lock:
            box = self.shared.boxes.get(self.key)
            if not box:
                return False, None
            return True, box.pop(0)


class _Done:
    """A completed request."""

    def Test(self) -> bool:  # noqa: N802
        return True


class ThreadComm:
    """One rank's view of a group of threads (collectives in the same order on all, and
    messages)."""

    def __init__(self, shared: _Shared, rank: int):
        self.shared = shared
        self.rank = rank

    def Get_rank(self) -> int:  # noqa: N802 (mpi4py's name)
        return self.rank

    def Get_size(self) -> int:  # noqa: N802
        return self.shared.size

    def allgather(self, value: Any) -> list[Any]:
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
        with self.shared.lock:
            self.shared.boxes.setdefault((self.rank, dest, tag), []).append(value)

    def irecv(self, source: int, tag: int = 0) -> _Receive:
        return _Receive(self.shared, (source, self.rank, tag))

    def Ibarrier(self) -> _Done:  # noqa: N802
        self.shared.barrier.wait()
        return _Done()

    def Abort(self, code: int) -> None:  # noqa: N802
        self.shared.barrier.abort()
        raise RuntimeError(f"aborted ({code})")


def run_ranks(size: int, work: Callable[[Ranks], Any]) -> list[Any]:
    """``work(ranks)`` on ``size`` threads; every rank's result (an exception re-raised)."""
    shared = _Shared(size)
    results: list[Any] = [None] * size
    errors: list[BaseException] = []

    def one(rank: int) -> None:
        try:
            results[rank] = work(Ranks(ThreadComm(shared, rank)))
        except BaseException as exc:  # noqa: BLE001 (re-raised below)
            errors.append(exc)
            shared.barrier.abort()

    # Daemon threads: a rank left waiting for one that failed (mpirun would abort it) must not
    # keep the test process alive (a failing test hung a CI run at exit this way).
    threads = [threading.Thread(target=one, args=(r,), daemon=True) for r in range(size)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 120
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        if errors:  # the others get a few seconds to end, then the failure is reported
            deadline = min(deadline, time.monotonic() + 5)
        for t in threads:
            t.join(timeout=0.05)
    if errors:
        raise errors[0]
    waiting = [r for r, t in enumerate(threads) if t.is_alive()]
    if waiting:
        raise AssertionError(f"ranks {waiting} still running after 120 s")
    return results
