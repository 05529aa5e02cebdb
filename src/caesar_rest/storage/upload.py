"""Streaming multipart uploads.

The request body is parsed as it arrives; the ``file`` part goes to a temporary file in the data
folder's ``.incoming`` folder (same file system as its final place, so the final rename is
atomic) while its SHA-256 is computed. Hashing and writing run in a worker thread, overlapping
with the receipt of the next chunk. Nothing is held whole in memory, and a temporary file is
removed on every failure path, a body that ends before the form's closing boundary included
(python-multipart does not check that). The writer holds an exclusive ``flock`` on its
temporary file until the file is moved into place or discarded; the start-up sweep removes
every temporary file of this host that it can lock, so a partial upload of a dead process goes
even when a restarted server has the same pid (as in a container).

Large bodies served by ``caesar-rest serve`` (:mod:`caesar_rest.httpserver`) are read from the
connection itself instead of ``chunks`` (:class:`DirectReceiver`): one thread receives into a
few reusable page-aligned buffers and looks for the boundary in them, one hashes, one writes
the file with ``O_DIRECT`` from those buffers (no copy into the page cache, no write-back;
where the file system has no ``O_DIRECT``, through the page cache as below), with the same
checks, limits, durability and clean-up.

Compressed uploads (gzip, the one compressed form :mod:`caesar_rest.storage.formats` accepts)
are inflated as they arrive, in the writer thread, a bounded block at a time with the output
thrown away: an upload whose inflated content is over the size limit is refused (413) as soon
as the inflated bytes pass it, so a small "gzip bomb" can never be stored, and the inflated
size is what the storage quota counts (``ReceivedUpload.inflated``).

Durability (``durable``, the ``upload_fsync`` setting): the file is flushed to disk before it
is handed on, so that an upload the service has acknowledged survives a power loss. Every
:data:`WRITEBACK_EVERY` bytes the writer asks the kernel to start writing the new range to
disk (Linux ``sync_file_range(SYNC_FILE_RANGE_WRITE)``, which does not wait for it), so the
disk writes overlap with the receipt and the final ``fsync`` has only the tail left. It also
keeps the page cache from filling with dirty pages: on our VMs a 1 GiB file is written and on
disk in 0.4 s this way, against 1.4-2.1 s for plain writes and 0.5 s more for their ``fsync``.
Where ``sync_file_range`` is missing only the final ``fsync`` is made.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import errno
import fcntl
import hashlib
import mmap
import os
import re
import socket
import threading
import time
import weakref
import zlib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

from caesar_rest.errors import Invalid, TooLarge
from caesar_rest.storage.direct import DIRECT_THREADS, DirectSource
from caesar_rest.storage.paths import INCOMING, new_id

MAX_FIELD_BYTES = 64 * 1024
#: Bytes written between two write-back requests of a durable upload.
WRITEBACK_EVERY = 8 * 1024 * 1024
#: ``SYNC_FILE_RANGE_WRITE`` of Linux's ``fcntl.h``: start write-back, do not wait.
SYNC_FILE_RANGE_WRITE = 2
#: Most bytes one inflate step produces (the output is counted, then dropped).
INFLATE_STEP = 1024 * 1024
#: The two bytes that start a gzip member.
GZIP_MAGIC = b"\x1f\x8b"
#: Smallest batch hashed through a memory map of the written file (smaller: part by part).
MAP_HASH_MIN = 256 * 1024
#: Suffix of a temporary file between its creation and its lock (never swept as live).
NEW_SUFFIX = ".new"
#: Unit of ``O_DIRECT`` writes: their file offsets, lengths and memory addresses are multiples.
DIRECT_IO_BLOCK = 4096
#: The page-aligned buffer through which file bytes that are not aligned in memory go to an
#: ``O_DIRECT`` write (a copy: the start of the file part, the odd bytes between two buffers).
STAGING_BYTES = 256 * 1024


def _writeback_starter() -> Callable[[int, int, int], object] | None:
    """``sync_file_range(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE)``, or None where missing."""
    try:
        func = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    func.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
    func.restype = ctypes.c_int

    def start(fd: int, offset: int, nbytes: int) -> object:
        # A failure here is not an error of the upload: the final fsync reports real ones.
        return func(fd, offset, nbytes, SYNC_FILE_RANGE_WRITE)

    return start


_START_WRITEBACK = _writeback_starter()


def _memmem() -> Callable[[int, int, bytes], int] | None:
    """The C library's ``memmem`` as ``find(address, nbytes, needle)`` (the needle's offset
    from ``address``, or -1), or None where missing. Through ctypes it runs without the GIL
    (``bytes.find`` holds it: 0.1-0.5 ms per receive buffer, which the hash and the write
    threads then wait for), and glibc's is 3-5 times faster than ``bytes.find``."""
    try:
        func = ctypes.CDLL(None).memmem
    except (OSError, AttributeError):
        return None
    func.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t)
    func.restype = ctypes.c_void_p

    def find(address: int, nbytes: int, needle: bytes) -> int:
        hit: int | None = func(address, nbytes, needle, len(needle))
        return -1 if hit is None else hit - address

    return find


