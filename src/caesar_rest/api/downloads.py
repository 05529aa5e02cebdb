"""File answers with HTTP range support whose refusals are JSON.

Every file the service sends (uploads, job outputs, results) goes through
:class:`RangedFileResponse`: Starlette's ``FileResponse`` (``206`` with ``Content-Range`` for one
range, ``multipart/byteranges`` for several, ``If-Range``), except that a ``Range`` header it
cannot serve (malformed, reversed, another unit, past the end) is answered with a JSON ``416``
carrying ``Content-Range: bytes */<size>`` instead of a plain-text answer. A ``HEAD`` request
(:mod:`caesar_rest.api.methods` routes it as ``GET``) gets the headers without the file.
"""

from __future__ import annotations

import os

import anyio
from starlette import responses as sr
from starlette.datastructures import Headers
from starlette.responses import FileResponse, JSONResponse
from starlette.types import Receive, Scope, Send

from caesar_rest.api.methods import is_head


def range_refusal(header: str, size: int) -> JSONResponse | None:
    """The JSON 416 answer to a ``Range`` header that cannot be served, or None.

    Parameters
    ----------
    header
        The request's ``Range`` header.
    size
        File size in bytes.

    Returns
    -------
    JSONResponse or None
        416 with ``Content-Range: bytes */size`` when Starlette's own parser (so that what
        passes here is exactly what it serves) refuses the header; None when it serves it.
    """
    try:
        FileResponse._parse_range_header(header, size)
    except sr.RangeNotSatisfiable:
        why = f"no range of {header[:100]!r} starts inside the file"
    except sr.MalformedRangeHeader as exc:
        why = f"{header[:100]!r} is not a byte range of this file ({exc.content})"
    else:
        return None
    return JSONResponse(
        {"status": f"Requested range not satisfiable: {why} (file size {size} bytes)"},
        status_code=416,
        headers={"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"},
    )


class RangedFileResponse(FileResponse):
    """A ``FileResponse`` whose range refusals are JSON and which honours routed ``HEAD``."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            if self.stat_result is None:
                self.stat_result = await anyio.to_thread.run_sync(os.stat, self.path)
                self.set_stat_headers(self.stat_result)
            refusal = self._refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
            if is_head(scope):
                scope = {**scope, "method": "HEAD"}  # headers only, the file is not read
        await super().__call__(scope, receive, send)

    def _refusal(self, scope: Scope) -> JSONResponse | None:
        headers = Headers(scope=scope)
        header = headers.get("range")
        if_range = headers.get("if-range")
        if (
            header is None
            or self.status_code != 200
            or scope["method"] not in ("GET", "HEAD")
            or (if_range is not None and not self._should_use_range(if_range))
            or self.stat_result is None
        ):
            return None
        return range_refusal(header, self.stat_result.st_size)
