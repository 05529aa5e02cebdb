"""The container stack of ``scripts/docker.sh`` for the deployment tests: the images built
and the stack started with settings of the test's own (database, Celery queue, ports, data
folder), stopped and its database dropped at the end."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

from tests.support.server import free_port

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "docker.sh"
PREFIX = "caesar-stack-"


def docker(*args: str, timeout: float = 120, check: bool = True) -> str:
    """Run ``docker ARGS``; return its standard output."""
    r = subprocess.run(  # noqa: S603
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and r.returncode:
        raise AssertionError(f"docker {' '.join(args)}: {r.returncode}\n{r.stderr[-2000:]}")
    return r.stdout


def containers() -> list[str]:
    """Names of the stack's containers, running or not."""
    out = docker("ps", "-a", "--filter", f"name=^{PREFIX}", "--format", "{{.Names}}")
    return sorted(out.split())


class Stack:
    """``scripts/docker.sh images|up|down`` with this test's settings.

    ``root`` becomes the stack's data folder (mounted at /srv/caesar-rest in the containers).
    """

    def __init__(self, root: Path):
        self.root = root
        self.db = f"caesar_stack_{uuid.uuid4().hex[:10]}"
        port = free_port()
        while port > 65000:
            port = free_port()
        self.env = {
            **os.environ,
            "CAESAR_STACK_DB_URL": f"postgresql+psycopg://postgres@127.0.0.1:5432/{self.db}",
            "CAESAR_STACK_QUEUE": f"caesar-stack-{uuid.uuid4().hex[:8]}",
            "CAESAR_STACK_PORT": str(port),
            "CAESAR_STACK_DIR": str(root),
        }
        self.url = f"http://127.0.0.1:{port}"
        self.api = f"{self.url}/caesar/api/v1.0"
        self.times: dict[str, float] = {}

    def script(self, command: str, timeout: float) -> float:
        """Run ``scripts/docker.sh COMMAND``; return its wall time in seconds."""
        t0 = time.monotonic()
        r = subprocess.run(  # noqa: S603
            [str(SCRIPT), command],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert r.returncode == 0, f"docker.sh {command}: {r.returncode}\n{r.stderr[-4000:]}"
        self.times[command] = time.monotonic() - t0
        return self.times[command]

    def images(self) -> None:
        """Build (or find cached) the images."""
        self.script("images", timeout=900)

    def up(self) -> None:
        """Start nginx, the API, a worker and the monitor; wait until healthy."""
        self.script("up", timeout=300)

    def down(self) -> None:
        """Stop and remove the containers; drop the database."""
        try:
            self.script("down", timeout=180)
        finally:
            subprocess.run(  # noqa: S603
                ["dropdb", "-h", "127.0.0.1", "-U", "postgres", "--if-exists", self.db],
                capture_output=True,
                timeout=60,
                check=False,
            )

    def value(self, name: str) -> str:
        """A line of ``scripts/docker.sh env`` (image names, URLs)."""
        out = subprocess.run(  # noqa: S603
            [str(SCRIPT), "env"], env=self.env, capture_output=True, text=True, check=True
        ).stdout
        return dict(line.split("=", 1) for line in out.splitlines())[name]


def logs(name: str) -> str:
    """A container's output (its standard output and error)."""
    r = subprocess.run(  # noqa: S603
        ["docker", "logs", name], capture_output=True, text=True, timeout=60, check=True
    )
    return r.stdout + r.stderr
