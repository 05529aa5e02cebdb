"""OIDC bearer-token validation.

JWT access tokens are checked locally against the issuer's JWKS (signature, issuer, audience,
expiry with a small leeway); the JWKS URI comes from the discovery document. A token signed
with a key id we do not know triggers one refetch of the JWKS (rate-limited), so key rotation at
the provider needs no restart. Opaque tokens go to the provider's introspection endpoint when
that is enabled. Validated tokens are cached until they expire, so the signature check is not
repeated on every request.

Hostile tokens cost little: a token longer than ``max_token_bytes`` is refused before it is
parsed; an opaque token the provider refused is remembered (by its SHA-256, in a bounded LRU with
a time to live), and introspection calls are rate-limited per process (a token bucket: over it
the caller gets 503 with ``Retry-After``), so a flood of random tokens costs at most
``introspection_burst + introspection_rate * seconds`` provider calls. A JWT's algorithm must be
one of the accepted ones and fit its key: the key's own ``alg`` when its JWK names one, the key
type (and curve) otherwise.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
from jwt import PyJWK

from caesar_rest.logconfig import get_logger
from caesar_rest.settings import Settings

log = get_logger(__name__)


class TokenError(Exception):
    """The token is missing, malformed or invalid (answered 401)."""


class ProviderError(Exception):
    """The identity provider could not be reached or answered nonsense (answered 503).

    ``retry_after`` (seconds), when set, is sent as the answer's ``Retry-After``.
    """

    retry_after: int | None = None


class IntrospectionBusy(ProviderError):
    """The per-process introspection rate is used up (503 with ``Retry-After``)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many token introspections; retry after {retry_after} s")
        self.retry_after = retry_after


#: Never accepted, whatever the settings say: unsigned tokens, and HMAC (a public key would
#: serve as the shared secret).
_FORBIDDEN_ALGS = frozenset({"none", "HS256", "HS384", "HS512"})
#: The algorithm each elliptic curve signs with (RFC 7518 3.4).
_EC_ALGS = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512", "secp256k1": "ES256K"}


@dataclass(frozen=True)
class _Key:
    """A signing key of the issuer and what its JWK says of it."""

    jwk: PyJWK
    kty: str
    alg: str | None
    crv: str | None

    def fits(self, alg: str) -> bool:
        """Whether a token signed with ``alg`` may be verified with this key."""
        if self.alg is not None:
            return alg == self.alg  # the JWK's own alg wins over the token header
        if self.kty == "RSA":
            return alg[:2] in ("RS", "PS")
        if self.kty == "EC":
            return self.crv is not None and _EC_ALGS.get(self.crv) == alg
        if self.kty == "OKP":
            return alg in ("EdDSA", "Ed25519", "Ed448")
        return False


def token_digest(token: str) -> bytes:
    """The key under which a token is cached (the token itself is not kept)."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


class TokenBucket:
    """A thread-safe token bucket: ``rate`` calls a second, ``burst`` at once.

    Parameters
    ----------
    rate
        Tokens added per second; 0 means no limit.
    burst
        Size of the bucket (it starts full).
    """

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._tokens = float(burst)
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> float:
        """Take one token: 0 when allowed, otherwise the seconds until one is there."""
        if self.rate <= 0:
            return 0.0
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            if self._tokens >= 1:
                self._tokens -= 1
                return 0.0
            return (1 - self._tokens) / self.rate


class NegativeCache:
    """Refused tokens (by digest) with the reason, at most ``size``, each for ``ttl`` seconds."""

    def __init__(self, size: int, ttl: float) -> None:
        self.size = size
        self.ttl = ttl
        self._items: OrderedDict[bytes, tuple[float, str]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: bytes) -> str | None:
        """Why ``key`` was refused, while that is remembered; else None."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return None
            if item[0] <= time.monotonic():
                del self._items[key]
                return None
            self._items.move_to_end(key)
            return item[1]

    def put(self, key: bytes, reason: str) -> None:
        """Remember that ``key`` was refused for ``reason`` (the oldest entry goes first)."""
        if self.size <= 0 or self.ttl <= 0:
            return
        with self._lock:
            self._items[key] = (time.monotonic() + self.ttl, reason)
            self._items.move_to_end(key)
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class Identity:
    """Who is calling."""

    user_id: str
    display_name: str
    roles: frozenset[str] = field(default_factory=frozenset)
    admin: bool = False
    claims: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)


def claim_path(claims: dict[str, Any], path: str) -> Any:
    """The value at a dotted claim path (``realm_access.roles``), or None."""
    cur: Any = claims
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


