"""Quota warnings added to answers."""

from __future__ import annotations

from typing import Any

from caesar_rest.api.context import ServiceContext
from caesar_rest.auth.quotas import usage_warnings
from caesar_rest.auth.users import Limits


def quota_warning(ctx: ServiceContext, owner: str, limits: Limits) -> dict[str, Any]:
    """``{"warning": ...}`` when a limit is used above the warning fraction, else ``{}``."""
    found = usage_warnings(ctx.sessions, owner, limits, ctx.settings.quota_warning_fraction)
    return {"warning": "; ".join(found)} if found else {}
