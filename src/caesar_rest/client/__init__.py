"""Python client of caesar-rest (``CaesarClient``) and the typed values it returns.

>>> from caesar_rest.client import CaesarClient  # doctest: +SKIP
>>> with CaesarClient("https://caesar.example.org") as c:  # doctest: +SKIP
...     job = c.wait(c.submit("sep", "image.fits").job_id)
...     files = c.download(job.job_id, "out")

The names are loaded on first use (PEP 562), so importing the command-line part stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from caesar_rest.client.constants import DEFAULT_URL

if TYPE_CHECKING:
    from caesar_rest.client.core import (
        CaesarClient,
        CaesarError,
        CaesarTimeout,
        RetryPolicy,
        resolve_token,
    )
    from caesar_rest.client.models import (
        FINAL_PHASES,
        AppInfo,
        AppOption,
        FileInfo,
        Job,
        JobRef,
        ResultInfo,
    )

_WHERE = {
    "CaesarClient": "core",
    "CaesarError": "core",
    "CaesarTimeout": "core",
    "RetryPolicy": "core",
    "resolve_token": "core",
    "FINAL_PHASES": "models",
    "AppInfo": "models",
    "AppOption": "models",
    "FileInfo": "models",
    "Job": "models",
    "JobRef": "models",
    "ResultInfo": "models",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"caesar_rest.client.{module}"), name)


__all__ = [
    "DEFAULT_URL",
    "FINAL_PHASES",
    "AppInfo",
    "AppOption",
    "CaesarClient",
    "CaesarError",
    "CaesarTimeout",
    "FileInfo",
    "Job",
    "JobRef",
    "ResultInfo",
    "RetryPolicy",
    "resolve_token",
]
