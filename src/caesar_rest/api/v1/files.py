"""Upload, list, download and delete files."""

from __future__ import annotations

import contextlib
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse
from python_multipart.exceptions import MultipartParseError
from sqlalchemy import delete, select
from starlette.requests import ClientDisconnect

from caesar_rest.api.context import ServiceContext
from caesar_rest.api.deps import current_user, get_and_post, get_ctx
from caesar_rest.api.errors import ApiError
from caesar_rest.api.quota import quota_warning
from caesar_rest.api.schemas import FileDoc, MessageReply, UploadReply, errors
from caesar_rest.auth.quotas import QuotaExceeded, usage
from caesar_rest.db.models import FileRecord, JobRecord
from caesar_rest.jobs.states import FINAL
from caesar_rest.logconfig import get_logger
from caesar_rest.storage.formats import FormatError, sniff
from caesar_rest.storage.paths import (
    is_file_id,
    safe_join,
)
from caesar_rest.storage.register import store_upload
from caesar_rest.storage.upload import UploadError, UploadTooLarge, receive_upload
from caesar_rest.timeutil import iso

router = APIRouter(tags=["files"])
log = get_logger(__name__)

MIB = 1024.0 * 1024.0


def file_doc(f: FileRecord) -> dict[str, Any]:
    """The predecessor's file document, plus size in bytes and checksum."""
    return {
        "fileid": f.id,
        "filename_orig": f.filename_orig,
        "fileext": f.fileext,
        "filesize": round(f.size / MIB, 6),
        "filedate": iso(f.created_at),
        "metadata": f.info or "",
        "tag": f.tag,
        "size_bytes": f.size,
        "sha256": f.sha256,
        "kind": f.kind,
    }


def check_file_id(file_id: str) -> None:
    """400 for ids that cannot be file ids (path characters and the like)."""
    if not is_file_id(file_id):
        raise ApiError(400, f"Invalid file id {file_id!r}: expected 32 hexadecimal digits")


def owned_file(ctx: ServiceContext, owner: str, file_id: str) -> FileRecord:
    """The caller's file, or 404."""
    check_file_id(file_id)
    with ctx.sessions() as s:
        f = s.get(FileRecord, file_id)
    if f is None or f.owner != owner:
        raise ApiError(404, f"File with uuid {file_id} not found on the system!")
    return f


@router.post(
    "/upload",
    summary="Upload a FITS image (multipart field 'file', optional 'tag')",
    responses={200: {"model": UploadReply}, **errors(400, 413, 415)},
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "file": {"type": "string", "format": "binary"},
                            "tag": {"type": "string"},
                        },
                    }
                }
            },
        }
    },
)
async def upload(
    request: Request,
    ctx: ServiceContext = Depends(get_ctx),
    owner: str = Depends(current_user),
) -> JSONResponse:
    """Stream the upload to disk, validate it, then register it."""
    settings = ctx.settings
    limit = settings.max_upload_bytes
    clen = request.headers.get("content-length")
    if clen and clen.isdigit() and int(clen) > limit + 64 * 1024:
        raise ApiError(413, f"Upload too large: the limit is {settings.max_upload_mib} MiB")
    limits = await run_in_threadpool(ctx.users.limits, owner)
    if clen and clen.isdigit() and limits.bytes > 0:
        used = await run_in_threadpool(stored_bytes, ctx, owner)
        # The body includes a little multipart framing: allow for it.
        if used + int(clen) - 64 * 1024 > limits.bytes:
            raise ApiError(
                403,
                f"Storage quota exceeded: {used} of {limits.bytes} bytes used",
                limit="bytes",
                quota=limits.bytes,
                used=used,
                requested=int(clen),
            )
    try:
        received = await receive_upload(
            request.stream(),
            request.headers.get("content-type"),
            settings.datadir,
            limit,
            buffer_size=settings.upload_chunk_kib * 1024,
            durable=settings.upload_fsync,
        )
    except UploadTooLarge:
        raise ApiError(
            413, f"Upload too large: the limit is {settings.max_upload_mib} MiB"
        ) from None
    except UploadError as exc:
        raise ApiError(400, str(exc)) from None
    except MultipartParseError as exc:
        raise ApiError(400, f"Malformed multipart body: {exc}") from None
    except ClientDisconnect:
        log.info("upload_aborted_by_client")
        raise ApiError(400, "Client disconnected during the upload") from None
    try:
        fmt = await run_in_threadpool(sniff, received.temp_path, received.client_filename)
    except FormatError as exc:
        received.discard()
        raise ApiError(415, f"File refused: {exc}") from None
    except BaseException:
        received.discard()
        raise
    tag = received.fields.get("tag", "")
    try:
        rec = await run_in_threadpool(
            store_upload, settings, ctx.sessions, owner, received, fmt, limits, tag
        )
    except QuotaExceeded as exc:
        raise ApiError(exc.code, exc.message, **exc.body) from None
    file_id, name = rec.id, rec.filename_orig
    log.info("file_uploaded", action="upload", user=owner, file_id=file_id, size=received.size)
    return JSONResponse(
        {
            "filename_orig": name,
            "tag": tag,
            "format": fmt.ext,
            "size": round(received.size / MIB, 6),
            "size_bytes": received.size,
            "sha256": received.sha256,
            "uuid": file_id,
            "date": iso(rec.created_at),
            "status": "File uploaded with success",
            **await run_in_threadpool(quota_warning, ctx, owner, limits),
        }
    )


