"""The service's errors: each one carries the HTTP status it is answered with.

A service or a route raises one of these; one handler (``api/errors.py``) answers it as
``{"status": message, **body}`` with :attr:`ServiceError.status` and its headers. Domain errors
(``JobNotFound``, ``SubmitError``, ``UploadError``, ``FormatError``, ``OptionError``...) derive
from the class of their answer, so nothing between the service and the handler has to
translate them. Standard library only: the apps import this module and must stay light.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """An error answered with ``status`` and the JSON body ``{"status": message, **body}``.

    Parameters
    ----------
    status
        HTTP status code of the answer.
    message
        What went wrong, for people (the body's ``status``).
    headers
        Extra response headers (``Retry-After``, ``WWW-Authenticate``...).
    **body
        Further fields of the JSON body.
    """

    status: int = 500

    def __init__(
        self, status: int, message: str, *, headers: dict[str, str] | None = None, **body: Any
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
        self.body = body


class _Fixed(ServiceError):
    """A :class:`ServiceError` whose status is fixed by its class."""

    def __init__(self, message: str, *, headers: dict[str, str] | None = None, **body: Any) -> None:
        super().__init__(type(self).status, message, headers=headers, **body)


class Invalid(_Fixed, ValueError):
    """The request is malformed or asks for something impossible (400)."""

    status = 400


class Unauthorized(_Fixed):
    """No valid credentials (401)."""

    status = 401


class Forbidden(_Fixed):
    """Not allowed for this caller, or not in the resource's present state (403)."""

    status = 403


class NotFound(_Fixed, LookupError):
    """No such resource for this caller (404)."""

    status = 404


class Conflict(_Fixed):
    """The resource is in use (409)."""

    status = 409


class TooLarge(_Fixed):
    """The request body is over a size limit (413)."""

    status = 413


class Unsupported(_Fixed, ValueError):
    """The content is of a type the service does not take (415)."""

    status = 415


class Unavailable(_Fixed):
    """A service this one depends on cannot be reached (503)."""

    status = 503


class QuotaExceeded(ServiceError):
    """A limit would be exceeded (403 for storage, 429 for jobs); ``body`` says which.

    A ``retry_after`` field of the body (seconds) is also sent as the ``Retry-After`` header.
    """

    def __init__(self, status: int, message: str, **body: Any) -> None:
        retry = body.get("retry_after")
        headers = {"Retry-After": str(retry)} if retry is not None else None
        super().__init__(status, message, headers=headers, **body)


__all__ = [
    "Conflict",
    "Forbidden",
    "Invalid",
    "NotFound",
    "QuotaExceeded",
    "ServiceError",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "Unsupported",
]
