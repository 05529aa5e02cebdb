"""structlog set-up: JSON lines with a request id, optional rotating file, no secrets."""

from __future__ import annotations

import logging
import logging.handlers
import re
import sys
from collections.abc import MutableMapping
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
    cache = _secret_key_cache
    # Values are replaced in place (the keys do not change, so iterating is safe).
    for key, value in event.items():
        secret = cache.get(key)
        if secret is None:
            secret = _is_secret_key(key)
        if secret:
            event[key] = "***"
        elif isinstance(value, str) and "://" in value:
            event[key] = _URL_PASSWORD.sub(r"\1***\3", value)
    return event


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
    console.setFormatter(
        structlog.stdlib.ProcessorFormatter(foreign_pre_chain=shared, processor=renderer)
    )
    root.addHandler(console)
    if settings.logtofile:
        settings.logdir.mkdir(parents=True, exist_ok=True)
        fh = logging.handlers.RotatingFileHandler(
            settings.logdir / settings.logfile,
            maxBytes=settings.logfile_maxsize * 1024 * 1024,
            backupCount=settings.logfile_backups,
        )
        fh.setFormatter(
            structlog.stdlib.ProcessorFormatter(
                foreign_pre_chain=shared, processor=structlog.processors.JSONRenderer()
            )
        )
        root.addHandler(fh)
    root.setLevel(level)
    # uvicorn's access log duplicates our own request log line.
    logging.getLogger("uvicorn.access").disabled = True
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True


def get_logger(name: str) -> Any:
    """A structlog logger."""
    return structlog.get_logger(name)
