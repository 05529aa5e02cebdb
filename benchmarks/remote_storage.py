"""Upload and job-output throughput to an rclone WebDAV remote, beside the local disk.

Starts ``rclone serve webdav`` on 127.0.0.1 (the stand-in for Nextcloud) and an in-process
service (FastAPI TestClient, local runner), then measures, median of ``--rounds``:

- upload: ``POST /upload`` of a ``--mib`` MiB FITS image until its 200, with the data folder
  local only and with ``mount_rclone_volume`` (copied to the remote and read back before the
  answer, ``rclone_verify=download``; also ``hash``: size/hash check only);
- job output: the stage-out of a job folder of ``--files`` files, ``--mib`` MiB in all
  (``rclone copy`` + ``rclone check --download``, what the job wrapper does before the job is
  reported done) against a local copy of the same folder with fsync.

The remote runs on the same machine: the figures show rclone's and WebDAV's own cost, not a
network's.

    .venv/bin/python benchmarks/remote_storage.py --mib 64 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from astropy.io import fits
from fastapi.testclient import TestClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from caesar_rest.api.app import create_app  # noqa: E402
from caesar_rest.settings import Settings  # noqa: E402
from caesar_rest.storage.remote import Remote  # noqa: E402

from tests.support.webdav_remote import WebdavRemote  # noqa: E402

MIB = 1024 * 1024


def _image(path: Path, mib: int) -> Path:
    n = int((mib * MIB / 4) ** 0.5)
    data = np.random.default_rng(1).normal(0, 1e-4, (n, n)).astype(np.float32)
    fits.PrimaryHDU(data).writeto(path, overwrite=True)
    return path


def _median(fn: Callable[[int], None], rounds: int) -> float:
    times = []
    for i in range(rounds):
        t = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def upload_seconds(root: Path, image: Path, rounds: int, **kw: object) -> float:
    settings = Settings(datadir=root / "data", jobdir=root / "jobs", **kw)  # type: ignore[arg-type]
    with TestClient(create_app(settings)) as c:

        def once(_i: int) -> None:
            with open(image, "rb") as fh:
                r = c.post("/caesar/api/v1.0/upload", files={"file": (image.name, fh)})
            assert r.status_code == 200, r.text

        return _median(once, rounds)


def _local_copy(src: Path, dest: Path) -> None:
    shutil.copytree(src, dest)
    for p in dest.iterdir():
        fd = os.open(p, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mib", type=int, default=64, help="upload and job folder size, MiB")
    p.add_argument("--files", type=int, default=8, help="files in the job folder")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="caesar-remote-bench-") as tmp:
        root = Path(tmp)
        srv = WebdavRemote(root / "remote").start()
        try:
            image = _image(root / "bench.fits", args.mib)
            size = image.stat().st_size / MIB
            remote = {"mount_rclone_volume": True, "rclone_storage_name": srv.remote}
            rows = [
                ("upload, local disk (fsync)", upload_seconds(root / "a", image, args.rounds)),
                (
                    "upload, remote (verify=download)",
                    upload_seconds(root / "b", image, args.rounds, **remote),
                ),
                (
                    "upload, remote (verify=hash)",
                    upload_seconds(root / "c", image, args.rounds, **remote, rclone_verify="hash"),
                ),
            ]
            folder = root / "jobout"
            folder.mkdir()
            chunk = args.mib * MIB // args.files
            for i in range(args.files):
                (folder / f"out{i}.bin").write_bytes(os.urandom(chunk))
            out = chunk * args.files / MIB
            rows.append(
                (
                    "job output, local copy (fsync)",
                    _median(lambda i: _local_copy(folder, root / f"copy{i}"), args.rounds),
                )
            )
            rr = Remote(srv.remote, "bench")
            rows.append(
                (
                    "job output, stage-out to remote (copy + check --download)",
                    _median(lambda i: rr.put_dir(folder, f"jobs/j{i}"), args.rounds),
                )
            )
        finally:
            srv.stop()
    print(f"| what | MiB | median s ({args.rounds} rounds) | MiB/s |")
    print("|---|---|---|---|")
    for name, secs in rows:
        mib = size if name.startswith("upload") else out
        print(f"| {name} | {mib:.1f} | {secs:.3f} | {mib / secs:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
