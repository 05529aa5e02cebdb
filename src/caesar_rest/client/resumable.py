"""Resumable uploads by the tus 1.0 protocol (the service's ``/caesar/api/v1.0/files/tus``).

The file goes in chunks, each a ``PATCH`` at the offset the server has. The upload's URL is
kept in a small state file named after the file (path, size, modification time), the service
and the tag, so that a second run after an interrupted one (a cut connection, a killed
process) asks the server how far it got and sends only the rest. A cut connection within one
run is resumed at once, up to the retry policy's number of tries in a row without progress.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx

#: The protocol version spoken.
TUS_VERSION = "1.0.0"
#: Bytes per ``PATCH`` by default.
DEFAULT_CHUNK = 8 * 1024 * 1024
#: The header that names the registered file once the upload is complete.
FILE_ID_HEADER = "X-Caesar-File-Id"
_TUS = {"Tus-Resumable": TUS_VERSION}
#: Answers after which the upload is gone on the server (refused at completion, quota, size,
#: malformed): the state file is removed, a later run starts again.
FINAL_REFUSALS = frozenset({400, 403, 404, 410, 413, 415})


def default_state_dir() -> Path:
    """Where the URLs of unfinished uploads are kept (``$XDG_CACHE_HOME/caesar-rest/uploads``)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "caesar-rest" / "uploads"


def encode_metadata(values: dict[str, str]) -> str:
    """The ``Upload-Metadata`` header: ``key base64(value)`` pairs, comma separated."""
    return ",".join(
        f"{k} {base64.b64encode(v.encode('utf-8')).decode('ascii')}" for k, v in values.items()
    )


class ResumeError(Exception):
    """The upload cannot go on (``status`` is the HTTP status, None for a transport error)."""

    def __init__(self, status: int | None, message: str, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.body = body


@dataclass
class ResumableUpload:
    """One file sent by tus, resumable across runs.

    Parameters
    ----------
    http
        The client's connection pool (base URL and authorisation set).
    endpoint
        The creation URL (``/caesar/api/v1.0/files/tus``).
    path
        The local file.
    tag
        Stored with the file.
    chunk_size
        Bytes per ``PATCH``.
    state_dir
        Folder of the state files (default :func:`default_state_dir`).
    tries
        ``PATCH`` or ``HEAD`` failures in a row (no byte gained) before giving up.
    sleep
        Pause between tries (``sleep(tried)``).
    progress
        ``progress(bytes_done, bytes_total)``.
    """

    http: httpx.Client
    endpoint: str
    path: Path
    tag: str | None = None
    chunk_size: int = DEFAULT_CHUNK
    state_dir: Path | None = None
    tries: int = 4
    sleep: Callable[[int], None] | None = None
    progress: Callable[[int, int], None] | None = None
    #: Bytes sent in this run (tests and reports: what a resumed run did not send again).
    sent: int = 0

    @property
    def size(self) -> int:
        """The file's size."""
        return self.path.stat().st_size

    def state_file(self) -> Path:
        """This upload's state file (it holds the upload URL)."""
        st = self.path.stat()
        key = "|".join(
            [
                str(self.http.base_url),
                str(self.http.headers.get("authorization", "")),
                str(self.path.resolve()),
                str(st.st_size),
                str(st.st_mtime_ns),
                self.tag or "",
            ]
        )
        folder = self.state_dir or default_state_dir()
        return folder / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"

    def run(self) -> dict[str, Any]:
        """Send what the server lacks and return the registered file (the ``/upload`` reply).

        Raises
        ------
        ResumeError
            The server refused the upload, or it could not be reached ``tries`` times in a row.
        """
        state = self.state_file()
        try:
            return self._run(state)
        except ResumeError as exc:
            if exc.status in FINAL_REFUSALS:  # the server dropped the upload: nothing to resume
                with contextlib.suppress(FileNotFoundError):
                    state.unlink()
            raise

    def _run(self, state: Path) -> dict[str, Any]:
        url, offset = self._resume(state)
        if url is None:
            url = self._create()
            state.parent.mkdir(parents=True, exist_ok=True)
            state.write_text(json.dumps({"url": url, "file": str(self.path)}))
            offset = 0
        total = self.size
        if self.progress:
            self.progress(offset, total)
        failures = 0
        with open(self.path, "rb") as fh:
            while offset < total:
                fh.seek(offset)
                chunk = fh.read(self.chunk_size)
                try:
                    offset = self._patch(url, offset, chunk)
                    failures = 0
                    self.sent += len(chunk)
                except (httpx.TransportError, _Conflict):
                    failures += 1
                    if failures >= self.tries:
                        raise ResumeError(
                            None, f"upload to {url} failed {failures} times"
                        ) from None
                    if self.sleep:
                        self.sleep(failures)
                    with contextlib.suppress(httpx.TransportError):
                        offset = self._offset(url)  # else the next PATCH finds out (409)
                if self.progress:
                    self.progress(offset, total)
        reply = self._finished(url)
        with contextlib.suppress(FileNotFoundError):
            state.unlink()
        return reply

    # --- requests ------------------------------------------------------------------------
    def _resume(self, state: Path) -> tuple[str | None, int]:
        """The stored URL and the server's offset; (None, 0) when there is nothing to resume."""
        try:
            url = str(json.loads(state.read_text())["url"])
        except (FileNotFoundError, ValueError, KeyError):
            return None, 0
        r = self.http.head(url, headers=_TUS)
        if r.status_code in (404, 410):
            state.unlink()
            return None, 0
        _check(r)
        return url, int(r.headers["upload-offset"])

    def _create(self) -> str:
        meta = {"filename": self.path.name}
        if self.tag:
            meta["tag"] = self.tag
        r = self.http.post(
            self.endpoint,
            headers={
                **_TUS,
                "Upload-Length": str(self.size),
                "Upload-Metadata": encode_metadata(meta),
            },
        )
        _check(r)
        return urljoin(str(self.http.base_url), r.headers["location"])

    def _patch(self, url: str, offset: int, chunk: bytes) -> int:
        r = self.http.patch(
            url,
            content=chunk,
            headers={
                **_TUS,
                "Upload-Offset": str(offset),
                "Content-Type": "application/offset+octet-stream",
            },
            timeout=httpx.Timeout(self.http.timeout.connect, write=None, read=None),
        )
        if r.status_code in (409, 423):  # another offset, or a request still writing
            raise _Conflict()
        _check(r)
        return int(r.headers["upload-offset"])

    def _offset(self, url: str) -> int:
        r = self.http.head(url, headers=_TUS)
        _check(r)
        return int(r.headers["upload-offset"])

    def _finished(self, url: str) -> dict[str, Any]:
        r = self.http.get(url, headers=_TUS)
        _check(r)
        body: dict[str, Any] = r.json()
        if not body.get("complete") or not body.get("file"):
            raise ResumeError(r.status_code, f"upload {url} is not complete", body)
        file: dict[str, Any] = body["file"]
        return file


class _Conflict(Exception):
    """The server has another offset than the client thought (409) or is busy (423)."""


def _check(r: httpx.Response) -> None:
    if r.status_code < 400:
        return
    body: Any = None
    message = r.reason_phrase
    with contextlib.suppress(ValueError):
        r.read()
        body = r.json()
        if isinstance(body, dict) and body.get("status"):
            message = str(body["status"])
    raise ResumeError(r.status_code, message, body)