_MEMMEM = _memmem()


class UploadError(Invalid):
    """A malformed upload request (answered with 400)."""


class UploadTooLarge(TooLarge):
    """The upload is over the size limit (answered with 413)."""


class InflatedTooLarge(UploadTooLarge):
    """A compressed upload whose inflated content is over the size limit (413)."""


class Inflater:
    """Counts the inflated size of a gzip stream as it arrives (members one after another).

    Each step produces at most :data:`INFLATE_STEP` bytes, which are counted and dropped, so
    memory stays bounded whatever the compression ratio. Zero bytes between members are
    skipped, as Python's ``gzip`` reader (astropy's) skips them. A stream that zlib cannot
    read stops the count there: a reader stops at the same place.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.size = 0
        self.broken = False
        self._z: Any = None  # the member being inflated; None between members

    def feed(self, data: bytes | memoryview) -> None:
        """Inflate ``data``; raise :class:`InflatedTooLarge` once the count passes the limit."""
        pending: bytes | memoryview = data
        while not self.broken:
            if self._z is None:  # between members: padding, the next member, or trailing bytes
                pending = bytes(pending).lstrip(b"\0")
                if not pending:
                    return
                if pending[:1] != GZIP_MAGIC[:1]:
                    self.broken = True
                    return
                self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
            try:
                out = self._z.decompress(pending, INFLATE_STEP)
            except zlib.error:
                self.broken = True
                return
            self.size += len(out)
            if self.size > self.limit:
                raise InflatedTooLarge(
                    f"the file inflates to more than the limit of {self.limit} bytes"
                )
            if self._z.eof:
                pending = self._z.unused_data
                self._z = None
                if not pending:
                    return
                continue
            pending = self._z.unconsumed_tail
            if not pending and len(out) < INFLATE_STEP:  # all in, nothing more to come out
                return


@dataclass
class ReceivedUpload:
    """A completely received file part, waiting in its temporary file."""

    temp_path: Path
    size: int
    sha256: str
    client_filename: str
    fields: dict[str, str] = field(default_factory=dict)
    #: The inflated size of a compressed (gzip) file; None for an uncompressed one.
    inflated: int | None = None
    #: The temporary file's lock, held until it is moved into place or discarded.
    lock: _PartLock | None = None

    @property
    def charged(self) -> int:
        """The bytes the storage quota counts: the inflated size of a compressed file."""
        return max(self.size, self.inflated or 0)

    def release(self) -> None:
        """Let go of the temporary file's lock (once it is moved into place)."""
        if self.lock is not None:
            self.lock.release()

    def discard(self) -> None:
        """Remove the temporary file (and let go of its lock)."""
        with contextlib.suppress(FileNotFoundError):
            self.temp_path.unlink()
        self.release()


class _PartLock:
    """An exclusive ``flock`` on a temporary upload file, held by an open descriptor.

    ``flock`` locks belong to the open file, not to the process: a sweep in the same process
    (another application instance) sees the lock too. The lock is let go when released, or
    when the object is collected, or with the process.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._finalizer = weakref.finalize(self, os.close, fd)

    def release(self) -> None:
        self._finalizer()


def _create_locked(path: Path) -> tuple[int, _PartLock]:
    """Create ``path`` for writing, locked before it can be seen under its ``.part`` name.

    The file is made as ``<name>.new``, locked, then renamed: the sweep never finds an
    unlocked ``.part`` file of a live writer.
    """
    fresh = path.with_name(path.name + NEW_SUFFIX)
    fd = os.open(fresh, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o640)  # read: the hash's map
    try:
        lock = _PartLock(os.dup(fd))
        os.rename(fresh, path)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            fresh.unlink()
        raise
    return fd, lock


def _open_direct_io(path: Path) -> int:
    """A second, ``O_DIRECT`` descriptor of ``path`` for writing; -1 where the system or the
    file system has none (tmpfs before Linux 6.6 refuses the open with ``EINVAL``)."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return -1
    try:
        return os.open(path, os.O_WRONLY | flag)
    except OSError:
        return -1


