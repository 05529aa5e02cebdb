"""Resumable uploads (tus 1.0) beside the legacy ``/upload``: ``/files/tus``.

Thin routes over :class:`caesar_rest.storage.tus.TusService`: they read the tus headers, call
the service and answer with the tus headers. ``HEAD`` is the ``GET`` route without its body
(:class:`caesar_rest.api.methods.HeadAsGet`); the ``GET`` body describes the upload in JSON
and, once it is complete, the registered file as ``/upload`` answers it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response

from caesar_rest.api.deps import Ctx, Owner
from caesar_rest.api.methods import is_head
from caesar_rest.api.schemas import errors
from caesar_rest.errors import Invalid, ServiceError, Unsupported
from caesar_rest.storage.tus import (
    OFFSET_STREAM,
    TUS_EXTENSIONS,
    TUS_VERSION,
    TusService,
    TusUpload,
    header_int,
    parse_metadata,
)

router = APIRouter(prefix="/files/tus", tags=["files"])

#: Header naming the registered file in the answer to the ``PATCH`` that completes an upload.
FILE_ID_HEADER = "X-Caesar-File-Id"


def get_tus(ctx: Ctx) -> TusService:
    """The resumable-upload service (light: made per request)."""
    return TusService(ctx.settings, ctx.sessions)


Tus = Annotated[TusService, Depends(get_tus)]


def _base() -> dict[str, str]:
    return {"Tus-Resumable": TUS_VERSION}


@contextmanager
def _tus_errors() -> Iterator[None]:
    """Errors go out with ``Tus-Resumable`` too (tus clients read it on every answer)."""
    try:
        yield
    except ServiceError as exc:
        exc.headers = {**(exc.headers or {}), **_base()}
        raise


def _check_version(request: Request) -> None:
    version = request.headers.get("tus-resumable")
    if version != TUS_VERSION:
        raise ServiceError(
            412,
            f"Tus-Resumable {version!r} is not supported; this server speaks {TUS_VERSION}",
            headers={"Tus-Version": TUS_VERSION},
        )


def _state_headers(tus: TusService, up: TusUpload) -> dict[str, str]:
    headers = {
        **_base(),
        "Upload-Offset": str(tus.offset(up)),
        "Upload-Length": str(up.length),
        "Cache-Control": "no-store",
    }
    if up.file_id is None:
        headers["Upload-Expires"] = tus.expires_header(up)
    else:
        headers[FILE_ID_HEADER] = up.file_id
    return headers


@router.options("", summary="tus: the protocol version, extensions and size limit")
def tus_options(tus: Tus) -> Response:
    """``Tus-Version``, ``Tus-Extension`` and ``Tus-Max-Size`` (no authentication needed)."""
    return Response(
        status_code=204,
        headers={
            **_base(),
            "Tus-Version": TUS_VERSION,
            "Tus-Extension": ",".join(TUS_EXTENSIONS),
            "Tus-Max-Size": str(tus.settings.max_upload_bytes),
        },
    )


@router.post(
    "",
    status_code=201,
    summary="tus: create a resumable upload (Upload-Length; Upload-Metadata filename, tag)",
    responses=errors(400, 403, 412, 413),
)
async def tus_create(request: Request, ctx: Ctx, tus: Tus, owner: Owner) -> Response:
    """A new upload; its URL is in ``Location``."""
    with _tus_errors():
        _check_version(request)
        if request.headers.get("upload-defer-length") is not None:
            raise Invalid("Upload-Defer-Length is not supported: send Upload-Length")
        length = header_int("Upload-Length", request.headers.get("upload-length"))
        metadata = parse_metadata(request.headers.get("upload-metadata"))
        limits = await run_in_threadpool(ctx.users.limits, owner)
        up = await run_in_threadpool(tus.create, owner, length, metadata, limits)
    location = str(request.url_for("tus_upload", upload_id=up.id))
    return Response(
        status_code=201,
        headers={**_base(), "Location": location, "Upload-Expires": tus.expires_header(up)},
    )


@router.get(
    "/{upload_id}",
    name="tus_upload",
    summary="tus: the upload's offset (HEAD), or its state in JSON (GET)",
    responses=errors(404),
)
def tus_status(upload_id: str, request: Request, tus: Tus, owner: Owner) -> Response:
    """``Upload-Offset`` and ``Upload-Length``; the body adds the metadata and, once complete,
    the registered file."""
    with _tus_errors():
        up = tus.get(owner, upload_id)
    if is_head(request.scope):  # no body at all (tus clients read the headers only)
        return Response(status_code=200, headers=_state_headers(tus, up))
    body = {
        "upload_id": up.id,
        "offset": tus.offset(up),
        "length": up.length,
        "filename": up.filename,
        "tag": up.tag,
        "complete": up.file_id is not None,
        "file": up.reply or None,
    }
    return JSONResponse(body, headers=_state_headers(tus, up))


@router.patch(
    "/{upload_id}",
    status_code=204,
    summary="tus: append bytes at Upload-Offset (application/offset+octet-stream)",
    responses=errors(400, 403, 404, 409, 412, 413, 415, 423),
)
async def tus_patch(upload_id: str, request: Request, ctx: Ctx, tus: Tus, owner: Owner) -> Response:
    """Append the body; the answer's ``Upload-Offset`` is the new offset. The request that
    completes the upload registers the file (``X-Caesar-File-Id``)."""
    with _tus_errors():
        _check_version(request)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype != OFFSET_STREAM:
            raise Unsupported(f"PATCH needs Content-Type: {OFFSET_STREAM} (got {ctype!r})")
        offset = header_int("Upload-Offset", request.headers.get("upload-offset"))
        clen = request.headers.get("content-length")
        declared = int(clen) if clen and clen.isdigit() else None
        limits = await run_in_threadpool(ctx.users.limits, owner)
        up = await tus.append(owner, upload_id, offset, request.stream(), declared, limits)
    return Response(status_code=204, headers=_state_headers(tus, up))


@router.delete(
    "/{upload_id}",
    status_code=204,
    summary="tus: terminate an upload (a registered file stays)",
    responses=errors(404, 412, 423),
)
def tus_delete(upload_id: str, request: Request, tus: Tus, owner: Owner) -> Response:
    """Remove the upload and what it received."""
    with _tus_errors():
        _check_version(request)
        tus.terminate(owner, upload_id)
    return Response(status_code=204, headers=_base())
