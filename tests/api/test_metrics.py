"""Prometheus metrics: requests by route, jobs by state and app, queue depth, durations."""

from __future__ import annotations

from pathlib import Path

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.support.server import wait_state

API = "/caesar/api/v1.0"


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, s.labels, s.value)
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    ]


def request_counts(client: TestClient) -> dict[tuple[str, str], float]:
    return {
        (lab["route"], lab["status"]): v
        for n, lab, v in samples(client.get("/metrics").text)
        if n == "caesar_http_requests_total"
    }


def test_metrics(app_client: TestClient, s17: Path) -> None:
    # Request counters live in the process (other tests' apps count too): compare deltas.
    before = request_counts(app_client)
    with open(s17, "rb") as fh:
        fid = app_client.post(f"{API}/upload", files={"file": ("a.fits", fh)}).json()["uuid"]
    ok = app_client.post(
        f"{API}/job", json={"app": "sleep", "job_inputs": {"seconds": 0.2}, "data_inputs": fid}
    ).json()["job_id"]
    wait_state(app_client, ok, {"SUCCESS"}, prefix=API)
    app_client.get(f"{API}/job/{'0' * 32}/status")
    r = app_client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    got = samples(r.text)
    status_route = f"{API}/job/{{job_id}}/status"
    reqs = {
        (lab["route"], lab["status"]): v for n, lab, v in got if n == "caesar_http_requests_total"
    }
    delta = {k: v - before.get(k, 0.0) for k, v in reqs.items()}
    assert delta[(status_route, "200")] >= 1 and delta[(status_route, "404")] == 1
    assert delta[(f"{API}/upload", "200")] == 1
    assert any(
        n == "caesar_http_request_duration_seconds_bucket" and lab["route"] == f"{API}/upload"
        for n, lab, _ in got
    )
    jobs = {(lab["state"], lab["app"]): v for n, lab, v in got if n == "caesar_jobs"}
    assert jobs[("SUCCESS", "sleep")] == 1
    count = [
        v for n, lab, v in got if n == "caesar_job_duration_seconds_count" and lab["app"] == "sleep"
    ]
    assert count == [1.0]
    inf = [
        v
        for n, lab, v in got
        if n == "caesar_job_duration_seconds_bucket"
        and lab["app"] == "sleep"
        and lab["le"] == "1.0"
    ]
    assert inf == [1.0]