def _address(view: memoryview) -> int:
    """The memory address of a writable view's first byte; -1 for a read-only one."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(view))
    except (TypeError, ValueError):
        return -1


class _DirectIO:
    """The ``O_DIRECT`` side of a :class:`_HashingWriter`: file bytes go from the caller's
    buffers to the disk, with no copy into the page cache and no write-back after it.

    ``O_DIRECT`` needs the file offset, the length and the memory address of every write to be
    multiples of :data:`DIRECT_IO_BLOCK`. A view that starts at an aligned offset and address
    is written as it is, all its whole blocks in one ``pwrite``; other bytes are copied into a
    page-aligned staging buffer until they make whole blocks (the receiver places its buffers
    so that this is only the start of the file and a few bytes per buffer). The last partial
    block goes through the ordinary descriptor (:meth:`finish`). A write that the file system
    refuses with ``EINVAL`` (alignment it does not accept) turns this off: the bytes are
    written by the ordinary descriptor then, as are all later ones (:attr:`fd` -1).
    """

    def __init__(self, fd: int, plain_fd: int) -> None:
        self.fd = fd
        self.plain_fd = plain_fd
        self.staging = mmap.mmap(-1, STAGING_BYTES)
        self.view = memoryview(self.staging)
        #: Bytes in the staging buffer; they are the file's bytes ``size - staged:size``.
        self.staged = 0
        #: Bytes taken so far (written or staged).
        self.size = 0

    def write(self, view: memoryview) -> None:
        """Write (or stage) ``view``, the file's next bytes."""
        blk = DIRECT_IO_BLOCK
        while len(view) and self.fd >= 0:
            addr = _address(view)
            if self.staged == 0 and self.size % blk == 0 and addr % blk == 0 and len(view) >= blk:
                n = len(view) - len(view) % blk
                self._pwrite(view[:n], self.size)
                self.size += n
                view = view[n:]
                continue
            # In phase (the address and the offset agree modulo a block): copy up to the
            # block's end only, then the rest of the view is written as it is.
            in_phase = addr >= 0 and addr % blk == self.size % blk
            room = STAGING_BYTES - self.staged
            take = min(len(view), room, blk - self.size % blk if in_phase else room)
            self.view[self.staged : self.staged + take] = view[:take]
            self.staged += take
            self.size += take
            view = view[take:]
            if self.staged == STAGING_BYTES or (in_phase and self.size % blk == 0):
                self._flush_staging()
        if len(view):  # O_DIRECT was turned off
            os.pwrite(self.plain_fd, view, self.size)
            self.size += len(view)

    def _flush_staging(self) -> None:
        """Write the staged whole blocks; keep the partial one (moved to the start)."""
        whole = self.staged - self.staged % DIRECT_IO_BLOCK
        if whole:
            self._pwrite(self.view[:whole], self.size - self.staged)
            rest = self.staged - whole
            self.view[:rest] = self.view[whole : self.staged]
            self.staged = rest

    def _pwrite(self, view: memoryview, offset: int) -> None:
        """Write all of ``view`` at ``offset`` (ordinary descriptor where O_DIRECT fails)."""
        while len(view):
            if self.fd < 0 or len(view) % DIRECT_IO_BLOCK:
                n = os.pwrite(self.plain_fd, view, offset)
            else:
                try:
                    n = os.pwrite(self.fd, view, offset)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    os.close(self.fd)
                    self.fd = -1
                    continue
            view = view[n:]
            offset += n

    def finish(self) -> None:
        """Write what is staged: its whole blocks directly, the last partial one plainly."""
        self._flush_staging()
        if self.staged:
            os.pwrite(self.plain_fd, self.view[: self.staged], self.size - self.staged)
            self.staged = 0

    def close(self) -> None:
        """Close the ``O_DIRECT`` descriptor and free the staging buffer (staged bytes not
        written are dropped)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        with contextlib.suppress(BufferError, ValueError):
            self.view.release()
            self.staging.close()


class _HashingWriter:
    """Writes chunks to a file and hashes them; used from one worker thread at a time.

    A lock makes :meth:`close` wait for a write or flush still running in a worker thread (the
    request may be cancelled while one runs), and later calls find the file closed.
    """

    def __init__(
        self,
        path: Path,
        durable: bool = False,
        inflate_limit: int | None = None,
        hashing: bool = True,
        direct_io: bool = False,
    ):
        self.path = path
        self.fd, self.part_lock = _create_locked(path)
        #: ``O_DIRECT`` writes (``direct_io`` and a file system that has them), else None.
        self.dio: _DirectIO | None = None
        if direct_io:
            dfd = _open_direct_io(path)
            if dfd >= 0:
                self.dio = _DirectIO(dfd, self.fd)
        self.hash = hashlib.sha256()
        self.size = 0
        self.durable = durable
        self.synced = 0
        self._lock = threading.Lock()
        #: Inflated-size limit of a compressed file; None: do not look.
        self.inflate_limit = inflate_limit
        self.inflater: Inflater | None = None
        self._head = b""
        #: Hash each batch from the file's memory map (False after a file that cannot be mapped).
        self.map_hash = True
        #: Hash what is written (False: the caller hashes, as the direct receiver does).
        self.hashing = hashing

    def write(self, parts: list[memoryview]) -> None:
        """Hash and write views of received chunks (no copy on our side)."""
        with self._lock:
            if self.fd >= 0:
                self._write(parts)

    def _inflate(self, parts: list[memoryview]) -> None:
        """Count the inflated size of a gzip file (decided on its first two bytes)."""
        if self.inflate_limit is None:
            return
        if self.inflater is None:
            if self.size > len(self._head):  # the start was seen: not compressed
                return
            for part in parts:
                if len(self._head) >= 2:
                    break
                self._head += bytes(part[: 2 - len(self._head)])
            if len(self._head) < 2:
                return
            if self._head != GZIP_MAGIC:
                self.inflate_limit = None
                return
            self.inflater = Inflater(self.inflate_limit)
        for part in parts:
            self.inflater.feed(part)

    def _write(self, parts: list[memoryview]) -> None:
        self._inflate(parts)  # raises before a byte over the inflated limit is written
        if self.dio is not None:
            for part in parts:
                self.dio.write(part)
            self.size = self.dio.size
            return
        start = self.size
        mapped = self.hashing and self.map_hash and sum(len(p) for p in parts) >= MAP_HASH_MIN
        if self.hashing and not mapped:
            for part in parts:
                self.hash.update(part)  # releases the GIL for large buffers
        self._writev(parts)
        if mapped and not self._hash_written(start, self.size):
            for part in parts:
                self.hash.update(part)
        if self.durable and self.size - self.synced >= WRITEBACK_EVERY:
            if _START_WRITEBACK is not None:
                _START_WRITEBACK(self.fd, self.synced, self.size - self.synced)
            self.synced = self.size

    def _hash_written(self, start: int, end: int) -> bool:
        """Hash bytes ``start:end`` of the file, read back through a memory map of the page
        cache: one GIL-free ``update`` for the whole batch. False where the file cannot be
        mapped (the caller hashes the parts then, and so does every later batch)."""
        base = start - start % mmap.ALLOCATIONGRANULARITY
        try:
            mm = mmap.mmap(self.fd, end - base, prot=mmap.PROT_READ, offset=base)
        except OSError:
            self.map_hash = False
            return False
        with mm, memoryview(mm) as view, view[start - base :] as written:
            self.hash.update(written)
        return True

    def _writev(self, parts: list[memoryview]) -> None:
        """Write every part, in as few ``writev`` calls as the kernel takes."""
        pending = [p for p in parts if len(p)]
        while pending:
            n = os.writev(self.fd, pending[:1024])
            self.size += n
            while n and pending:
                first = pending[0]
                if n >= len(first):
                    n -= len(first)
                    pending.pop(0)
                else:
                    pending[0] = first[n:]
                    n = 0

    def flush_to_disk(self) -> None:
        """Write what is held back (``O_DIRECT``: the last partial block), and for a durable
        upload wait until the file's data and metadata are on disk (``fsync``: for the
        ``O_DIRECT`` writes, the flush of the disk's cache and the file's size)."""
        with self._lock:
            if self.fd < 0:
                return
            if self.dio is not None:
                self.dio.finish()
            if self.durable:
                os.fsync(self.fd)
                self.synced = self.size

    def close(self) -> None:
        """Close the file (its lock stays held: :attr:`part_lock`)."""
        with self._lock:
            if self.dio is not None:
                self.dio.close()
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1


def incoming_dir(datadir: Path) -> Path:
    """The folder of partial uploads."""
    path = datadir / INCOMING
    path.mkdir(parents=True, exist_ok=True)
    return path


def _host_tag() -> str:
    """This machine's name, safe inside a file name."""
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname())[:64] or "host"


