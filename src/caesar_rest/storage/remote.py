"""Data and job folders kept on an rclone remote (the predecessor's Nextcloud volumes).

The remote is the store of record; the local data and job folders are the staging area and a
cache that is verified against it. Files are **staged** with ``rclone copyto``/``rclone copy``
and verified (``rclone check``, or a read-back SHA-256) before anything is reported stored,
instead of being written through an rclone FUSE mount: a mount with a write-back cache answers
a write before the remote has the bytes, and an error found then reaches nobody
(docs/storage.md).

rclone is always run with an argument list (never a shell); every remote path is built here
from a validated relative path (ids and owner folder names made by the service) under the
operator's remote, so no client text reaches rclone as an option or outside its folder.

Standard library only: the job wrapper imports it to stage a job's input in and its folder
out, on every backend.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

#: The environment variable that hands a job's staging to the wrapper (:class:`Staging`).
STORAGE_ENV = "CAESAR_JOB_STORAGE"
#: A relative remote path: safe segments (no ``..``, no leading dash or dot-only segments).
_REL = re.compile(r"^(?!.*(?:^|/)\.\.?(?:/|$))[A-Za-z0-9_][A-Za-z0-9_.+-]*(?:/[A-Za-z0-9_.+-]+)*$")
#: An rclone remote name (``nextcloud``) as configured in rclone.conf.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_. -]*$")
#: Flags that make a remote that is gone fail quickly (the caller retries, not rclone).
FAST_FAIL = ("--retries", "1", "--low-level-retries", "2", "--contimeout", "5s")
#: Bytes read at a time when a copy is read back to verify it.
READ_STEP = 1024 * 1024


class RemoteUnavailable(Exception):
    """The remote could not be reached, or did not end up holding what was sent."""


def remote_target(name: str) -> str:
    """The rclone remote prefix of ``rclone_storage_name``: ``nextcloud`` -> ``nextcloud:``.

    A connection string (``:webdav,url='http://...':``) is taken as it is.

    Raises
    ------
    ValueError
        Not a remote name nor a connection string.
    """
    if name.startswith(":") and name.endswith(":") and len(name) > 2:
        return name
    bare = name[:-1] if name.endswith(":") else name
    if not _NAME.match(bare):
        raise ValueError(f"not an rclone remote name: {name!r}")
    return f"{bare}:"


def check_rel(rel: str) -> str:
    """``rel`` when it is a safe relative remote path, else ValueError."""
    if not _REL.match(rel):
        raise ValueError(f"not a safe relative remote path: {rel!r}")
    return rel


@dataclass(frozen=True)
class Remote:
    """One rclone remote folder, and the rclone runs that move files to and from it.

    Parameters
    ----------
    target
        The remote prefix (:func:`remote_target`).
    root
        The folder inside the remote (``rclone_storage_path``; ``.`` or ``""``: its top).
    config
        rclone.conf to use (None: rclone's default).
    flags
        Extra rclone flags of the operator (``--bwlimit 10M``).
    timeout
        Longest run of one rclone command, in seconds.
    verify
        ``download``: read each copy back and compare its bytes (SHA-256 for single files,
        ``rclone check --download`` for folders); ``hash``: ``rclone check`` with the
        remote's hashes (size only where it has none).
    binary
        The rclone program.
    """

    target: str
    root: str = ""
    config: str | None = None
    flags: tuple[str, ...] = ()
    timeout: float = 300.0
    verify: str = "download"
    binary: str = "rclone"

    def path(self, rel: str) -> str:
        """``target:root/rel`` for a validated relative path."""
        rel = check_rel(rel)
        root = self.root.strip("/")
        return f"{self.target}{root}/{rel}" if root not in ("", ".") else f"{self.target}{rel}"

    def root_path(self) -> str:
        """``target:root``, the top of the service's remote folder."""
        root = self.root.strip("/")
        return f"{self.target}{root}" if root not in ("", ".") else self.target

    # --- running rclone ------------------------------------------------------------------
    def run(self, *args: str) -> subprocess.CompletedProcess[bytes]:
        """Run ``rclone ARGS`` (argument list, no shell).

        Raises
        ------
        RemoteUnavailable
            rclone is missing, timed out or failed; the message is its last error line.
        """
        argv = [self.binary, *args, *FAST_FAIL, *self.flags]
        if self.config:
            argv += ["--config", self.config]
        try:
            done = subprocess.run(  # noqa: S603 - argument list, no shell
                argv, capture_output=True, timeout=self.timeout, check=False
            )
        except FileNotFoundError:
            raise RemoteUnavailable(f"rclone not found ({self.binary})") from None
        except subprocess.TimeoutExpired:
            raise RemoteUnavailable(f"rclone {args[0]} took over {self.timeout:g} s") from None
        if done.returncode != 0:
            raise RemoteUnavailable(f"rclone {args[0]} failed: {_last_error(done.stderr)}")
        return done

    # --- files -----------------------------------------------------------------------------
    def put_file(self, local: Path, rel: str, sha256: str | None = None) -> None:
        """Copy ``local`` to ``rel`` and verify the copy (size, and bytes with ``download``)."""
        self.run("copyto", str(local), self.path(rel))
        size = local.stat().st_size
        if self.verify == "download":
            digest = sha256 or file_sha256(local)
            got, nbytes = self.remote_sha256(rel)
            if got != digest or nbytes != size:
                raise RemoteUnavailable(f"the remote copy of {rel} differs from what was sent")
        else:
            self.check_hashes(local, rel, size)

    def check_hashes(self, local: Path, rel: str, size: int) -> None:
        """Compare the remote file's size, and its MD5/SHA-1 where the remote keeps them
        (Nextcloud does), with ``local``'s."""
        out = self.run("lsjson", "--files-only", "--no-mimetype", "--hash", self.path(rel)).stdout
        items = json.loads(out or b"[]")
        if not items or int(items[0]["Size"]) != size:
            raise RemoteUnavailable(f"the remote copy of {rel} has the wrong size")
        theirs = {k.lower(): v for k, v in (items[0].get("Hashes") or {}).items() if v}
        if not theirs.keys() & {"md5", "sha1"}:
            return
        ours = {"md5": hashlib.md5(), "sha1": hashlib.sha1()}  # noqa: S324 - the remote's sums
        with open(local, "rb") as fh:
            while chunk := fh.read(READ_STEP):
                for h in ours.values():
                    h.update(chunk)
        for name, h in ours.items():
            if name in theirs and theirs[name] != h.hexdigest():
                raise RemoteUnavailable(f"the remote copy of {rel} differs ({name})")

    def get_file(self, rel: str, local: Path, sha256: str | None = None) -> None:
        """Copy ``rel`` to ``local`` (through a temporary name), checked with ``sha256``."""
        tmp = local.with_name(f".{local.name}.{os.getpid()}.stage")
        try:
            self.run("copyto", self.path(rel), str(tmp))
            if sha256 and file_sha256(tmp) != sha256:
                raise RemoteUnavailable(f"the remote copy of {rel} is not the uploaded file")
            os.replace(tmp, local)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def remote_sha256(self, rel: str) -> tuple[str, int]:
        """SHA-256 and size of the remote file ``rel``, read back with ``rclone cat``."""
        argv = [self.binary, "cat", self.path(rel), *FAST_FAIL, *self.flags]
        if self.config:
            argv += ["--config", self.config]
        digest = hashlib.sha256()
        size = 0
        proc = subprocess.Popen(  # noqa: S603 - argument list, no shell
            argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stderr is not None
        try:
            while chunk := proc.stdout.read(READ_STEP):
                digest.update(chunk)
                size += len(chunk)
            err = proc.stderr.read()
            rc = proc.wait(timeout=self.timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if rc != 0:
            raise RemoteUnavailable(f"rclone cat failed: {_last_error(err)}")
        return digest.hexdigest(), size

    def stat(self, rel: str) -> int | None:
        """Size of the remote file ``rel``; None when there is no such file."""
        out = self.run("lsjson", "--files-only", "--no-mimetype", self.path(rel)).stdout
        items = json.loads(out or b"[]")
        return int(items[0]["Size"]) if items else None

    def list_files(self, rel: str) -> dict[str, float]:
        """The files directly in the remote folder ``rel``: name to modification time (epoch
        seconds); empty when the folder does not exist.

        Raises
        ------
        RemoteUnavailable
            The remote could not be listed.
        """
        try:
            out = self.run("lsjson", "--files-only", "--no-mimetype", self.path(rel)).stdout
        except RemoteUnavailable as exc:
            if "directory not found" in str(exc):
                return {}
            raise
        return {str(i["Name"]): rfc3339_epoch(str(i["ModTime"])) for i in json.loads(out or b"[]")}

    def delete_file(self, rel: str) -> bool:
        """Remove the remote file ``rel``; False when the remote could not be asked (no
        error when the file is gone already)."""
        try:
            self.run("deletefile", self.path(rel))
        except RemoteUnavailable as exc:
            return "doesn't exist" in str(exc) or "not found" in str(exc)
        return True

    def purge(self, rel: str) -> None:
        """Remove the remote folder ``rel`` and everything in it (no error when gone)."""
        with contextlib.suppress(RemoteUnavailable):
            self.run("purge", self.path(rel))

    # --- folders ---------------------------------------------------------------------------
    def put_dir(self, local: Path, rel: str) -> None:
        """Copy the folder ``local`` into ``rel`` and check that the remote has all of it."""
        dest = self.path(rel)
        self.run("copy", str(local), dest)
        check = ["check", str(local), dest, "--one-way"]
        if self.verify == "download":
            check.append("--download")
        self.run(*check)

    def get_dir(self, rel: str, local: Path) -> None:
        """Copy the remote folder ``rel`` into ``local`` (made if missing)."""
        local.mkdir(parents=True, exist_ok=True)
        try:
            self.run("copy", self.path(rel), str(local))
        except RemoteUnavailable as exc:
            if "directory not found" not in str(exc):
                raise

    def size(self, rel: str) -> int:
        """Bytes under the remote folder ``rel`` (``rclone size --json``; 0 when missing)."""
        try:
            out = self.run("size", "--json", self.path(rel)).stdout
        except RemoteUnavailable as exc:
            if "directory not found" in str(exc):
                return 0
            raise
        return int(json.loads(out)["bytes"])

    def reachable(self) -> str | None:
        """None when the remote answers a listing of its root, else why not."""
        try:
            self.run("lsf", "--max-depth", "1", self.root_path())
        except RemoteUnavailable as exc:
            return str(exc)
        return None


def _last_error(stderr: bytes) -> str:
    """rclone's last meaningful stderr line (without its timestamp)."""
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines() if ln.strip()]
    lines = [ln for ln in lines if "Config file" not in ln] or lines or ["no message"]
    text = re.sub(r"^\d{4}/\d\d/\d\d \d\d:\d\d:\d\d ", "", lines[-1])
    return text[:500]


def rfc3339_epoch(stamp: str) -> float:
    """Epoch seconds of an rclone time stamp (RFC 3339, nanoseconds allowed).

    Parameters
    ----------
    stamp
        For example ``2026-12-02T07:00:00.123456789Z`` or ``...+01:00``.

    Returns
    -------
    float
        Seconds since the epoch.
    """
    text = re.sub(r"(\.\d{6})\d+", r"\1", stamp.strip()).replace("Z", "+00:00")
    return datetime.fromisoformat(text).timestamp()


def file_sha256(path: Path) -> str:
    """SHA-256 of a local file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(READ_STEP):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass(frozen=True)
class Staging:
    """What a job's wrapper moves: its input in before the app, its folder out after it.

    Handed to the wrapper as JSON in :data:`STORAGE_ENV` (:meth:`to_env`, :meth:`from_env`).
    """

    remote: Remote
    #: Remote path of the job folder (``jobs/<owner>/<job id>``).
    job_rel: str
    #: Remote path of the input file, where the job reads it, and its SHA-256.
    input_rel: str = ""
    input_local: str = ""
    input_sha256: str = ""
    #: Fetch the job folder from the remote first (a pod that starts with an empty folder).
    fetch_folder: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def to_env(self) -> str:
        """The :data:`STORAGE_ENV` value."""
        data = asdict(self)
        data["remote"]["flags"] = list(self.remote.flags)
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def from_env(cls, text: str) -> Staging:
        """The staging of a :data:`STORAGE_ENV` value (ValueError when malformed)."""
        data = json.loads(text)
        remote = dict(data.pop("remote"))
        remote["flags"] = tuple(str(f) for f in remote.get("flags") or ())
        return cls(remote=Remote(**remote), **data)

    def stage_in(self, job_dir: Path) -> None:
        """The job folder (if asked) and the input file, from the remote.

        The input is fetched when it is not where the job reads it (a node without the
        service's cache), and checked against the SHA-256 recorded at its upload.
        """
        if self.fetch_folder:
            self.remote.get_dir(self.job_rel, job_dir)
        if not self.input_rel or not self.input_local:
            return
        local = Path(self.input_local)
        if local.is_file() and (not self.input_sha256 or file_sha256(local) == self.input_sha256):
            return
        local.parent.mkdir(parents=True, exist_ok=True)
        self.remote.get_file(self.input_rel, local, self.input_sha256 or None)

    def stage_out(self, job_dir: Path) -> None:
        """The job folder to the remote, checked there."""
        self.remote.put_dir(job_dir, self.job_rel)
