"""The web viewer's reads: image description, PNG tiles, pixel values and catalogue overlays.

The tiles and the pyramid are made by :mod:`caesar_rest.imaging.tiles` (one
:class:`~caesar_rest.imaging.tiles.TileService` per process, on the service context). A file's
content never changes under its id, so tiles are sent with a long private cache lifetime.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Query
from fastapi.responses import JSONResponse, Response

from caesar_rest.api.deps import Ctx, Files, FinishedJob, Owner
from caesar_rest.api.schemas import PendingReply, errors
from caesar_rest.errors import Invalid, NotFound
from caesar_rest.imaging.fits_image import ImageError
from caesar_rest.imaging.overlay import overlay_for_job
from caesar_rest.imaging.tiles import COLOURMAPS, SCALES, ImageView
from caesar_rest.jobs.states import legacy_state
from caesar_rest.storage.files import FileService
from caesar_rest.storage.paths import is_file_id

router = APIRouter(tags=["viewer"])

#: Tiles of an immutable file: cached by the browser for a day.
TILE_CACHE = "private, max-age=86400, immutable"
_SCALE_PATTERN = "^(" + "|".join(SCALES) + ")$"
_CMAP_PATTERN = "^(" + "|".join(COLOURMAPS) + ")$"


def _image_path(files: FileService, owner: str, file_id: str) -> Path:
    if not is_file_id(file_id):
        raise Invalid(f"Invalid file id {file_id!r}: expected 32 hexadecimal digits")
    path = files.path(files.owned(owner, file_id))
    if not path.is_file():
        raise NotFound(f"File with uuid {file_id} not found on the system!")
    return path


def _view(ctx: Ctx, files: FileService, owner: str, file_id: str) -> ImageView:
    path = _image_path(files, owner, file_id)
    try:
        return ctx.viewer.view(file_id, path)
    except ImageError as exc:
        raise Invalid(f"File {file_id} cannot be shown: {exc}") from None


def _index(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise Invalid(f"{name} must be an integer, got {value!r}") from None


@router.get(
    "/file/{file_uuid}/image",
    summary="Describe an image for the viewer",
    responses=errors(400, 404),
)
def image_info(file_uuid: str, ctx: Ctx, files: Files, owner: Owner) -> JSONResponse:
    """Shape, tile size, pyramid levels, BUNIT, percentiles (for scale limits) and WCS header."""
    view = _view(ctx, files, owner, file_uuid)
    return JSONResponse({"file_id": file_uuid, **view.info()})


@router.get(
    "/file/{file_uuid}/tiles/{level}/{tx}/{ty}",
    summary="One 256x256 PNG tile of a pyramid level of an image",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, **errors(400, 404)},
)
def image_tile(
    file_uuid: str,
    ctx: Ctx,
    files: Files,
    owner: Owner,
    level: str,
    tx: str,
    ty: str,
    lo: float | None = Query(None, description="Value of the first colour (default: 0.25 %)"),
    hi: float | None = Query(None, description="Value of the last colour (default: 99.75 %)"),
    scale: str = Query("linear", pattern=_SCALE_PATTERN),
    cmap: str = Query("grey", pattern=_CMAP_PATTERN),
) -> Response:
    """Tile ``(tx, ty)`` of level ``level`` (0: full resolution; k: 2^k pixels averaged).

    ``ty`` counts from the bottom row of the image (FITS order); the PNG has north up as the
    image is stored (its first row is the tile's highest y). The file is looked up before the
    rest is read, so another user's file is 404 whatever the other parameters.
    """
    view = _view(ctx, files, owner, file_uuid)
    k, x, y = (_index(name, value) for name, value in (("level", level), ("tx", tx), ("ty", ty)))
    p = view.percentiles()
    low = p["0.25"] if lo is None else lo
    high = p["99.75"] if hi is None else hi
    try:
        png = ctx.viewer.tile(file_uuid, view.path, k, x, y, scale, low, high, cmap)
    except ValueError as exc:
        raise Invalid(str(exc)) from None
    return Response(png, media_type="image/png", headers={"Cache-Control": TILE_CACHE})


@router.get(
    "/file/{file_uuid}/pixel", summary="Pixel value and sky position", responses=errors(400, 404)
)
def image_pixel(
    file_uuid: str,
    ctx: Ctx,
    files: Files,
    owner: Owner,
    x: float | None = Query(None, description="0-based pixel x (required)"),
    y: float | None = Query(None, description="0-based pixel y (required)"),
) -> JSONResponse:
    """The value at ``(x, y)`` with BUNIT, and RA/Dec (degrees, the catalogues' frame)."""
    view = _view(ctx, files, owner, file_uuid)
    if x is None or y is None:
        raise Invalid("give the pixel as x=<float>&y=<float> (0-based)")
    try:
        return JSONResponse(view.pixel(x, y))
    except ValueError as exc:
        raise Invalid(str(exc)) from None


@router.get(
    "/job/{job_id}/overlay",
    summary="A job's catalogue with ellipses, and its islands' contours, in pixels",
    responses={202: {"model": PendingReply}, **errors(400, 404)},
)
def job_overlay(job: FinishedJob, ctx: Ctx, files: Files, owner: Owner) -> JSONResponse:
    """``catalog.json`` of a successful job plus one pixel ellipse (FWHM semi-axes) per source,
    and the island contours (``islands.reg`` or ``segmented.fits``) when the job wrote them."""
    if legacy_state(job.phase, job.reason) != "SUCCESS" or not job.input_file_id:
        raise Invalid(f"Job {job.id} has no catalogue to show", job_id=job.id)
    view = _view(ctx, files, owner, job.input_file_id)
    body = overlay_for_job(ctx.jobs, job, view)
    return JSONResponse({"job_id": job.id, "app": job.app, "file_id": job.input_file_id, **body})