class OIDCValidator:
    """Validates bearer tokens for one issuer and audience."""

    def __init__(self, settings: Settings, http: httpx.Client | None = None):
        if not settings.oidc.issuer:
            raise ValueError("authentication is on but oidc_issuer is not set")
        self.settings = settings
        self.issuer = settings.oidc.issuer.rstrip("/")
        self.http = http or httpx.Client(timeout=settings.oidc.http_timeout)
        self._lock = threading.Lock()
        self._discovery: dict[str, Any] | None = None
        self._keys: dict[str, _Key] = {}
        self._keys_fetched = 0.0
        self._cache: OrderedDict[bytes, tuple[float, Identity]] = OrderedDict()
        self._cache_size = 10000
        oidc = settings.oidc
        self.refused = NegativeCache(oidc.negative_cache_size, oidc.negative_cache_ttl)
        self.bucket = TokenBucket(oidc.introspection_rate, oidc.introspection_burst)

    # --- provider documents --------------------------------------------------------------
    def discovery(self) -> dict[str, Any]:
        """The issuer's discovery document (fetched once)."""
        if self._discovery is None:
            url = f"{self.issuer}/.well-known/openid-configuration"
            try:
                r = self.http.get(url)
                r.raise_for_status()
                doc = r.json()
            except (httpx.HTTPError, ValueError) as exc:
                raise ProviderError(f"cannot read the discovery document: {exc}") from None
            if doc.get("issuer", "").rstrip("/") != self.issuer:
                raise ProviderError("the discovery document names another issuer")
            self._discovery = doc
        return self._discovery

    def _refresh_keys(self, force: bool) -> None:
        now = time.monotonic()
        if self._keys and not force:
            return
        if self._keys and now - self._keys_fetched < self.settings.oidc.jwks_refresh:
            return  # rate limit: an unknown kid must not make us hammer the provider
        try:
            r = self.http.get(self.discovery()["jwks_uri"])
            r.raise_for_status()
            keys = r.json().get("keys", [])
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise ProviderError(f"cannot read the JWKS: {exc}") from None
        fresh: dict[str, _Key] = {}
        for k in keys:
            if not isinstance(k, dict) or k.get("use", "sig") != "sig" or "kid" not in k:
                continue
            try:
                jwk = PyJWK(k)
            except (jwt.PyJWKError, jwt.InvalidKeyError):
                continue
            alg, crv = k.get("alg"), k.get("crv")
            fresh[str(k["kid"])] = _Key(
                jwk,
                str(k.get("kty")),
                str(alg) if alg is not None else None,
                str(crv) if crv is not None else None,
            )
        self._keys, self._keys_fetched = fresh, now
        log.info("jwks_loaded", kids=sorted(fresh))

    def _key_for(self, kid: str) -> _Key:
        with self._lock:
            self._refresh_keys(force=False)
            if kid not in self._keys:
                self._refresh_keys(force=True)
            key = self._keys.get(kid)
        if key is None:
            raise TokenError("token signed with an unknown key")
        return key

    # --- validation ----------------------------------------------------------------------
    def validate(self, token: str) -> Identity:
        """Validate ``token`` and return the caller's identity.

        Raises
        ------
        TokenError
            The token is not acceptable.
        ProviderError
            The provider is unreachable.
        """
        limit = self.settings.oidc.max_token_bytes
        if len(token) > limit:  # before any parsing, hashing or provider call
            raise TokenError(f"token longer than {limit} bytes")
        now = time.time()
        digest = token_digest(token)
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > now:
            return cached[1]
        if token.count(".") == 2:
            claims = self._validate_jwt(token)
        elif self.settings.oidc.introspection:
            claims = self._introspect_limited(digest, token)
        else:
            raise TokenError("token is not a JWT and introspection is not enabled")
        ident = self._identity(claims)
        exp = float(claims.get("exp", now + 60))
        with self._lock:
            self._cache[digest] = (min(exp, now + 3600), ident)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return ident

    def _validate_jwt(self, token: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenError(f"malformed token: {exc}") from None
        alg = header.get("alg")
        if (
            not isinstance(alg, str)
            or alg in _FORBIDDEN_ALGS
            or alg not in self.settings.oidc.algorithms
        ):
            raise TokenError(f"token algorithm {alg!r} is not accepted")
        kid = header.get("kid")
        if not isinstance(kid, str):
            raise TokenError("token has no key id (kid)")
        key = self._key_for(kid)
        if not key.fits(alg):
            want = key.alg or f"a {key.kty} algorithm"
            raise TokenError(f"token algorithm {alg!r} does not fit its key (which takes {want})")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.jwk.key,
                algorithms=[alg],
                audience=self.settings.oidc.audience,
                issuer=self.issuer,
                leeway=self.settings.oidc.leeway,
                options={"require": ["exp", "iss", "sub"], "verify_aud": True},
            )
        except jwt.ExpiredSignatureError:
            raise TokenError("token expired") from None
        except jwt.InvalidAudienceError:
            raise TokenError("token is for another audience") from None
        except jwt.InvalidIssuerError:
            raise TokenError("token from another issuer") from None
        except jwt.InvalidSignatureError:
            raise TokenError("token signature does not verify") from None
        except jwt.PyJWTError as exc:
            raise TokenError(f"invalid token: {exc}") from None
        _require_subject(claims.get("sub"))
        return claims

    def _introspect_limited(self, digest: bytes, token: str) -> dict[str, Any]:
        """:meth:`_introspect` behind the negative cache and the rate limit."""
        reason = self.refused.get(digest)
        if reason is not None:
            raise TokenError(reason)
        wait = self.bucket.take()
        if wait > 0:
            log.warning("introspection_rate_limited", retry_after=wait)
            raise IntrospectionBusy(max(1, math.ceil(wait)))
        try:
            return self._introspect(token)
        except TokenError as exc:
            self.refused.put(digest, str(exc))
            raise

    def _introspect(self, token: str) -> dict[str, Any]:
        endpoint = self.discovery().get("introspection_endpoint")
        if not endpoint:
            raise ProviderError("the provider has no introspection endpoint")
        auth = (self.settings.oidc.client_id or "", self.settings.oidc.client_secret or "")
        try:
            r = self.http.post(endpoint, data={"token": token}, auth=auth)
            r.raise_for_status()
            data: dict[str, Any] = r.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise ProviderError(f"introspection failed: {exc}") from None
        if not data.get("active"):
            raise TokenError("token is not active")
        aud = data.get("aud")
        auds = aud if isinstance(aud, list) else [aud]
        if self.settings.oidc.audience and self.settings.oidc.audience not in auds:
            raise TokenError("token is for another audience")
        if data.get("iss") and str(data["iss"]).rstrip("/") != self.issuer:
            raise TokenError("token from another issuer")
        if "exp" in data and float(data["exp"]) + self.settings.oidc.leeway < time.time():
            raise TokenError("token expired")
        if data.get("sub") is None:
            # A client-credentials token has no end user: the client is the subject.
            if not data.get("client_id"):
                raise TokenError("token has no subject")
            data["sub"] = data["client_id"]
        _require_subject(data["sub"])
        return data

    def _identity(self, claims: dict[str, Any]) -> Identity:
        sub = str(claims["sub"])
        name = str(claims.get("preferred_username") or claims.get("email") or sub)
        raw = claim_path(claims, self.settings.oidc.roles_claim)
        if isinstance(raw, str):
            roles = frozenset(raw.split())
        elif isinstance(raw, list):
            roles = frozenset(str(r) for r in raw)
        else:
            roles = frozenset()
        return Identity(sub, name, roles, self.settings.oidc.admin_role in roles, claims)


