"""Resumable (tus) upload against the legacy one-request upload, through the Python client.

Starts ``caesar-rest serve`` (one uvicorn worker, SQLite, fsync on as by default) on a free
port of 127.0.0.1 and sends a ``--mib`` MiB FITS image with ``CaesarClient.upload``: once as
the legacy multipart ``POST /upload``, then by tus with each ``--chunks`` size (MiB per
``PATCH``). Median of ``--rounds`` seconds until the file is registered; MiB/s from that.

    nice .venv/bin/python benchmarks/tus_upload.py --mib 256 --rounds 3 --chunks 1 8 32
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from astropy.io import fits

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from caesar_rest.client import CaesarClient  # noqa: E402

MIB = 1024 * 1024


def _image(path: Path, mib: int) -> Path:
    side = int((mib * MIB / 4) ** 0.5)
    rng = np.random.default_rng(1)
    fits.PrimaryHDU(rng.normal(0, 1e-4, (side, side)).astype(np.float32)).writeto(path)
    return path


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _port()
    env = {**os.environ, "CAESAR_REST_MAX_UPLOAD_MIB": "4096", "CAESAR_REST_QUOTA_BYTES": "0"}
    cmd = [sys.executable, "-m", "caesar_rest.cli", "serve", "--host", "127.0.0.1"]
    cmd += ["--port", str(port), "--datadir", str(root / "data"), "--jobdir", str(root / "jobs")]
    proc = subprocess.Popen(  # noqa: S603
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("the server did not start")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--chunks", type=int, nargs="+", default=[1, 8, 32])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        image = _image(root / "big.fits", args.mib)
        size = image.stat().st_size
        proc, url = _serve(root / "srv")
        try:
            with CaesarClient(url) as c:
                ways: list[tuple[str, dict[str, object]]] = [
                    ("legacy POST /upload", {"resumable": False})
                ]
                ways += [
                    (f"tus, {n} MiB chunks", {"resumable": True, "chunk_size": n * MIB})
                    for n in args.chunks
                ]
                print(f"file: {size / MIB:.1f} MiB, median of {args.rounds}")
                print("| upload | s | MiB/s |\n|---|---|---|")
                for label, kw in ways:
                    times = []
                    for _ in range(args.rounds):
                        t0 = time.perf_counter()
                        info = c.upload(image, state_dir=root / "state", **kw)  # type: ignore[arg-type]
                        times.append(time.perf_counter() - t0)
                        assert info.size == size
                    med = statistics.median(times)
                    print(f"| {label} | {med:.2f} | {size / MIB / med:.0f} |", flush=True)
        finally:
            proc.terminate()
            proc.wait(15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
