"""UWS request parameters: reading them, case-insensitive names, job-control values and app
options."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from starlette.requests import ClientDisconnect

from caesar_rest.api.uws.documents import parse_uws_time
from caesar_rest.apps.base import App
from caesar_rest.errors import Invalid, TooLarge, Unsupported
from caesar_rest.jobs.states import Phase
from caesar_rest.timeutil import utcnow

#: Job-control and input parameters of job creation (lower case); the rest are app options.
CONTROL = frozenset(
    {"app", "file", "file_id", "phase", "runid", "executionduration", "destruction"}
)
MAX_RUN_ID = 64
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


class Params:
    """Request parameters with case-insensitive names (UWS asks for it).

    Parameters
    ----------
    items
        ``(name, value)`` pairs in request order (query string, then body).
    """

    def __init__(self, items: Iterable[tuple[str, str]]):
        self.items: list[tuple[str, str, str]] = [(k.lower(), k, v) for k, v in items]

    def getlist(self, name: str) -> list[str]:
        """Every value of ``name`` (any case)."""
        return [v for k, _, v in self.items if k == name]

    def get(self, name: str) -> str | None:
        """The one value of ``name``; 400 when it is given more than once with other values."""
        values = self.getlist(name)
        if not values:
            return None
        if len(set(values)) > 1:
            raise Invalid(f"parameter {name.upper()} is given more than once")
        return values[0]

    def options(self) -> list[tuple[str, str]]:
        """The ``(name as sent, value)`` pairs that are not job-control parameters."""
        return [(orig, v) for k, orig, v in self.items if k not in CONTROL]


def parse_phase(value: str, allowed: Iterable[str]) -> str:
    """An upper-cased phase or action word, 400 unless it is one of ``allowed``."""
    word = value.strip().upper()
    allowed = tuple(allowed)
    if word not in allowed:
        raise Invalid(f"PHASE must be one of {', '.join(allowed)}; got {value!r}")
    return word


def parse_filter_phase(value: str) -> str:
    """A phase name of the list filter (any UWS phase), 400 otherwise."""
    return parse_phase(value, [p.value for p in Phase])


#: The largest integer parameter (LAST, EXECUTIONDURATION): a 32-bit database integer.
MAX_INT = 2**31 - 1


def parse_int(name: str, value: str, minimum: int | None = None, maximum: int = MAX_INT) -> int:
    """An integer parameter, 400 when malformed, below ``minimum`` or above ``maximum``."""
    text = value.strip()
    # Bounded before int(): a 5,000-digit string is refused without being converted.
    if len(text) > 20:
        raise Invalid(f"{name} must be an integer of at most {maximum}; got {value[:24]!r}...")
    try:
        number = int(text)
    except ValueError:
        raise Invalid(f"{name} must be an integer; got {value!r}") from None
    if minimum is not None and number < minimum:
        raise Invalid(f"{name} must be at least {minimum}; got {number}")
    if number > maximum:
        raise Invalid(f"{name} must be at most {maximum}; got {number}")
    return number


def parse_run_id(value: str) -> str:
    """A client run id (free text, bounded)."""
    if len(value) > MAX_RUN_ID or "\x00" in value:
        raise Invalid(f"RUNID is limited to {MAX_RUN_ID} characters")
    return value


def app_options(app: App, pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Map form parameters onto ``app``'s options, case-insensitively.

    Flags take true/false (also 1/0, yes/no, on/off); other values stay strings, which the
    app's validation casts and checks. Unknown names are kept as sent, so the validation
    reports them. A name given twice is refused.
    """
    by_lower = {o.name.lower(): o for o in app.options}
    out: dict[str, Any] = {}
    for sent, value in pairs:
        opt = by_lower.get(sent.lower())
        name = opt.name if opt is not None else sent
        if name in out:
            raise Invalid(f"option {name!r} is given more than once")
        if opt is not None and opt.is_flag:
            low = value.strip().lower()
            if low in _TRUE:
                out[name] = True
            elif low in _FALSE:
                out[name] = False
            else:
                raise Invalid(f"option {name!r} is a flag: give true or false, not {value!r}")
        else:
            out[name] = value
    return out


def parse_duration(value: str, cap: int) -> int:
    """EXECUTIONDURATION in seconds: 0 (unlimited) and values over ``cap`` give ``cap``."""
    text = value.strip()
    if text.isdigit() and len(text) > 18:
        return cap  # longer than any cap: clamped (UWS), without converting the digits
    seconds = parse_int("EXECUTIONDURATION", text, minimum=0, maximum=2**63 - 1)
    return cap if seconds == 0 else min(seconds, cap)


def parse_destruction(value: str, max_days: float) -> datetime:
    """DESTRUCTION clamped between now and ``max_days`` from now (400 when malformed)."""
    try:
        wanted = parse_uws_time(value)
    except ValueError:
        raise Invalid(f"DESTRUCTION must be an ISO-8601 instant; got {value!r}") from None
    now = utcnow()
    return min(max(wanted, now), now + timedelta(days=max_days))


async def _body_params(request: Request, limit: int) -> list[tuple[str, str]]:
    """Parameters of a small form body (URL-encoded, or multipart without files)."""
    mtype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if mtype in ("", "application/x-www-form-urlencoded"):
        body = bytearray()
        try:
            async for chunk in request.stream():
                body.extend(chunk)
                if len(body) > limit:
                    raise TooLarge(f"Request body too large (limit {limit} bytes)")
        except ClientDisconnect:
            raise Invalid("Client disconnected during the request") from None
        if not body:
            return []
        try:
            return parse_qsl(
                bytes(body).decode("utf-8"), keep_blank_values=True, max_num_fields=1000
            )
        except (UnicodeDecodeError, ValueError):
            raise Invalid("The form body is not valid UTF-8 form data") from None
    if mtype == "multipart/form-data":
        try:
            form = await request.form(max_files=0, max_fields=1000)
        except Exception as exc:  # starlette's MultiPartException and parser errors
            raise Invalid(f"Malformed or unexpected multipart form: {exc}") from None
        return [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    raise Unsupported("Send parameters as application/x-www-form-urlencoded or multipart/form-data")


async def read_params(request: Request, limit: int) -> Params:
    """The parameters of the query string and of a small form body of at most ``limit`` bytes.

    Raises
    ------
    TooLarge, Invalid, Unsupported
        A body over the limit, malformed, or of another content type.
    """
    return Params([*request.query_params.multi_items(), *await _body_params(request, limit)])
