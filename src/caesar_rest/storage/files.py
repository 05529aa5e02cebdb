"""The file service: receive, identify, store, list and delete the users' files.

Every route that touches stored files goes through :class:`FileService` (the v1.0 upload and
file routes, and the UWS job creation with an inline image); routes make no database call of
their own. Errors are :mod:`caesar_rest.errors` classes and carry their HTTP status.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from fastapi.concurrency import run_in_threadpool
from python_multipart.exceptions import MultipartParseError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session, sessionmaker
from starlette.requests import ClientDisconnect

from caesar_rest.auth.quotas import check_declared_bytes, usage
from caesar_rest.auth.users import Limits
from caesar_rest.db.models import FileRecord, JobRecord
from caesar_rest.errors import Conflict, Invalid, NotFound, TooLarge, Unsupported
from caesar_rest.jobs.states import FINAL
from caesar_rest.logconfig import get_logger
from caesar_rest.settings import Settings
from caesar_rest.storage.direct import DirectSource
from caesar_rest.storage.formats import FileFormat, FormatError, sniff
from caesar_rest.storage.paths import is_file_id, safe_join
from caesar_rest.storage.register import store_upload
from caesar_rest.storage.upload import (
    ClientGone,
    InflatedTooLarge,
    ReceivedUpload,
    UploadTooLarge,
    receive_upload,
)
from caesar_rest.storage.volume import remote_volume

log = get_logger(__name__)

#: Allowance for the multipart framing around the file part of a request body.
FRAMING = 64 * 1024


@dataclass(frozen=True)
class UploadLimits:
    """What the pre-checks of an upload compare the request with.

    Parameters
    ----------
    declared
        The request's ``Content-Length`` header, if any (a client may lie: the receipt
        counts again).
    quota
        The caller's limits: with them, a body that cannot fit in the storage quota is refused
        before it is read. None skips that check (the store checks it again in any case).
    """

    declared: str | None = None
    quota: Limits | None = None

    @property
    def length(self) -> int | None:
        """The declared body size in bytes, or None when absent or not a number."""
        clen = self.declared
        return int(clen) if clen and clen.isdigit() else None


@dataclass(frozen=True)
class Stored:
    """A stored upload: its record and what it was found to be."""

    record: FileRecord
    format: FileFormat


class FileService:
    """Stored files of every user: the one owner of ``FileRecord`` rows and their files.

    Parameters
    ----------
    settings
        The service settings (data folder, upload limits, durability).
    sessions
        Database sessions.
    """

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]) -> None:
        self.settings = settings
        self.sessions = sessions

    # --- receiving -----------------------------------------------------------------------
    def _too_large(self) -> TooLarge:
        return TooLarge(f"Upload too large: the limit is {self.settings.max_upload_mib} MiB")

    def precheck(self, owner: str, limits: UploadLimits) -> None:
        """Refuse a body that is declared too large, before reading it.

        Raises
        ------
        TooLarge
            Over the upload size limit.
        Forbidden
            It cannot fit in the caller's storage quota (only with ``limits.quota``).
        """
        length = limits.length
        if length is None:
            return
        if length > self.settings.max_upload_bytes + FRAMING:
            raise self._too_large()
        if limits.quota is not None:
            check_declared_bytes(
                limits.quota, lambda: self.stored_bytes(owner), length - FRAMING, length
            )

    async def receive(
        self,
        stream: AsyncIterator[bytes],
        content_type: str | None,
        owner: str,
        limits: UploadLimits,
        direct: DirectSource | None = None,
    ) -> ReceivedUpload:
        """Check the declared size, then stream the multipart body's ``file`` part to disk.

        Parameters
        ----------
        stream
            The request body, chunk by chunk.
        content_type
            The request's ``Content-Type`` (multipart with its boundary).
        owner
            The caller (for the quota pre-check).
        limits
            The declared size and the caller's quota.
        direct
            The server's offer to read the body from the connection itself (see
            :func:`~caesar_rest.storage.upload.receive_upload`), if any.

        Returns
        -------
        ReceivedUpload
            The file in its temporary place, with its form fields; ``discard()`` it if it is
            not stored.

        Raises
        ------
        UploadError
            Malformed request, no ``file`` part, empty file (400).
        TooLarge, Forbidden
            Over the size limit (a compressed file: inflated), or over the storage quota.
        Invalid
            A malformed multipart body, or the client went away.
        """
        if limits.quota is not None:
            await run_in_threadpool(self.precheck, owner, limits)
        else:
            self.precheck(owner, limits)
        st = self.settings
        try:
            return await receive_upload(
                stream,
                content_type,
                st.datadir,
                st.max_upload_bytes,
                buffer_size=st.upload_chunk_kib * 1024,
                durable=st.upload_fsync,
                direct=direct,
            )
        except InflatedTooLarge:
            raise TooLarge(
                "Upload too large: the compressed file inflates to more than the limit of "
                f"{st.max_upload_mib} MiB"
            ) from None
        except UploadTooLarge:
            raise self._too_large() from None
        except MultipartParseError as exc:
            raise Invalid(f"Malformed multipart body: {exc}") from None
        except (ClientDisconnect, ClientGone):
            log.info("upload_aborted_by_client")
            raise Invalid("Client disconnected during the upload") from None

    async def identify(self, received: ReceivedUpload) -> FileFormat:
        """What the received file is; the temporary file is removed when it is refused.

        Raises
        ------
        Unsupported
            Not an image the service takes (415, ``File refused: ...``).
        """
        try:
            return await run_in_threadpool(sniff, received.temp_path, received.client_filename)
        except FormatError as exc:
            received.discard()
            raise Unsupported(f"File refused: {exc}") from None
        except BaseException:
            received.discard()
            raise

    def store(
        self,
        owner: str,
        received: ReceivedUpload,
        fmt: FileFormat,
        limits: Limits,
        tag: str = "",
        action: str = "upload",
    ) -> FileRecord:
        """Move the file into place and record it (quota checked under the user's lock).

        Raises
        ------
        QuotaExceeded
            Over the storage quota; nothing is stored.
        """
        rec = store_upload(self.settings, self.sessions, owner, received, fmt, limits, tag)
        log.info("file_uploaded", action=action, user=owner, file_id=rec.id, size=rec.size)
        return rec

    async def upload(
        self,
        stream: AsyncIterator[bytes],
        content_type: str | None,
        owner: str,
        limits: UploadLimits,
        direct: DirectSource | None = None,
    ) -> Stored:
        """The v1.0 upload: receive, identify and store, with the form's ``tag``.

        ``limits.quota`` must be set: it is also the quota the store checks. ``direct``: as
        for :meth:`receive`.
        """
        assert limits.quota is not None
        received = await self.receive(stream, content_type, owner, limits, direct)
        fmt = await self.identify(received)
        tag = received.fields.get("tag", "")
        if "\x00" in tag:
            # PostgreSQL's text refuses NUL; refused everywhere, before anything is stored.
            received.discard()
            raise Invalid("The tag holds a NUL character, which is refused")
        rec = await run_in_threadpool(self.store, owner, received, fmt, limits.quota, tag)
        return Stored(rec, fmt)

    # --- stored files --------------------------------------------------------------------
    def stored_bytes(self, owner: str) -> int:
        """Bytes ``owner`` stores now."""
        with self.sessions() as s:
            return usage(s, owner).bytes

    def owned(self, owner: str, file_id: str) -> FileRecord:
        """The caller's file.

        Raises
        ------
        Invalid
            ``file_id`` cannot be a file id.
        NotFound
            No such file of this owner.
        """
        if not is_file_id(file_id):
            raise Invalid(f"Invalid file id {file_id!r}: expected 32 hexadecimal digits")
        with self.sessions() as s:
            rec = s.get(FileRecord, file_id)
        if rec is None or rec.owner != owner:
            raise NotFound(f"File with uuid {file_id} not found on the system!")
        return rec

    def path(self, rec: FileRecord) -> Path:
        """Where the file is stored (brought back from the remote volume into the local cache
        when the local copy is gone)."""
        path = safe_join(self.settings.datadir, rec.relpath)
        volume = remote_volume(self.settings)
        if volume is not None and not path.is_file():
            volume.fetch_file(rec.relpath, path, rec.sha256)
        return path

    def list(self, owner: str) -> list[FileRecord]:
        """Every file of ``owner``, oldest first."""
        with self.sessions() as s:
            stmt = select(FileRecord).where(FileRecord.owner == owner)
            return list(s.scalars(stmt.order_by(FileRecord.created_at)).all())

    def delete(self, owner: str, file_id: str) -> FileRecord:
        """Remove the caller's file: the record, then the file.

        Raises
        ------
        Invalid, NotFound
            As :meth:`owned`.
        Conflict
            An unfinished job reads the file.
        """
        rec = self.owned(owner, file_id)
        with self.sessions() as s:
            active = s.scalars(
                select(JobRecord.id).where(
                    JobRecord.input_file_id == rec.id,
                    JobRecord.phase.not_in([p.value for p in FINAL]),
                )
            ).first()
        if active is not None:
            raise Conflict(
                f"File {file_id} is the input of unfinished job {active}; "
                "cancel it or wait before deleting the file"
            )
        self.forget(rec)
        log.info("file_deleted", action="delete", user=owner, file_id=rec.id)
        return rec

    def forget(self, rec: FileRecord) -> None:
        """Remove a file's record and its file, without checks (an inline upload whose job
        could not be created)."""
        with self.sessions.begin() as s:
            s.execute(delete(FileRecord).where(FileRecord.id == rec.id))
        with contextlib.suppress(FileNotFoundError, ValueError):
            self.path(rec).unlink()
        volume = remote_volume(self.settings)
        if volume is not None:
            volume.remove_file(rec.relpath)