def stored_bytes(ctx: ServiceContext, owner: str) -> int:
    """Bytes the user stores now."""
    with ctx.sessions() as s:
        return usage(s, owner).bytes


@router.get(
    "/fileids", summary="List the caller's files", responses={200: {"model": list[FileDoc]}}
)
def fileids(
    ctx: ServiceContext = Depends(get_ctx), owner: str = Depends(current_user)
) -> JSONResponse:
    """All files of the caller, oldest first."""
    with ctx.sessions() as s:
        rows = s.scalars(
            select(FileRecord).where(FileRecord.owner == owner).order_by(FileRecord.created_at)
        ).all()
    return JSONResponse([file_doc(f) for f in rows])


@get_and_post(router, "/download", summary="Redirect to /download/<uuid>")
async def download_redirect(request: Request) -> RedirectResponse:
    """Take ``uuid`` from the query (GET) or the form (POST) and redirect."""
    uuid = request.query_params.get("uuid")
    if uuid is None and request.method == "POST":
        try:
            form = await request.form()
        except Exception:
            raise ApiError(400, "Could not read the form; send uuid=<file id>") from None
        value = form.get("uuid")
        uuid = value if isinstance(value, str) else None
    if not uuid:
        raise ApiError(400, "Missing uuid parameter (the file id to download)")
    check_file_id(uuid)
    return RedirectResponse(
        url=str(request.url_for("download_by_uuid", file_uuid=uuid)), status_code=302
    )


@get_and_post(
    router,
    "/download/{file_uuid}",
    name="download_by_uuid",
    summary="Download a file",
)
def download(
    file_uuid: str,
    ctx: ServiceContext = Depends(get_ctx),
    owner: str = Depends(current_user),
) -> FileResponse:
    """Send the file under its original (sanitised) name."""
    f = owned_file(ctx, owner, file_uuid)
    path = safe_join(ctx.settings.datadir, f.relpath)
    if not path.is_file():
        raise ApiError(404, f"File with uuid {file_uuid} not found on the system!")
    log.info("file_download", action="download", user=owner, file_id=f.id)
    return FileResponse(
        path,
        media_type="application/octet-stream",
        headers={"Content-Disposition": content_disposition(f.filename_orig)},
    )


def content_disposition(name: str) -> str:
    """An attachment header safe for any name (RFC 6266 / 5987)."""
    ascii_name = name.encode("ascii", "replace").decode().replace('"', "_").replace("?", "_")
    return f"attachment; filename=\"{ascii_name}\"; filename*=UTF-8''{quote(name)}"


@get_and_post(
    router,
    "/delete/{file_uuid}",
    summary="Delete a file",
    responses={200: {"model": MessageReply}, **errors(400, 404, 409)},
)
def delete_file(
    file_uuid: str,
    ctx: ServiceContext = Depends(get_ctx),
    owner: str = Depends(current_user),
) -> JSONResponse:
    """Remove the record, then the file. Refused while an unfinished job reads it."""
    f = owned_file(ctx, owner, file_uuid)
    with ctx.sessions() as s:
        active = s.scalars(
            select(JobRecord.id).where(
                JobRecord.input_file_id == f.id,
                JobRecord.phase.not_in([p.value for p in FINAL]),
            )
        ).first()
    if active is not None:
        raise ApiError(
            409,
            f"File {file_uuid} is the input of unfinished job {active}; "
            "cancel it or wait before deleting the file",
        )
    with ctx.sessions.begin() as s:
        s.execute(delete(FileRecord).where(FileRecord.id == f.id))
    with contextlib.suppress(FileNotFoundError):
        safe_join(ctx.settings.datadir, f.relpath).unlink()
    log.info("file_deleted", action="delete", user=owner, file_id=f.id)
    return JSONResponse({"status": "File deleted and removed from DB"})
