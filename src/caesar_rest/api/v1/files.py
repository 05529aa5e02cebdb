"""Upload, list, download and delete files (through the file service)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse

from caesar_rest.api.deps import Ctx, Files, Owner, get_and_post
from caesar_rest.api.downloads import RangedFileResponse
from caesar_rest.api.quota import quota_warning
from caesar_rest.api.schemas import FileDoc, MessageReply, UploadReply, errors
from caesar_rest.db.models import FileRecord
from caesar_rest.errors import Invalid, NotFound
from caesar_rest.logconfig import get_logger
from caesar_rest.storage.direct import offered
from caesar_rest.storage.files import UploadLimits
from caesar_rest.storage.paths import is_file_id
from caesar_rest.timeutil import iso

router = APIRouter(tags=["files"])
log = get_logger(__name__)

MIB = 1024.0 * 1024.0


def file_doc(f: FileRecord) -> dict[str, Any]:
    """The predecessor's file document, plus size in bytes and checksum."""
    return FileDoc(
        fileid=f.id,
        filename_orig=f.filename_orig,
        fileext=f.fileext,
        filesize=round(f.size / MIB, 6),
        filedate=iso(f.created_at),
        metadata=f.info or "",
        tag=f.tag,
        size_bytes=f.size,
        sha256=f.sha256,
        kind=f.kind,
    ).model_dump()


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
async def upload(request: Request, ctx: Ctx, files: Files, owner: Owner) -> JSONResponse:
    """Stream the upload to disk, validate it, then register it."""
    limits = await run_in_threadpool(ctx.users.limits, owner)
    declared = UploadLimits(request.headers.get("content-length"), limits)
    stored = await files.upload(
        request.stream(),
        request.headers.get("content-type"),
        owner,
        declared,
        offered(request.scope),
    )
    rec = stored.record
    reply = UploadReply(
        filename_orig=rec.filename_orig,
        tag=rec.tag,
        format=stored.format.ext,
        size=round(rec.size / MIB, 6),
        size_bytes=rec.size,
        sha256=rec.sha256,
        uuid=rec.id,
        date=iso(rec.created_at),
        status="File uploaded with success",
    )
    warning = await run_in_threadpool(quota_warning, ctx, owner, limits)
    return JSONResponse({**reply.model_dump(), **warning})


@router.get(
    "/fileids", summary="List the caller's files", responses={200: {"model": list[FileDoc]}}
)
def fileids(files: Files, owner: Owner) -> JSONResponse:
    """All files of the caller, oldest first."""
    return JSONResponse([file_doc(f) for f in files.list(owner)])


@get_and_post(router, "/download", summary="Redirect to /download/<uuid>")
async def download_redirect(request: Request) -> RedirectResponse:
    """Take ``uuid`` from the query (GET) or the form (POST) and redirect."""
    uuid = request.query_params.get("uuid")
    if uuid is None and request.method == "POST":
        try:
            form = await request.form()
        except Exception:
            raise Invalid("Could not read the form; send uuid=<file id>") from None
        value = form.get("uuid")
        uuid = value if isinstance(value, str) else None
    if not uuid:
        raise Invalid("Missing uuid parameter (the file id to download)")
    if not is_file_id(uuid):
        raise Invalid(f"Invalid file id {uuid!r}: expected 32 hexadecimal digits")
    return RedirectResponse(
        url=str(request.url_for("download_by_uuid", file_uuid=uuid)), status_code=302
    )


@get_and_post(
    router,
    "/download/{file_uuid}",
    name="download_by_uuid",
    summary="Download a file (HTTP range requests supported)",
    response_class=RangedFileResponse,
    responses=errors(400, 404, 416),
)
def download(file_uuid: str, files: Files, owner: Owner) -> RangedFileResponse:
    """Send the file under its original (sanitised) name."""
    f = files.owned(owner, file_uuid)
    path = files.path(f)
    if not path.is_file():
        raise NotFound(f"File with uuid {file_uuid} not found on the system!")
    log.info("file_download", action="download", user=owner, file_id=f.id)
    return RangedFileResponse(
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
def delete_file(file_uuid: str, ctx: Ctx, files: Files, owner: Owner) -> JSONResponse:
    """Remove the record, then the file. Refused while an unfinished job reads it."""
    files.delete(owner, file_uuid)
    ctx.viewer.forget(file_uuid)
    return JSONResponse(
        MessageReply(status="File deleted and removed from DB").model_dump(exclude_none=True)
    )
