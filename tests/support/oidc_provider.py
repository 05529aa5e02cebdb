"""Start the local OIDC provider (tests/support/oidc, npm package oidc-provider) for tests."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent / "oidc"
AUDIENCE = "urn:caesar-rest:api"


def ensure_node_modules() -> None:
    """Install the provider's npm packages (from package-lock.json) once."""
    if (HERE / "node_modules" / "oidc-provider").is_dir():
        return
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed for the OIDC tests (Node.js is on this machine kind)")
    cmd = [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"]
    subprocess.run(cmd, cwd=HERE, check=True, timeout=300)  # noqa: S603


class OIDCProvider:
    """One oidc-provider process; ``issuer`` is its URL."""

    def __init__(self, port: int, keys_file: Path, issuer: str | None = None, kid: str = "key-1"):
        self.port = port
        self.kid = kid
        self.keys_file = keys_file
        self.issuer = issuer or f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = keys_file.with_suffix(f".{port}.log")

    def start(self) -> OIDCProvider:
        ensure_node_modules()
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is needed for the OIDC tests")
        env = {
            **os.environ,
            "PORT": str(self.port),
            "ISSUER": self.issuer,
            "KEYS_FILE": str(self.keys_file),
            "KID": self.kid,
        }
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(  # noqa: S603
                [node, "server.mjs"], cwd=HERE, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.time() + 20
        url = f"http://127.0.0.1:{self.port}/.well-known/openid-configuration"
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"oidc-provider exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("oidc-provider did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def token(self, client: str, resource: str | None = None) -> str:
        """An access token for ``client`` (client_credentials; ``sub`` is the client id)."""
        data = {"grant_type": "client_credentials", "scope": "api"}
        if resource:
            data["resource"] = resource
        r = httpx.post(
            f"http://127.0.0.1:{self.port}/token",
            data=data,
            auth=(client, f"{client}-secret"),
            timeout=10,
        )
        r.raise_for_status()
        return str(r.json()["access_token"])


def auth_env(provider: OIDCProvider, **extra: str) -> dict[str, str]:
    """Server settings that turn authentication on against ``provider``."""
    return {
        "CAESAR_REST_AAI": "true",
        "CAESAR_REST_OIDC_ISSUER": provider.issuer,
        "CAESAR_REST_OIDC_AUDIENCE": AUDIENCE,
        "CAESAR_REST_OIDC_LEEWAY": "0",
        "CAESAR_REST_OIDC_JWKS_REFRESH": "0",
        "CAESAR_REST_OIDC_INTROSPECTION": "true",
        "CAESAR_REST_OIDC_CLIENT_ID": "caesar-rest",
        "CAESAR_REST_OIDC_CLIENT_SECRET": "caesar-rest-secret",
        **extra,
    }
