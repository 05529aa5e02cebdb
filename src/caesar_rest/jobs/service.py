"""The job service: create, transition, cancel and finish jobs, for every API and backend."""

from __future__ import annotations

import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.orm import Session, sessionmaker

from caesar_rest.apps.base import LOG_RESULT, App, OptionError
from caesar_rest.apps.registry import AppRegistry
from caesar_rest.auth.quotas import check_jobs, lock_user
from caesar_rest.auth.users import Limits
from caesar_rest.db.engine import is_transient, write_first
from caesar_rest.db.models import FileRecord, JobEvent, JobRecord, JobResult
from caesar_rest.errors import Invalid, NotFound
from caesar_rest.jobs.folder import EXIT_FILE, LOG_FILE, JobSpec, Outcome, read_spec, write_spec
from caesar_rest.jobs.states import FINAL, Phase, Reason, TransitionError, check_transition
from caesar_rest.logconfig import get_logger
from caesar_rest.settings import Settings
from caesar_rest.storage.paths import is_file_id, new_id, owner_dirname, safe_join
from caesar_rest.storage.remote import STORAGE_ENV
from caesar_rest.storage.volume import remote_volume
from caesar_rest.timeutil import utcnow

if TYPE_CHECKING:
    from caesar_rest.jobs.backend import JobBackend

log = get_logger(__name__)


class JobNotFound(NotFound):
    """No such job for this owner."""


class InputFileNotFound(Invalid):
    """The input file id is unknown for this owner."""


class SubmitError(Invalid):
    """The job request is not acceptable (answered with 400)."""


#: The name the predecessor gave an upload, ``<file id>.<ext>`` (the extension as uploaded).
_UPLOAD_NAME = re.compile(r"^([0-9a-f]{32})\.([A-Za-z0-9][A-Za-z0-9.]{0,15})$")

#: The ``job_inputs`` key that names the input when a request has no ``data_inputs``.
INPUTFILE = "inputfile"


