"""The streaming multipart receiver, on its own."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from caesar_rest.storage import upload
from caesar_rest.storage.upload import (
    UploadError,
    UploadTooLarge,
    receive_upload,
    sweep_incoming,
)

from tests.support.multipart import form_body

BOUNDARY = "XyZ123"
CTYPE = f"multipart/form-data; boundary={BOUNDARY}"


def body(payload: bytes, tag: str = "hello") -> bytes:
    return form_body(payload, BOUNDARY, "img.fits", tag)


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def run(data: bytes, tmp: Path, limit: int = 10**9, chunk: int = 7919, buf: int = 65536):  # type: ignore[no-untyped-def]
    return asyncio.run(receive_upload(chunks(data, chunk), CTYPE, tmp, limit, buffer_size=buf))


@pytest.mark.parametrize("chunk", [1, 13, 7919, 1 << 20])
def test_file_and_fields_received_intact(tmp_path: Path, chunk: int) -> None:
    payload = bytes(range(256)) * 1000 + b"\r\n--XyZ12 almost a boundary\r\n"
    got = run(body(payload), tmp_path, chunk=chunk, buf=1000)
    assert got.temp_path.read_bytes() == payload
    assert got.sha256 == hashlib.sha256(payload).hexdigest()
    assert got.size == len(payload) and got.fields == {"tag": "hello"}
    assert got.client_filename == "img.fits"
    got.discard()
    assert not got.temp_path.exists()


def test_limit_removes_partial_file(tmp_path: Path) -> None:
    with pytest.raises(UploadTooLarge):
        run(body(b"a" * 100_000), tmp_path, limit=50_000, buf=4096)
    assert list((tmp_path / ".incoming").iterdir()) == []


def test_malformed_bodies(tmp_path: Path) -> None:
    with pytest.raises(UploadError, match="no file part"):
        run(f"--{BOUNDARY}--\r\n".encode(), tmp_path)
    with pytest.raises(UploadError, match="empty"):
        run(body(b""), tmp_path)
    with pytest.raises(UploadError, match="multipart"):
        asyncio.run(receive_upload(chunks(b"{}", 2), "application/json", tmp_path, 10))
    assert list((tmp_path / ".incoming").iterdir()) == []


def test_sweep_keeps_live_processes_files(tmp_path: Path) -> None:
    import os
    import socket
    import time

    inc = tmp_path / ".incoming"
    inc.mkdir()
    host = socket.gethostname()
    mine = inc / f"{host}-{os.getpid()}-a.part"
    dead = inc / f"{host}-999999999-b.part"
    other_host = inc / "elsewhere-1-c.part"  # another instance sharing the data folder
    old_other = inc / "crashed-1-d.part"
    for p in (mine, dead, other_host, old_other):
        p.write_bytes(b"x")
    past = time.time() - 7200
    os.utime(old_other, (past, past))
    held = os.open(mine, os.O_RDONLY)  # a live writer holds its file's lock
    try:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert sweep_incoming(tmp_path) == 2
        assert mine.exists() and other_host.exists()
        assert not dead.exists() and not old_other.exists()
    finally:
        os.close(held)
    assert sweep_incoming(tmp_path, all_files=True) == 2


def test_sweep_removes_a_dead_writers_file_with_my_pid(tmp_path: Path) -> None:
    """Issue 14 item 7: a restarted server with the same pid (a container) still sweeps."""
    import socket

    inc = tmp_path / ".incoming"
    inc.mkdir()
    left = inc / f"{socket.gethostname()}-{os.getpid()}-old.part"  # our pid, no writer
    left.write_bytes(b"x" * 1000)
    live = upload._HashingWriter(inc / f"{socket.gethostname()}-{os.getpid()}-new.part")
    live.write([memoryview(b"partial")])
    assert sweep_incoming(tmp_path) == 1
    assert not left.exists() and live.path.exists()  # the live writer's file stays
    live.close()
    assert sweep_incoming(tmp_path) == 0  # closed but not yet moved into place: still held
    live.part_lock.release()
    assert sweep_incoming(tmp_path) == 1 and not live.path.exists()


def test_received_upload_holds_its_lock_until_moved(tmp_path: Path) -> None:
    got = run(body(b"payload"), tmp_path)
    assert sweep_incoming(tmp_path) == 0 and got.temp_path.exists()
    got.release()
    assert sweep_incoming(tmp_path) == 1


def test_durable_upload_is_written_back_while_it_arrives(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ranges: list[tuple[int, int]] = []
    fsyncs: list[int] = []
    real_start, real_fsync = upload._START_WRITEBACK, os.fsync
    # The C library's sync_file_range is there on Linux (CI and the service's machines).
    assert real_start is not None

    def start(fd: int, offset: int, nbytes: int) -> object:
        ranges.append((offset, nbytes))
        return real_start(fd, offset, nbytes)

    def fsync(fd: int) -> None:
        fsyncs.append(fd)
        real_fsync(fd)

    monkeypatch.setattr(upload, "_START_WRITEBACK", start)
    monkeypatch.setattr(upload.os, "fsync", fsync)
    monkeypatch.setattr(upload, "WRITEBACK_EVERY", 100_000)
    payload = bytes(range(256)) * 1500  # 384,000 bytes in batches of ~71 kB
    got = asyncio.run(
        receive_upload(chunks(body(payload), 7919), CTYPE, tmp_path, 10**9, 65536, durable=True)
    )
    assert got.temp_path.read_bytes() == payload
    # Consecutive ranges from the start, each at least WRITEBACK_EVERY, then one fsync.
    assert len(ranges) >= 2 and ranges[0][0] == 0
    assert all(a + n == b for (a, n), (b, _) in zip(ranges, ranges[1:], strict=False))
    assert all(n >= 100_000 for _, n in ranges) and len(fsyncs) == 1
    ranges.clear()
    fsyncs.clear()
    run(body(payload), tmp_path)  # not durable: nothing asked of the disk
    assert ranges == [] and fsyncs == []


@pytest.mark.parametrize("mapped", [True, False])
def test_large_batches_hashed_from_the_written_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mapped: bool
) -> None:
    """Batches of at least MAP_HASH_MIN bytes are hashed back from the file's memory map
    (from unaligned offsets: the part starts after the form's headers); where the file
    cannot be mapped, they are hashed part by part, with the same result."""
    calls: list[int] = []
    real_mmap = upload.mmap.mmap

    def spy(fd: int, length: int, **kw: int) -> object:
        calls.append(length)
        if not mapped:
            raise OSError(19, "No such device")
        return real_mmap(fd, length, **kw)

    monkeypatch.setattr(upload.mmap, "mmap", spy)
    payload = os.urandom(3 * upload.MAP_HASH_MIN + 12345)
    got = run(body(payload), tmp_path, chunk=65521, buf=upload.MAP_HASH_MIN + 7)
    assert got.temp_path.read_bytes() == payload
    assert got.sha256 == hashlib.sha256(payload).hexdigest()
    assert calls if mapped else len(calls) == 1  # after one failure, no more tries
    got.discard()


def test_limit_and_broken_connection_mid_stream_leave_nothing(tmp_path: Path) -> None:
    """Large (mapped) batches: over the limit mid-stream, or a client gone mid-stream, the
    temporary file goes and the error is the caller's to answer (413 / 400 above)."""
    from starlette.requests import ClientDisconnect

    big = os.urandom(4 * upload.MAP_HASH_MIN)
    with pytest.raises(UploadTooLarge):
        run(body(big), tmp_path, limit=len(big) // 2, chunk=65536, buf=upload.MAP_HASH_MIN)
    assert list((tmp_path / ".incoming").iterdir()) == []

    async def cut() -> AsyncIterator[bytes]:
        data = body(big)
        async for chunk in chunks(data[: len(data) // 2], 65536):
            yield chunk
        raise ClientDisconnect

    with pytest.raises(ClientDisconnect):
        asyncio.run(
            receive_upload(cut(), CTYPE, tmp_path, 10**9, upload.MAP_HASH_MIN, durable=True)
        )
    assert list((tmp_path / ".incoming").iterdir()) == []


def test_write_error_in_the_worker_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failed write (full disk) in the worker thread is the upload's error; the temporary
    file goes."""
    import errno

    def full(fd: int, parts: list[memoryview]) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(upload.os, "writev", full)
    with pytest.raises(OSError, match="space"):
        asyncio.run(
            receive_upload(
                chunks(body(os.urandom(1 << 20)), 65536), CTYPE, tmp_path, 10**9, 65536, True
            )
        )
    assert list((tmp_path / ".incoming").iterdir()) == []


def test_truncated_and_bad_multipart_leave_nothing(tmp_path: Path) -> None:
    """A body cut inside the file part or before the closing boundary (python-multipart's
    finalize accepts both), a part header without its colon, and a body that is not
    multipart at all are refused; no file stays."""
    from python_multipart.exceptions import MultipartParseError

    data = body(os.urandom(300_000))
    with pytest.raises(UploadError, match="ends before"):
        run(data[: len(data) // 2], tmp_path)
    with pytest.raises(UploadError, match="ends before"):
        run(data[: -len(f"--{BOUNDARY}--\r\n")], tmp_path)  # the closing boundary missing
    with pytest.raises(UploadError, match="ends before"):
        run(data[:-5], tmp_path, chunk=65536, buf=1 << 20)  # cut inside the closing boundary
    broken_header = f"--{BOUNDARY}\r\nContent-Disposition form-data\r\n\r\nx".encode()
    with pytest.raises((UploadError, MultipartParseError)):
        run(broken_header, tmp_path)
    with pytest.raises((UploadError, MultipartParseError)):
        run(b"not a multipart body at all" * 1000, tmp_path)
    assert list((tmp_path / ".incoming").iterdir()) == []


@pytest.mark.parametrize("durable", [True, False])
def test_over_limit_by_less_than_a_batch_is_refused(tmp_path: Path, durable: bool) -> None:
    """The limit counts every byte received, also those of a batch still being written (a
    file over the limit by less than one batch was accepted before)."""
    limit = 2 * 65536 + 7
    for size in (limit + 1, limit + 65536, 3 * 65536):
        with pytest.raises(UploadTooLarge):
            asyncio.run(
                receive_upload(
                    chunks(body(os.urandom(size)), 4099), CTYPE, tmp_path, limit, 65536, durable
                )
            )
    got = asyncio.run(
        receive_upload(chunks(body(os.urandom(limit)), 4099), CTYPE, tmp_path, limit, 65536)
    )
    assert got.size == limit
    got.discard()
    assert list((tmp_path / ".incoming").iterdir()) == []


# --- the direct receiver (the body read from the connection, caesar_rest.httpserver) ----------
class PairSource:
    """A :class:`~caesar_rest.storage.direct.DirectSource` on one end of a socket pair: the
    first ``buffered`` bytes as if the HTTP parser had read them, the rest sent by a thread
    (then the sending end is closed, or held open with ``hold``)."""

    def __init__(self, data: bytes, declared: int, buffered: int, hold: bool = False) -> None:
        import socket
        import threading

        self.ours, theirs = socket.socketpair()
        self.ours.settimeout(0.5)  # the server's body timeout
        buffered = min(buffered, len(data))
        self.buffered = [data[:buffered]] if buffered else []
        self.remaining = declared - buffered
        self.released: list[bool] = []
        self.refused: list[bool] = []
        self.claimed = False

        def send() -> None:
            with contextlib.suppress(OSError):
                theirs.sendall(data[buffered:])
            if hold:
                time.sleep(2)
            theirs.close()

        self.sender = threading.Thread(target=send, daemon=True)
        self.sender.start()

    def claim(self) -> bool:
        self.claimed = True
        return True

    def recv_into(self, view: memoryview) -> int:
        n = self.ours.recv_into(view, min(len(view), self.remaining))
        if n == 0:
            raise ConnectionAbortedError("closed")
        self.remaining -= n
        return n

    def interrupt(self) -> None:
        import socket

        self.ours.shutdown(socket.SHUT_RD)

    def release(self, timed_out: bool, refused: bool = False) -> None:
        self.released.append(timed_out)
        self.refused.append(refused)
        self.ours.close()


def run_direct(
    data: bytes,
    tmp: Path,
    limit: int = 10**9,
    declared: int | None = None,
    buffered: int = 1000,
    hold: bool = False,
    durable: bool = True,
) -> tuple[PairSource, upload.ReceivedUpload | BaseException]:
    src = PairSource(data, len(data) if declared is None else declared, buffered, hold)
    try:
        got: upload.ReceivedUpload | BaseException = asyncio.run(
            receive_upload(chunks(b"", 1), CTYPE, tmp, limit, durable=durable, direct=src)
        )
    except Exception as exc:
        got = exc
    src.sender.join(5)
    return src, got


@pytest.fixture
def small_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Receive buffers of 64 KiB: a body of a few hundred KiB rotates through all of them."""
    monkeypatch.setattr(upload, "DIRECT_BUFFER", 65536)


@pytest.mark.parametrize("buffered", [0, 1, 150, 70_000])
def test_direct_file_and_fields_received_intact(
    tmp_path: Path, small_buffers: None, buffered: int
) -> None:
    """Read from the connection: the same file, checksum and fields as the ASGI path, whatever
    part the server had read before (none, inside the part headers, inside the file)."""
    payload = os.urandom(300_000) + b"\r\n--XyZ12 almost a boundary\r\n"
    src, got = run_direct(body(payload), tmp_path, buffered=buffered)
    assert isinstance(got, upload.ReceivedUpload), got
    assert got.temp_path.read_bytes() == payload
    assert got.sha256 == hashlib.sha256(payload).hexdigest()
    assert got.size == len(payload) and got.fields == {"tag": "hello"}
    assert src.claimed and src.released == [False] and src.remaining == 0
    got.discard()
    assert list((tmp_path / ".incoming").iterdir()) == []


def test_direct_refusals_read_the_rest_and_leave_nothing(
    tmp_path: Path, small_buffers: None
) -> None:
    """Over the limit, cut before the closing boundary, not a form, empty: refused as on the
    ASGI path, the rest of the declared body read (the connection stays usable), no file."""
    from python_multipart.exceptions import MultipartParseError

    data = body(os.urandom(400_000))
    cases: list[tuple[bytes, int, type[Exception], str]] = [
        (data, 200_000, UploadTooLarge, "larger than the limit"),
        (data[: -len(f"--{BOUNDARY}--\r\n")], 10**9, UploadError, "ends before"),
        (data[:-5], 10**9, UploadError, "ends before"),
        (body(b""), 10**9, UploadError, "empty"),
        (b"not a multipart body at all" * 10_000, 10**9, MultipartParseError, "boundary"),
    ]
    for sent, limit, error, message in cases:
        src, got = run_direct(sent, tmp_path, limit=limit)
        assert isinstance(got, error) and message in str(got), got
        assert src.remaining == 0 and src.released == [False] and src.refused == [True]
    assert list((tmp_path / ".incoming").iterdir()) == []


def test_direct_refusal_with_a_long_rest_leaves_it_unread(
    tmp_path: Path, small_buffers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A body refused with more than DRAIN_MAX bytes still to come: the rest is not read (the
    server answers and closes instead); nothing is kept."""
    monkeypatch.setattr(upload, "DRAIN_MAX", 100_000)
    sent = b"not a multipart body at all" * 40_000  # about 1 MB
    src, got = run_direct(sent, tmp_path)
    assert isinstance(got, Exception) and "boundary" in str(got), got
    assert src.remaining > 100_000 and src.refused == [True] and src.released == [False]
    assert list((tmp_path / ".incoming").iterdir()) == []


def test_direct_cancel_ends_a_read_in_progress(tmp_path: Path, small_buffers: None) -> None:
    """A cancelled upload (server shutdown) whose client is silent ends at once, not at the
    body timeout: the read in progress is interrupted; the connection is closed, no file."""

    async def cancel_soon(src: PairSource) -> float:
        task = asyncio.ensure_future(
            receive_upload(chunks(b"", 1), CTYPE, tmp_path, 10**9, durable=True, direct=src)
        )
        await asyncio.sleep(0.3)
        start = time.monotonic()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return time.monotonic() - start

    data = body(os.urandom(300_000))
    src = PairSource(data[:200_000], len(data), 1000, hold=True)  # then silent for 2 s
    src.ours.settimeout(30)  # the body timeout: far longer than the wait allowed here
    waited = asyncio.run(cancel_soon(src))
    src.sender.join(5)
    assert waited < 1.0, waited
    assert src.released == [False] and src.refused == [False] and src.remaining > 0
    assert list((tmp_path / ".incoming").iterdir()) == []


def test_direct_client_gone_or_silent_leaves_nothing(tmp_path: Path, small_buffers: None) -> None:
    """A connection closed before the declared length, or silent past the body timeout: the
    upload ends with ClientGone (the server then closes, with a 408 after the timeout)."""
    data = body(os.urandom(300_000))
    src, got = run_direct(data[:200_000], tmp_path, declared=len(data))
    assert isinstance(got, upload.ClientGone) and src.released == [False]
    src, got = run_direct(data[:200_000], tmp_path, declared=len(data), hold=True)
    assert isinstance(got, upload.ClientGone) and "timeout" in str(got)
    assert src.released == [True]
    assert list((tmp_path / ".incoming").iterdir()) == []


@pytest.mark.parametrize("direct_io", [True, False])
def test_direct_write_error_leaves_nothing(
    tmp_path: Path, small_buffers: None, monkeypatch: pytest.MonkeyPatch, direct_io: bool
) -> None:
    """A failed write (full disk) in the writer thread is the upload's error (507 above),
    with ``O_DIRECT`` writes or without."""
    import errno

    def full(fd: int, *args: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(upload.os, "writev", full)
    monkeypatch.setattr(upload.os, "pwrite", full)
    if not direct_io:
        monkeypatch.setattr(upload, "_open_direct_io", lambda path: -1)
    src, got = run_direct(body(os.urandom(300_000)), tmp_path)
    assert isinstance(got, OSError) and got.errno == errno.ENOSPC
    assert src.remaining == 0
    assert list((tmp_path / ".incoming").iterdir()) == []


def test_direct_declined_reads_the_chunks(tmp_path: Path) -> None:
    """A server that cannot hand the connection over: the chunks are read as before."""

    class Declines(PairSource):
        def claim(self) -> bool:
            return False

    payload = os.urandom(5000)
    src = Declines(b"", 0, 0)
    got = asyncio.run(
        receive_upload(chunks(body(payload), 999), CTYPE, tmp_path, 10**9, direct=src)
    )
    assert got.temp_path.read_bytes() == payload and src.released == []
    got.discard()


# --- O_DIRECT writes of the direct receiver ------------------------------------------------
class WriteSpy:
    """Counts the bytes written by ``os.pwrite`` with and without ``O_DIRECT``, and by
    ``os.writev`` (the page-cache path)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.direct = 0
        self.plain = 0
        self.writev = 0
        real_pwrite, real_writev = os.pwrite, os.writev

        def pwrite(fd: int, data: memoryview, offset: int) -> int:
            n = real_pwrite(fd, data, offset)
            if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
                self.direct += n
            else:
                self.plain += n
            return n

        def writev(fd: int, parts: list[memoryview]) -> int:
            n = real_writev(fd, parts)
            self.writev += n
            return n

        monkeypatch.setattr(upload.os, "pwrite", pwrite)
        monkeypatch.setattr(upload.os, "writev", writev)


def boundary_lookalikes(size: int) -> bytes:
    """Random bytes with a beginning of the form's boundary (1 to all of its bytes, the whole
    one then followed by neither CRLF nor ``--``) every 997 bytes: parts of them fall on the
    ends of the receive buffers, where the receiver hands the parser the bytes to settle."""
    delim = f"\r\n--{BOUNDARY}".encode()
    out = bytearray(os.urandom(size))
    for n, at in enumerate(range(500, size - 64, 997)):
        piece = delim[: 1 + n % len(delim)] + (b"x" if n % len(delim) == len(delim) - 1 else b"")
        out[at : at + len(piece)] = piece
    return bytes(out)


@pytest.mark.parametrize(("buffered", "memmem"), [(0, True), (150, True), (70_000, False)])
def test_direct_upload_is_written_with_o_direct(
    tmp_path: Path,
    small_buffers: None,
    monkeypatch: pytest.MonkeyPatch,
    buffered: int,
    memmem: bool,
) -> None:
    """The file part goes to disk with O_DIRECT writes from the receive buffers, all but its
    last partial block; the file, checksum and size are those of the ASGI path, also with
    boundary look-alikes across the buffers' ends (the boundary found by the C library's
    memmem, or by ``find`` where it has none)."""
    assert upload._MEMMEM is not None  # glibc: CI and the service's machines
    if not memmem:
        monkeypatch.setattr(upload, "_MEMMEM", None)
    payload = boundary_lookalikes(700_001)
    spy = WriteSpy(monkeypatch)
    src, got = run_direct(body(payload), tmp_path, buffered=buffered)
    assert isinstance(got, upload.ReceivedUpload), got
    assert got.temp_path.read_bytes() == payload
    assert got.sha256 == hashlib.sha256(payload).hexdigest() and got.size == len(payload)
    assert spy.writev == 0 and spy.plain == len(payload) % upload.DIRECT_IO_BLOCK
    assert spy.direct == len(payload) - spy.plain
    asgi = run(body(payload), tmp_path, chunk=65536)
    assert asgi.sha256 == got.sha256 and asgi.temp_path.read_bytes() == payload
    got.discard()
    asgi.discard()


def test_direct_upload_without_o_direct(
    tmp_path: Path, small_buffers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the file system has no O_DIRECT (the open refused: tmpfs before Linux 6.6), the
    file is written through the page cache as before, with the same outcome."""
    real_open = os.open

    def no_direct(path: object, flags: int, *args: int) -> int:
        if flags & os.O_DIRECT:
            raise OSError(22, "Invalid argument")
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(upload.os, "open", no_direct)
    spy = WriteSpy(monkeypatch)
    payload = boundary_lookalikes(300_000)
    src, got = run_direct(body(payload), tmp_path)
    assert isinstance(got, upload.ReceivedUpload), got
    assert got.temp_path.read_bytes() == payload
    assert got.sha256 == hashlib.sha256(payload).hexdigest()
    assert spy.direct == spy.plain == 0 and spy.writev == len(payload)
    got.discard()


def test_direct_io_refused_at_a_write_goes_on_plainly(
    tmp_path: Path, small_buffers: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file system that opens with O_DIRECT but refuses a write (EINVAL, an alignment it
    does not take): that write and all later ones go through the ordinary descriptor."""
    real_pwrite = os.pwrite
    refused: list[int] = []

    def pwrite(fd: int, data: memoryview, offset: int) -> int:
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT:
            refused.append(len(data))
            raise OSError(22, "Invalid argument")
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(upload.os, "pwrite", pwrite)
    payload = os.urandom(400_000)
    src, got = run_direct(body(payload), tmp_path)
    assert isinstance(got, upload.ReceivedUpload), got
    assert got.temp_path.read_bytes() == payload and len(refused) == 1
    assert got.sha256 == hashlib.sha256(payload).hexdigest()
    got.discard()


def test_direct_io_stages_unaligned_bytes(tmp_path: Path) -> None:
    """Views of any alignment in any order (read-only bytes, buffers in and out of phase with
    the file offset, short and long): the file holds exactly their bytes, in order."""
    import mmap
    import random

    rnd = random.Random(19)
    blk = upload.DIRECT_IO_BLOCK
    writer = upload._HashingWriter(tmp_path / "f.part", durable=True, direct_io=True)
    assert writer.dio is not None
    want = bytearray()
    for _ in range(60):
        n = rnd.choice([1, 7, blk - 1, blk, blk + 1, 3 * blk, 70_000, 300_000])
        data = os.urandom(n)
        kind = rnd.choice(["bytes", "phase", "any"])
        if kind == "bytes":
            view = memoryview(data)
        else:
            buf = mmap.mmap(-1, n + 2 * blk)
            at = (len(want) % blk) if kind == "phase" else rnd.randrange(blk)
            buf[at : at + n] = data
            view = memoryview(buf)[at : at + n]
        writer.write([view])
        want += data
    writer.flush_to_disk()
    assert writer.size == len(want)
    writer.close()
    writer.part_lock.release()
    assert (tmp_path / "f.part").read_bytes() == want


def test_receive_buffer_find_stays_inside_the_buffer() -> None:
    """The memmem search is given only ranges inside its buffer; others are refused."""
    from caesar_rest.storage.upload import _RecvBuffer

    buf = _RecvBuffer(8192)
    buf.view[100:110] = b"--boundary"
    assert buf.find(b"--boundary", 0, 8192) == 100
    assert buf.find(b"--boundary", 101, 8192) == -1
    assert buf.find(b"--boundary", 0, 109) == -1
    for start, end in ((10, 5), (-1, 10), (0, 8193)):
        with pytest.raises(ValueError, match="outside a buffer"):
            buf.find(b"--boundary", start, end)
