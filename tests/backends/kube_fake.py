"""An in-process fake of the Kubernetes API for ``batch/v1`` Jobs, speaking real JSON over HTTP.

No cluster can run on our machines. This server answers the calls the official ``kubernetes``
client makes for Jobs (create, read, list, delete, with Status objects for 404/409), so the
backend is exercised through the client's real serialisation. Optionally it plays the kubelet:
each Job's container command runs as a local process, with the PVC mounts mapped onto local
folders, and the Job's status (active/ready/succeeded/failed, startTime, the conditions
SuccessCriteriaMet/Complete or FailureTarget/Failed with BackoffLimitExceeded or
DeadlineExceeded) follows it; ``activeDeadlineSeconds`` and ``ttlSecondsAfterFinished`` are
honoured. Security settings are recorded, not enforced (the process runs as the test's user).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

_JOB_PATH = re.compile(r"^/apis/batch/v1/namespaces/([^/]+)/jobs(?:/([^/]+))?$")


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure" if code >= 400 else "Success",
        "message": message,
        "reason": reason,
        "code": code,
    }


class FakeKube:
    """The fake API server; ``pvcs`` maps claim names to local folders (kubelet mode)."""

    def __init__(
        self,
        pvcs: dict[str, Path] | None = None,
        env: dict[str, str] | None = None,
        max_running: int = 0,
    ):
        self.pvcs = pvcs or {}
        self.env = env or {}
        # A node's capacity: pods beyond it stay pending (0: no limit).
        self.slots = threading.BoundedSemaphore(max_running) if max_running else None
        self.jobs: dict[tuple[str, str], dict[str, Any]] = {}
        self.requests: list[tuple[str, str, Any]] = []  # (method, path?query, body)
        self.procs: dict[tuple[str, str], subprocess.Popen[bytes]] = {}
        self.lock = threading.RLock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, code: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> Any:
                n = int(self.headers.get("Content-Length") or 0)
                return json.loads(self.rfile.read(n)) if n else None

            def _route(self, method: str) -> None:
                url = urlparse(self.path)
                body = self._body() if method in ("POST", "DELETE") else None
                fake.requests.append((method, self.path, body))
                m = _JOB_PATH.match(url.path)
                if not m:
                    self._send(404, _status(404, "NotFound", f"no route {url.path}"))
                    return
                code, doc = fake.handle(method, m.group(1), m.group(2), parse_qs(url.query), body)
                self._send(code, doc)

            def do_GET(self) -> None:  # noqa: N802 - http.server's names
                self._route("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._route("POST")

            def do_DELETE(self) -> None:  # noqa: N802
                self._route("DELETE")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    # --- lifecycle -----------------------------------------------------------------------
    def start(self) -> FakeKube:
        self.thread.start()
        return self

    def stop(self) -> None:
        with self.lock:
            for proc in self.procs.values():
                _kill(proc)
        self.server.shutdown()
        self.server.server_close()

    def kubeconfig(self, path: Path, namespace: str = "caesar") -> Path:
        """A kubeconfig (JSON is YAML) that points the official client at this server."""
        path.write_text(
            json.dumps(
                {
                    "apiVersion": "v1",
                    "kind": "Config",
                    "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
                    "users": [{"name": "tester", "user": {"token": "fake-token"}}],
                    "contexts": [
                        {
                            "name": "fake",
                            "context": {
                                "cluster": "fake",
                                "user": "tester",
                                "namespace": namespace,
                            },
                        }
                    ],
                    "current-context": "fake",
                }
            )
        )
        return path

    # --- API -----------------------------------------------------------------------------
    def handle(
        self, method: str, ns: str, name: str | None, query: dict[str, list[str]], body: Any
    ) -> tuple[int, dict[str, Any]]:
        with self.lock:
            if method == "POST" and name is None:
                return self._create(ns, body)
            if method == "GET" and name is None:
                items = [j for (n, _), j in self.jobs.items() if n == ns]
                return 200, {
                    "kind": "JobList",
                    "apiVersion": "batch/v1",
                    "metadata": {},
                    "items": items,
                }
            key = (ns, name or "")
            if key not in self.jobs:
                return 404, _status(404, "NotFound", f'jobs.batch "{name}" not found')
            if method == "GET":
                return 200, self.jobs[key]
            if method == "DELETE":
                policy = (body or {}).get("propagationPolicy") or query.get(
                    "propagationPolicy", [None]
                )[0]
                self.delete(ns, name or "")
                doc = _status(200, "", "")
                doc["details"] = {"name": name, "group": "batch", "kind": "jobs", "policy": policy}
                return 200, doc
        return 405, _status(405, "MethodNotAllowed", method)

    def _create(self, ns: str, body: Any) -> tuple[int, dict[str, Any]]:
        if not isinstance(body, dict) or body.get("kind") != "Job":
            return 400, _status(400, "BadRequest", "not a Job")
        name = body["metadata"]["name"]
        if (ns, name) in self.jobs:
            return 409, _status(409, "AlreadyExists", f'jobs.batch "{name}" already exists')
        obj = json.loads(json.dumps(body))
        obj["metadata"].update(
            namespace=ns,
            uid=str(uuid.uuid4()),
            creationTimestamp=_now(),
            resourceVersion="1",
        )
        obj["status"] = {}
        self.jobs[(ns, name)] = obj
        if self.pvcs:
            threading.Thread(target=self._kubelet, args=(ns, name), daemon=True).start()
        return 201, obj

    # --- test controls -------------------------------------------------------------------
    def set_status(self, name: str, status: dict[str, Any], ns: str = "caesar") -> None:
        with self.lock:
            self.jobs[(ns, name)]["status"] = status

    def delete(self, ns: str, name: str) -> None:
        with self.lock:
            self.jobs.pop((ns, name), None)
            proc = self.procs.pop((ns, name), None)
        if proc is not None:
            _kill(proc)

    # --- kubelet -------------------------------------------------------------------------
    def _mounts(self, spec: dict[str, Any]) -> list[tuple[str, Path]]:
        claims = {
            v["name"]: self.pvcs[v["persistentVolumeClaim"]["claimName"]]
            for v in spec["volumes"]
            if "persistentVolumeClaim" in v
        }
        out = []
        for m in spec["containers"][0].get("volumeMounts", []):
            if m["name"] in claims:
                out.append((m["mountPath"], claims[m["name"]] / m.get("subPath", "")))
        return sorted(out, key=lambda x: -len(x[0]))

    def _local(self, path: str, mounts: list[tuple[str, Path]]) -> str:
        for mount, local in mounts:
            if path == mount or path.startswith(mount + "/"):
                return str(local) + path[len(mount) :]
        return path

    def _kubelet(self, ns: str, name: str) -> None:
        with self.lock:
            job = self.jobs.get((ns, name))
            if job is None:
                return
            spec = job["spec"]["template"]["spec"]
            container = spec["containers"][0]
            mounts = self._mounts(spec)
            argv = [self._local(a, mounts) for a in container["command"]]
            cwd = self._local(container["workingDir"], mounts)
            env = {**os.environ, **self.env, **{e["name"]: e["value"] for e in container["env"]}}
            deadline = job["spec"].get("activeDeadlineSeconds")
            ttl = job["spec"].get("ttlSecondsAfterFinished")
            job["status"] = {"active": 1, "ready": 0, "startTime": _now()}
        time.sleep(0.2)  # scheduling and image pull
        if self.slots is not None:
            self.slots.acquire()
        try:
            self._run_pod(ns, name, argv, cwd, env, deadline, ttl)
        finally:
            if self.slots is not None:
                self.slots.release()

    def _run_pod(
        self,
        ns: str,
        name: str,
        argv: list[str],
        cwd: str,
        env: dict[str, str],
        deadline: int | None,
        ttl: int | None,
    ) -> None:
        with self.lock:
            if (ns, name) not in self.jobs:
                return
            proc = subprocess.Popen(argv, cwd=cwd, env=env, start_new_session=True)
            self.procs[(ns, name)] = proc
            self.jobs[(ns, name)]["status"].update(ready=1)
        started = time.time()
        timed_out = False
        while proc.poll() is None:
            if deadline and time.time() - started > deadline:
                timed_out = True
                _kill(proc)
                break
            time.sleep(0.1)
        rc = proc.wait()
        with self.lock:
            if (ns, name) not in self.jobs:
                return  # deleted: pods go with it
            st = self.jobs[(ns, name)]["status"]
            st.update(active=0, ready=0)
            if timed_out:
                reason, msg = "DeadlineExceeded", "Job was active longer than specified deadline"
            elif rc != 0:
                reason, msg = "BackoffLimitExceeded", "Job has reached the specified backoff limit"
            else:
                reason = msg = ""
            now = _now()
            if reason:
                st["failed"] = 1
                st["conditions"] = [
                    {"type": "FailureTarget", "status": "True", "reason": reason, "message": msg},
                    {"type": "Failed", "status": "True", "reason": reason, "message": msg},
                ]
            else:
                st.update(succeeded=1, completionTime=now)
                st["conditions"] = [
                    {
                        "type": "SuccessCriteriaMet",
                        "status": "True",
                        "reason": "CompletionsReached",
                    },
                    {"type": "Complete", "status": "True", "reason": "CompletionsReached"},
                ]
        if ttl is not None:
            threading.Timer(ttl, self.delete, args=(ns, name)).start()


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(3)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
