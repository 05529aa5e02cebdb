"""The service's side of the rclone volume: where its folders live on the remote.

:func:`remote_volume` is None unless ``mount_rclone_volume`` is on. A :class:`RemoteVolume`
maps the local data and job folders (the staging area and cache) to their remote folders and
moves what the service itself stores: uploads (verified before they are registered), job
folders fetched back for reading, removals. The jobs move their own input and results
(:class:`~caesar_rest.storage.remote.Staging`, run by the job wrapper).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path

from caesar_rest.errors import Unavailable
from caesar_rest.settings import Settings
from caesar_rest.storage.paths import INCOMING
from caesar_rest.storage.remote import Remote, RemoteUnavailable, Staging, remote_target

#: (remote, path) of partial copies that could not be removed when an upload failed.
LEFTOVERS: set[tuple[Remote, str]] = set()
#: Seconds a partial copy on the remote (or a local ``.stage`` file) is left alone.
PARTIAL_GRACE = 3600.0


class StorageUnavailable(Unavailable):
    """The remote storage cannot be reached or did not take a file (answered with 503)."""


def _rel_under(folder: Path, mirror: Path, default: str) -> str:
    """``folder`` relative to ``mirror`` when it is under it, else ``default``."""
    with contextlib.suppress(ValueError):
        rel = folder.resolve().relative_to(mirror.resolve()).as_posix()
        if rel != ".":
            return rel
    return default


@dataclass(frozen=True)
class RemoteVolume:
    """The data and job folders on the remote."""

    remote: Remote
    datadir: Path
    jobdir: Path
    data_root: str
    jobs_root: str

    def data_rel(self, relpath: str) -> str:
        """Remote path of a stored file (its ``FileRecord.relpath``)."""
        return f"{self.data_root}/{relpath}"

    def job_rel(self, reldir: str) -> str:
        """Remote path of a job folder (its ``JobRecord.reldir``)."""
        return f"{self.jobs_root}/{reldir}"

    def put_upload(self, local: Path, relpath: str, sha256: str) -> None:
        """Copy a stored upload to the remote and verify it.

        The copy goes to a temporary name in the remote's ``.incoming`` folder, is verified
        there, then renamed into place on the remote, so the file's own name never holds a
        partial copy. A partial copy left while the remote was gone is removed by a later
        upload of this process (:data:`LEFTOVERS`).

        Raises
        ------
        StorageUnavailable
            The remote is gone or does not hold the file afterwards.
        """
        self.clean_leftovers()
        temp = self.data_rel(f"{INCOMING}/{Path(relpath).name}.part")
        try:
            self.remote.put_file(local, temp, sha256)
            self.remote.run(
                "moveto", self.remote.path(temp), self.remote.path(self.data_rel(relpath))
            )
            if self.remote.stat(self.data_rel(relpath)) != local.stat().st_size:
                raise RemoteUnavailable(f"{relpath} is not in place on the remote")
        except RemoteUnavailable as exc:
            for rel in (temp, self.data_rel(relpath)):
                if not self.remote.delete_file(rel):
                    LEFTOVERS.add((self.remote, rel))
            raise StorageUnavailable(
                f"Remote storage unavailable, the file was not stored: {exc}",
                reason="remote_storage",
            ) from None

    def clean_leftovers(self) -> None:
        """Remove the partial copies earlier failures left on the remote (when it answers)."""
        for item in list(LEFTOVERS):
            remote, rel = item
            if remote.delete_file(rel):
                LEFTOVERS.discard(item)

    def sweep_partials(self, grace: float = PARTIAL_GRACE, now: float | None = None) -> list[str]:
        """Remove the partial upload copies on the remote that no upload is still writing.

        :meth:`put_upload` copies to ``<data>/.incoming/<file>.part`` and renames the copy
        into place once verified; a process killed in between (or a remote that went away
        before the copy could be removed, with the process gone since) leaves that file on the
        remote, where it counts against the store. Those untouched for ``grace`` seconds are
        removed: a copy in progress is younger (rclone keeps the source's time, which is the
        end of the local receipt, and an upload's copy takes less than the grace).

        Parameters
        ----------
        grace
            Seconds a partial copy is left alone.
        now
            The present time (tests).

        Returns
        -------
        list of str
            The removed files, as remote paths relative to the data folder.

        Raises
        ------
        StorageUnavailable
            The remote could not be listed.
        """
        folder = self.data_rel(INCOMING)
        try:
            items = self.remote.list_files(folder)
        except RemoteUnavailable as exc:
            raise StorageUnavailable(
                f"Remote storage unavailable: {exc}", reason="remote_storage"
            ) from None
        moment = time.time() if now is None else now
        removed: list[str] = []
        for name, mtime in sorted(items.items()):
            stale = name.endswith(".part") and moment - mtime > grace
            if stale and self.remote.delete_file(f"{folder}/{name}"):
                removed.append(f"{INCOMING}/{name}")
        return removed

    def fetch_file(self, relpath: str, local: Path, sha256: str) -> None:
        """Bring a stored file back into the local cache (verified with its SHA-256)."""
        try:
            local.parent.mkdir(parents=True, exist_ok=True)
            self.remote.get_file(self.data_rel(relpath), local, sha256)
        except RemoteUnavailable as exc:
            raise StorageUnavailable(
                f"Remote storage unavailable: {exc}", reason="remote_storage"
            ) from None

    def fetch_job(self, reldir: str, local: Path) -> None:
        """Bring a job folder back from the remote into the local cache."""
        try:
            self.remote.get_dir(self.job_rel(reldir), local)
        except RemoteUnavailable as exc:
            raise StorageUnavailable(
                f"Remote storage unavailable: {exc}", reason="remote_storage"
            ) from None

    def remove_file(self, relpath: str) -> None:
        """Remove a stored file from the remote (best effort; retried by later uploads)."""
        if not self.remote.delete_file(self.data_rel(relpath)):
            LEFTOVERS.add((self.remote, self.data_rel(relpath)))

    def remove_job(self, reldir: str) -> None:
        """Remove a job folder from the remote (best effort)."""
        self.remote.purge(self.job_rel(reldir))

    def stored_bytes(self, owner_dir: str) -> tuple[int, int]:
        """(data bytes, job bytes) of one user's folders on the remote (``rclone size``)."""
        return (
            self.remote.size(self.data_rel(owner_dir)),
            self.remote.size(self.job_rel(owner_dir)),
        )

    def staging(
        self,
        reldir: str,
        input_relpath: str,
        input_local: str,
        input_sha256: str,
        fetch_folder: bool = False,
    ) -> Staging:
        """What a job's wrapper stages (``input_local``: the input where the job reads it)."""
        return Staging(
            remote=self.remote,
            job_rel=self.job_rel(reldir),
            input_rel=self.data_rel(input_relpath) if input_relpath else "",
            input_local=input_local,
            input_sha256=input_sha256,
            fetch_folder=fetch_folder,
        )


def sweep_stage_files(datadir: Path, grace: float = PARTIAL_GRACE, now: float | None = None) -> int:
    """Remove the temporary local copies of files fetched from the remote that were left
    behind (``.<file>.<pid>.stage`` in the users' folders, :meth:`Remote.get_file`).

    Parameters
    ----------
    datadir
        The data folder.
    grace
        Seconds such a file is left alone (a fetch may be running).
    now
        The present time (tests).

    Returns
    -------
    int
        How many were removed.
    """
    if not datadir.is_dir():
        return 0
    moment = time.time() if now is None else now
    removed = 0
    for path in datadir.glob("*/.*.stage"):
        with contextlib.suppress(FileNotFoundError):
            if moment - path.stat().st_mtime > grace:
                path.unlink()
                removed += 1
    return removed


def make_remote(settings: Settings) -> Remote:
    """The :class:`Remote` of the ``rclone_*`` settings."""
    return Remote(
        target=remote_target(settings.rclone_storage_name),
        root=settings.rclone_storage_path,
        config=str(settings.rclone_config) if settings.rclone_config else None,
        flags=tuple(settings.rclone_flags),
        timeout=settings.rclone_timeout,
        verify=settings.rclone_verify,
    )


def remote_volume(settings: Settings) -> RemoteVolume | None:
    """The remote volume when ``mount_rclone_volume`` is on, else None."""
    if not settings.mount_rclone_volume:
        return None
    mirror = settings.mount_volume_path
    return RemoteVolume(
        remote=make_remote(settings),
        datadir=settings.datadir,
        jobdir=settings.jobdir,
        data_root=_rel_under(settings.datadir, mirror, "data"),
        jobs_root=_rel_under(settings.jobdir, mirror, "jobs"),
    )
