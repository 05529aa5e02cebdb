"""Quota warnings added to answers."""

from __future__ import annotations

from typing import Any

from caesar_rest.api.context import ServiceContext
from caesar_rest.auth.quotas import usage, warnings
from caesar_rest.auth.users import Limits


def quota_warning(ctx: ServiceContext, owner: str, limits: Limits) -> dict[str, Any]:
    """``{"warning": ...}`` when a limit is used above the warning fraction, else ``{}``."""
    with ctx.sessions() as s:
        use = usage(s, owner)
    found = warnings(use, limits, ctx.settings.quota_warning_fraction)
    return {"warning": "; ".join(found)} if found else {}
