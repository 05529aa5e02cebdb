"""Authentication against a real OIDC provider (npm oidc-provider) started by the fixtures."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.support.oidc_provider import AUDIENCE, OIDCProvider, auth_env
from tests.support.server import LiveServer, free_port

API = "/caesar/api/v1.0"


@pytest.fixture(scope="module")
def server(oidc: OIDCProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    srv = LiveServer(tmp_path_factory.mktemp("auth"), **auth_env(oidc)).start()
    yield srv
    srv.stop()


def get(srv: LiveServer, path: str, token: str | None = None, **kw) -> httpx.Response:  # type: ignore[no-untyped-def]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.get(f"{srv.url}{path}", headers=headers, timeout=30, **kw)


def assert_401(r: httpx.Response, words: str) -> None:
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert words in r.json()["status"], r.json()


def test_valid_token_accepted(server: LiveServer, oidc: OIDCProvider) -> None:
    r = get(server, f"{API}/fileids", oidc.token("alice"))
    assert r.status_code == 200 and r.json() == []
    acc = get(server, f"{API}/accounting", oidc.token("alice")).json()
    assert acc["user"] == "alice"


def test_missing_token(server: LiveServer) -> None:
    r = get(server, f"{API}/fileids")
    assert_401(r, "authentication required")
    assert r.headers["www-authenticate"] == 'Bearer realm="caesar-rest"'
    assert_401(
        httpx.get(f"{server.url}{API}/fileids", headers={"Authorization": "Basic eDp5"}),
        "Bearer scheme",
    )


def test_wrong_audience(server: LiveServer, oidc: OIDCProvider) -> None:
    token = oidc.token("alice", resource="urn:some-other-api")
    assert jwt.decode(token, options={"verify_signature": False})["aud"] == "urn:some-other-api"
    r = get(server, f"{API}/fileids", token)
    assert_401(r, "another audience")
    assert 'error="invalid_token"' in r.headers["www-authenticate"]


def test_wrong_issuer(server: LiveServer, oidc: OIDCProvider) -> None:
    # Same signing keys, another issuer name: only the iss check can refuse it.
    other = OIDCProvider(free_port(), oidc.keys_file, issuer="http://127.0.0.1:1/other").start()
    try:
        token = other.token("alice")
    finally:
        other.stop()
    assert (
        jwt.get_unverified_header(token)["kid"]
        == jwt.get_unverified_header(oidc.token("alice"))["kid"]
    )
    assert_401(get(server, f"{API}/fileids", token), "another issuer")


def test_expired_token(server: LiveServer, oidc: OIDCProvider) -> None:
    token = oidc.token("shortlived")  # 2 s lifetime, leeway 0 on the server
    assert get(server, f"{API}/fileids", token).status_code == 200
    time.sleep(3.1)
    assert_401(get(server, f"{API}/fileids", token), "expired")


def test_tampered_token(server: LiveServer, oidc: OIDCProvider) -> None:
    head, payload, sig = oidc.token("bob").split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["sub"] = "alice"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert_401(get(server, f"{API}/fileids", f"{head}.{forged}.{sig}"), "signature")


def test_unknown_key(server: LiveServer, oidc: OIDCProvider) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = int(time.time())
    token = jwt.encode(
        {"iss": oidc.issuer, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300},
        key,
        algorithm="RS256",
        headers={"kid": "rogue-key"},
    )
    assert_401(get(server, f"{API}/fileids", token), "unknown key")
    none_token = jwt.encode(
        {"iss": oidc.issuer, "aud": AUDIENCE, "sub": "alice", "exp": now + 300},
        None,
        algorithm="none",
    )
    assert_401(get(server, f"{API}/fileids", none_token), "not accepted")


def test_query_string_token_refused(server: LiveServer, oidc: OIDCProvider) -> None:
    token = oidc.token("alice")
    r = get(server, f"{API}/fileids", params={"access_token": token})
    assert_401(r, "Authorization header")
    r = get(server, f"{API}/fileids", token, params={"access_token": token})
    assert_401(r, "Authorization header")


def test_opaque_token_by_introspection(server: LiveServer, oidc: OIDCProvider) -> None:
    token = oidc.token("opaque")
    assert token.count(".") != 2
    r = get(server, f"{API}/accounting", token)
    assert r.status_code == 200 and r.json()["user"] == "opaque"
    assert_401(get(server, f"{API}/fileids", token[:-3] + "xyz"), "not active")


def test_admin_role(server: LiveServer, oidc: OIDCProvider) -> None:
    assert get(server, f"{API}/appstats", oidc.token("admin")).status_code == 200
    r = get(server, f"{API}/appstats", oidc.token("alice"))
    assert r.status_code == 403 and "admin" in r.json()["status"]
    users = get(server, f"{API}/admin/users", oidc.token("admin")).json()
    assert {"alice", "admin"} <= {u["user"] for u in users}
    names = {u["user"]: u["display_name"] for u in users}
    assert names["alice"] == "alice-name"  # from preferred_username


def test_key_rotation(tmp_path: Path) -> None:
    keys = tmp_path / "keys.json"
    port = free_port()
    provider = OIDCProvider(port, keys).start()
    srv = LiveServer(tmp_path / "srv", **auth_env(provider)).start()
    try:
        old = provider.token("alice")
        assert get(srv, f"{API}/fileids", old).status_code == 200
        provider.stop()
        keys.unlink()  # the provider makes a new key pair with a new key id
        provider = OIDCProvider(port, keys, kid="key-2").start()
        new = provider.token("alice")
        assert jwt.get_unverified_header(new)["kid"] == "key-2"
        assert jwt.get_unverified_header(old)["kid"] == "key-1"
        r = get(srv, f"{API}/fileids", new)  # unknown kid: the server refetches the JWKS
        assert r.status_code == 200, r.text
    finally:
        srv.stop()
        provider.stop()
