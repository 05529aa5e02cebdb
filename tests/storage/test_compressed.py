"""Compressed uploads (issue 14 item 1): the inflated size is checked while the file arrives.

The bombs are small: a few MiB of zeros or less, inflating to 64 MiB, against limits of a few
MiB, so the tests stay safe and fast.
"""

from __future__ import annotations

import asyncio
import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from fastapi.testclient import TestClient

from caesar_rest.api.app import create_app
from caesar_rest.storage import upload
from caesar_rest.storage.upload import InflatedTooLarge, receive_upload

from tests.storage.test_upload import CTYPE, body, chunks
from tests.support.server import make_settings

MIB = 1024 * 1024
API = "/caesar/api/v1.0"


def bomb(inflated: int = 64 * MIB) -> bytes:
    """A gzip FITS file of ``inflated`` bytes: a valid header, then zeros (about 1000:1)."""
    header = fits.PrimaryHDU(np.zeros((16, 16), dtype=np.float32)).header
    header["NAXIS1"] = header["NAXIS2"] = 4096  # what it claims to hold
    head = header.tostring().encode()
    z = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    out = [z.compress(head)]
    zeros = bytes(MIB)
    for _ in range((inflated - len(head)) // MIB):
        out.append(z.compress(zeros))
    out.append(z.flush())
    return b"".join(out)


def small_fits_gz(tmp: Path) -> bytes:
    path = tmp / "small.fits"
    fits.PrimaryHDU(np.ones((64, 64), dtype=np.float32)).writeto(path)
    return gzip.compress(path.read_bytes())


def receive(data: bytes, tmp: Path, limit: int, chunk: int = 65536) -> upload.ReceivedUpload:
    return asyncio.run(receive_upload(chunks(body(data), chunk), CTYPE, tmp, limit, 65536))


def test_bomb_upload_refused_while_streaming(tmp_path: Path) -> None:
    data = bomb()
    assert len(data) < MIB // 4  # a quarter MiB on the wire: far under the limit
    with pytest.raises(InflatedTooLarge, match="inflates to more than"):
        receive(data, tmp_path, limit=4 * MIB)
    assert list((tmp_path / ".incoming").iterdir()) == []


def test_bomb_after_padding_and_a_small_member_refused(tmp_path: Path) -> None:
    """gzip readers go on after zero padding and the next member: so does the count."""
    data = gzip.compress(b"SIMPLE  =") + bytes(100) + bomb(16 * MIB)
    with pytest.raises(InflatedTooLarge):
        receive(data, tmp_path, limit=4 * MIB, chunk=1000)
    assert list((tmp_path / ".incoming").iterdir()) == []


@pytest.mark.parametrize("chunk", [1, 7, 65536])
def test_compressed_upload_under_the_limit_counts_inflated(tmp_path: Path, chunk: int) -> None:
    raw = b"".join(bytes([i]) * 5000 for i in range(256))
    data = gzip.compress(raw[:600_000]) + gzip.compress(raw[600_000:])  # two members
    got = receive(data, tmp_path, limit=4 * MIB, chunk=chunk)
    assert got.size == len(data) and got.inflated == len(raw)
    assert got.charged == len(raw)
    got.discard()
    plain = receive(raw, tmp_path, limit=4 * MIB)
    assert plain.inflated is None and plain.charged == len(raw)
    plain.discard()


def test_inflater_memory_stays_bounded() -> None:
    """Each step yields at most INFLATE_STEP bytes, however dense the stream."""
    inf = upload.Inflater(limit=1 << 40)
    seen: list[int] = []
    real = zlib.decompressobj

    class Spy:
        def __init__(self, wbits: int) -> None:
            self._z = real(wbits)

        def decompress(self, data: bytes, max_length: int) -> bytes:
            out = self._z.decompress(data, max_length)
            seen.append(len(out))
            return out

        def __getattr__(self, name: str) -> object:
            return getattr(self._z, name)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(upload.zlib, "decompressobj", Spy)
        inf.feed(gzip.compress(bytes(8 * MIB)))
    assert inf.size == 8 * MIB and max(seen) <= upload.INFLATE_STEP


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    settings = make_settings(tmp_path, max_upload_mib=4, quota_bytes=2 * MIB)
    with TestClient(create_app(settings)) as c:
        yield c


def _nothing_left(client: TestClient) -> None:
    datadir = client.app.state.ctx.settings.datadir  # type: ignore[attr-defined]
    assert client.get(f"{API}/fileids").json() == []
    assert list((datadir / ".incoming").iterdir()) == []
    assert not [p for p in datadir.rglob("*") if p.is_file()]


def test_bomb_upload_gets_json_413_and_leaves_nothing(client: TestClient) -> None:
    r = client.post(f"{API}/upload", files={"file": ("bomb.fits.gz", bomb())})
    assert r.status_code == 413, r.text
    assert "inflates to more than the limit of 4 MiB" in r.json()["status"]
    _nothing_left(client)


def test_bomb_inline_uws_upload_gets_json_413_and_leaves_nothing(client: TestClient) -> None:
    r = client.post(
        "/uws/jobs",
        data={"app": "sleep", "PHASE": "RUN"},
        files={"file": ("bomb.fits.gz", bomb())},
        follow_redirects=False,
    )
    assert r.status_code == 413, r.text
    assert "inflates" in r.json()["status"]
    assert client.get("/uws/jobs").text.count("<uws:jobref ") == 0
    _nothing_left(client)


def test_compressed_upload_counts_inflated_against_the_quota(
    client: TestClient, tmp_path: Path
) -> None:
    """A 1.5 MiB image as a small gzip fits once in a 2 MiB quota, not twice."""
    path = tmp_path / "img.fits"
    fits.PrimaryHDU(np.zeros((640, 600), dtype=np.float32)).writeto(path)
    inflated = path.stat().st_size
    data = gzip.compress(path.read_bytes())
    assert len(data) < 64 * 1024 < inflated
    r = client.post(f"{API}/upload", files={"file": ("img.fits.gz", data)})
    assert r.status_code == 200, r.text
    assert r.json()["size_bytes"] == len(data)  # the size is the stored file's
    r = client.post(f"{API}/upload", files={"file": ("img2.fits.gz", data)})
    assert r.status_code == 403, r.text
    assert r.json()["used"] == inflated  # the stored total counts the inflated size
    datadir = client.app.state.ctx.settings.datadir  # type: ignore[attr-defined]
    assert list((datadir / ".incoming").iterdir()) == []
    assert len(client.get(f"{API}/fileids").json()) == 1
