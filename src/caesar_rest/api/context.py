"""The service's long-lived objects, built once per process."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from caesar_rest.apps.registry import AppRegistry, default_registry
from caesar_rest.backends.local import LocalBackend
from caesar_rest.db.engine import make_engine, make_sessionmaker
from caesar_rest.db.migrate import upgrade
from caesar_rest.jobs.service import JobService
from caesar_rest.logconfig import get_logger
from caesar_rest.settings import Settings
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
    started: bool = field(default=False)

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
        return cls(settings, engine, sessions, apps, jobs)

    def start(self) -> None:
        """Sweep partial uploads of dead processes and start the backends."""
        removed = sweep_incoming(self.settings.datadir)
        if removed:
            log.info("partial_uploads_removed", count=removed)
        for backend in self.jobs.backends.values():
            backend.start()
        self.started = True

    def stop(self) -> None:
        """Stop the backends and close the database pool."""
        for backend in self.jobs.backends.values():
            backend.stop()
        self.engine.dispose()
        self.started = False
