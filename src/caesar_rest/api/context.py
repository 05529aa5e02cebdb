"""The API's view of the runtime: the service graph (:mod:`caesar_rest.runtime`) plus what only
HTTP needs (token validation, the local identity, the status route's reader, the janitor, the
start-up sweeps)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from functools import cached_property, partial

from caesar_rest.auth.oidc import Identity, OIDCValidator
from caesar_rest.db.fastread import EngineReader, SQLiteReader, make_reader
from caesar_rest.db.joblist import JobListStore
from caesar_rest.imaging.tiles import TileService
from caesar_rest.jobs.janitor import Janitor
from caesar_rest.jobs.listing import JobLister
from caesar_rest.logconfig import get_logger
from caesar_rest.runtime import Runtime, build_runtime
from caesar_rest.settings import Settings
from caesar_rest.storage.orphans import ORPHANS, quarantine_orphans
from caesar_rest.storage.tus import sweep_expired
from caesar_rest.storage.upload import sweep_incoming
from caesar_rest.storage.volume import RemoteVolume, remote_volume, sweep_stage_files

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
    #: The v1.0 job list (pages and the streamed full list), on :attr:`reader`.
    job_lists: JobLister | None = None
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
        reader = make_reader(rt.engine)
        return cls(
            **{f.name: getattr(rt, f.name) for f in fields(Runtime)},
            validator=OIDCValidator(settings) if settings.aai else None,
            reader=reader,
            job_lists=JobLister(JobListStore(reader), answers=settings.job_list_answer_cache),
        )

    def start(self) -> None:
        """Sweep partial uploads of dead processes (and, with the rclone volume, stale fetches
        here and, from the janitor, partial copies on the remote), set orphan files aside,
        start the backends."""
        removed = sweep_incoming(self.settings.datadir)
        if removed:
            log.info("partial_uploads_removed", count=removed)
        expired = sweep_expired(self.settings)
        if expired:
            log.info("expired_resumable_uploads_removed", count=expired)
        st = self.settings
        volume = remote_volume(st)
        tasks = []
        if volume is not None:
            stale = sweep_stage_files(st.datadir)  # before the orphans: they have no record
            if stale:
                log.info("stale_remote_fetches_removed", count=stale)
            tasks.append(partial(sweep_remote_partials, volume))
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
        self.janitor = Janitor(self.jobs, self.settings.janitor_interval, tasks)
        self.janitor.start()
        self.started = True

    def stop(self) -> None:
        """Stop the janitor and the backends and close the database pool."""
        if self.janitor is not None:
            self.janitor.stop()
        self.stop_backends()
        if self.job_lists is not None:
            self.job_lists.close()
        if self.reader is not None:
            self.reader.close()
        self.engine.dispose()
        self.started = False


def sweep_remote_partials(volume: RemoteVolume) -> None:
    """Remove stale partial upload copies from the remote and log them (a janitor task: at
    start-up, then every ``janitor_interval``)."""
    removed = volume.sweep_partials()
    if removed:
        log.warning(
            "remote_partial_copies_removed",
            count=len(removed),
            files=removed[:20],
            note="interrupted uploads (a process stopped during the copy to the remote)",
        )