def sweep_incoming(datadir: Path, all_files: bool = False, grace: float = 3600.0) -> int:
    """Remove partial uploads that no live writer holds.

    Temporary files are named ``<host>-<pid>-<id>.part`` and locked (``flock``) by their
    writer. Files of this host are removed when they can be locked: their writer is gone,
    whatever its pid (a restarted server in a container may have the same one). The data
    folder may be shared by instances on other hosts, whose locks a shared file system may not
    show: their files are left alone unless untouched for ``grace`` seconds (a crashed host).
    A ``.part.new`` file (a writer killed between creating and locking its file) goes after
    ``grace`` too. With ``all_files`` every partial file is removed (tests, maintenance).
    """
    removed = 0
    folder = datadir / INCOMING
    if not folder.is_dir():
        return 0
    me = _host_tag()
    now = time.time()
    for path in [*folder.glob("*.part"), *folder.glob(f"*.part{NEW_SUFFIX}")]:
        host = path.name.partition("-")[0]
        if all_files:
            stale = True
        elif host == me and path.suffix == ".part":
            removed += _remove_unlocked(path)
            continue
        else:
            try:
                stale = now - path.stat().st_mtime > grace
            except FileNotFoundError:
                continue
        if stale:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                removed += 1
    return removed


def _remove_unlocked(path: Path) -> int:
    """Remove ``path`` if no writer holds its lock (removed while holding it): 1 or 0."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return 0
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path.unlink()
    except (BlockingIOError, FileNotFoundError):
        return 0
    finally:
        os.close(fd)
    return 1


def _boundary(content_type: str | None) -> bytes:
    if not content_type:
        raise UploadError("missing Content-Type; send multipart/form-data with a 'file' part")
    ctype, params = parse_options_header(content_type)
    if ctype != b"multipart/form-data":
        raise UploadError("send the file as multipart/form-data with a part named 'file'")
    boundary = params.get(b"boundary")
    if not boundary:
        raise UploadError("multipart/form-data without a boundary")
    return boundary


class _Receiver:
    """The multipart parser's callbacks: form fields kept, the ``file`` part buffered.

    The buffered views of the file part are handed to a :class:`_HashingWriter` by
    :func:`receive_upload`, in a worker thread, a buffer at a time.
    """

    def __init__(self, temp: Path, limit: int, durable: bool, direct: bool = False) -> None:
        self.temp = temp
        #: The direct receiver: it hashes the file part itself, and the file is written with
        #: ``O_DIRECT`` from its buffers.
        self.direct = direct
        self.limit = limit
        self.durable = durable
        self.headers: dict[bytes, bytes] = {}
        self.hname = bytearray()
        self.fields: dict[str, str] = {}
        # Views of the received chunks (they are immutable bytes): handed to the writer
        # thread without copying.
        self.buf: list[memoryview] = []
        self.buffered = 0
        #: Bytes of the file part received so far.
        self.received = 0
        self.filename = ""
        self.writer: _HashingWriter | None = None
        self.target = ""  # "file", a field name, or "" (ignored part)
        self.field_buf = bytearray()
        self.too_large = False
        #: The closing boundary was seen (python-multipart's finalize does not check it).
        self.ended = False

    def callbacks(self) -> MultipartCallbacks:
        """The callbacks, by the names :class:`MultipartParser` calls them."""
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_end": self.on_end,
        }

    def take(self) -> list[memoryview]:
        """The buffered views of the file part (the buffer is emptied)."""
        data = self.buf
        self.buf = []
        self.buffered = 0
        return data

    def on_part_begin(self) -> None:
        self.headers.clear()
        self.target = ""
        self.field_buf.clear()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.hname.extend(data[start:end])

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        key = bytes(self.hname).lower()
        self.headers[key] = self.headers.get(key, b"") + data[start:end]

    def on_header_end(self) -> None:
        self.hname.clear()

    def on_headers_finished(self) -> None:
        _disp, params = parse_options_header(self.headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode("utf-8", "replace")
        fname = params.get(b"filename")
        if name == "file" and fname is not None:
            if self.writer is not None:
                raise UploadError("more than one 'file' part")
            self.filename = fname.decode("utf-8", "replace")
            self.writer = _HashingWriter(
                self.temp,
                self.durable,
                inflate_limit=self.limit,
                hashing=not self.direct,
                direct_io=self.direct,
            )
            self.target = "file"
        elif name and fname is None:
            self.target = name
        else:
            self.target = ""

    def file_data(self, view: memoryview) -> None:
        """Take bytes of the file part (a view that stays valid until it is written)."""
        self.buf.append(view)
        self.buffered += len(view)
        self.received += len(view)
        # Counted here: the writer's size lags by the batch it is writing.
        if self.received > self.limit:
            self.too_large = True

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.target == "file":
            # The parser may hand us its own (reused) look-behind buffer: copy that one.
            self.file_data(
                memoryview(data)[start:end]
                if type(data) is bytes
                else memoryview(bytes(data[start:end]))
            )
        elif self.target:
            if len(self.field_buf) + (end - start) > MAX_FIELD_BYTES:
                raise UploadError(f"form field '{self.target}' is too long")
            self.field_buf.extend(data[start:end])

    def on_part_end(self) -> None:
        if self.target and self.target != "file":
            self.fields[self.target] = self.field_buf.decode("utf-8", "replace")

    def on_end(self) -> None:
        self.ended = True


async def receive_upload(
    chunks: AsyncIterator[bytes],
    content_type: str | None,
    datadir: Path,
    limit: int,
    buffer_size: int = 1024 * 1024,
    durable: bool = False,
    direct: DirectSource | None = None,
) -> ReceivedUpload:
    """Parse a multipart body from ``chunks`` and store its ``file`` part.

    With ``durable`` the file is on disk (``fsync``) when this returns. With ``direct`` (the
    server's offer to read the rest of the body from the connection itself) and where the
    server can hand it over, the body is read from the socket instead of ``chunks``
    (:class:`DirectReceiver`); the outcome is the same.

    Raises
    ------
    UploadError
        Malformed request or no ``file`` part.
    UploadTooLarge
        The file part exceeds ``limit`` bytes, or a gzip file part inflates to more
        (:class:`InflatedTooLarge`). The temporary file is removed.
    ClientGone
        (``direct`` only) The client went away or paused longer than the server's body
        timeout; the server has answered or closed the connection.
    """
    boundary = _boundary(content_type)
    temp = incoming_dir(datadir) / f"{_host_tag()}-{os.getpid()}-{new_id()}.part"
    if direct is not None and direct.claim():
        return await _receive_direct(direct, _Receiver(temp, limit, durable, direct=True), boundary)
    rx = _Receiver(temp, limit, durable)
    parser = MultipartParser(boundary, rx.callbacks())
    loop = asyncio.get_running_loop()
    pending: asyncio.Future[None] | None = None
    try:
        async for chunk in chunks:
            parser.write(chunk)
            if rx.too_large:
                raise UploadTooLarge(f"the file is larger than the limit of {limit} bytes")
            if rx.writer is not None and rx.buffered >= buffer_size:
                if pending is not None:
                    await pending
                pending = loop.run_in_executor(None, rx.writer.write, rx.take())
        parser.finalize()
        if pending is not None:
            await pending
            pending = None
        return await _finish(rx, loop)
    except BaseException:
        if pending is not None:
            with contextlib.suppress(BaseException):
                await pending
        _discard(rx)
        raise


async def _finish(rx: _Receiver, loop: asyncio.AbstractEventLoop) -> ReceivedUpload:
    """Write what is left of the file part, flush it and describe it."""
    writer = _file_writer(rx)
    if rx.buf:
        await loop.run_in_executor(None, writer.write, rx.take())
    return await loop.run_in_executor(None, _complete, rx, writer.hash)


def _discard(rx: _Receiver) -> None:
    """Remove the temporary file of a failed upload and let its lock go."""
    with contextlib.suppress(FileNotFoundError):
        rx.temp.unlink()
    if rx.writer is not None:
        rx.writer.close()
        rx.writer.part_lock.release()


def _file_writer(rx: _Receiver) -> _HashingWriter:
    """The writer of the file part of a body parsed to its end (else :class:`UploadError`)."""
    if not rx.ended:
        # A body cut short (or a form never closed): its file part may be partial.
        raise UploadError("the multipart body ends before its closing boundary")
    if rx.writer is None:
        raise UploadError("no file part named 'file' in the form")
    return rx.writer


def _complete(rx: _Receiver, digest: hashlib._Hash) -> ReceivedUpload:
    """Flush the file part of a body parsed to its end, all of it handed to its writer, close
    it and describe it (``digest``: the file's SHA-256); :class:`UploadError` if it is
    empty. (Blocking: in a worker thread.)"""
    writer = _file_writer(rx)
    if writer.size == 0:
        raise UploadError("the uploaded file is empty")
    writer.flush_to_disk()
    writer.close()
    inflated = writer.inflater.size if writer.inflater is not None else None
    return ReceivedUpload(
        rx.temp,
        writer.size,
        digest.hexdigest(),
        rx.filename,
        rx.fields,
        inflated=inflated,
        lock=writer.part_lock,
    )


# --- the direct receiver ---------------------------------------------------------------------
#: Size of each receive buffer of the direct receiver (a multiple of DIRECT_IO_BLOCK): large
#: enough for few hand-overs between the threads (each costs the hash thread a wait for the
#: GIL) and large O_DIRECT writes. With the write copying them (before O_DIRECT) 4 MiB buffers
#: cost 0.5 CPU s/GiB more than 512 KiB ones; now 1 MiB took 1.22-1.33 CPU s/GiB against
#: 1.36-1.77 with 512 KiB, and 2 MiB 1.11-1.15 in 3 runs of 4 (docs/benchmarks.md).
DIRECT_BUFFER = 2 * 1024 * 1024
#: Receive buffers per direct upload: one being filled, the others being hashed and written
#: (8 MiB in all, at most DIRECT_SLOTS uploads at once per process).
DIRECT_BUFFERS = 4
#: Bytes given to the multipart parser at a time outside the file part's data (copies).
PARSE_STEP = 64 * 1024
#: Most bytes of a refused body still read and dropped to keep its connection (more: the
#: answer closes the connection instead).
DRAIN_MAX = 4 * 1024 * 1024
_DIRECT_POOL = ThreadPoolExecutor(max_workers=DIRECT_THREADS, thread_name_prefix="upload-recv")


class ClientGone(ConnectionError):
    """The client of a direct upload went away, or paused longer than the body timeout."""


class _RecvBuffer:
    """A page-aligned receive buffer, its view and its address."""

    def __init__(self, size: int) -> None:
        self.mm = mmap.mmap(-1, size)
        self.view = memoryview(self.mm)
        self._pin = ctypes.c_char.from_buffer(self.mm)  # holds the address valid
        self.address = ctypes.addressof(self._pin)

    def find(self, needle: bytes, start: int, end: int) -> int:
        """Where ``needle`` first stands in bytes ``start:end`` (or -1)."""
        # memmem reads raw memory: a range outside the buffer would read past its mapping.
        if not 0 <= start <= end <= len(self.mm):
            raise ValueError(f"range {start}:{end} outside a buffer of {len(self.mm)} bytes")
        if _MEMMEM is None:
            return self.mm.find(needle, start, end)
        at = _MEMMEM(self.address + start, end - start, needle)
        return at if at < 0 else start + at


class DirectReceiver:
    """Reads a multipart body straight from the connection, in a worker thread.

    The body is received into a few large reusable buffers (:data:`DIRECT_BUFFER`, no
    ``bytes`` object per network read, no HTTP parser and no ASGI queue in between), parsed
    with python-multipart, and the file part of each buffer is hashed in one more thread
    while another writes it (:class:`_HashingWriter`, the same durability). Inside the file
    part the receiver looks for the boundary itself (:meth:`_feed`) and places each read so
    that the file's bytes lie at addresses aligned as their offsets in the file: the writer
    writes the buffers' whole blocks with ``O_DIRECT`` as they are (:class:`_DirectIO`). A
    buffer is filled again only once its hash and write are done, so memory stays at
    :data:`DIRECT_BUFFERS` buffers. After a refusal (malformed body, over the limit, a write
    error) the rest of the declared body, up to :data:`DRAIN_MAX` bytes, is still read and
    dropped, so the connection stays usable and the client gets the answer, as after a
    refusal on the ASGI path; after a longer rest the answer closes the connection.
    """

    def __init__(self, src: DirectSource, rx: _Receiver, boundary: bytes) -> None:
        self.src = src
        self.rx = rx
        self.parser = MultipartParser(boundary, rx.callbacks())
        self.hash = hashlib.sha256()
        self.free: list[_RecvBuffer] = []
        self.made = 0
        #: Each buffer handed on, with its write and hash: free again when both are done.
        self.inflight: collections.deque[tuple[list[Future[None]], _RecvBuffer | None]] = (
            collections.deque()
        )
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload-write")
        self.hasher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="upload-hash")
        #: Set from the event loop when the request is cancelled: stop at the next read.
        self.stop = False

    def run(self) -> ReceivedUpload:
        """Receive, parse, hash, write and flush; or clean up, drain and raise."""
        rx = self.rx
        try:
            for part in self.src.buffered:
                self.parser.write(part)
                self._hand_on(None)
            self.src.buffered = []
            while self.src.remaining > 0:
                buf = self._buffer()
                start = self._placement()
                end = self._fill(buf.view, start)
                self._feed(buf, start, end)
                self._hand_on(buf)
            self.parser.finalize()
            self._drain_writes()
            return _complete(rx, self.hash)
        except BaseException as exc:
            self._abandon()
            if not isinstance(exc, TimeoutError | ConnectionError) and not self.stop:
                self._skip_rest()  # raises TimeoutError or ConnectionError if that fails
            raise
        finally:
            self.pool.shutdown(wait=True)
            self.hasher.shutdown(wait=True)
            if rx.writer is not None and rx.writer.fd >= 0:
                rx.writer.close()

    def _buffer(self) -> _RecvBuffer:
        """A free receive buffer (page-aligned): a new one, or the oldest once its write is
        done."""
        if self.free:
            return self.free.pop()
        if self.made < DIRECT_BUFFERS:
            self.made += 1
            return _RecvBuffer(DIRECT_BUFFER)
        while True:
            futs, buf = self.inflight.popleft()
            for fut in futs:
                fut.result()
            if buf is not None:
                return buf

    def _in_file(self) -> bool:
        """The parser is inside the file part's data."""
        return self.parser.state == MultipartState.PART_DATA and self.rx.target == "file"

    def _placement(self) -> int:
        """Where in the next buffer to receive: inside the file part, the offset that puts
        every file byte at an address that is aligned as its offset in the file, so that the
        buffer's whole blocks can be written with ``O_DIRECT`` as they are (and the buffer
        ends on a block of the file)."""
        if not self._in_file():
            return 0
        # Bytes of a possible boundary that the parser holds back come first, if data.
        return (self.rx.received + self.parser.index) % DIRECT_IO_BLOCK

    def _fill(self, view: memoryview, start: int) -> int:
        """Read into ``view[start:]`` until it is full or the body is in; where it ends."""
        n = start
        while n < len(view) and self.src.remaining > 0:
            if self.stop:
                raise ClientGone("the request was cancelled")
            n += self.src.recv_into(view[n:])
        return n

    def _feed(self, buf: _RecvBuffer, start: int, end: int) -> None:
        """Parse bytes ``start:end`` of a receive buffer.

        Inside the file part the boundary is looked for here (``memmem``, without the GIL) and
        the file bytes before it are taken as views of the buffer; only the few bytes where
        a boundary could begin, and what follows one, go through the parser (as copies),
        which so keeps its state as if it had read everything. Elsewhere (part headers, form
        fields) the parser reads copies of :data:`PARSE_STEP` bytes.
        """
        step = len(self.parser.boundary) + 4  # enough to settle a boundary begun earlier
        while start < end:
            if self._in_file() and self.parser.index == 0:
                self._file_bytes(buf, start, end)
                return
            upto = min(end, start + (step if self._in_file() else PARSE_STEP))
            self.parser.write(bytes(buf.view[start:upto]))
            start = upto

    def _file_bytes(self, buf: _RecvBuffer, start: int, end: int) -> None:
        """Take the file bytes of ``start:end`` up to a boundary; parse the rest."""
        rx = self.rx
        delim = self.parser.boundary  # b"\r\n--" + the boundary
        found = buf.find(delim, start, end)
        view = buf.view
        # Without a whole boundary, one can only begin in the last len(delim) - 1 bytes.
        cut = found if found >= 0 else max(start, end - len(delim) + 1)
        mark, before = len(rx.buf), rx.received
        if cut > start:
            rx.file_data(view[start:cut])
        if cut < end:
            self.parser.write(bytes(view[cut:end]))
        if found < 0 and rx.received - before == end - start:
            # All of it was file data: one view of the buffer (one aligned write).
            rx.buf[mark:] = [view[start:end]]

    def _hand_on(self, buf: _RecvBuffer | None) -> None:
        """Hash the file bytes parsed and queue them for writing (``buf`` held till then)."""
        rx = self.rx
        if rx.too_large:
            raise UploadTooLarge(f"the file is larger than the limit of {rx.limit} bytes")
        views = rx.take()
        if views and rx.writer is not None:
            # The hash first: it is the slowest stage (one core's SHA-256 per byte).
            futs = [self.hasher.submit(self._hash, views), self.pool.submit(rx.writer.write, views)]
            self.inflight.append((futs, buf))
        elif buf is not None:
            self.free.append(buf)

    def _hash(self, views: list[memoryview]) -> None:
        for view in views:
            self.hash.update(view)  # releases the GIL for large buffers

    def _drain_writes(self) -> None:
        while self.inflight:
            for fut in self.inflight.popleft()[0]:
                fut.result()

    def _abandon(self) -> None:
        """Wait for the queued writes (their errors dropped) and remove the temporary file."""
        while self.inflight:
            for fut in self.inflight.popleft()[0]:
                with contextlib.suppress(BaseException):
                    fut.result()
        _discard(self.rx)

    def _skip_rest(self) -> None:
        """Read the rest of the declared body and drop it (one buffer, reused), so that the
        connection goes on after the answer; a rest of more than :data:`DRAIN_MAX` bytes is
        left unread (the answer then closes the connection)."""
        if self.src.remaining > DRAIN_MAX:
            return
        view = self.free.pop().view if self.free else memoryview(bytearray(DIRECT_BUFFER))
        while self.src.remaining > 0 and not self.stop:
            self.src.recv_into(view)


async def _receive_direct(src: DirectSource, rx: _Receiver, boundary: bytes) -> ReceivedUpload:
    """Run a :class:`DirectReceiver` in its thread; give the connection back when it is done."""
    timed_out = refused = False
    try:
        # Inside the try: the connection, claimed already, goes back even if these raise.
        job = DirectReceiver(src, rx, boundary)
        fut = asyncio.get_running_loop().run_in_executor(_DIRECT_POOL, job.run)
        return await asyncio.shield(fut)
    except TimeoutError:
        timed_out = True
        raise ClientGone("the request body paused longer than the body timeout") from None
    except ConnectionError:
        raise ClientGone("the client went away during the upload") from None
    except asyncio.CancelledError:
        job.stop = True
        src.interrupt()  # a read in progress ends now, not at the body timeout
        with contextlib.suppress(BaseException):
            await fut  # the socket is the thread's till it is done
        raise
    except BaseException:
        refused = True  # answered by the caller (400, 413, 507); the rest may be unread
        raise
    finally:
        src.release(timed_out, refused)
