"""Hostile tokens (issue 14, item 8): size cap, negative cache and introspection rate limit,
the key's own algorithm, a non-empty subject.

Unit tests run the validator against a stub provider (an ``httpx.MockTransport`` that serves a
discovery document, a JWKS of keys made here and an introspection endpoint, counting calls);
the others use the real provider (npm oidc-provider) in process and behind a live server.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from jwt.utils import base64url_encode
from pydantic import ValidationError

from caesar_rest.auth import oidc
from caesar_rest.auth.oidc import (
    IntrospectionBusy,
    NegativeCache,
    OIDCValidator,
    TokenBucket,
    TokenError,
)
from caesar_rest.settings import Settings

from tests.support.oidc_provider import AUDIENCE, OIDCProvider, auth_env
from tests.support.server import LiveServer

ISSUER = "http://127.0.0.1:9/idp"  # never reached: the stub transport answers
API = "/caesar/api/v1.0"


@dataclass
class StubProvider:
    """Discovery, JWKS and introspection answered in memory; ``calls`` counts each path."""

    jwks: list[dict[str, Any]] = field(default_factory=list)
    introspect: Callable[[str], dict[str, Any]] = lambda token: {"active": False}
    calls: dict[str, int] = field(default_factory=dict)

    def handle(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        self.calls[path] = self.calls.get(path, 0) + 1
        if path.endswith("/.well-known/openid-configuration"):
            return httpx.Response(
                200,
                json={
                    "issuer": ISSUER,
                    "jwks_uri": f"{ISSUER}/jwks",
                    "introspection_endpoint": f"{ISSUER}/introspect",
                },
            )
        if path.endswith("/jwks"):
            return httpx.Response(200, json={"keys": self.jwks})
        if path.endswith("/introspect"):
            token = dict(httpx.QueryParams(request.content.decode()))["token"]
            return httpx.Response(200, json=self.introspect(token))
        return httpx.Response(404)

    @property
    def total(self) -> int:
        return sum(self.calls.values())

    def validator(self, **oidc: Any) -> OIDCValidator:
        opts = {"issuer": ISSUER, "audience": AUDIENCE, "leeway": 0, "introspection": True}
        opts.update(oidc)
        settings = Settings(**{f"oidc_{k}": v for k, v in opts.items()})
        return OIDCValidator(settings, httpx.Client(transport=httpx.MockTransport(self.handle)))


def public_jwk(key: Any, kid: str, alg: str | None) -> dict[str, Any]:
    """The public JWK of ``key``, with ``alg`` when given."""
    algo = RSAAlgorithm if isinstance(key, rsa.RSAPrivateKey) else ECAlgorithm
    jwk: dict[str, Any] = algo.to_jwk(key.public_key(), as_dict=True)
    jwk.update(kid=kid, use="sig")
    if alg:
        jwk["alg"] = alg
    return jwk


def claims(sub: Any = "alice") -> dict[str, Any]:
    now = int(time.time())
    return {"iss": ISSUER, "aud": AUDIENCE, "sub": sub, "iat": now, "exp": now + 300}


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


# --- size cap ------------------------------------------------------------------------------
def test_long_token_refused_before_any_call() -> None:
    stub = StubProvider()
    v = stub.validator(max_token_bytes=1024)
    for token in ("a" * 1025, "x." * 300 + "y" * 500, "z" * 100_000):
        with pytest.raises(TokenError, match="longer than 1024 bytes"):
            v.validate(token)
    assert stub.total == 0  # neither discovery nor introspection was asked
    with pytest.raises(TokenError, match="not active"):
        v.validate("a" * 1024)  # at the limit: checked as usual
    assert stub.calls["/idp/introspect"] == 1


# --- negative cache and rate limit (stub) --------------------------------------------------
def test_refused_opaque_token_asked_once() -> None:
    stub = StubProvider()
    v = stub.validator(introspection_rate=0)  # no rate limit: only the cache saves calls
    for _ in range(50):
        with pytest.raises(TokenError, match="not active"):
            v.validate("unknown-opaque-token")
    assert stub.calls["/idp/introspect"] == 1
    assert len(v.refused) == 1


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The monotonic clock of :mod:`caesar_rest.auth.oidc`, set by the test (``clock[0]``):
    the cache and the bucket see only the time the test lets pass, however loaded the
    machine is."""
    now = [1000.0]
    fake = types.SimpleNamespace(monotonic=lambda: now[0], time=time.time, sleep=time.sleep)
    monkeypatch.setattr(oidc, "time", fake)
    return now


def test_negative_cache_bounded_and_expires(clock: list[float]) -> None:
    cache = NegativeCache(size=3, ttl=0.3)
    for i in range(10):
        cache.put(bytes([i]), f"reason {i}")
    assert len(cache) == 3
    assert cache.get(bytes([0])) is None  # the oldest went first
    clock[0] += 0.29
    assert cache.get(bytes([9])) == "reason 9"
    clock[0] += 0.02
    assert cache.get(bytes([9])) is None
    off = NegativeCache(size=0, ttl=60)
    off.put(b"k", "r")
    assert off.get(b"k") is None


