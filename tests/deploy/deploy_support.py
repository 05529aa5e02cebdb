"""Helpers of the deployment tests: nginx from the deploy/nginx layouts, a TLS certificate, app
instances sharing one database and one data/job folder, memory sampling."""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import hashlib
import io
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.support.server import LiveServer, free_port

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
NGINX_DIR = DEPLOY / "nginx"
MIB = 1024 * 1024


def nginx_binary() -> str:
    """The Debian nginx binary (.ci/run installs the package when it is missing)."""
    path = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").is_file() else "")
    if not path:
        pytest.fail("nginx is not installed: apt-get install -y nginx (.ci/run does it)")
    return path


def make_cert(folder: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1 (PEM certificate, PEM key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def _sub(text: str, pattern: str, repl: str | Callable[[re.Match[str]], str], what: str) -> str:
    """``re.sub`` that insists on a match: a changed deploy file must fail loudly here."""
    new, n = re.subn(pattern, repl, text, flags=re.M)
    if n == 0:
        raise AssertionError(f"deploy/nginx changed: {what} ({pattern!r}) not found")
    return new


@dataclass
class Site:
    """Where a rendered layout listens and what it talks to."""

    https_port: int
    http_port: int
    cert: Path
    key: Path
    logs: Path
    upstreams: list[str] = field(default_factory=list)  # host:port, upstream layout
    uds: Path | None = None  # socket layout
    body_mib: int = 1001  # client_max_body_size (the app's max_upload_mib + 1)


def render_layout(layout: str, site: Site, root: Path) -> Path:
    """The deploy/nginx ``layout`` with this machine's ports, paths and certificate.

    Only addresses, paths and the body size change; every proxy setting is the shipped one.
    Writes the layout and its locations snippet under ``root``; returns the layout file.
    """
    text = (NGINX_DIR / layout).read_text()
    snippet = (NGINX_DIR / "caesar-rest-locations.conf").read_text()
    snippet = _sub(
        snippet, r"client_max_body_size \d+m;", f"client_max_body_size {site.body_mib}m;", "body"
    )
    root.mkdir(parents=True, exist_ok=True)
    (root / "caesar-rest-locations.conf").write_text(snippet)
    if site.upstreams:

        def servers(m: re.Match[str]) -> str:
            return "".join(f"{m[1]}server {u}{m[2]};\n" for u in site.upstreams)

        text = _sub(
            text,
            r"^(\s*)server 127\.0\.0\.1:8081( [^;]*);\n(?:\s*server 127\.0\.0\.1:\d+[^;]*;\n)*",
            servers,
            "upstream servers",
        )
    if site.uds is not None:
        text = _sub(
            text, r"unix:/run/caesar-rest/caesar-rest\.sock", f"unix:{site.uds}", "socket path"
        )
    text = _sub(text, r"^\s*listen \[::\]:\d+[^;]*;\n", "", "IPv6 listen")
    text = _sub(text, r"listen 80;", f"listen 127.0.0.1:{site.http_port};", "listen 80")
    text = _sub(text, r"listen 443 ssl;", f"listen 127.0.0.1:{site.https_port} ssl;", "listen 443")
    text = _sub(text, r"server_name caesar\.example\.org;", "server_name localhost;", "name")
    text = _sub(text, r"/etc/ssl/certs/caesar\.example\.org\.pem", str(site.cert), "cert")
    text = _sub(text, r"/etc/ssl/private/caesar\.example\.org\.key", str(site.key), "key")
    text = _sub(text, r"/var/log/nginx/", f"{site.logs}/", "log folder")
    text = _sub(
        text,
        r"/etc/nginx/snippets/caesar-rest-locations\.conf",
        str(root / "caesar-rest-locations.conf"),
        "snippet include",
    )
    out = root / layout
    out.write_text(text)
    return out


class Nginx:
    """nginx in the foreground (``daemon off``) with its own prefix, pid and logs."""

    def __init__(self, root: Path, site_conf: Path, https_port: int):
        self.root = root
        self.logs = root / "logs"
        self.https_port = https_port
        for d in ("logs", "tmp/client_body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
            (root / d).mkdir(parents=True, exist_ok=True)
        self.conf = root / "nginx.conf"
        # Run as root (this test's folders are root's); temp folders under the test folder.
        self.conf.write_text(
            f"""user root;
daemon off;
worker_processes 2;
pid {root}/nginx.pid;
error_log {self.logs}/error.log info;
events {{ worker_connections 1024; }}
http {{
    default_type application/octet-stream;
    client_body_temp_path {root}/tmp/client_body;
    proxy_temp_path {root}/tmp/proxy;
    fastcgi_temp_path {root}/tmp/fastcgi;
    uwsgi_temp_path {root}/tmp/uwsgi;
    scgi_temp_path {root}/tmp/scgi;
    access_log {self.logs}/default.access.log;
    include {site_conf};
}}
"""
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self, *extra: str) -> list[str]:
        return [
            nginx_binary(),
            "-p",
            str(self.root),
            "-c",
            str(self.conf),
            "-e",
            str(self.logs / "startup.log"),
            *extra,
        ]

    def check(self) -> str:
        """``nginx -t``: the configuration's syntax and files."""
        r = subprocess.run(self.argv("-t"), capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return r.stderr

    def start(self, timeout: float = 15.0) -> Nginx:
        self.check()
        out = open(self.logs / "stdout.log", "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(self.argv(), stdout=out, stderr=subprocess.STDOUT)
        self._out = out
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"nginx exited: {(self.logs / 'error.log').read_text()}")
            try:
                with socket.create_connection(("127.0.0.1", self.https_port), timeout=1):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("nginx did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)  # graceful
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc is not None:
            self._out.close()

    def access_log(self) -> list[dict[str, object]]:
        """The JSON lines of the layout's access log."""
        path = self.logs / "caesar-rest.access.json"
        if not path.is_file():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def vm_rss(pid: int) -> int:
    """Resident memory of a process, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


class Sampler(threading.Thread):
    """Samples the RSS of some processes (and a callback) every ``period`` seconds."""

    def __init__(
        self, pids: list[int], extra: Callable[[], int] | None = None, period: float = 0.1
    ) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.extra = extra
        self.period = period
        self.rss: dict[int, list[int]] = {p: [] for p in pids}
        self.extra_values: list[int] = []
        self._stop_evt = threading.Event()

    def run(self) -> None:
        while not self._stop_evt.is_set():
            for p in self.pids:
                self.rss[p].append(vm_rss(p))
            if self.extra is not None:
                self.extra_values.append(self.extra())
            self._stop_evt.wait(self.period)

    def stop(self) -> None:
        self._stop_evt.set()
        self.join(5)


def make_big_fits(path: Path, side: int = 16384) -> int:
    """A ``side`` x ``side`` float32 FITS image (1 GiB for 16384), written without holding it in
    memory: the header, then the file extended (sparse) to its full padded size, then random
    1 MiB blocks at spread offsets so that misplaced data would change the hash."""
    cards = [
        "SIMPLE  =                    T",
        "BITPIX  =                  -32",
        "NAXIS   =                    2",
        f"NAXIS1  = {side:>20d}",
        f"NAXIS2  = {side:>20d}",
        "BUNIT   = 'JY/BEAM '",
        "END",
    ]
    header = "".join(c.ljust(80) for c in cards).ljust(2880).encode("ascii")
    data = side * side * 4
    total = len(header) + (data + 2879) // 2880 * 2880
    with open(path, "wb") as fh:
        fh.write(header)
        fh.truncate(total)
        step = max(MIB, (data // 32) // MIB * MIB)
        for off in range(len(header), total - MIB, step):
            fh.seek(off)
            fh.write(os.urandom(MIB))
    return total


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(8 * MIB):
            h.update(chunk)
    return h.hexdigest()


def small_fits(side: int = 64) -> bytes:
    """A small valid FITS image, in memory."""
    import numpy as np
    from astropy.io import fits

    rng = np.random.default_rng(1)
    buf = io.BytesIO()
    fits.PrimaryHDU(rng.normal(size=(side, side)).astype("float32")).writeto(buf)
    return buf.getvalue()


_PR_SET_CHILD_SUBREAPER = 36


@contextlib.contextmanager
def subreaper() -> Iterator[Callable[[list[int]], None]]:
    """Make this process the reaper of orphaned descendants, as systemd or tini is in a
    deployment (this machine's PID 1 leaves them as zombies, which look alive).

    Yields a function that reaps the given pids (only those: the Popen objects of the tests keep
    their own children's statuses).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    def reap(pids: list[int]) -> None:
        for pid in pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)

    try:
        yield reap
    finally:
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


@dataclass
class Proxy:
    """What run_curl_sequence needs of a server: its API base URL (here nginx's)."""

    url: str
    api: str


def make_site(root: Path, **kw: object) -> Site:
    """A :class:`Site` on free ports with a fresh self-signed certificate under ``root``."""
    cert, key = make_cert(root / "tls")
    return Site(
        https_port=free_port(),
        http_port=free_port(),
        cert=cert,
        key=key,
        logs=root / "nginx" / "logs",
        **kw,  # type: ignore[arg-type]
    )


class UdsServer(LiveServer):
    """``caesar-rest serve --uds PATH --workers N`` (the socket layout's app).

    Subclasses change :meth:`command`, :attr:`name` and :meth:`ready` for another server
    program on the same socket (gunicorn).
    """

    name = "server"

    def __init__(self, root: Path, sock: Path, workers: int = 2, **env: str):
        super().__init__(root, **env)
        self.sock = sock
        self.workers = workers
        self.err: Path | None = None  # stderr's own file; None: with stdout in the log

    def command(self) -> list[str]:
        """The server's argument list."""
        return [
            sys.executable, "-m", "caesar_rest.cli", "serve", "--uds", str(self.sock),
            "--workers", str(self.workers),
            "--datadir", str(self.datadir), "--jobdir", str(self.jobdir),
        ]  # fmt: skip

    def ready(self) -> bool:
        """Whether the started server counts as up, once ``/healthz`` answers 200."""
        return True

    def start(self, timeout: float = 90.0) -> UdsServer:
        """Start the server and wait until it answers on its socket."""
        with contextlib.ExitStack() as files:
            log = files.enter_context(open(self.log, "ab"))
            err = files.enter_context(open(self.err, "ab")) if self.err else subprocess.STDOUT
            self.proc = subprocess.Popen(
                self.command(), env=self.env, stdout=log, stderr=err, start_new_session=True
            )
        transport = httpx.HTTPTransport(uds=str(self.sock))
        deadline = time.time() + timeout
        with httpx.Client(transport=transport) as c:
            while time.time() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-3000:]}")
                with contextlib.suppress(httpx.HTTPError):
                    healthy = c.get("http://app/healthz", timeout=1).status_code == 200
                    if healthy and self.ready():
                        return self
                time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"{self.name} did not start: {self.log.read_text()[-3000:]}")
