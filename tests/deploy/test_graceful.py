"""``caesar-rest serve --workers N`` stops gracefully: on SIGTERM the uploads and downloads that
are running finish, then the processes exit."""

from __future__ import annotations

import hashlib
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.deploy.deploy_support import small_fits
from tests.support.multipart import form_parts
from tests.support.server import LiveServer


def test_sigterm_lets_running_upload_and_download_finish(tmp_path: Path) -> None:
    srv = LiveServer(tmp_path / "srv", CAESAR_REST_WORKERS="2").start(timeout=90)
    assert srv.proc is not None
    try:
        download_src = small_fits(2560)  # 25 MiB
        with srv.client() as c:
            r = c.post("/upload", files={"file": ("dl.fits", download_src)})
            assert r.status_code == 200, r.text
            dl_id = r.json()["uuid"]
        upload_src = small_fits(2048)  # 16 MiB, sent in 64 pieces over about 3 s
        boundary = "caesar-graceful-test"
        head, tail = form_parts(boundary, "slow.fits")
        started = {"upload": threading.Event(), "download": threading.Event()}
        result: dict[str, object] = {}

        def body() -> Iterator[bytes]:
            yield head
            step = len(upload_src) // 64 + 1
            for i in range(0, len(upload_src), step):
                yield upload_src[i : i + step]
                started["upload"].set()
                time.sleep(0.05)
            yield tail

        def upload() -> None:
            try:
                r = httpx.post(
                    f"{srv.api}/upload",
                    content=body(),
                    headers={
                        "Content-Type": f"multipart/form-data; boundary={boundary}",
                        "Content-Length": str(len(head) + len(upload_src) + len(tail)),
                    },
                    timeout=120,
                )
                result["upload"] = (r.status_code, r.json())
            except Exception as exc:  # reported by the assertions below
                result["upload"] = exc

        def download() -> None:
            h = hashlib.sha256()
            try:
                with httpx.stream("GET", f"{srv.api}/download/{dl_id}", timeout=120) as r:
                    for chunk in r.iter_bytes(256 * 1024):
                        h.update(chunk)
                        started["download"].set()
                        time.sleep(0.03)  # a slow client: about 3 s for 25 MiB
                    result["download"] = (r.status_code, h.hexdigest())
            except Exception as exc:
                result["download"] = exc

        threads = [threading.Thread(target=f, daemon=True) for f in (upload, download)]
        for t in threads:
            t.start()
        assert started["upload"].wait(30) and started["download"].wait(30)
        t_term = time.time()
        srv.proc.send_signal(signal.SIGTERM)  # the parent, as systemd or the kubelet does
        for t in threads:
            t.join(90)
        rc = srv.proc.wait(60)
        t_exit = time.time()
    finally:
        srv.kill()
    status, up = result["upload"]  # type: ignore[misc]
    assert status == 200, up
    assert up["sha256"] == hashlib.sha256(upload_src).hexdigest()
    stored = srv.datadir / "anonymous" / f"{up['uuid']}.fits"
    assert stored.read_bytes() == upload_src
    assert result["download"] == (200, hashlib.sha256(download_src).hexdigest())
    log = srv.log.read_text()
    # The workers waited for the open connections, then stopped cleanly.
    assert "Waiting for connections to close" in log, log[-3000:]
    assert rc == 0, log[-3000:]
    print(f"\nSIGTERM -> exit {t_exit - t_term:.1f} s, both transfers complete ({len(log)} B log)")
    assert t_exit - t_term > 0.5
