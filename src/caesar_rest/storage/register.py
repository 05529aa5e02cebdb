"""Turn a completely received upload into a registered file (v1.0 upload and UWS inline)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from caesar_rest.auth.quotas import INFLATED_KEY, check_bytes, lock_user
from caesar_rest.auth.users import Limits
from caesar_rest.db.models import FileRecord
from caesar_rest.settings import Settings
from caesar_rest.storage.formats import FileFormat
from caesar_rest.storage.paths import new_id, owner_dirname, safe_join, sanitize_filename
from caesar_rest.storage.upload import ReceivedUpload
from caesar_rest.storage.volume import remote_volume
from caesar_rest.timeutil import utcnow


def sync_dir(path: Path) -> None:
    """Flush a folder's entries to disk (``fsync`` of the folder itself).

    Parameters
    ----------
    path
        The folder.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def store_upload(
    settings: Settings,
    sessions: sessionmaker[Session],
    owner: str,
    received: ReceivedUpload,
    fmt: FileFormat,
    limits: Limits,
    tag: str = "",
) -> FileRecord:
    """Move the file into place, then check the quota and store its record, atomically per user.

    With ``upload_fsync`` the file's folder (and the data folder) are flushed after the move,
    before the record commits and outside the database's write lock. Raises
    ``QuotaExceeded`` (nothing is stored); on any failure the temporary and the final file are
    removed.

    The quota counts ``received.charged``: the inflated size of a compressed file, which is
    also kept in the record's ``info`` as ``inflated_size`` (the stored total sums it,
    :func:`caesar_rest.auth.quotas.usage`).

    With ``mount_rclone_volume`` the file is copied to the remote and verified there before
    the record is stored (``StorageUnavailable``, 503, when it cannot be: nothing is
    registered, and the local and remote copies are removed).
    """
    file_id = new_id()
    info = dict(fmt.info)
    if received.inflated is not None:
        info[INFLATED_KEY] = received.inflated
    relpath = f"{owner_dirname(owner)}/{file_id}.{fmt.ext}"
    final = safe_join(settings.datadir, relpath)
    rec = FileRecord(
        id=file_id,
        owner=owner,
        filename_orig=sanitize_filename(received.client_filename, default=f"{file_id}.{fmt.ext}"),
        fileext=fmt.ext,
        kind=fmt.kind,
        size=received.size,
        sha256=received.sha256,
        relpath=relpath,
        tag=tag,
        info=info,
        created_at=utcnow(),
    )
    volume = remote_volume(settings)
    sent = False
    try:
        new_folder = not final.parent.is_dir()
        final.parent.mkdir(parents=True, exist_ok=True)
        # In place (and its name on disk) before the record, outside the database's write
        # lock; the file is removed again when the quota refuses it.
        os.replace(received.temp_path, final)
        received.release()  # no longer a partial upload: nothing for the sweep to hold off
        if settings.upload_fsync:
            sync_dir(final.parent)
            if new_folder:  # the user's folder is a new entry of the data folder
                sync_dir(settings.datadir)
        if volume is not None:
            sent = True
            volume.put_upload(final, relpath, received.sha256)
        with sessions.begin() as s:
            lock_user(s, owner)
            check_bytes(s, owner, limits, received.charged)
            s.add(rec)
    except BaseException:
        received.discard()
        with contextlib.suppress(FileNotFoundError):
            final.unlink()
        if sent and volume is not None:
            volume.remove_file(relpath)
        raise
    return rec
