"""Every documented v1.0 answer fits the pydantic model the OpenAPI document shows for it.

The models of ``api/schemas.py`` are the contract; a body with a field the model lacks, or
without one it requires, or of another type, fails here. The check is strict on names
(``extra="forbid"``) and on types of the required fields.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits
from fastapi.testclient import TestClient
from pydantic import BaseModel, ConfigDict, TypeAdapter

from caesar_rest.api import schemas

API = "/caesar/api/v1.0"


def _forbid(model: type[BaseModel]) -> type[BaseModel]:
    """``model`` refusing unknown fields; ``warning`` (near a quota) may come with any."""

    class Strict(model):  # type: ignore[valid-type, misc]
        model_config = ConfigDict(extra="forbid", populate_by_name=True)
        warning: str | None = None

    Strict.__name__ = f"Strict{model.__name__}"
    return Strict


def check(model: type[BaseModel], body: Any) -> None:
    """``body`` validates against the strict form of ``model`` (a list of them for a list)."""
    if isinstance(body, list):
        TypeAdapter(list[_forbid(model)]).validate_python(body)  # type: ignore[misc]
    else:
        _forbid(model).model_validate(body)


def documented(client: TestClient, path: str, method: str, status: int) -> str:
    """The schema name the OpenAPI document gives for an answer (``[Model]`` for a list)."""
    op = client.get("/openapi.json").json()["paths"][path][method]
    schema = op["responses"][str(status)]["content"]["application/json"]["schema"]
    if schema.get("type") == "array":
        return "[" + schema["items"]["$ref"].rsplit("/", 1)[1] + "]"
    return str(schema["$ref"].rsplit("/", 1)[1])


def _fits(path: Path) -> Path:
    fits.PrimaryHDU(np.zeros((16, 16), dtype=np.float32)).writeto(path)
    return path


def _wait_finished(client: TestClient, job_id: str) -> dict[str, Any]:
    deadline = time.time() + 60
    while time.time() < deadline:
        body: dict[str, Any] = client.get(f"{API}/job/{job_id}/status").json()
        if body["state"] not in ("PENDING", "RUNNING"):
            return body
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not end")


def test_strict_check_can_fail() -> None:
    """The check refuses a missing field, a wrong type and an unknown field."""
    good = {"status": "ok", "state": None}
    check(schemas.MessageReply, good)
    for bad in ({"state": "x"}, {"status": 3.5}, {"status": "ok", "surprise": 1}):
        try:
            check(schemas.MessageReply, bad)
        except ValueError:
            continue
        raise AssertionError(f"{bad} passed")


def test_documented_answers_fit_their_models(app_client: TestClient, tmp_path: Path) -> None:
    """Upload, list, submit, status, jobs, cancel, pending outputs, errors and delete."""
    c = app_client
    assert documented(c, f"{API}/upload", "post", 200) == "UploadReply"
    with open(_fits(tmp_path / "img.fits"), "rb") as fh:
        r = c.post(f"{API}/upload", files={"file": ("img.fits", fh)}, data={"tag": "t"})
    assert r.status_code == 200, r.text
    check(schemas.UploadReply, r.json())
    file_id = r.json()["uuid"]

    assert documented(c, f"{API}/fileids", "get", 200) == "[FileDoc]"
    r = c.get(f"{API}/fileids")
    check(schemas.FileDoc, r.json())
    assert len(r.json()) == 1

    assert documented(c, f"{API}/job", "post", 202) == "SubmitReply"
    assert documented(c, f"{API}/job", "post", 400) == "SubmitErrorBody"
    sub = {"app": "sleep", "job_inputs": {"seconds": 30}, "data_inputs": file_id, "tag": 1}
    r = c.post(f"{API}/job", json=sub)
    assert r.status_code == 202, r.text
    check(schemas.SubmitReply, r.json())
    job_id = r.json()["job_id"]
    for bad in (
        {**sub, "job_inputs": {"seconds": -1}},
        {**sub, "data_inputs": "f" * 32},
        {**sub, "app": "nope"},
        {"app": "sleep"},
    ):
        r = c.post(f"{API}/job", json=bad)
        assert r.status_code == 400, r.text
        check(schemas.SubmitErrorBody, r.json())

    assert documented(c, f"{API}/job/{{job_id}}/status", "get", 200) == "StatusReply"
    r = c.get(f"{API}/job/{job_id}/status")
    check(schemas.StatusReply, r.json())

    assert documented(c, f"{API}/jobs", "get", 200) == "[JobDoc]"
    check(schemas.JobDoc, c.get(f"{API}/jobs").json())

    for out in ("output", "sources", "preview", "results"):
        op = "get"
        assert documented(c, f"{API}/job/{{job_id}}/{out}", op, 202) == "PendingReply"
        r = c.get(f"{API}/job/{job_id}/{out}")
        if r.status_code == 202:  # still running (it sleeps 30 s)
            check(schemas.PendingReply, r.json())

    assert documented(c, f"{API}/job/{{job_id}}/cancel", "get", 200) == "MessageReply"
    for _ in range(2):  # canceled, then already completed
        r = c.get(f"{API}/job/{job_id}/cancel")
        assert r.status_code == 200, r.text
        check(schemas.MessageReply, r.json())
    status = _wait_finished(c, job_id)
    check(schemas.StatusReply, status)
    assert status["events"], status
    check(schemas.JobDoc, c.get(f"{API}/jobs").json())

    zeros = "0" * 32
    for route, url, code in (
        ("/job/{job_id}/status", f"/job/{job_id[:-1]}x/status", 400),
        ("/job/{job_id}/status", f"/job/{zeros}/status", 404),
        ("/job/{job_id}/cancel", f"/job/{zeros}/cancel", 404),
        ("/delete/{file_uuid}", f"/delete/{zeros}", 404),
        ("/delete/{file_uuid}", "/delete/nope", 400),
    ):
        assert documented(c, API + route, "get", code) == "ErrorBody"
        r = c.get(API + url)
        assert r.status_code == code, (url, r.text)
        # Errors carry further fields (job_id, ...): the model names the one every error has.
        schemas.ErrorBody.model_validate(r.json())

    assert documented(c, f"{API}/delete/{{file_uuid}}", "get", 200) == "MessageReply"
    r = c.get(f"{API}/delete/{file_id}")
    assert r.status_code == 200, r.text
    check(schemas.MessageReply, r.json())
