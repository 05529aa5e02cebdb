"""Users seen by the service, and their limits."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from caesar_rest.auth.oidc import Identity
from caesar_rest.db.engine import write_first
from caesar_rest.db.models import User
from caesar_rest.settings import Settings
from caesar_rest.timeutil import utcnow


@dataclass(frozen=True)
class Limits:
    """A user's effective limits (0 means no limit)."""

    bytes: int
    active_jobs: int
    time_limit: int


class UserStore:
    """Records users on first sight and resolves their limits."""

    def __init__(self, settings: Settings, sessions: sessionmaker[Session]):
        self.settings = settings
        self.sessions = sessions
        self._touched: dict[str, float] = {}

    def touch(self, ident: Identity) -> None:
        """Create or refresh the user's row (at most once a minute per process)."""
        now = time.monotonic()
        if now - self._touched.get(ident.user_id, -1e9) < 60:
            return
        self._touched[ident.user_id] = now
        roles = sorted(ident.roles)
        try:
            with self.sessions.begin() as s:
                write_first(s)  # read, then write: see write_first
                user = s.get(User, ident.user_id)
                if user is None:
                    s.add(
                        User(
                            id=ident.user_id,
                            display_name=ident.display_name,
                            roles=roles,
                            created_at=utcnow(),
                            last_seen_at=utcnow(),
                        )
                    )
                else:
                    user.display_name, user.roles, user.last_seen_at = (
                        ident.display_name,
                        roles,
                        utcnow(),
                    )
        except IntegrityError:  # another process created it at the same moment
            pass

    def limits(self, user_id: str) -> Limits:
        """Per-user overrides, else the defaults."""
        with self.sessions() as s:
            user = s.get(User, user_id)
        st = self.settings
        if user is None:
            return Limits(st.quota_bytes, st.quota_active_jobs, st.quota_time_limit)
        return Limits(
            st.quota_bytes if user.quota_bytes is None else user.quota_bytes,
            st.quota_active_jobs if user.quota_active_jobs is None else user.quota_active_jobs,
            st.quota_time_limit if user.quota_time_limit is None else user.quota_time_limit,
        )

    def set_limits(
        self,
        user_id: str,
        quota_bytes: int | None,
        quota_active_jobs: int | None,
        quota_time_limit: int | None,
    ) -> None:
        """Store per-user overrides (None: back to the default)."""
        with self.sessions.begin() as s:
            write_first(s)  # read, then write: see write_first
            user = s.get(User, user_id)
            if user is None:
                user = User(id=user_id, display_name=user_id, roles=[], created_at=utcnow())
                s.add(user)
            user.quota_bytes = quota_bytes
            user.quota_active_jobs = quota_active_jobs
            user.quota_time_limit = quota_time_limit

    def list(self) -> list[User]:
        """All users, oldest first."""
        with self.sessions() as s:
            return list(s.scalars(select(User).order_by(User.created_at)).all())
