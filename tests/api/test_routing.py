"""The DirectRoute class of the polled status route."""

from __future__ import annotations

import pytest
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient

from caesar_rest.api.routing import DirectRoute


def test_direct_route_calls_the_endpoint_with_its_path_parameters() -> None:
    router = APIRouter()

    async def echo(item_id: str, request: Request) -> JSONResponse:
        return JSONResponse({"item_id": item_id, "path": request.url.path})

    router.add_api_route("/items/{item_id}", echo, route_class_override=DirectRoute)
    app = FastAPI()
    app.include_router(router, prefix="/v1")
    with TestClient(app) as client:
        assert client.get("/v1/items/a-b").json() == {"item_id": "a-b", "path": "/v1/items/a-b"}
    # Described like any route.
    params = app.openapi()["paths"]["/v1/items/{item_id}"]["get"]["parameters"]
    assert [p["name"] for p in params] == ["item_id"]


def test_direct_route_refuses_what_it_would_skip() -> None:
    router = APIRouter()

    async def with_query(item_id: str, request: Request, limit: int = 3) -> JSONResponse:
        return JSONResponse({})

    def not_async(item_id: str, request: Request) -> JSONResponse:
        return JSONResponse({})

    async def int_path(item_id: int, request: Request) -> JSONResponse:
        return JSONResponse({})  # would get a str: FastAPI's conversion is skipped

    for endpoint in (with_query, not_async, int_path):
        with pytest.raises(TypeError, match="DirectRoute"):
            router.add_api_route("/items/{item_id}", endpoint, route_class_override=DirectRoute)