def test_token_bucket(clock: list[float]) -> None:
    bucket = TokenBucket(rate=2.0, burst=3)
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    clock[0] += 0.3
    assert bucket.take() == pytest.approx(0.2)  # 0.6 of a token refilled
    clock[0] += 0.2
    assert bucket.take() == 0.0
    assert bucket.take() == pytest.approx(0.5)
    assert all(TokenBucket(rate=0, burst=1).take() == 0.0 for _ in range(100))


def test_flood_of_random_tokens_bounded() -> None:
    stub = StubProvider(
        introspect=lambda t: {"active": t == "good", "sub": "carol", "aud": AUDIENCE}
    )
    v = stub.validator(introspection_rate=1, introspection_burst=5)
    busy = []
    start = time.monotonic()
    for _ in range(300):
        try:
            v.validate(secrets.token_urlsafe(32))
        except IntrospectionBusy as exc:
            busy.append(exc.retry_after)
        except TokenError:
            pass
    elapsed = time.monotonic() - start
    assert stub.calls["/idp/introspect"] <= 5 + int(elapsed) + 1
    assert len(busy) >= 290 and all(b >= 1 for b in busy)
    with pytest.raises(IntrospectionBusy):
        v.validate("good")  # the bucket is shared: a real token waits too
    time.sleep(1.05)
    assert v.validate("good").user_id == "carol"
    assert v.validate("good").user_id == "carol"  # from the positive cache
    assert stub.calls["/idp/introspect"] <= 5 + int(time.monotonic() - start) + 1


# --- the key's own algorithm ----------------------------------------------------------------
def test_key_alg_enforced(rsa_key: rsa.RSAPrivateKey) -> None:
    stub = StubProvider(jwks=[public_jwk(rsa_key, "k1", "RS256")])
    v = stub.validator()
    assert v.validate(jwt.encode(claims(), rsa_key, "RS256", headers={"kid": "k1"})).user_id
    for alg in ("RS512", "PS256"):  # both in the accepted list, and the key could verify them
        token = jwt.encode(claims("mallory"), rsa_key, alg, headers={"kid": "k1"})
        with pytest.raises(TokenError, match=r"does not fit its key \(which takes RS256\)"):
            v.validate(token)


