"""The composition root: the service graph, built once per process.

The API (:mod:`caesar_rest.api.context`), the monitor (:mod:`caesar_rest.backends.monitor`) and
the Celery worker (:mod:`caesar_rest.backends.celery_worker`) all call :func:`build_runtime`;
nothing else wires a :class:`~caesar_rest.jobs.service.JobService` to its backends.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from caesar_rest.apps.registry import AppRegistry, default_registry
from caesar_rest.auth.users import UserStore
from caesar_rest.backends import build_backends
from caesar_rest.db.engine import make_engine, make_sessionmaker
from caesar_rest.db.migrate import upgrade
from caesar_rest.jobs.backend import JobBackend
from caesar_rest.jobs.service import JobService
from caesar_rest.settings import Settings

__all__ = ["Runtime", "build_runtime"]


@dataclass
class Runtime:
    """The long-lived objects of one process: database, apps, users, jobs and backends."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    apps: AppRegistry
    jobs: JobService
    users: UserStore

    @property
    def backends(self) -> dict[str, JobBackend]:
        """The job service's backends, by name."""
        return self.jobs.backends

    def start_backends(self) -> None:
        """Start every backend's background work."""
        for backend in self.backends.values():
            backend.start()

    def stop_backends(self) -> None:
        """Stop every backend's background work and connections (jobs go on)."""
        for backend in self.backends.values():
            backend.stop()

    def close(self) -> None:
        """Stop the backends and close the database pool."""
        self.stop_backends()
        self.engine.dispose()


def build_runtime(settings: Settings, *, migrate: bool, backends: bool = True) -> Runtime:
    """Connect to the database and wire the job service, its apps and its backends.

    Parameters
    ----------
    settings
        The service settings.
    migrate
        Bring the database schema up to date first (the API does; the monitor and the workers
        rely on it).
    backends
        Build the configured backends (not started). A Celery worker needs none: it runs its
        task's job itself.

    Returns
    -------
    Runtime
        The wired objects; nothing is started.
    """
    engine = make_engine(settings.database_url, busy_timeout=settings.db_busy_timeout)
    if migrate:
        upgrade(engine)
    sessions = make_sessionmaker(engine)
    apps = default_registry(settings.extra_apps)
    jobs = JobService(settings, sessions, apps)
    if backends:
        jobs.backends.update(build_backends(jobs))
    return Runtime(settings, engine, sessions, apps, jobs, UserStore(settings, sessions))
