"""Resumable uploads by the tus 1.0 protocol (https://tus.io/protocols/resumable-upload).

A client creates an upload with its length and metadata (``filename``, ``tag``), then sends
its bytes in one or more ``PATCH`` requests, each starting at the offset the server has; after
a cut connection it asks the offset (``HEAD``) and goes on from there. When the last byte is
in, the file goes through the same checks as the legacy upload (:mod:`caesar_rest.storage.
formats`: FITS only, gzip inflated size under the limit) and is registered by the same code
(:func:`caesar_rest.storage.register.store_upload`: quota under the user's lock, remote copy).

State lives in the data folder, not in the database, so that every worker process of the
server sees the same uploads: ``<data>/.tus/<user folder>/<id>.part`` (the bytes received) and
``<id>.json`` (length, metadata, expiry, and, once registered, the file id). The offset is the
size of the ``.part`` file. A ``PATCH`` holds an exclusive ``flock`` on it, so two requests can
never append at once (the second is answered 423). The user's folder is part of the path, so
another user's upload id is simply not found (404). Uploads untouched for
``tus_expiry_hours`` are removed (on access, at creation of the same user's next upload, and by
the start-up sweep, :func:`sweep_expired`).

Extensions: ``creation``, ``termination``, ``expiration``.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any

from fastapi.concurrency import run_in_threadpool
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import ClientDisconnect

from caesar_rest.auth.quotas import check_declared_bytes
from caesar_rest.auth.users import Limits
from caesar_rest.db.models import FileRecord
from caesar_rest.errors import Invalid, NotFound, ServiceError, TooLarge, Unsupported
from caesar_rest.logconfig import get_logger
from caesar_rest.settings import Settings
from caesar_rest.storage.files import FileService
from caesar_rest.storage.formats import FileFormat, FormatError, sniff
from caesar_rest.storage.paths import is_file_id, new_id, owner_dirname
from caesar_rest.storage.upload import GZIP_MAGIC, InflatedTooLarge, Inflater, ReceivedUpload
from caesar_rest.timeutil import iso

log = get_logger(__name__)

#: The protocol version this server speaks (``Tus-Resumable``, ``Tus-Version``).
TUS_VERSION = "1.0.0"
#: The extensions it implements (``Tus-Extension``).
TUS_EXTENSIONS = ("creation", "termination", "expiration")
#: The content type of a ``PATCH`` body.
OFFSET_STREAM = "application/offset+octet-stream"
#: Folder of the resumable uploads, in the data folder.
TUS_DIR = ".tus"
#: Metadata keys kept (others are accepted and dropped).
KNOWN_METADATA = ("filename", "tag")
#: Longest ``Upload-Metadata`` header taken.
MAX_METADATA = 8 * 1024
#: Bytes buffered before a write to the ``.part`` file.
WRITE_BUFFER = 1024 * 1024
#: Bytes read at a time when the complete file is hashed.
HASH_BLOCK = 4 * 1024 * 1024


class Locked(ServiceError):
    """Another request is appending to this upload (423)."""

    def __init__(self, message: str) -> None:
        super().__init__(423, message)


class OffsetMismatch(ServiceError):
    """The request's ``Upload-Offset`` is not the upload's offset (409)."""

    def __init__(self, expected: int, given: int) -> None:
        super().__init__(
            409,
            f"Upload-Offset {given} does not match the upload's offset {expected}",
            offset=expected,
        )


@dataclass
class TusUpload:
    """One resumable upload as stored in its ``.json`` file.

    ``offset`` is not stored: it is the size of the ``.part`` file (see :meth:`TusService.offset`).
    """

    id: str
    owner: str
    length: int
    filename: str = ""
    tag: str = ""
    created: float = 0.0
    #: Last time bytes arrived (or the creation): the expiry counts from here.
    touched: float = 0.0
    #: The registered file, once the last byte is in and the file was accepted.
    file_id: str | None = None
    reply: dict[str, Any] = field(default_factory=dict)

    def expires(self, hours: float) -> float:
        """When the upload is removed if nothing more arrives (epoch seconds)."""
        return self.touched + hours * 3600.0


def parse_metadata(header: str | None) -> dict[str, str]:
    """The ``Upload-Metadata`` header as a dict: comma-separated ``key base64value`` pairs.

    Parameters
    ----------
    header
        The header's value (None: no metadata).

    Returns
    -------
    dict
        Key to decoded UTF-8 value (``""`` for a key without a value).

    Raises
    ------
    Invalid
        A malformed pair, a duplicate key, a value that is not base64 or not UTF-8, a NUL
        character, or a header over :data:`MAX_METADATA` characters.
    """
    if not header or not header.strip():
        return {}
    if len(header) > MAX_METADATA:
        raise Invalid(f"Upload-Metadata is longer than {MAX_METADATA} characters")
    out: dict[str, str] = {}
    for pair in header.split(","):
        parts = pair.strip().split(" ")
        key = parts[0]
        if not key or len(parts) > 2 or not key.isascii() or not key.isprintable():
            raise Invalid(f"Upload-Metadata: malformed pair {pair.strip()!r}")
        if key in out:
            raise Invalid(f"Upload-Metadata: key {key!r} given twice")
        raw = parts[1] if len(parts) == 2 else ""
        try:
            value = base64.b64decode(raw, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise Invalid(f"Upload-Metadata: the value of {key!r} is not base64 UTF-8") from None
        if "\x00" in value:
            raise Invalid(f"Upload-Metadata: the value of {key!r} holds a NUL character")
        out[key] = value
    return out


def http_date(epoch: float) -> str:
    """An RFC 9110 date (``Upload-Expires``)."""
    return formatdate(epoch, usegmt=True)


def header_int(name: str, value: str | None) -> int:
    """A non-negative integer header (``Upload-Length``, ``Upload-Offset``).

    Raises
    ------
    Invalid
        Missing or not a non-negative integer.
    """
    if value is None or not value.strip().isdigit():
        raise Invalid(f"{name} must be a non-negative integer (got {value!r})")
    return int(value.strip())


class TusService:
    """The users' resumable uploads.

    Parameters
    ----------
    settings
        The service settings (data folder, size limit, expiry, durability).
    sessions
        Database sessions (quota and registration).
    """

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions
        self.files = FileService(settings, sessions)

    # --- paths and state -----------------------------------------------------------------
    def _folder(self, owner: str) -> Path:
        return self.settings.datadir / TUS_DIR / owner_dirname(owner)

    def _paths(self, owner: str, upload_id: str) -> tuple[Path, Path]:
        folder = self._folder(owner)
        return folder / f"{upload_id}.json", folder / f"{upload_id}.part"

    def _save(self, up: TusUpload) -> None:
        meta, _ = self._paths(up.owner, up.id)
        tmp = meta.with_name(meta.name + ".tmp")
        tmp.write_text(json.dumps(asdict(up)))
        os.replace(tmp, meta)

    def _load(self, owner: str, upload_id: str) -> TusUpload | None:
        meta, _ = self._paths(owner, upload_id)
        try:
            up = TusUpload(**json.loads(meta.read_text()))
        except (FileNotFoundError, ValueError, TypeError):  # gone, or not one of our records
            return None
        return up if up.owner == owner else None

    def _remove(self, owner: str, upload_id: str) -> None:
        for path in self._paths(owner, upload_id):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def _expired(self, up: TusUpload, now: float | None = None) -> bool:
        return (now or time.time()) > up.expires(self.settings.tus_expiry_hours)

    def get(self, owner: str, upload_id: str) -> TusUpload:
        """The caller's upload.

        Raises
        ------
        NotFound
            No such upload of this caller (a malformed id, another user's, removed, expired).
        """
        up = self._load(owner, upload_id) if is_file_id(upload_id) else None
        if up is None:
            raise NotFound(f"No upload {upload_id}", upload_id=upload_id)
        if self._expired(up):
            self._remove(owner, upload_id)
            raise NotFound(f"Upload {upload_id} has expired", upload_id=upload_id)
        return up

    def offset(self, up: TusUpload) -> int:
        """Bytes received so far (the length once the file is registered)."""
        if up.file_id is not None:
            return up.length
        _, part = self._paths(up.owner, up.id)
        try:
            return part.stat().st_size
        except FileNotFoundError:
            return 0

    def expires_header(self, up: TusUpload) -> str:
        """The ``Upload-Expires`` value of ``up``."""
        return http_date(up.expires(self.settings.tus_expiry_hours))

    # --- creation ------------------------------------------------------------------------
    def pending_bytes(self, owner: str, but: str = "") -> int:
        """Bytes reserved by the caller's unfinished uploads (their declared lengths)."""
        total = 0
        for meta in self._folder(owner).glob("*.json"):
            up = self._load(owner, meta.stem)
            if up is not None and up.file_id is None and up.id != but:
                total += up.length
        return total

    def create(
        self, owner: str, length: int, metadata: dict[str, str], limits: Limits
    ) -> TusUpload:
        """A new, empty upload of ``length`` bytes.

        Raises
        ------
        Invalid
            A zero length.
        TooLarge
            ``length`` over the upload size limit.
        Forbidden
            The stored files, the caller's other unfinished uploads and this one would pass the
            storage quota.
        """
        if length == 0:
            raise Invalid("Upload-Length is 0: the uploaded file would be empty")
        if length > self.settings.max_upload_bytes:
            raise TooLarge(f"Upload too large: the limit is {self.settings.max_upload_mib} MiB")
        self.sweep_owner(owner)
        check_declared_bytes(
            limits,
            lambda: self.files.stored_bytes(owner) + self.pending_bytes(owner),
            length,
            reserved=True,
        )
        now = time.time()
        up = TusUpload(
            id=new_id(),
            owner=owner,
            length=length,
            filename=metadata.get("filename", ""),
            tag=metadata.get("tag", ""),
            created=now,
            touched=now,
        )
        self._folder(owner).mkdir(parents=True, exist_ok=True)
        _, part = self._paths(owner, up.id)
        part.touch(mode=0o640, exist_ok=False)
        self._save(up)
        log.info("tus_created", user=owner, upload_id=up.id, length=length)
        return up

    # --- appending -----------------------------------------------------------------------
    async def append(
        self,
        owner: str,
        upload_id: str,
        offset: int,
        stream: AsyncIterator[bytes],
        declared: int | None,
        limits: Limits,
    ) -> TusUpload:
        """Append a ``PATCH`` body at ``offset``; register the file when it is complete.

        What arrived before a cut connection is kept (the client resumes from there).

        Raises
        ------
        NotFound
            As :meth:`get`.
        OffsetMismatch
            ``offset`` is not the upload's offset (409).
        Locked
            Another request is appending (423).
        TooLarge
            The body goes past ``Upload-Length`` (nothing of this request is kept).
        Unsupported, Forbidden, TooLarge
            At completion, as the legacy upload: not a FITS image, over the quota, a gzip
            file that inflates past the limit (the upload is removed).
        """
        up = self.get(owner, upload_id)
        if up.file_id is not None:  # complete and registered: nothing more to take
            if offset != up.length:
                raise OffsetMismatch(up.length, offset)
            return up
        _, part = self._paths(owner, upload_id)
        fd = await run_in_threadpool(self._open_locked, part)
        try:
            current = os.fstat(fd).st_size
            if offset != current:
                raise OffsetMismatch(current, offset)
            if declared is not None and offset + declared > up.length:
                raise TooLarge(
                    f"The body ({declared} bytes at offset {offset}) goes past "
                    f"Upload-Length {up.length}"
                )
            await self._write(fd, up, offset, stream)
            up.touched = time.time()
            if os.fstat(fd).st_size == up.length:
                await run_in_threadpool(self._complete, up, part, fd, limits)
            else:
                await run_in_threadpool(self._save, up)
        finally:
            os.close(fd)
        return up

    @staticmethod
    def _open_locked(part: Path) -> int:
        try:
            fd = os.open(part, os.O_RDWR | os.O_APPEND)
        except FileNotFoundError:
            raise NotFound(f"No upload {part.stem}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Locked(f"Upload {part.stem} is being written by another request") from None
        return fd

    async def _write(
        self, fd: int, up: TusUpload, offset: int, stream: AsyncIterator[bytes]
    ) -> None:
        buf: list[bytes] = []
        buffered = 0
        written = offset
        try:
            async for chunk in stream:
                if written + buffered + len(chunk) > up.length:
                    os.ftruncate(fd, offset)
                    raise TooLarge(f"The body goes past Upload-Length {up.length}")
                buf.append(chunk)
                buffered += len(chunk)
                if buffered >= WRITE_BUFFER:
                    await run_in_threadpool(os.writev, fd, buf)
                    written += buffered
                    buf, buffered = [], 0
        except ClientDisconnect:
            log.info("tus_patch_cut", user=up.owner, upload_id=up.id)
        if buf:
            await run_in_threadpool(os.writev, fd, buf)
        if self.settings.upload_fsync:
            await run_in_threadpool(os.fsync, fd)

    # --- completion ----------------------------------------------------------------------
    def _complete(self, up: TusUpload, part: Path, fd: int, limits: Limits) -> None:
        """Check and register the complete file, then record its id (the ``.part`` is moved)."""
        received = self._received(up, part)
        try:
            fmt = sniff(part, up.filename)
        except FormatError as exc:
            self._remove(up.owner, up.id)
            raise Unsupported(f"File refused: {exc}") from None
        try:
            rec = self.files.store(up.owner, received, fmt, limits, up.tag, action="tus_upload")
        except BaseException:
            self._remove(up.owner, up.id)
            raise
        up.file_id = rec.id
        up.reply = self.reply(rec, fmt)
        self._save(up)

    def _received(self, up: TusUpload, part: Path) -> ReceivedUpload:
        """The complete ``.part`` file as :func:`store_upload` takes it (hashed, inflated size
        counted for a gzip file)."""
        digest = hashlib.sha256()
        inflater: Inflater | None = None
        try:
            with open(part, "rb") as fh:
                first = True
                while block := fh.read(HASH_BLOCK):
                    if first and block[:2] == GZIP_MAGIC:
                        inflater = Inflater(self.settings.max_upload_bytes)
                    first = False
                    digest.update(block)
                    if inflater is not None:
                        inflater.feed(block)
        except InflatedTooLarge:
            self._remove(up.owner, up.id)
            raise TooLarge(
                "Upload too large: the compressed file inflates to more than the limit of "
                f"{self.settings.max_upload_mib} MiB"
            ) from None
        return ReceivedUpload(
            part,
            up.length,
            digest.hexdigest(),
            up.filename,
            {"tag": up.tag},
            inflated=inflater.size if inflater is not None else None,
        )

    @staticmethod
    def reply(rec: FileRecord, fmt: FileFormat) -> dict[str, Any]:
        """The registered file, as the legacy upload answers it."""
        return {
            "filename_orig": rec.filename_orig,
            "tag": rec.tag,
            "format": fmt.ext,
            "size": round(rec.size / (1024.0 * 1024.0), 6),
            "size_bytes": rec.size,
            "sha256": rec.sha256,
            "uuid": rec.id,
            "date": iso(rec.created_at),
            "status": "File uploaded with success",
        }

    # --- termination and expiry ----------------------------------------------------------
    def terminate(self, owner: str, upload_id: str) -> None:
        """Remove the caller's upload (the registered file, if any, stays).

        Raises
        ------
        NotFound
            As :meth:`get`.
        Locked
            A ``PATCH`` is writing it.
        """
        self.get(owner, upload_id)
        _, part = self._paths(owner, upload_id)
        with contextlib.suppress(FileNotFoundError):
            os.close(self._open_locked(part))
        self._remove(owner, upload_id)
        log.info("tus_terminated", user=owner, upload_id=upload_id)

    def sweep_owner(self, owner: str) -> int:
        """Remove the caller's expired uploads; how many."""
        return _sweep_folder(self._folder(owner), time.time(), self.settings.tus_expiry_hours)


def _sweep_folder(folder: Path, now: float, hours: float) -> int:
    """Remove the expired uploads of one user's folder (and unreadable records); how many."""
    removed = 0
    for meta in folder.glob("*.json"):
        try:
            data = json.loads(meta.read_text())
            stale = now > float(data["touched"]) + hours * 3600.0
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            stale = True
        if stale:
            for path in (meta, meta.with_suffix(".part")):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            removed += 1
    for part in folder.glob("*.part"):  # a .part whose .json never got written
        if not part.with_suffix(".json").exists():
            with contextlib.suppress(FileNotFoundError):
                if now - part.stat().st_mtime > hours * 3600.0:
                    part.unlink()
                    removed += 1
    return removed


def sweep_expired(settings: Settings, now: float | None = None) -> int:
    """Remove every user's expired resumable uploads (start-up); how many.

    Parameters
    ----------
    settings
        The service settings (data folder, ``tus_expiry_hours``).
    now
        The present time (tests).
    """
    root = settings.datadir / TUS_DIR
    if not root.is_dir():
        return 0
    removed = 0
    for folder in root.iterdir():
        if folder.is_dir():
            removed += _sweep_folder(folder, now or time.time(), settings.tus_expiry_hours)
            with contextlib.suppress(OSError):
                folder.rmdir()  # only when empty
    return removed


__all__ = [
    "OFFSET_STREAM",
    "TUS_EXTENSIONS",
    "TUS_VERSION",
    "Locked",
    "OffsetMismatch",
    "TusService",
    "TusUpload",
    "header_int",
    "parse_metadata",
    "sweep_expired",
]