def _require_subject(sub: Any) -> None:
    """Refuse a subject that names nobody (the user id must be a non-blank string)."""
    if not isinstance(sub, str) or not sub.strip():
        raise TokenError("token has an empty or invalid subject (sub)")


#: Keycloak's endpoints sit under the issuer (the realm URL) at this path.
_KEYCLOAK_PATH = "/protocol/openid-connect/"


def read_client_secrets(path: str | Path) -> dict[str, str]:
    """The OIDC settings held by a flask-oidc ``client_secrets.json`` (the predecessor's
    ``--secretfile``): ``{"issuer": ..., "client_id": ..., "client_secret": ...}``.

    The file has one top-level entry, ``web`` (or ``installed``), holding ``issuer``,
    ``client_id``, ``client_secret`` and the endpoint URLs. Without ``issuer`` it is taken from
    a Keycloak endpoint URL (``<issuer>/protocol/openid-connect/auth``).

    Raises
    ------
    ValueError
        The file cannot be read, is no JSON, or names no issuer or client id.
    """
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the client secrets file {path}: {exc}") from None
    entry = doc.get("web") or doc.get("installed") if isinstance(doc, dict) else None
    if not isinstance(entry, dict):
        raise ValueError(f"{path}: no 'web' entry (a flask-oidc client_secrets.json has one)")
    issuer = entry.get("issuer")
    if not issuer:
        for key in ("auth_uri", "token_uri", "token_introspection_uri", "userinfo_uri"):
            url = str(entry.get(key) or "")
            if _KEYCLOAK_PATH in url:
                issuer = url.split(_KEYCLOAK_PATH)[0]
                break
    if not issuer or not entry.get("client_id"):
        raise ValueError(f"{path}: the 'web' entry needs 'issuer' and 'client_id'")
    found = {"issuer": str(issuer), "client_id": str(entry["client_id"])}
    if entry.get("client_secret"):
        found["client_secret"] = str(entry["client_secret"])
    return found
