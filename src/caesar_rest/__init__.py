"""caesar-rest: a web service for astronomical source extraction and classification.

``caesar_rest.celery`` is the service's Celery app (built on first use from the ``CAESAR_REST_*``
settings), so that the predecessor's ``celery --app=caesar_rest worker ...`` runs our jobs.
It is looked up lazily (PEP 562): importing the package loads neither Celery nor the settings.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from celery import Celery

__version__ = "0.1.0"


def __getattr__(name: str) -> Celery:
    if name == "celery":
        from caesar_rest.backends.celery_app import service_celery

        app = service_celery()
        globals()["celery"] = app  # later look-ups skip this function
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
