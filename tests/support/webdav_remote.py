"""A real rclone WebDAV server on 127.0.0.1: the stand-in for the predecessor's Nextcloud.

``rclone serve webdav FOLDER --addr 127.0.0.1:PORT`` serves a local folder over WebDAV, as
Nextcloud does; the service reaches it with the connection string :attr:`WebdavRemote.remote`
(no rclone.conf needed). :meth:`stop` kills the server (the remote "goes away"),
:meth:`start` brings it back on the same port with the same files. When CI is set, rclone
missing is a failure, not a skip.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.support.server import free_port


def need_rclone() -> str:
    """The rclone program (fails under CI, skips elsewhere, when it is not installed)."""
    found = shutil.which("rclone")
    if found is None:
        why = "rclone is not installed (apt-get install -y rclone)"
        if os.environ.get("CI") == "true":
            pytest.fail(why)
        pytest.skip(why)
    return found


class WebdavRemote:
    """``rclone serve webdav`` of :attr:`folder` on a free port."""

    def __init__(self, folder: Path):
        self.binary = need_rclone()
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def remote(self) -> str:
        """The rclone connection string of the server (``rclone_storage_name``)."""
        return f":webdav,url='http://127.0.0.1:{self.port}':"

    def start(self, timeout: float = 15.0) -> WebdavRemote:
        """Start serving; return once the port answers."""
        self.proc = subprocess.Popen(  # noqa: S603 - argument list
            [
                self.binary,
                "serve",
                "webdav",
                str(self.folder),
                "--addr",
                f"127.0.0.1:{self.port}",
                # Serve the folder as it is now (a test changes files behind the server's back).
                "--dir-cache-time",
                "0s",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"rclone serve webdav exited with {self.proc.returncode}")
            time.sleep(0.05)
        raise RuntimeError("rclone serve webdav did not start")

    def stop(self) -> None:
        """Kill the server (the remote is gone at once, connections included)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None

    def files(self, under: str = "") -> dict[str, int]:
        """``{relative path: size}`` of every file the server holds (under ``under``)."""
        root = self.folder / under
        out: dict[str, int] = {}
        for p in sorted(root.rglob("*")):
            try:
                if p.is_file():
                    out[p.relative_to(root).as_posix()] = p.stat().st_size
            except FileNotFoundError:
                continue  # removed while listed (the service's sweep runs beside the test)
        return out
