"""schemathesis over the whole OpenAPI document, authentication off and on (issue 14).

Every operation gets a bounded number of generated requests; no answer may be a server error
or differ from the schema documented for its status. ``scripts/fuzz_api.py`` is the longer run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("schemathesis")

from tests.support.fuzz import AUTH_HEADERS, FuzzReport, fuzz, service  # noqa: E402

EXAMPLES = 6


def summary(report: FuzzReport) -> str:
    statuses = sorted(report.statuses.items())
    lines = [f"{report.cases} cases ({report.unsendable} unsendable), statuses {statuses}"]
    lines += [f"{op} -> {status}: {msg[:300]}" for op, status, msg in sorted(report.distinct())]
    return "\n".join(lines)


@pytest.mark.parametrize("aai", [False, True], ids=["auth-off", "auth-on"])
def test_openapi_fuzz(tmp_path: Path, aai: bool) -> None:
    with service(tmp_path, aai) as client:
        report = fuzz(client, EXAMPLES, AUTH_HEADERS if aai else None)
    assert report.cases > 100
    # Cases httpx cannot encode are not sent; they must stay a small share of the run.
    assert report.unsendable * 20 < report.cases, summary(report)
    assert report.server_errors == 0, summary(report)
    assert report.failures == [], summary(report)
