"""IVOA UWS 1.1 interface to the jobs (``/uws/jobs``); see ``docs/uws.md``."""

from caesar_rest.api.uws.routes import router

__all__ = ["router"]