def test_key_without_alg_by_type(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    stub = StubProvider(jwks=[public_jwk(rsa_key, "r", None), public_jwk(ec_key, "e", None)])
    v = stub.validator()
    # No alg in the JWK: any accepted RSA algorithm for an RSA key, the curve's for an EC key.
    assert v.validate(jwt.encode(claims("a"), rsa_key, "RS512", headers={"kid": "r"})).user_id
    assert v.validate(jwt.encode(claims("b"), ec_key, "ES256", headers={"kid": "e"})).user_id
    with pytest.raises(TokenError, match="does not fit its key"):
        v.validate(jwt.encode(claims("c"), ec_key, "ES256", headers={"kid": "r"}))
    with pytest.raises(TokenError, match="does not fit its key"):
        v.validate(es384_with_p256(ec_key, claims("d"), "e"))
    # An algorithm left out of the settings is refused whatever the key.
    narrow = stub.validator(algorithms=["RS256"])
    with pytest.raises(TokenError, match="'RS512' is not accepted"):
        narrow.validate(jwt.encode(claims("e"), rsa_key, "RS512", headers={"kid": "r"}))


def es384_with_p256(key: ec.EllipticCurvePrivateKey, payload: dict[str, Any], kid: str) -> str:
    """A token whose header says ES384, signed with SHA-384 by a P-256 key (PyJWT won't)."""
    head = base64url_encode(json.dumps({"alg": "ES384", "kid": kid, "typ": "JWT"}).encode())
    body = base64url_encode(json.dumps(payload).encode())
    signing_input = head + b"." + body
    r, s = decode_dss_signature(key.sign(signing_input, ec.ECDSA(hashes.SHA384())))
    sig = base64url_encode(r.to_bytes(32, "big") + s.to_bytes(32, "big"))
    return (signing_input + b"." + sig).decode()


def test_symmetric_and_none_never_configurable() -> None:
    for bad in (["RS256", "HS256"], ["none"], ["hs512"]):
        with pytest.raises(ValidationError, match="asymmetric only"):
            Settings(oidc_algorithms=bad)


def test_hmac_with_public_key_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    jwk = public_jwk(rsa_key, "k1", None)
    stub = StubProvider(jwks=[jwk])
    v = stub.validator()
    v.settings.oidc.algorithms.append("HS256")  # even past the settings check
    # The classic confusion: the public key (known to all) as the HMAC secret. PyJWT will not
    # sign that, so the token is made by hand.
    secret = rsa_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    head = base64url_encode(json.dumps({"alg": "HS256", "kid": "k1"}).encode())
    signing_input = head + b"." + base64url_encode(json.dumps(claims("mallory")).encode())
    mac = hmac.new(secret, signing_input, hashlib.sha256).digest()
    token = (signing_input + b"." + base64url_encode(mac)).decode()
    with pytest.raises(TokenError, match="'HS256' is not accepted"):
        v.validate(token)


# --- the subject -----------------------------------------------------------------------------
@pytest.mark.parametrize("sub", ["", "   ", 42, ["alice"]])
def test_empty_or_odd_subject_refused(rsa_key: rsa.RSAPrivateKey, sub: Any) -> None:
    stub = StubProvider(jwks=[public_jwk(rsa_key, "k1", "RS256")])
    v = stub.validator()
    with pytest.raises(TokenError, match="[sS]ubject"):
        v.validate(jwt.encode(claims(sub), rsa_key, "RS256", headers={"kid": "k1"}))


def test_introspected_empty_subject_refused() -> None:
    answers = {
        "empty": {"active": True, "aud": AUDIENCE, "sub": "", "client_id": "svc"},
        "blank": {"active": True, "aud": AUDIENCE, "sub": " "},
        "client": {"active": True, "aud": AUDIENCE, "client_id": "svc"},  # sub = the client
    }
    stub = StubProvider(introspect=lambda t: answers[t])
    v = stub.validator()
    for token in ("empty", "blank"):
        with pytest.raises(TokenError, match="subject"):
            v.validate(token)
    assert v.validate("client").user_id == "svc"


# --- the real provider ---------------------------------------------------------------------
def provider_validator(oidc: OIDCProvider, **extra: str) -> tuple[OIDCValidator, list[str]]:
    """A validator of the real provider whose HTTP client records each request's path."""
    env = auth_env(oidc, **extra)
    fields = {k.removeprefix("CAESAR_REST_").lower(): v for k, v in env.items()}
    fields.pop("aai")
    seen: list[str] = []
    client = httpx.Client(timeout=10, event_hooks={"request": [lambda r: seen.append(r.url.path)]})
    return OIDCValidator(Settings(**fields), client), seen


def test_provider_negative_cache_and_rate(oidc: OIDCProvider) -> None:
    v, seen = provider_validator(
        oidc, CAESAR_REST_OIDC_INTROSPECTION_RATE="0.5", CAESAR_REST_OIDC_INTROSPECTION_BURST="4"
    )
    good = oidc.token("opaque")
    bad = good[:-3] + ("aaa" if not good.endswith("aaa") else "bbb")
    for _ in range(20):
        with pytest.raises(TokenError, match="not active"):
            v.validate(bad)
    assert seen.count("/token/introspection") == 1  # the provider was asked once
    assert v.validate(good).user_id == "opaque"
    outcomes = []
    for _ in range(30):
        try:
            v.validate(secrets.token_urlsafe(43))
            outcomes.append("ok")
        except IntrospectionBusy:
            outcomes.append("busy")
        except TokenError:
            outcomes.append("401")
    assert "ok" not in outcomes and outcomes.count("busy") >= 26
    assert seen.count("/token/introspection") <= 4 + 1  # the burst, plus a refill at most


@pytest.fixture(scope="module")
def limited(oidc: OIDCProvider, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = auth_env(
        oidc, CAESAR_REST_OIDC_INTROSPECTION_RATE="0.2", CAESAR_REST_OIDC_INTROSPECTION_BURST="3"
    )
    srv = LiveServer(tmp_path_factory.mktemp("tokens"), **env).start()
    yield srv
    srv.stop()


def call(srv: LiveServer, token: str) -> httpx.Response:
    return httpx.get(
        f"{srv.url}{API}/fileids", headers={"Authorization": f"Bearer {token}"}, timeout=30
    )


def test_server_long_token_401(limited: LiveServer) -> None:
    for size in (8193, 100_000):
        r = call(limited, "A" * size)
        assert r.status_code == 401, (size, r.status_code, r.text[:200])
        assert "longer than 8192 bytes" in r.json()["status"]
        assert r.headers["www-authenticate"].startswith('Bearer realm="caesar-rest"')


def test_server_flood_answers_503_retry_after(limited: LiveServer, oidc: OIDCProvider) -> None:
    assert call(limited, oidc.token("alice")).status_code == 200  # a JWT: no introspection
    same = secrets.token_urlsafe(43)
    assert all(call(limited, same).status_code == 401 for _ in range(10))  # one call, cached
    codes = [call(limited, secrets.token_urlsafe(43)) for _ in range(10)]
    assert [r.status_code for r in codes].count(401) <= 3
    busy = [r for r in codes if r.status_code == 503]
    assert len(busy) >= 7
    assert int(busy[0].headers["retry-after"]) >= 1
    assert "retry after" in busy[0].json()["status"]
    assert call(limited, oidc.token("alice")).status_code == 200  # JWTs are not held up
