"""nginx (the Debian package) in front of real app processes, with the deploy/nginx layouts.

* the socket layout: one ``caesar-rest serve --uds ... --workers 2`` behind nginx;
* the upstream layout: two instances (least_conn) on one PostgreSQL database and one data/job
  folder: the end-to-end curl sequence, a 1 GiB upload (sha256, flat memory), and one instance
  stopped while requests run.

nginx runs as root in the foreground with its prefix, pid, logs and temp folders under the
test's folder, over TLS with a certificate made here (curl trusts it through CURL_CA_BUNDLE).
"""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.deploy.deploy_support import (
    MIB,
    NGINX_DIR,
    Nginx,
    Proxy,
    Sampler,
    UdsServer,
    make_big_fits,
    make_site,
    render_layout,
    sha256_file,
    small_fits,
    subreaper,
    vm_rss,
)
from tests.support.e2e import run_curl_sequence
from tests.support.server import LiveServer, wait_state

pytestmark = pytest.mark.postgres


def raw_request(port: int, cert: Path, head: str, read_timeout: float = 10.0) -> bytes:
    """Send request headers only (no body) over TLS; return what comes back."""
    ctx = ssl.create_default_context(cafile=str(cert))
    with (
        socket.create_connection(("127.0.0.1", port), timeout=read_timeout) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as s,
    ):
        s.sendall(head.encode())
        data = b""
        try:
            while b"\r\n\r\n" not in data or len(data) < 200:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            pass
    return data


@pytest.mark.parametrize("layout", ["caesar-rest-upstream.conf", "caesar-rest-socket.conf"])
def test_layouts_pass_nginx_check(tmp_path: Path, layout: str) -> None:
    """Both shipped layouts are valid for the Debian nginx (``nginx -t``)."""
    site = make_site(tmp_path, upstreams=["127.0.0.1:1", "127.0.0.1:2"], uds=tmp_path / "app.sock")
    if layout == "caesar-rest-socket.conf":
        site.upstreams = []
    else:
        site.uds = None
    conf = render_layout(layout, site, tmp_path / "site")
    out = Nginx(tmp_path / "nginx", conf, site.https_port).check()
    assert "syntax is ok" in out and "test is successful" in out


def test_compose_layout_passes_nginx_check(tmp_path: Path) -> None:
    """deploy/nginx/caesar-rest-compose.conf, with the compose names and paths of this machine."""
    site = make_site(tmp_path)
    text = (NGINX_DIR / "caesar-rest-compose.conf").read_text()
    for old, new in (
        ("server api:8080", "server 127.0.0.1:1"),
        ("listen 8080;", f"listen 127.0.0.1:{site.http_port};"),
        ("listen 8443 ssl;", f"listen 127.0.0.1:{site.https_port} ssl;"),
        ("/run/secrets/tls_cert", str(site.cert)),
        ("/run/secrets/tls_key", str(site.key)),
        ("/dev/stdout", str(site.logs / "access.json")),
    ):
        assert old in text, old
        text = text.replace(old, new)
    render_layout("caesar-rest-socket.conf", site, tmp_path / "site")  # writes the snippet
    snippet = tmp_path / "site" / "caesar-rest-locations.conf"
    text = text.replace("/etc/nginx/snippets/caesar-rest-locations.conf", str(snippet))
    conf = tmp_path / "site" / "compose.conf"
    conf.write_text(text)
    assert "syntax is ok" in Nginx(tmp_path / "nginx", conf, site.https_port).check()


