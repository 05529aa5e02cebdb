"""schemathesis over the service's OpenAPI, in process: shared by the test and scripts/fuzz_api.py.

Each operation of the document gets ``examples`` generated requests (valid and invalid ones,
hypothesis' generate phase); every answer is checked for a server error and against the schema
documented for its status. Failures are collected, not raised, so one run reports all of them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from caesar_rest.api.app import create_app
from caesar_rest.auth.oidc import Identity, TokenError
from caesar_rest.settings import OIDCSettings

from tests.support.server import make_settings

CHECKS = [not_a_server_error, response_schema_conformance]
#: The tokens of an in-process run with authentication on.
TOKENS = {
    "user-token": Identity("alice", "alice"),
    "admin-token": Identity("root", "root", admin=True),
}
AUTH_HEADERS = {"Authorization": "Bearer user-token"}


class StubValidator:
    """Two known tokens; every other one refused, as the real validator refuses it."""

    def validate(self, token: str) -> Identity:
        ident = TOKENS.get(token)
        if ident is None:
            raise TokenError("token not recognised")
        return ident


@dataclass
class FuzzReport:
    """What a run did: cases sent, answers by status, failures by operation."""

    cases: int = 0
    #: Generated cases that httpx itself cannot encode (never sent).
    unsendable: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[tuple[str, int, str]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def server_errors(self) -> int:
        return sum(n for s, n in self.statuses.items() if s >= 500)

    def distinct(self) -> set[tuple[str, int, str]]:
        return {(op, status, msg.splitlines()[0][:120]) for op, status, msg in self.failures}


@contextmanager
def service(root: Path, aai: bool) -> Iterator[TestClient]:
    """An in-process service (no backends started); with ``aai`` the stub validator."""
    extra: dict[str, object] = {}
    if aai:
        # Never reached: the stub validator replaces the real one once the service runs.
        extra["oidc"] = OIDCSettings(issuer="http://127.0.0.1:9", audience="caesar-rest")
    app = create_app(make_settings(root, aai=aai, **extra), start_backends=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        if aai:
            app.state.ctx.validator = StubValidator()
        yield client


def openapi_schema(client: TestClient) -> Any:
    """The served OpenAPI document, loaded by schemathesis."""
    return schemathesis.openapi.from_dict(client.get("/openapi.json").json())


def _send(client: TestClient, case: Any, headers: dict[str, str] | None) -> Any | None:
    kwargs = case.as_transport_kwargs()
    url = kwargs.pop("url")
    kwargs.pop("base_url", None)
    path = "/" + url.split("://", 1)[-1].split("/", 1)[-1] if "://" in url else url
    if headers:
        # Ours win: the generated Authorization of the declared bearer scheme is a random token.
        kwargs["headers"] = {**(kwargs.get("headers") or {}), **headers}
    method = kwargs.pop("method")
    try:
        request = client.build_request(method, path, **kwargs)
        # Encode a multipart body here: httpx encodes it lazily, inside the test transport,
        # where a case it cannot encode (a number as a file part) would show as a server 500.
        request.read()
    except (TypeError, AttributeError, ValueError):
        return None  # no HTTP client could send this case
    return client.send(request)


def fuzz(
    client: TestClient,
    examples: int,
    headers: dict[str, str] | None = None,
    seed: int | None = 0,
) -> FuzzReport:
    """Send ``examples`` generated cases to every operation; collect what fails."""
    report = FuzzReport()
    schema = openapi_schema(client)
    start = time.perf_counter()
    for result in schema.get_all_operations():
        op = result.ok()
        _fuzz_operation(client, op, examples, headers, seed, report)
    report.seconds = time.perf_counter() - start
    return report


def _fuzz_operation(
    client: TestClient,
    op: Any,
    examples: int,
    headers: dict[str, str] | None,
    seed: int | None,
    report: FuzzReport,
) -> None:
    label = f"{op.method.upper()} {op.path}"

    @settings(
        max_examples=examples,
        deadline=None,
        derandomize=seed == 0,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=op.as_strategy())
    def one(case: Any) -> None:
        resp = _send(client, case, headers)
        if resp is None:
            report.unsendable += 1
            return
        report.cases += 1
        report.statuses[resp.status_code] = report.statuses.get(resp.status_code, 0) + 1
        try:
            case.validate_response(resp, checks=CHECKS)
        except Exception as exc:  # collected: one run reports every failure
            report.failures.append(
                (label, resp.status_code, f"{str(exc) or type(exc).__name__}\n{resp.text[:300]}")
            )

    one()
