"""structlog set-up: JSON lines with a request id, optional rotating file, no secrets."""

from __future__ import annotations

import json
import logging
import logging.handlers
import re
import sys
from collections.abc import MutableMapping
from datetime import UTC, datetime
from typing import Any

import structlog

from caesar_rest.settings import Settings

_SECRET_KEYS = re.compile(r"(pass(word)?|secret|token|authorization|cookie|api[_-]?key)", re.I)
_URL_PASSWORD = re.compile(r"(\w+://[^:/@\s]+:)([^@\s]+)(@)")


_secret_key_cache: dict[str, bool] = {}


def _is_secret_key(key: str) -> bool:
    # Log lines reuse a small set of keys: remember the regex verdict per key.
    hit = _secret_key_cache.get(key)
    if hit is None:
        hit = bool(_SECRET_KEYS.search(key))
        if len(_secret_key_cache) < 4096:
            _secret_key_cache[key] = hit
    return hit


def _redact(_: Any, __: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Drop secrets: values of secret-looking keys, and passwords inside URLs."""
    # Values are replaced in place (the keys do not change, so iterating is safe).
    for key, value in event.items():
        if _is_secret_key(key):
            event[key] = "***"
        elif isinstance(value, str) and "://" in value:
            event[key] = _URL_PASSWORD.sub(r"\1***\3", value)
    return event


class _Formatter(structlog.stdlib.ProcessorFormatter):
    """structlog's formatter, passing through lines that are already rendered (access log)."""

    def format(self, record: logging.LogRecord) -> str:
        if getattr(record, "prerendered", False):
            return str(record.msg)
        return super().format(record)


_access_std = logging.getLogger("caesar_rest.access")
_access_struct = structlog.get_logger("caesar_rest.access")
#: Whether access lines are rendered here (JSON logs) rather than by structlog's processors.
_access_prerendered = False


def log_access(method: str, path: str, status: int, ms: float) -> None:
    """Write the access line of a request (one per request: kept cheap).

    With JSON logs the line is rendered here with the same keys structlog would give it
    (plus the request's bound context: request id, user, job id) and handed to the handlers
    as is; the fields are fixed and carry no secrets, so the redaction pass is not needed.
    With console logs it goes through structlog like any other line.
    """
    if not _access_std.isEnabledFor(logging.INFO):
        return
    if not _access_prerendered:
        _access_struct.info("request", method=method, path=path, status=status, ms=ms)
        return
    event: dict[str, Any] = {"method": method, "path": path, "status": status, "ms": ms}
    event["event"] = "request"
    event.update(structlog.contextvars.get_contextvars())
    event["level"] = "info"
    event["logger"] = "caesar_rest.access"
    event["timestamp"] = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    _access_std.info(json.dumps(event), extra={"prerendered": True})


def configure_logging(settings: Settings) -> None:
    """Configure structlog and the standard library logging once per process."""
    level = logging.DEBUG if settings.debug else getattr(logging, settings.loglevel)
    # Record fields our lines never show (the logging documentation's "Optimization"
    # section): no caller frame walk, thread, process or multiprocessing lookups per record.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _redact,
        structlog.processors.format_exc_info,
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if settings.log_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(_Formatter(foreign_pre_chain=shared, processor=renderer))
    root.addHandler(console)
    if settings.logtofile:
        settings.logdir.mkdir(parents=True, exist_ok=True)
        fh = logging.handlers.RotatingFileHandler(
            settings.logdir / settings.logfile,
            maxBytes=int(settings.logfile_maxsize * 1024 * 1024),
            backupCount=settings.logfile_backups,
        )
        fh.setFormatter(
            _Formatter(foreign_pre_chain=shared, processor=structlog.processors.JSONRenderer())
        )
        root.addHandler(fh)
    root.setLevel(level)
    global _access_prerendered
    _access_prerendered = bool(settings.log_json)
    # uvicorn's access log duplicates our own request log line.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


def get_logger(name: str) -> Any:
    """A structlog logger."""
    return structlog.get_logger(name)
