"""Prometheus metrics: requests by route, jobs by state and app, queue depth, durations."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from caesar_rest.api.metrics import server_pids

from tests.support.server import wait_state

API = "/caesar/api/v1.0"


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    return [
        (s.name, s.labels, s.value)
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    ]


def request_counts(client: TestClient) -> dict[tuple[str, str, str], float]:
    """Requests counted so far by (method, route, status).

    The method belongs to the key: ``GET`` and ``POST`` of one route with one status are two
    series, and a key without it would keep only one of them.
    """
    return {
        (lab["method"], lab["route"], lab["status"]): v
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
        (lab["method"], lab["route"], lab["status"]): v
        for n, lab, v in got
        if n == "caesar_http_requests_total"
    }
    delta = {k: v - before.get(k, 0.0) for k, v in reqs.items()}
    assert delta[("GET", status_route, "200")] >= 1 and delta[("GET", status_route, "404")] == 1
    assert delta[("POST", f"{API}/upload", "200")] == 1
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
    # The job's own duration decides its bucket (a 0.2 s job on a loaded machine may take
    # over 1 s with its interpreter start): every bucket at or above it holds the one job.
    elapsed = float(app_client.get(f"{API}/job/{ok}/status").json()["elapsed_time"])
    buckets = {
        float(lab["le"]): v
        for n, lab, v in got
        if n == "caesar_job_duration_seconds_bucket" and lab["app"] == "sleep"
    }
    assert buckets[float("inf")] == 1.0
    assert all(v == 1.0 for le, v in buckets.items() if le >= elapsed + 0.5)


def test_route_label_is_the_matched_route_template(app_client: TestClient) -> None:
    """The label is the route's template, not the path with its parameter values replaced:
    ``/app/caesar/describe`` has the value ``caesar`` also where the prefix has it."""
    before = request_counts(app_client)
    app_client.get(f"{API}/app/caesar/describe")
    app_client.get("/openapi.json")
    app_client.get("/docs")
    app_client.get(f"{API}/job/{'0' * 32}/status")
    app_client.get("/no/such/route")
    delta = {k: v - before.get(k, 0.0) for k, v in request_counts(app_client).items()}
    assert delta[("GET", f"{API}/app/{{app_name}}/describe", "200")] == 1
    assert delta[("GET", "/openapi.json", "200")] == 1
    assert delta[("GET", "/docs", "200")] == 1
    assert delta[("GET", f"{API}/job/{{job_id}}/status", "404")] == 1
    assert delta[("GET", "unmatched", "404")] == 1
    assert not any("{app_name}/api" in route for _, route, _ in delta)


def test_every_route_is_labelled_with_its_openapi_path(app_client: TestClient) -> None:
    """Each GET route of the OpenAPI document, requested with every parameter set to the
    same value, is counted under its own template (and nothing under another)."""
    paths = [
        p for p, ops in app_client.get("/openapi.json").json()["paths"].items() if "get" in ops
    ]
    assert len(paths) > 15
    for path in paths:
        url = re.sub(r"\{[^}]+\}", "caesar", path)
        before = request_counts(app_client)
        status = app_client.get(url).status_code
        delta = {k: v - before.get(k, 0.0) for k, v in request_counts(app_client).items()}
        # The scrape that read ``before`` is counted too.
        changed = {k for k, v in delta.items() if v} - {("GET", "/metrics", "200")}
        assert changed == {("GET", path, str(status))}, (path, changed)


def test_process_metrics(app_client: TestClient) -> None:
    """One process: the standard process_* and python_info metrics of this process."""
    got = {n: (lab, v) for n, lab, v in samples(app_client.get("/metrics").text)}
    assert got["process_resident_memory_bytes"][1] > 10 * 2**20
    assert got["process_cpu_seconds_total"][1] > 0
    assert got["process_open_fds"][1] > 0
    assert got["process_start_time_seconds"][1] > 1.7e9
    assert got["python_info"][0]["implementation"] == "CPython"
    assert "pid" not in got["process_resident_memory_bytes"][0]


def test_process_metrics_in_multiprocess_mode(
    app_client: TestClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several workers: the answering worker reports every server process (its parent, the
    master, and the master's children, itself among them), one series per pid."""
    mdir = tmp_path / "multiproc"
    mdir.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(mdir))
    got = samples(app_client.get("/metrics").text)
    rss = {lab["pid"]: v for n, lab, v in got if n == "process_resident_memory_bytes"}
    assert {str(os.getpid()), str(os.getppid())} <= set(rss)
    assert rss[str(os.getpid())] > 10 * 2**20
    cpu = {lab["pid"] for n, lab, _ in got if n == "process_cpu_seconds_total"}
    assert cpu == set(rss)
    assert any(n == "python_info" for n, _, _ in got)
    assert set(rss) == {str(p) for p in server_pids()}
