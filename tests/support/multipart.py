"""multipart/form-data bodies of one file part (and an optional ``tag`` field) for upload tests."""

from __future__ import annotations


def form_parts(
    boundary: str, filename: str, tag: str | None = None, content_type: bool = True
) -> tuple[bytes, bytes]:
    """The bytes before and after the file's data: the ``tag`` field first where given, then
    the file part's headers (with ``Content-Type: application/octet-stream`` unless
    ``content_type`` is false); after the data, the closing boundary."""
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="tag"\r\n\r\n{tag}\r\n'
        if tag
        else ""
    )
    head += (
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
    )
    if content_type:
        head += "Content-Type: application/octet-stream\r\n"
    return (head + "\r\n").encode(), f"\r\n--{boundary}--\r\n".encode()


def form_body(
    data: bytes, boundary: str, filename: str, tag: str | None = None, content_type: bool = True
) -> bytes:
    """A whole body: :func:`form_parts` around ``data``."""
    head, tail = form_parts(boundary, filename, tag, content_type)
    return head + data + tail
