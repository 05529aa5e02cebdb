"""What the generated OpenAPI document leaves out: security, id formats, the real error codes.

FastAPI documents each route's own ``responses``; :func:`install_openapi` adds, once, what
holds across routes:

* with authentication on, the bearer security scheme (and the provider's OpenID Connect
  discovery URL), required by every route that reads the caller's identity, with 401 (and
  403 where a role or another site's page is refused);
* the formats of the ids the service makes (:data:`ID_PATTERNS`) on path parameters;
* the error codes that occur beyond a route's own: 415 on JSON bodies, 413 and 507 where a
  body is stored, 416 on file downloads, 429 on job submissions, 503 (a locked or unreachable
  database, an unreachable identity provider) and 500 everywhere, all with the error model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from fastapi import FastAPI
from starlette.routing import BaseRoute

from caesar_rest.api.deps import current_identity, require_admin
from caesar_rest.api.downloads import RangedFileResponse
from caesar_rest.api.routing import DirectRoute
from caesar_rest.settings import Settings

#: Path parameters by name: the format of the ids the service makes (storage/paths.py).
ID_PATTERNS = {
    "job_id": r"^([0-9a-f]{32}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$",
    "file_uuid": r"^[0-9a-f]{32}$",
}
SCHEME = "bearerAuth"
#: The routes that submit a job (quota of active jobs, submission rate: 429).
JOB_CREATION = frozenset({"/caesar/api/v1.0/job", "/uws/jobs"})
ERROR = {"$ref": "#/components/schemas/ErrorBody"}
_WHY = {
    401: "No valid bearer token",
    403: "Not allowed for this caller (role, quota, another site's page)",
    413: "Body over a size limit",
    415: "Body of another content type than the route takes",
    416: "Range not satisfiable (Content-Range: bytes */size)",
    429: "Too many submissions or active jobs (Retry-After)",
    500: "Internal error (with its request id)",
    503: "Database or identity provider unavailable (Retry-After)",
    507: "No space left on the service's storage",
}


def _calls(dependant: Any) -> Iterable[Any]:
    """Every dependency function of a route, nested ones included."""
    for dep in dependant.dependencies:
        yield dep.call
        yield from _calls(dep)


def _route_facts(
    included: Iterable[tuple[str, Iterable[BaseRoute]]],
) -> dict[tuple[str, str], set[str]]:
    """``(path, method)`` -> facts (``auth``, ``admin``, ``file``) of every API route."""
    facts: dict[tuple[str, str], set[str]] = {}
    for prefix, routes in included:
        for route in routes:
            dependant = getattr(route, "dependant", None)
            fmt = getattr(route, "path_format", None)
            if dependant is None or fmt is None:
                continue
            calls = set(_calls(dependant))
            mine: set[str] = set()
            # A DirectRoute (api/routing.py) reads the caller in its endpoint.
            if current_identity in calls or isinstance(route, DirectRoute):
                mine.add("auth")
            if require_admin in calls:
                mine.add("admin")
            if getattr(route, "response_class", None) is RangedFileResponse:
                mine.add("file")
            for method in getattr(route, "methods", ()) or ():
                facts[(prefix + fmt, method.lower())] = mine
    return facts


def _codes(path: str, method: str, op: dict[str, Any], facts: set[str], aai: bool) -> list[int]:
    codes = [500, 503] if "auth" in facts else [500]
    body = op.get("requestBody", {}).get("content", {})
    if aai and "auth" in facts:
        codes += [401, 403] if "admin" in facts or method != "get" else [401]
    if method in ("post", "put", "patch", "delete"):
        codes.append(403)  # another site's page (crossorigin.py)
    if "application/json" in body:
        codes += [413, 415]
    if "multipart/form-data" in body:
        codes += [413, 507]
    if "file" in facts:
        codes.append(416)
    if method == "post" and path in JOB_CREATION:
        codes.append(429)
    return codes


def decorate(
    schema: dict[str, Any], settings: Settings, facts: dict[tuple[str, str], set[str]]
) -> None:
    """Add the security scheme, the id patterns and the common error codes to ``schema``."""
    if settings.aai:
        schemes: dict[str, Any] = {
            SCHEME: {
                "type": "http",
                "scheme": "bearer",
                "description": "An OIDC access token of the configured provider",
            }
        }
        if settings.oidc.issuer:
            schemes["oidc"] = {
                "type": "openIdConnect",
                "openIdConnectUrl": settings.oidc.issuer.rstrip("/")
                + "/.well-known/openid-configuration",
            }
        schema.setdefault("components", {}).setdefault("securitySchemes", {}).update(schemes)
    for path, ops in schema.get("paths", {}).items():
        for method, op in ops.items():
            mine = facts.get((path, method), set())
            if settings.aai and "auth" in mine:
                op["security"] = [{SCHEME: []}]
            for param in op.get("parameters", []):
                pattern = ID_PATTERNS.get(param.get("name", ""))
                if param.get("in") == "path" and pattern:
                    param.setdefault("schema", {})["pattern"] = pattern
            responses = op.setdefault("responses", {})
            for code in _codes(path, method, op, mine, settings.aai):
                responses.setdefault(
                    str(code),
                    {
                        "description": _WHY[code],
                        "content": {"application/json": {"schema": ERROR}},
                    },
                )


def install_openapi(
    app: FastAPI, settings: Settings, included: Iterable[tuple[str, Iterable[BaseRoute]]]
) -> None:
    """Make ``app.openapi()`` return the decorated document (built once)."""
    facts = _route_facts(included)
    plain: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = plain()
            decorate(schema, settings, facts)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
