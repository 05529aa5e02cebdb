"""What the HTTP server and the upload receiver share about a body read from the connection.

The server (:class:`caesar_rest.httpserver.DirectBody`) offers a :class:`DirectSource` in the
ASGI scope's extensions under :data:`DIRECT_BODY`; the upload routes take it (:func:`offered`)
and hand it on to :func:`caesar_rest.storage.upload.receive_upload`, which reads the body in one of
:data:`DIRECT_THREADS` threads. A module of its own, so that the server's protocol does not
load the upload machinery (python-multipart) to know these names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

#: The ASGI scope extension in which the server offers a :class:`DirectSource`.
DIRECT_BODY = "caesar.direct_body"
#: Threads that read direct uploads (the server offers no more takeovers at once than this).
DIRECT_THREADS = 8


def offered(scope: Mapping[str, Any]) -> DirectSource | None:
    """The server's offer in a request's ASGI ``scope``, if any (else the body comes by
    ``receive``)."""
    offer: DirectSource | None = scope.get("extensions", {}).get(DIRECT_BODY)
    return offer


class DirectSource(Protocol):
    """A request body that the server lets the app read from the connection itself.

    :meth:`claim` (event loop) takes the connection over or declines; then :attr:`buffered`
    holds the body bytes the server had already read and :attr:`remaining` counts the bytes
    still to come. :meth:`recv_into` reads them (any thread; it raises ``TimeoutError`` after
    the server's body timeout and ``ConnectionError`` when the client goes away or after
    :meth:`interrupt`) and :meth:`release` (event loop, once) gives the connection back.
    """

    buffered: list[bytes]
    remaining: int

    def claim(self) -> bool:
        """Take the connection over; False where the server cannot (then read ``chunks``)."""
        ...

    def recv_into(self, view: memoryview) -> int:
        """Read at most ``len(view)`` and at most :attr:`remaining` bytes into ``view``."""
        ...

    def interrupt(self) -> None:
        """(any thread) Make a read in progress, and every later one, end at once (with
        ``ConnectionError``): the upload is being cancelled."""
        ...

    def release(self, timed_out: bool, refused: bool = False) -> None:
        """Give the connection back: kept alive when the whole body was read, else closed
        (after a 408 answer where ``timed_out``; after the app's own answer where
        ``refused``: the app refuses the body and has left the rest of it unread)."""
        ...
