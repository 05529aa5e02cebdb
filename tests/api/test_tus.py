"""The resumable (tus 1.0) upload against a live server with authentication on, over httpx."""

from __future__ import annotations

import base64
import hashlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from caesar_rest.client import CaesarClient, CaesarError

from tests.support.oidc_provider import OIDCProvider, auth_env
from tests.support.server import LiveServer

TUS = "/files/tus"
V = {"Tus-Resumable": "1.0.0"}
CHUNK = 1024 * 1024


def meta(**kw: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in kw.items())


@pytest.fixture(scope="module")
def srv(oidc: OIDCProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    # 5 MiB limit: the 4 017 600-byte real image fits, a declared 6 MiB does not.
    env = auth_env(oidc, CAESAR_REST_MAX_UPLOAD_MIB="5")
    server = LiveServer(tmp_path_factory.mktemp("tus"), **env).start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def alice(srv: LiveServer, oidc: OIDCProvider) -> Iterator[httpx.Client]:
    token = oidc.token("alice")
    with httpx.Client(
        base_url=srv.api, headers={"Authorization": f"Bearer {token}"}, timeout=60
    ) as c:
        yield c


def create(c: httpx.Client, length: int, **metadata: str) -> str:
    r = c.post(
        TUS, headers={**V, "Upload-Length": str(length), "Upload-Metadata": meta(**metadata)}
    )
    assert r.status_code == 201, r.text
    assert r.headers["tus-resumable"] == "1.0.0" and "upload-expires" in r.headers
    return r.headers["location"]


def patch(c: httpx.Client, url: str, offset: int, data: bytes) -> httpx.Response:
    return c.patch(
        url,
        content=data,
        headers={
            **V,
            "Upload-Offset": str(offset),
            "Content-Type": "application/offset+octet-stream",
        },
    )


def test_options_describe_the_server(srv: LiveServer) -> None:
    r = httpx.options(f"{srv.api}{TUS}")
    assert r.status_code == 204
    assert r.headers["tus-version"] == "1.0.0"
    assert r.headers["tus-extension"] == "creation,termination,expiration"
    assert r.headers["tus-max-size"] == str(5 * 1024 * 1024)


def test_full_upload_in_chunks_registers_the_file(alice: httpx.Client, s17: Path) -> None:
    data = s17.read_bytes()
    url = create(alice, len(data), filename="S17.fits", tag="tus")
    offset = 0
    while offset < len(data):
        r = patch(alice, url, offset, data[offset : offset + CHUNK])
        assert r.status_code == 204, r.text
        offset = int(r.headers["upload-offset"])
    assert offset == 4_017_600
    file_id = r.headers["x-caesar-file-id"]
    head = alice.head(url, headers=V)
    assert head.status_code == 200 and head.headers["upload-offset"] == "4017600"
    assert head.headers["cache-control"] == "no-store"
    state = alice.get(url, headers=V).json()
    assert state["complete"] is True and state["file"]["uuid"] == file_id
    assert state["file"]["sha256"] == hashlib.sha256(data).hexdigest()
    listed = {f["fileid"]: f for f in alice.get("/fileids").json()}
    assert listed[file_id]["filename_orig"] == "S17.fits" and listed[file_id]["tag"] == "tus"
    assert alice.get(f"/download/{file_id}").content == data


def test_cut_patch_keeps_its_bytes_and_resumes(alice: httpx.Client, s17: Path) -> None:
    data = s17.read_bytes()
    url = create(alice, len(data), filename="cut.fits")
    sent = 3 * 1024 * 1024 + 12345

    def body() -> Iterator[bytes]:
        for i in range(0, sent, 65536):
            yield data[i : min(i + 65536, sent)]
        raise RuntimeError("cable cut")

    with pytest.raises(RuntimeError, match="cable cut"):
        alice.patch(
            url,
            content=body(),
            headers={**V, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"},
        )
    # The server keeps what it had read before the cut: all of it, or less when uvicorn
    # still held some of the body (it drops that on a disconnect). Wait until it settles.
    offset, last = -1, -2
    deadline = time.time() + 10
    while offset != last and time.time() < deadline:
        last, offset = offset, int(alice.head(url, headers=V).headers["upload-offset"])
        time.sleep(0.2)
    assert 0 < offset <= sent
    r = patch(alice, url, offset, data[offset:])
    assert r.status_code == 204 and r.headers["upload-offset"] == str(len(data))
    file_id = r.headers["x-caesar-file-id"]
    assert alice.get(f"/download/{file_id}").content == data


def test_offset_mismatch_is_409(alice: httpx.Client) -> None:
    url = create(alice, 1000, filename="x.fits")
    assert patch(alice, url, 0, b"S" * 100).headers["upload-offset"] == "100"
    r = patch(alice, url, 50, b"S" * 10)
    assert r.status_code == 409 and r.json()["offset"] == 100
    assert r.headers["tus-resumable"] == "1.0.0"
    assert alice.head(url, headers=V).headers["upload-offset"] == "100"


def test_too_large_is_413(alice: httpx.Client) -> None:
    r = alice.post(TUS, headers={**V, "Upload-Length": str(6 * 1024 * 1024)})
    assert r.status_code == 413
    assert r.json()["status"] == "Upload too large: the limit is 5 MiB"
    url = create(alice, 100, filename="y.fits")
    r = patch(alice, url, 0, b"S" * 101)
    assert r.status_code == 413
    assert alice.head(url, headers=V).headers["upload-offset"] == "0"


@pytest.mark.parametrize(
    ("headers", "message"),
    [
        ({"Upload-Metadata": "filename !!notbase64"}, "Upload-Metadata: the value of 'filename'"),
        ({"Upload-Metadata": "filename a GVsbG8= extra"}, "Upload-Metadata: malformed pair"),
        ({"Upload-Metadata": "tag " + meta(tag="a\x00b").split(" ")[1]}, "NUL"),
        ({"Upload-Length": "-5"}, "Upload-Length must be a non-negative integer"),
        ({"Upload-Length": "0"}, "Upload-Length is 0"),
    ],
)
def test_bad_creation_is_400(alice: httpx.Client, headers: dict[str, str], message: str) -> None:
    r = alice.post(TUS, headers={**V, "Upload-Length": "100", **headers})
    assert r.status_code == 400 and message in r.json()["status"], r.text


def test_protocol_checks(alice: httpx.Client) -> None:
    r = alice.post(TUS, headers={"Tus-Resumable": "0.2.2", "Upload-Length": "100"})
    assert r.status_code == 412 and r.headers["tus-version"] == "1.0.0"
    url = create(alice, 100, filename="z.fits")
    r = alice.patch(
        url, content=b"x", headers={**V, "Upload-Offset": "0", "Content-Type": "text/plain"}
    )
    assert r.status_code == 415


def test_not_fits_refused_at_completion(alice: httpx.Client) -> None:
    url = create(alice, 64, filename="notes.txt")
    r = patch(alice, url, 0, b"hello, this is not an image" + b"." * 37)
    assert r.status_code == 415 and r.json()["status"].startswith("File refused:")
    assert alice.head(url, headers=V).status_code == 404


def test_termination(alice: httpx.Client) -> None:
    url = create(alice, 100, filename="t.fits")
    assert alice.delete(url, headers=V).status_code == 204
    assert alice.head(url, headers=V).status_code == 404
    assert patch(alice, url, 0, b"S").status_code == 404


def test_another_users_upload_is_404(
    alice: httpx.Client, srv: LiveServer, oidc: OIDCProvider
) -> None:
    url = create(alice, 100, filename="mine.fits")
    bob = {"Authorization": f"Bearer {oidc.token('bob')}", **V}
    octet = {"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    assert httpx.head(url, headers=bob).status_code == 404
    assert httpx.get(url, headers=bob).status_code == 404
    assert httpx.patch(url, headers={**bob, **octet}, content=b"S").status_code == 404
    assert httpx.delete(url, headers=bob).status_code == 404
    assert alice.head(url, headers=V).headers["upload-offset"] == "0"
    assert httpx.post(f"{srv.api}{TUS}", headers={**V, "Upload-Length": "1"}).status_code == 401


def test_client_resumes_an_interrupted_run(
    srv: LiveServer, oidc: OIDCProvider, s17: Path, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    token = oidc.token("alice")

    def stop_after_two(done: int, total: int) -> None:
        if done >= 2 * CHUNK:
            raise KeyboardInterrupt  # the user's Ctrl-C during the third chunk

    with CaesarClient(srv.url, token=token) as c, pytest.raises(KeyboardInterrupt):
        c.upload(
            s17,
            tag="resumed",
            resumable=True,
            chunk_size=CHUNK,
            state_dir=state,
            progress=stop_after_two,
        )
    assert len(list(state.iterdir())) == 1  # the URL kept for the next run
    with CaesarClient(srv.url, token=token) as c:
        seen: list[int] = []
        info = c.upload(
            s17,
            tag="resumed",
            resumable=True,
            chunk_size=CHUNK,
            state_dir=state,
            progress=lambda done, total: seen.append(done),
        )
    assert seen[0] == 2 * CHUNK  # started where the first run stopped
    assert seen[-1] == 4_017_600
    assert info.size == 4_017_600 and info.tag == "resumed"
    assert info.sha256 == hashlib.sha256(s17.read_bytes()).hexdigest()
    assert list(state.iterdir()) == []


def test_quota_counts_unfinished_uploads(srv: LiveServer, oidc: OIDCProvider) -> None:
    admin = {"Authorization": f"Bearer {oidc.token('admin')}"}
    r = httpx.put(f"{srv.api}/admin/users/bob/quota", headers=admin, json={"bytes": 8 * CHUNK})
    assert r.status_code == 200, r.text
    with httpx.Client(
        base_url=srv.api, headers={"Authorization": f"Bearer {oidc.token('bob')}"}, timeout=60
    ) as bob:
        first = create(bob, 5 * CHUNK, filename="a.fits")
        r = bob.post(TUS, headers={**V, "Upload-Length": str(5 * CHUNK)})
        assert r.status_code == 403, r.text
        assert r.json()["used"] == 5 * CHUNK and r.json()["quota"] == 8 * CHUNK
        assert bob.delete(first, headers=V).status_code == 204  # the reservation goes with it
        create(bob, 5 * CHUNK, filename="b.fits")


def test_concurrent_patch_is_423(alice: httpx.Client, srv: LiveServer) -> None:
    url = create(alice, 4 * CHUNK, filename="slow.fits")
    started = threading.Event()

    def slow() -> Iterator[bytes]:
        yield b"S" * 65536
        started.set()
        time.sleep(1.5)
        yield b"S" * 65536

    holder: dict[str, httpx.Response] = {}
    headers = {**V, "Upload-Offset": "0", "Content-Type": "application/offset+octet-stream"}
    t = threading.Thread(
        target=lambda: holder.setdefault("r", alice.patch(url, content=slow(), headers=headers))
    )
    t.start()
    started.wait(10)
    time.sleep(0.3)
    with httpx.Client(headers=alice.headers, timeout=30) as other:
        r = other.patch(url, content=b"S", headers=headers)
    assert r.status_code == 423, r.text
    t.join(30)
    assert holder["r"].status_code == 204 and holder["r"].headers["upload-offset"] == "131072"


def test_head_of_json_routes_under_uvicorn(alice: httpx.Client) -> None:
    """HEAD keeps the GET answer's Content-Length and sends no body (uvicorn used to fail
    such answers as short: the routed scope said GET)."""
    for path in ("/fileids", "/apps", f"{TUS}/{'0' * 32}"):
        got, head = alice.get(path, headers=V), alice.head(path, headers=V)
        assert head.status_code == got.status_code and head.content == b""
        assert head.headers["content-length"] == got.headers["content-length"] != "0"


def test_client_refused_upload_leaves_no_state(
    srv: LiveServer, oidc: OIDCProvider, tmp_path: Path
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"not an image\n" * 1000)
    state = tmp_path / "state"
    with (
        CaesarClient(srv.url, token=oidc.token("alice")) as c,
        pytest.raises(CaesarError) as err,
    ):
        c.upload(notes, resumable=True, chunk_size=4096, state_dir=state)
    assert err.value.status == 415 and err.value.message.startswith("File refused:")
    assert list(state.iterdir()) == []
