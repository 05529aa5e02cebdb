#!/usr/bin/env python3
"""Where the CPU of an upload goes: ``receive_upload`` in-process, with parts of it left out.

A multipart body of ``--mib`` MiB of random bytes (256 KiB chunks, a new ``bytes`` object
each, as uvicorn hands them on) goes through :func:`caesar_rest.storage.upload.receive_upload`
into a temporary folder, once per mode:

* ``parse``: multipart parsing and the hand-over only (no checksum, nothing written);
* ``hash``: and SHA-256 (nothing written);
* ``write``: and the file written, not flushed (``upload_fsync`` off);
* ``durable``: the service's default: written with write-back requests every 8 MiB and
  ``fsync`` before the answer.

Per mode it prints the wall time and the process's user and system CPU seconds per GiB
(``getrusage``): no HTTP, so the figures are what the upload path adds to a body sink.

Run: ``PYTHONPATH=src .venv/bin/python benchmarks/upload_cpu.py --mib 512``
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from caesar_rest.storage import upload

CHUNK = 256 * 1024
BOUNDARY = b"caesarBenchBoundary7"
MODES = ("parse", "hash", "write", "durable")


async def body(mib: int, block: bytes) -> AsyncIterator[bytes]:
    """The multipart body: one ``file`` part of ``mib`` MiB."""
    yield (
        b"--" + BOUNDARY + b'\r\nContent-Disposition: form-data; name="file"; '
        b'filename="a.fits"\r\nContent-Type: application/octet-stream\r\n\r\n'
    )
    for _ in range(mib * 1024 * 1024 // CHUNK):
        yield bytes(block)  # a new object per chunk, as the server receives them
    yield b"\r\n--" + BOUNDARY + b"--\r\n"


def run(mode: str, mib: int, folder: Path) -> str:
    """One upload in ``mode``; its line of the table."""
    writer = upload._HashingWriter
    saved = writer.write

    def count(self: upload._HashingWriter, parts: list[memoryview]) -> None:
        self.size += sum(len(p) for p in parts)

    def hash_only(self: upload._HashingWriter, parts: list[memoryview]) -> None:
        for part in parts:
            self.hash.update(part)
        count(self, parts)

    if mode == "parse":
        writer.write = count  # type: ignore[method-assign]
    elif mode == "hash":
        writer.write = hash_only  # type: ignore[method-assign]
    block = os.urandom(CHUNK)
    r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    try:
        got = asyncio.run(
            upload.receive_upload(
                body(mib, block),
                "multipart/form-data; boundary=" + BOUNDARY.decode(),
                folder,
                1 << 40,
                durable=mode == "durable",
            )
        )
    finally:
        writer.write = saved  # type: ignore[method-assign]
    wall, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
    got.discard()
    per = 1024 / mib
    return (
        f"{mode:<8} {wall:>7.2f} {(r1.ru_utime - r0.ru_utime) * per:>10.2f} "
        f"{(r1.ru_stime - r0.ru_stime) * per:>10.2f}"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mib", type=int, default=512, help="size of the file part (512)")
    p.add_argument("--rounds", type=int, default=1, help="rounds over the modes (1)")
    p.add_argument("--tmpdir", help="parent of the temporary folder")
    args = p.parse_args(argv)
    print(f"receive_upload of {args.mib} MiB, CPU seconds per GiB")
    print(f"{'mode':<8} {'wall s':>7} {'user s/GiB':>10} {'sys s/GiB':>10}")
    with tempfile.TemporaryDirectory(prefix="upload-cpu-", dir=args.tmpdir) as tmp:
        for _ in range(args.rounds):
            for mode in MODES:
                print(run(mode, args.mib, Path(tmp)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
