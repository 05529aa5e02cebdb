"""The service's long-lived objects, built once per process."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from caesar_rest.apps.registry import AppRegistry, default_registry
from caesar_rest.auth.oidc import Identity, OIDCValidator
from caesar_rest.auth.users import UserStore
from caesar_rest.backends.local import LocalBackend
from caesar_rest.backends.remote import register_remote_backends
from caesar_rest.db.engine import make_engine, make_sessionmaker
from caesar_rest.db.fastread import EngineReader, SQLiteReader, make_reader
from caesar_rest.db.migrate import upgrade
from caesar_rest.jobs.janitor import Janitor
from caesar_rest.jobs.service import JobService
from caesar_rest.logconfig import get_logger
from caesar_rest.settings import Settings
from caesar_rest.storage.orphans import ORPHANS, quarantine_orphans
from caesar_rest.storage.upload import sweep_incoming

log = get_logger(__name__)


@dataclass
class ServiceContext:
    """Settings, database, apps, the job service and its backends."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    apps: AppRegistry
    jobs: JobService
    users: UserStore
    validator: OIDCValidator | None = None
    started: bool = field(default=False)
    #: Removes jobs past their destruction time (running between start and stop).
    janitor: Janitor | None = None
    #: Reads of the job-status route (db/fastread.py); made by :meth:`build`.
    reader: SQLiteReader | EngineReader | None = None

    @cached_property
    def local_identity(self) -> Identity:
        """The one user when authentication is off."""
        name = self.settings.local_user
        roles = (
            frozenset({self.settings.oidc.admin_role})
            if self.settings.local_user_admin
            else (frozenset())
        )
        return Identity(name, name, roles, self.settings.local_user_admin)

    def validate_token(self, token: str) -> Identity:
        """Validate a bearer token and record its user."""
        assert self.validator is not None
        ident = self.validator.validate(token)
        self.users.touch(ident)
        return ident

    @classmethod
    def build(cls, settings: Settings, migrate: bool = True) -> ServiceContext:
        """Create the folders, connect, migrate and wire the backends (not started)."""
        settings.ensure_dirs()
        engine = make_engine(settings.database_url)
        if migrate:
            upgrade(engine)
        sessions = make_sessionmaker(engine)
        apps = default_registry(settings.extra_apps)
        jobs = JobService(settings, sessions, apps)
        jobs.backends["local"] = LocalBackend(jobs)
        register_remote_backends(jobs)
        users = UserStore(settings, sessions)
        validator = OIDCValidator(settings) if settings.aai else None
        return cls(
            settings, engine, sessions, apps, jobs, users, validator, reader=make_reader(engine)
        )

    def start(self) -> None:
        """Sweep partial uploads of dead processes, set orphan files aside, start the backends."""
        removed = sweep_incoming(self.settings.datadir)
        if removed:
            log.info("partial_uploads_removed", count=removed)
        st = self.settings
        orphans = quarantine_orphans(st.datadir, self.sessions, keep=(st.jobdir, st.logdir))
        if orphans:
            log.warning(
                "orphan_files_set_aside",
                count=len(orphans),
                files=orphans[:20],
                folder=str(st.datadir / ORPHANS),
                note="stored files without a record (interrupted upload or lost commit)",
            )
        for backend in self.jobs.backends.values():
            backend.start()
        self.janitor = Janitor(self.jobs, self.settings.janitor_interval)
        self.janitor.start()
        self.started = True

    def stop(self) -> None:
        """Stop the janitor and the backends and close the database pool."""
        if self.janitor is not None:
            self.janitor.stop()
        for backend in self.jobs.backends.values():
            backend.stop()
        if self.reader is not None:
            self.reader.close()
        self.engine.dispose()
        self.started = False