class JobService:
    """Creates jobs and moves them through the state machine."""

    def __init__(
        self,
        settings: Settings,
        sessions: sessionmaker[Session],
        apps: AppRegistry,
    ):
        self.settings = settings
        self.sessions = sessions
        self.apps = apps
        self.backends: dict[str, JobBackend] = {}
        #: Called as ``listener(job_id, new_phase)`` after each committed phase change (from any
        #: thread; must be quick and must not raise). The UWS long-poll (WAIT) hangs on this.
        self.listeners: list[Callable[[str, Phase], None]] = []
        #: The rclone volume (``mount_rclone_volume``), or None: folders are local only.
        self.volume = remote_volume(settings)

    # --- helpers -------------------------------------------------------------------------
    @property
    def engine(self) -> Engine:
        """The database engine behind :attr:`sessions` (for locks taken outside a session)."""
        bind = self.sessions.kw.get("bind")
        assert isinstance(bind, Engine)
        return bind

    def job_dir(self, job: JobRecord) -> Path:
        """Absolute job folder of ``job``."""
        return safe_join(self.settings.jobdir, job.reldir)

    def staging_env(
        self, job: JobRecord, input_local: str | None = None, fetch_folder: bool = False
    ) -> dict[str, str]:
        """The job's :data:`~caesar_rest.storage.remote.STORAGE_ENV` for its wrapper (the
        input staged in, the folder staged out); empty without a remote volume.

        Parameters
        ----------
        job
            The job.
        input_local
            Where the job reads its input (default: the service's path of it).
        fetch_folder
            Whether the job starts by fetching its folder from the remote.
        """
        if self.volume is None:
            return {}
        spec = read_spec(self.job_dir(job))
        rel = ""
        with_input = Path(spec.input_file)
        if spec.input_file and with_input.is_relative_to(self.settings.datadir.resolve()):
            rel = with_input.relative_to(self.settings.datadir.resolve()).as_posix()
        staging = self.volume.staging(
            job.reldir, rel, input_local or spec.input_file, spec.input_sha256, fetch_folder
        )
        return {STORAGE_ENV: staging.to_env()}

    def pull_folder(self, job: JobRecord) -> None:
        """Bring a job folder back from the remote volume when the local copy has no
        ``exit.json`` (a job that ran elsewhere, or a cleared cache); nothing without one.

        Raises
        ------
        StorageUnavailable
            The remote cannot be read (503).
        """
        jdir = self.job_dir(job)
        if self.volume is not None and not (jdir / EXIT_FILE).is_file():
            self.volume.fetch_job(job.reldir, jdir)

    def backend_for(self, job: JobRecord) -> JobBackend:
        """The job's own backend (not the current default)."""
        try:
            return self.backends[job.backend]
        except KeyError:
            raise RuntimeError(f"backend {job.backend!r} is not configured here") from None

    def get(self, owner: str, job_id: str) -> JobRecord:
        """A job of ``owner``."""
        with self.sessions() as s:
            job = s.get(JobRecord, job_id)
        if job is None or job.owner != owner:
            raise JobNotFound(job_id)
        return job

    def get_any(self, job_id: str) -> JobRecord | None:
        """A job by id whoever owns it (for backends)."""
        with self.sessions() as s:
            return s.get(JobRecord, job_id)

    # --- creation ------------------------------------------------------------------------
    def create(
        self,
        owner: str,
        app_name: str,
        job_inputs: Any,
        file_id: str | None,
        tag: Any = None,
        run: bool = True,
        time_limit: int | None = None,
        backend: str | None = None,
        limits: Limits | None = None,
        run_id: str | None = None,
        destruction_at: datetime | None = None,
        compat: bool = False,
    ) -> JobRecord:
        """Validate, persist and (if ``run``) dispatch a job.

        With ``compat`` (the v1.0 API), ``job_inputs`` may also hold the predecessor's
        run-control keys (``apps.base.COMPAT_RUN_OPTIONS``): they are type-checked, kept out of
        the program's arguments, and named in the job log (``JobRecord.job_inputs`` keeps the
        request as sent). ``file_id`` None then takes the input from ``job_inputs.inputfile``
        (:meth:`input_from_inputfile`).

        The record is committed before the backend sees the job, so a crash between the two
        leaves a PENDING job that start-up reconciliation dispatches, never an untracked run.
        With ``limits``, the user's unfinished-jobs limit and the submission rate are checked in
        the same transaction that stores the job (raises QuotaExceeded), and the time limit is
        clamped to the user's maximum. ``destruction_at`` (default: ``destruction_days`` from
        now) is when the janitor removes the job; ``run_id`` is the client's own label (UWS).
        """
        app = self.apps.get(app_name)
        if app is None:
            raise SubmitError(f"Unknown app {app_name}!")
        ok, why = app.availability()
        if not ok:
            raise SubmitError(f"App {app_name} is not available on this service: {why}")
        compat_keys: dict[str, Any] = {}
        if compat:
            options, compat_keys = app.validate_compat(job_inputs)  # raises OptionError
        else:
            options = app.validate(job_inputs)  # raises OptionError
        used: tuple[str, ...] = ()
        if file_id is None:
            ref = compat_keys.get(INPUTFILE)
            if not isinstance(ref, str):
                raise SubmitError(
                    "Missing 'data_inputs' (the file id of the input image) or job_inputs.inputfile"
                )
            file_id, used = self.input_from_inputfile(owner, ref), (INPUTFILE,)
        with self.sessions() as s:
            frec = s.get(FileRecord, file_id)
        if frec is None or frec.owner != owner:
            raise InputFileNotFound(file_id)
        if frec.kind != "fits":
            raise SubmitError(f"app {app_name} needs a FITS image; file {file_id} is {frec.kind}")
        limit = time_limit or self.settings.job_time_limit
        limit = max(1, min(limit, self.settings.max_job_time_limit))
        if limits is not None:
            limit = min(limit, limits.time_limit)
        backend_name = backend or self.settings.job_scheduler
        if backend_name not in self.backends:
            raise SubmitError(f"job backend {backend_name!r} is not configured")
        job_id = new_id()
        reldir = f"{owner_dirname(owner)}/job_{job_id}"
        jdir = safe_join(self.settings.jobdir, reldir)
        jdir.mkdir(parents=True, exist_ok=False)
        input_path = safe_join(self.settings.datadir, frec.relpath)
        spec = JobSpec(
            job_id=job_id,
            app=app.name,
            options=options,
            input_file=str(input_path),
            command=[str(a) for a in app.command(input_path, options, Path("."))],
            input_name=frec.filename_orig,
            input_sha256=frec.sha256,
        )
        write_spec(jdir, spec)
        if compat:
            self._log_compat(jdir, app, job_inputs, used, frec)
        now = utcnow()
        job = JobRecord(
            id=job_id,
            owner=owner,
            app=app.name,
            options=options,
            job_inputs=job_inputs,
            input_file_id=file_id,
            tag=tag,
            backend=backend_name,
            phase=Phase.PENDING.value,
            message="Job registered",
            run_requested=run,
            time_limit=limit,
            cores=app.job_cores(options),
            reldir=reldir,
            created_at=now,
            updated_at=now,
            run_id=run_id,
            destruction_at=destruction_at or self.default_destruction(now),
        )
        try:
            with self.sessions.begin() as s:
                if limits is not None:
                    lock_user(s, owner)
                    check_jobs(s, owner, limits, self.settings.max_submissions_per_minute)
                s.add(job)
                s.flush()
                s.add(
                    JobEvent(job_id=job_id, at=now, to_phase=Phase.PENDING.value, message="created")
                )
        except Exception:
            shutil.rmtree(jdir, ignore_errors=True)
            raise
        log.info("job_created", action="submitjob", job_id=job_id, app=app.name, user=owner)
        if run:
            self.dispatch(job)
        return job

    def input_from_inputfile(self, owner: str, ref: str) -> str:
        """The id of the caller's file that a predecessor's ``job_inputs.inputfile`` names.

        ``ref`` is a file id, or the path the predecessor gave an upload
        (``<datadir>/[<user>/]<file id>.<ext>``, as its README's job request sends it). Only
        the file name counts: its id must be one of ``owner``'s files, with that extension
        (in any case). The path itself is never opened, so no other user's file and nothing
        outside the caller's data can be reached; a path with ``..`` is refused.

        Raises
        ------
        SubmitError
            When ``ref`` is neither a file id nor such a path.
        InputFileNotFound
            When it names no file of ``owner``.
        """
        ext: str | None = None
        if is_file_id(ref):
            file_id = ref
        else:
            path = PurePosixPath(ref)
            match = _UPLOAD_NAME.match(path.name)
            if match is None or ".." in path.parts or "\x00" in ref:
                raise SubmitError(
                    "'inputfile' must be a file id or an uploaded file's path "
                    "(<folder>/<file id>.<ext>)"
                )
            file_id, ext = match.groups()
        with self.sessions() as s:
            frec = s.get(FileRecord, file_id)
        if frec is None or frec.owner != owner:
            raise InputFileNotFound(ref)
        if ext is not None and frec.fileext.lower() != ext.lower():
            raise InputFileNotFound(ref)
        return file_id

    def _log_compat(
        self, jdir: Path, app: App, job_inputs: Any, used: Sequence[str], frec: FileRecord
    ) -> None:
        """Start the job log with what the predecessor's keys did: the input that
        ``inputfile`` named, and the keys accepted without effect."""
        lines = []
        if used:
            ref = job_inputs[INPUTFILE]
            lines.append(f"[caesar-rest] input: inputfile {ref!r} is file {frec.id}")
        unused = app.without_effect(job_inputs, used=used)
        if unused:
            lines.append(f"[caesar-rest] job_inputs without effect here: {', '.join(unused)}")
        if lines:
            (jdir / LOG_FILE).write_text("".join(f"{line}\n" for line in lines), "utf-8")

    def dispatch(self, job: JobRecord) -> None:
        """Hand a PENDING job to its backend.

        When the database is busy or out of reach the job stays PENDING (with its run
        requested): its backend's next pass hands it over, so the caller still gets its id.
        """
        try:
            self.backend_for(job).submit(job)
        except Exception as exc:  # the job stays tracked, with the reason
            if is_transient(exc):
                log.warning("dispatch_deferred", job_id=job.id, error=str(exc))
                return
            log.exception("dispatch_failed", job_id=job.id)
            self.transition(job.id, Phase.ERROR, Reason.FAILED, f"could not be dispatched: {exc}")

    def request_run(self, job: JobRecord) -> None:
        """Mark a PENDING job to run and dispatch it."""
        with self.sessions.begin() as s:
            s.execute(update(JobRecord).where(JobRecord.id == job.id).values(run_requested=True))
        self.dispatch(job)

    # --- state machine -------------------------------------------------------------------
    def transition(
        self,
        job_id: str,
        new: Phase,
        reason: Reason | None = None,
        message: str = "",
        expect: Sequence[Phase] | None = None,
        **fields: Any,
    ) -> bool:
        """Move a job to ``new`` if the state machine allows it; record the event.

        Returns False (and changes nothing) when the job is missing, already final, not in one
        of ``expect``, or the change is not allowed. Extra ``fields`` are stored with the change.
        """
        with self.sessions() as s, s.begin():
            write_first(s)
            cur = self.apply_transition(s, job_id, new, reason, message, expect, **fields)
        if cur is None:
            return False
        self.announce(job_id, cur, new, reason)
        return True

    def apply_transition(
        self,
        s: Session,
        job_id: str,
        new: Phase,
        reason: Reason | None = None,
        message: str = "",
        expect: Sequence[Phase] | None = None,
        **fields: Any,
    ) -> Phase | None:
        """:meth:`transition` inside the caller's transaction (which must hold the write lock).

        Returns
        -------
        Phase or None
            The phase before the change, or None when nothing changed. The caller calls
            :meth:`announce` after its commit.
        """
        now = utcnow()
        stmt = select(JobRecord).where(JobRecord.id == job_id)
        if s.get_bind().dialect.name == "postgresql":
            stmt = stmt.with_for_update()
        job = s.execute(stmt).scalar_one_or_none()
        if job is None:
            return None
        cur = Phase(job.phase)
        if expect is not None and cur not in expect:
            return None
        try:
            check_transition(cur, new)
        except TransitionError:
            return None
        job.phase = new.value
        job.reason = reason.value if reason else job.reason
        if message:
            job.message = message
        job.updated_at = now
        if new == Phase.EXECUTING and job.started_at is None:
            job.started_at = now
        if new in FINAL and job.ended_at is None:
            job.ended_at = now
        for k, v in fields.items():
            setattr(job, k, v)
        s.add(
            JobEvent(
                job_id=job_id,
                at=now,
                from_phase=cur.value,
                to_phase=new.value,
                reason=reason.value if reason else None,
                message=message,
            )
        )
        return cur

    def announce(self, job_id: str, cur: Phase, new: Phase, reason: Reason | None) -> None:
        """Log a committed phase change and tell the listeners."""
        log.info(
            "job_phase",
            job_id=job_id,
            from_phase=cur.value,
            to_phase=new.value,
            reason=reason.value if reason else None,
        )
        for listener in list(self.listeners):
            try:
                listener(job_id, new)
            except Exception:  # a listener must never break a transition
                log.exception("phase_listener_failed", job_id=job_id)

    def default_destruction(self, now: datetime) -> datetime:
        """When a job created at ``now`` is destroyed unless the client asks otherwise."""
        days = min(self.settings.destruction_days, self.settings.max_destruction_days)
        return now + timedelta(days=days)

    def update_fields(self, job_id: str, *, only_in: Phase | None = None, **fields: Any) -> bool:
        """Store fields without a phase change (pid, exit code, ...); whether the job had them.

        With ``only_in``, only while the job is in that phase: a job canceled or settled by
        another process meanwhile keeps its final state and message (False).
        """
        fields["updated_at"] = utcnow()
        where = [JobRecord.id == job_id]
        if only_in is not None:
            where.append(JobRecord.phase == only_in.value)
        with self.sessions.begin() as s:
            result = s.execute(update(JobRecord).where(*where).values(**fields))
        return bool(getattr(result, "rowcount", 1))

    def finish(self, job: JobRecord, outcome: Outcome) -> None:
        """Record how a job process ended: COMPLETED with its results, or ERROR."""
        fields: dict[str, Any] = {"exit_code": outcome.exit_code, "elapsed": outcome.elapsed}
        if outcome.cpu_time is not None:
            fields["cpu_time"] = outcome.cpu_time
        if outcome.timed_out:
            msg = outcome.message or f"Job exceeded its time limit of {job.time_limit} s"
            if not self.transition(job.id, Phase.ERROR, Reason.TIMEOUT, msg, **fields):
                self.update_fields(job.id, **fields)
            return
        code = outcome.exit_code
        if code == 0:
            missing = self.register_results(job)
            if missing:
                msg = f"Process ended with code 0 but wrote no {', '.join(missing)}"
                ok = self.transition(job.id, Phase.ERROR, Reason.FAILED, msg, **fields)
            else:
                ok = self.transition(
                    job.id,
                    Phase.COMPLETED,
                    Reason.SUCCESS,
                    "Process terminated with success",
                    **fields,
                )
        else:
            if outcome.message:
                msg = outcome.message
            elif code is None:
                msg = "Process ended with an unknown status"
            elif code < 0:
                msg = f"Process terminated with signal {-code}"
            else:
                msg = f"Process terminated with return code {code}"
            self.register_results(job)  # the log is still useful
            ok = self.transition(job.id, Phase.ERROR, outcome.reason, msg, **fields)
        if not ok:  # e.g. canceled meanwhile: keep the final phase, store the figures
            self.update_fields(job.id, **fields)

    def register_results(self, job: JobRecord) -> list[str]:
        """Register the result files found in the job folder; return missing required ones."""
        app = self.apps.get(job.app)
        specs = list(app.results) if app else []
        specs.append(LOG_RESULT)
        jdir = self.job_dir(job)
        rows = []
        missing = []
        for spec in specs:
            path = jdir / spec.filename
            if path.is_file():
                rows.append(
                    JobResult(
                        job_id=job.id,
                        name=spec.name,
                        filename=spec.filename,
                        mime=spec.mime,
                        size=path.stat().st_size,
                    )
                )
            elif spec.required:
                missing.append(spec.filename)
        with self.sessions.begin() as s:
            s.execute(delete(JobResult).where(JobResult.job_id == job.id))
            s.add_all(rows)
        return missing

    # --- cancel --------------------------------------------------------------------------
    def cancel(self, job: JobRecord) -> bool:
        """Cancel a job through its own backend; False if it had already ended."""
        if Phase(job.phase) in FINAL:
            return False
        return self.backend_for(job).cancel(job)

    def delete(self, job: JobRecord) -> None:
        """Cancel if needed, then remove the job's folder and record."""
        if Phase(job.phase) not in FINAL:
            self.cancel(job)
            self.backend_for(job).wait_stopped(job)
        jdir = self.job_dir(job)
        # A stopping job may still write into its folder: remove until it stays gone.
        for _ in range(40):
            shutil.rmtree(jdir, ignore_errors=True)
            if not jdir.exists():
                break
            time.sleep(0.05)
        archive = self.archive_path(job)
        if archive.exists():
            archive.unlink()
        if self.volume is not None:
            self.volume.remove_job(job.reldir)
        with self.sessions.begin() as s:
            s.execute(delete(JobRecord).where(JobRecord.id == job.id))

    def archive_path(self, job: JobRecord) -> Path:
        """Where the job's tar.gz archive is cached (beside its folder)."""
        jdir = self.job_dir(job)
        return jdir.parent / f"{jdir.name}.tar.gz"

    # --- reads and changes the APIs make (routes make no query of their own) -------------
    def results(self, job: JobRecord) -> list[JobResult]:
        """The job's registered results, by name."""
        with self.sessions() as s:
            stmt = select(JobResult).where(JobResult.job_id == job.id).order_by(JobResult.name)
            return list(s.scalars(stmt).all())

    def result(self, job: JobRecord, names: Sequence[str]) -> JobResult | None:
        """The first of ``names`` that the job has as a result, or None."""
        rows = {r.name: r for r in self.results(job)}
        return next((rows[n] for n in names if n in rows), None)

    def result_path(self, job: JobRecord, row: JobResult) -> Path:
        """Where a result's file is (inside the job folder; from the remote volume when the
        local copy is gone)."""
        path = safe_join(self.job_dir(job), row.filename)
        if self.volume is not None and not path.is_file():
            self.volume.fetch_job(job.reldir, self.job_dir(job))
        return path

    def set_time_limit(self, job: JobRecord, seconds: int) -> bool:
        """Change the time limit of a PENDING job; False if it is no longer PENDING.

        The record alone is changed: backends read the limit from it when they start the job
        (``job.json``'s copy is what the job was created with, and nothing reads it).
        """
        with self.sessions.begin() as s:
            result = s.execute(
                update(JobRecord)
                .where(JobRecord.id == job.id, JobRecord.phase == Phase.PENDING.value)
                .values(time_limit=seconds, updated_at=utcnow())
            )
            return bool(getattr(result, "rowcount", 0))

    def set_destruction(self, job: JobRecord, when: datetime) -> None:
        """Move the instant the janitor removes the job."""
        with self.sessions.begin() as s:
            s.execute(
                update(JobRecord)
                .where(JobRecord.id == job.id)
                .values(destruction_at=when, updated_at=utcnow())
            )

    def error_text(self, job: JobRecord, tail: int) -> str:
        """``<phase>: <message>`` and the last ``tail`` bytes of the job's log, if it has one."""
        text = f"{job.phase}: {job.message}\n"
        try:
            with open(self.job_dir(job) / LOG_FILE, "rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                fh.seek(max(0, size - tail))
                log_tail = fh.read().decode("utf-8", "replace")
        except OSError:  # no log (yet, or any more)
            return text
        return f"{text}\n--- end of job.log ---\n{log_tail}"


__all__ = [
    "InputFileNotFound",
    "JobNotFound",
    "JobService",
    "OptionError",
    "SubmitError",
    "App",
]