def test_socket_layout_end_to_end(
    tmp_path: Path, s17: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One instance with two worker processes on a unix socket, behind nginx over TLS."""
    sock = tmp_path / "run" / "caesar-rest.sock"
    sock.parent.mkdir()
    srv = UdsServer(tmp_path / "srv", sock).start()
    site = make_site(tmp_path, uds=sock)
    conf = render_layout("caesar-rest-socket.conf", site, tmp_path / "site")
    nginx = Nginx(tmp_path / "nginx", conf, site.https_port).start()
    try:
        url = f"https://localhost:{site.https_port}"
        monkeypatch.setenv("CURL_CA_BUNDLE", str(site.cert))
        run_curl_sequence(Proxy(url, f"{url}/caesar/api/v1.0"), s17, tmp_path)
        with httpx.Client(
            base_url=url, verify=ssl.create_default_context(cafile=str(site.cert))
        ) as c:
            # X-Request-ID passes through both ways; nginx makes one when the client has none.
            r = c.get("/readyz", headers={"X-Request-ID": "deploy-rid-1"})
            assert r.status_code == 200 and r.json()["checks"]["database"] == "ok"
            assert r.headers["x-request-id"] == "deploy-rid-1"
            rid = c.get("/healthz").headers["x-request-id"]
            assert len(rid) == 32
        # Plain HTTP is redirected to HTTPS.
        r = httpx.get(f"http://127.0.0.1:{site.http_port}/healthz", follow_redirects=False)
        assert r.status_code == 301 and r.headers["location"].startswith("https://")
        # The app's log has nginx's request id: one id across both logs.
        assert any(e["request_id"] == rid for e in nginx.access_log())
        assert rid in srv.log.read_text()
        head = (
            "POST /caesar/api/v1.0/upload HTTP/1.1\r\nHost: localhost\r\n"
            "Content-Type: multipart/form-data; boundary=b\r\nContent-Length: {n}\r\n\r\n"
        )
        # Over nginx's limit (1001m): nginx refuses before anything reaches the app.
        reply = raw_request(site.https_port, site.cert, head.format(n=1002 * MIB))
        assert reply.startswith(b"HTTP/1.1 413") and b"nginx" in reply
        # Over the app's limit (1000 MiB) but under nginx's: the app answers, in JSON, at once
        # (the body is streamed, so the headers reach the app before any of it).
        reply = raw_request(site.https_port, site.cert, head.format(n=1000 * MIB + MIB // 2))
        assert reply.startswith(b"HTTP/1.1 413") and b"application/json" in reply
        assert b"Upload too large" in reply
    finally:
        nginx.stop()
        srv.stop()


@dataclass
class Cluster:
    """Two app instances (one database, one data/job folder) behind nginx."""

    instances: list[LiveServer]
    nginx: Nginx
    url: str
    api: str
    cert: Path
    db_url: str

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.api, verify=ssl.create_default_context(cafile=str(self.cert)), timeout=120
        )


@pytest.fixture
def cluster(tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cluster]:
    root = tmp_path / "shared"  # the one data and job folder of both instances
    env = {
        "CAESAR_REST_MAX_UPLOAD_MIB": "1100",  # the 1 GiB upload
        "CAESAR_REST_MAX_SUBMISSIONS_PER_MINUTE": "0",
        "CAESAR_REST_QUOTA_ACTIVE_JOBS": "0",
        "CAESAR_REST_MAX_CONCURRENT_JOBS": "4",
    }
    instances = [LiveServer(root, db_url=pg_url, **env) for _ in range(2)]
    for i, srv in enumerate(instances):
        srv.log = tmp_path / f"instance-{i}.log"
    # Both at once: their migrations are serialised by a PostgreSQL advisory lock.
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(lambda s: s.start(), instances))
    site = make_site(tmp_path, upstreams=[f"127.0.0.1:{s.port}" for s in instances], body_mib=1101)
    conf = render_layout("caesar-rest-upstream.conf", site, tmp_path / "site")
    nginx = Nginx(tmp_path / "nginx", conf, site.https_port).start()
    monkeypatch.setenv("CURL_CA_BUNDLE", str(site.cert))
    url = f"https://localhost:{site.https_port}"
    try:
        yield Cluster(instances, nginx, url, f"{url}/caesar/api/v1.0", site.cert, pg_url)
    finally:
        nginx.stop()
        for srv in instances:
            srv.stop()


def _upstream_counts(nginx: Nginx) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in nginx.access_log():
        last = str(e["upstream"]).split(", ")[-1]
        counts[last] = counts.get(last, 0) + 1
    return counts


def test_upstream_end_to_end_and_1gib_upload(cluster: Cluster, s17: Path, tmp_path: Path) -> None:
    """The curl sequence through nginx, then 1 GiB streamed through it with flat app memory."""
    a, b = cluster.instances
    run_curl_sequence(Proxy(cluster.url, cluster.api), s17, tmp_path)
    # Both instances served some of it (least_conn alternates between idle instances).
    counts = _upstream_counts(cluster.nginx)
    assert set(counts) == {f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"}, counts

    # Warm each instance (the first FITS upload imports astropy) before the memory baseline.
    for srv in (a, b):
        with srv.client() as c:
            r = c.post("/upload", files={"file": ("warm.fits", small_fits())})
            assert r.status_code == 200, r.text
            assert c.get(f"/delete/{r.json()['uuid']}").status_code == 200
    big = tmp_path / "big.fits"
    t0 = time.time()
    size = make_big_fits(big)
    made = time.time() - t0
    try:
        assert size > 1024 * MIB
        src_sha = sha256_file(big)
        incoming = a.datadir / ".incoming"

        def part_bytes() -> int:
            return (
                sum(p.stat().st_size for p in incoming.glob("*.part")) if incoming.is_dir() else 0
            )

        pids = [s.proc.pid for s in (a, b) if s.proc is not None]
        base = {p: vm_rss(p) for p in pids}
        sampler = Sampler(pids, part_bytes)
        sampler.start()
        t1 = time.time()
        out = subprocess.run(
            ["curl", "-sS", "-F", f"file=@{big}", "-F", "tag=big", f"{cluster.api}/upload"],
            capture_output=True,
            check=True,
            timeout=240,
        ).stdout
        upload_s = time.time() - t1
        sampler.stop()
        up = json.loads(out)
        assert up["size_bytes"] == size and up["sha256"] == src_sha, up
        stored = a.datadir / "anonymous" / f"{up['uuid']}.fits"
        assert stored.stat().st_size == size and sha256_file(stored) == src_sha
        growth = {p: max(sampler.rss[p]) - base[p] for p in pids}
        print(
            f"\n1 GiB FITS made in {made:.1f} s; upload through nginx {upload_s:.1f} s "
            f"({size / MIB / upload_s:.0f} MiB/s); RSS growth per instance (MiB): "
            + ", ".join(f"{g / MIB:.1f}" for g in growth.values())
        )
        assert all(g < 64 * MIB for g in growth.values()), growth
        # Streamed: the app's partial file grew while the client was still sending, and nginx
        # kept no copy of the body (its client_body temp folder stays empty).
        partial = [v for v in sampler.extra_values if 0 < v < size]
        assert len(partial) >= 3, sampler.extra_values[:20]
        assert not any((cluster.nginx.root / "tmp" / "client_body").rglob("*"))
        # It downloads intact too (through nginx).
        with cluster.client() as c, c.stream("GET", f"/download/{up['uuid']}") as r:
            assert r.status_code == 200
            h = hashlib.sha256()
            for chunk in r.iter_bytes(8 * MIB):
                h.update(chunk)
        assert h.hexdigest() == src_sha
        # Deleted through nginx: the stored gigabyte goes too.
        with cluster.client() as c:
            assert c.get(f"/delete/{up['uuid']}").status_code == 200
        assert not stored.exists()
    finally:
        big.unlink(missing_ok=True)
        for left in (a.datadir / "anonymous").glob("*.fits"):
            if left.stat().st_size > 512 * MIB:
                left.unlink()


@dataclass
class Outcome:
    rid: str
    kind: str
    start: float
    end: float
    status: int  # -1: the client got no HTTP answer
    ident: str | None = None


def _one_request(
    c: httpx.Client, kind: str, hdr: dict[str, str], image: bytes, target: str
) -> tuple[int, str | None]:
    """One request of ``kind``: (HTTP status or -1 without answer, the new file/job id)."""
    try:
        if kind == "upload":
            r = c.post("/upload", files={"file": ("f.fits", image)}, headers=hdr)
            return r.status_code, r.json().get("uuid") if r.status_code == 200 else None
        if kind == "submit":
            body = {"app": "sleep", "job_inputs": {"seconds": 0.2}, "data_inputs": target}
            r = c.post("/job", json=body, headers=hdr)
            return r.status_code, r.json().get("job_id") if r.status_code == 202 else None
        if kind == "status":
            return c.get(f"/job/{target}/status", headers=hdr).status_code, None
        return c.get(f"/{kind}", headers=hdr).status_code, None
    except httpx.HTTPError:
        return -1, None


def _check_failed_went_to(
    failed: list[Outcome], log: dict[str, dict[str, object]], addr: str, t_gone: float
) -> None:
    """Only requests that were in flight to the stopped instance (``addr``) may fail."""
    for o in failed:
        entry = log.get(o.rid)
        assert entry is not None, o
        assert str(entry["upstream"]).split(", ")[-1] == addr, (o, entry)
        assert o.start <= t_gone, o


def _monitor_until_final(
    c: httpx.Client,
    cluster: Cluster,
    a: LiveServer,
    job_ids: list[str],
    reap: Callable[[list[int]], None],
) -> None:
    """Run ``caesar-rest monitor --once`` (reaping orphans) until every job is final (60 s)."""
    deadline = time.time() + 60
    while time.time() < deadline:
        status = [c.get(f"/job/{j}/status").json() for j in job_ids]
        if all(s["state"] in ("SUCCESS", "FAILURE", "ABORTED", "TIMED-OUT") for s in status):
            break
        reap([int(s["pid"]) for s in status if str(s.get("pid") or "").isdigit()])
        subprocess.run(
            [
                sys.executable,
                "-m",
                "caesar_rest.cli",
                "monitor",
                "--once",
                "--lost-after",
                "1",
                "--db-url",
                cluster.db_url,
                "--datadir",
                str(a.datadir),
                "--jobdir",
                str(a.jobdir),
            ],
            env=a.env,
            check=True,
            capture_output=True,
            timeout=60,
        )
        time.sleep(0.5)


@pytest.fixture
def reap() -> Iterator[Callable[[list[int]], None]]:
    """The stopped instance's running jobs become orphans: reap them as systemd/tini would."""
    with subreaper() as fn:
        yield fn


def test_stop_one_instance_during_requests(
    cluster: Cluster, reap: Callable[[list[int]], None]
) -> None:
    """SIGTERM one instance while four clients upload, submit and read through nginx."""
    a, b = cluster.instances
    addr_a, addr_b = f"127.0.0.1:{a.port}", f"127.0.0.1:{b.port}"
    image = small_fits()
    with cluster.client() as c:
        seed = c.post("/upload", files={"file": ("seed.fits", image)}).json()["uuid"]
    outcomes: list[Outcome] = []
    job_ids: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()
    max_jobs = 16

    def client_loop(i: int) -> None:
        kinds = ("upload", "fileids", "status", "submit", "jobs")
        with cluster.client() as c:
            n = i
            while not stop.is_set():
                n += 1
                kind = kinds[n % len(kinds)]
                with lock:
                    if kind == "submit" and len(job_ids) >= max_jobs:
                        kind = "fileids"
                    known = list(job_ids)
                if kind == "status" and not known:
                    kind = "jobs"
                rid = uuid.uuid4().hex
                hdr = {"X-Request-ID": rid}
                t0 = time.time()
                target = known[n % len(known)] if kind == "status" else seed
                status, ident = _one_request(c, kind, hdr, image, target)
                with lock:
                    if kind == "submit" and ident:
                        job_ids.append(ident)
                    outcomes.append(Outcome(rid, kind, t0, time.time(), status, ident))

    def answered(since: float, n: int) -> None:
        """Wait (up to 60 s, however loaded the machine) for ``n`` answers to requests sent
        after ``since``."""
        deadline = time.time() + 60
        while True:
            with lock:
                got = sum(1 for o in outcomes if o.start > since)
            if got >= n:
                return
            assert time.time() < deadline, f"{got} of {n} requests answered in 60 s"
            time.sleep(0.1)

    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    try:
        answered(0.0, 20)  # both instances serve (nginx takes turns)
        t_stop = time.time()
        a.stop()  # SIGTERM: graceful, in-flight requests are answered
        t_gone = time.time()
        answered(t_gone, 20)  # then only the other one
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    # uvicorn re-raises the signal after its graceful shutdown (systemd counts it as clean).
    assert a.proc is not None and a.proc.returncode in (0, -signal.SIGTERM)
    assert "Finished server process" in a.log.read_text()

    log = {str(e["request_id"]): e for e in cluster.nginx.access_log()}
    ok = {"upload": 200, "submit": 202, "status": 200, "fileids": 200, "jobs": 200}
    failed = [o for o in outcomes if o.status != ok[o.kind]]
    _check_failed_went_to(failed, log, addr_a, t_gone)
    assert len(failed) <= 4, failed

    def last_upstream(o: Outcome) -> str:
        return str(log[o.rid]["upstream"]).split(", ")[-1]

    before = [o for o in outcomes if o.end < t_stop]
    after = [o for o in outcomes if o.start > t_gone]
    assert {last_upstream(o) for o in before} == {addr_a, addr_b}
    assert len(after) >= 20 and {last_upstream(o) for o in after} == {addr_b}
    retried = [e for e in log.values() if ", " in str(e["upstream"])]
    print(
        f"\n{len(outcomes)} requests; {len(failed)} failed (all in flight to the stopped "
        f"instance); {len(retried)} passed on by nginx to the other; A stopped in "
        f"{t_gone - t_stop:.2f} s"
    )

    # Nothing lost: every answered upload and job is listed (by the remaining instance).
    uploads = {o.ident for o in outcomes if o.kind == "upload" and o.ident}
    with cluster.client() as c:
        listed = {f["fileid"] for f in c.get("/fileids").json()}
        assert uploads | {seed} <= listed
        for fid in uploads:
            assert (a.datadir / "anonymous" / f"{fid}.fits").stat().st_size == len(image)
        assert set(job_ids) <= {j["job_id"] for j in c.get("/jobs").json()}
        # Jobs the stopped instance was running go on (own sessions); the monitor records
        # their end (deploy: caesar-rest-monitor), the other instance runs the queued ones.
        _monitor_until_final(c, cluster, a, job_ids, reap)
        for j in job_ids:
            assert wait_state(c, j, {"SUCCESS"}, timeout=5)["state"] == "SUCCESS"
