"""The API's view of the runtime: the service graph (:mod:`caesar_rest.runtime`) plus what only
HTTP needs (token validation, the local identity, the status route's reader, the janitor, the
start-up sweeps)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import cached_property

from caesar_rest.auth.oidc import Identity, OIDCValidator
from caesar_rest.db.fastread import EngineReader, SQLiteReader, make_reader
from caesar_rest.imaging.tiles import TileService
from caesar_rest.jobs.janitor import Janitor
from caesar_rest.logconfig import get_logger
from caesar_rest.runtime import Runtime, build_runtime
from caesar_rest.settings import Settings
from caesar_rest.storage.orphans import ORPHANS, quarantine_orphans
from caesar_rest.storage.upload import sweep_incoming

log = get_logger(__name__)


@dataclass
class ServiceContext(Runtime):
    """The runtime (settings, database, apps, users, the job service and its backends) and the
    HTTP side."""

    validator: OIDCValidator | None = None
    started: bool = field(default=False)
    #: Removes jobs past their destruction time (running between start and stop).
    janitor: Janitor | None = None
    #: Reads of the job-status route (db/fastread.py); made by :meth:`build`.
    reader: SQLiteReader | EngineReader | None = None
    #: Open images and PNG tiles of the web viewer (bounded caches).
    viewer: TileService = field(default_factory=TileService)

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
        rt = build_runtime(settings, migrate=migrate)
        return cls(
            **{f.name: getattr(rt, f.name) for f in fields(Runtime)},
            validator=OIDCValidator(settings) if settings.aai else None,
            reader=make_reader(rt.engine),
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
        self.start_backends()
        self.janitor = Janitor(self.jobs, self.settings.janitor_interval)
        self.janitor.start()
        self.started = True

    def stop(self) -> None:
        """Stop the janitor and the backends and close the database pool."""
        if self.janitor is not None:
            self.janitor.stop()
        self.stop_backends()
        if self.reader is not None:
            self.reader.close()
        self.engine.dispose()
        self.started = False
