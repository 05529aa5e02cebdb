"""SQLAlchemy 2 models of files, jobs, job events and results."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base."""


class FileRecord(Base):
    """An uploaded file."""

    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255), nullable=False)
    filename_orig: Mapped[str] = mapped_column(String(255), nullable=False)
    #: Extension as stored, e.g. ``fits`` or ``fits.gz``.
    fileext: Mapped[str] = mapped_column(String(16), nullable=False)
    #: Content kind: ``fits``, ``png``, ``jpeg`` or ``gif``.
    kind: Mapped[str] = mapped_column(String(16), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False)
    #: Path relative to the data folder (never from the client).
    relpath: Mapped[str] = mapped_column(String(512), nullable=False)
    tag: Mapped[str] = mapped_column(Text, nullable=False, default="")
    info: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)

    __table_args__ = (Index("ix_files_owner_created", "owner", "created_at"),)


class JobRecord(Base):
    """A job: one run of an app on one input file."""

    __tablename__ = "jobs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    owner: Mapped[str] = mapped_column(String(255), nullable=False)
    app: Mapped[str] = mapped_column(String(64), nullable=False)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    #: The options exactly as the client sent them (echoed by the v1.0 API).
    job_inputs: Mapped[Any] = mapped_column(JSON, nullable=True)
    input_file_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    tag: Mapped[Any] = mapped_column(JSON, nullable=True)
    backend: Mapped[str] = mapped_column(String(32), nullable=False)
    backend_job_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    #: UWS phase (see caesar_rest.jobs.states.Phase).
    phase: Mapped[str] = mapped_column(String(16), nullable=False)
    #: Why the job ended, when it did: success, failed, timeout, canceled, lost, ...
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    message: Mapped[str] = mapped_column(Text, nullable=False, default="")
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    #: Whether the job should run as soon as possible (False: UWS PENDING until PHASE=RUN).
    run_requested: Mapped[bool] = mapped_column(default=True, nullable=False)
    time_limit: Mapped[int] = mapped_column(Integer, nullable=False)
    cores: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    #: Job folder relative to the job folder root.
    reldir: Mapped[str] = mapped_column(String(512), nullable=False)
    #: Local runner: process id, its start time (clock ticks since boot) and host.
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    pid_start: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    elapsed: Mapped[float | None] = mapped_column(Float, nullable=True)
    #: CPU seconds used by the job's processes, where the backend reports it.
    cpu_time: Mapped[float | None] = mapped_column(Float, nullable=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    #: UWS: when the job and its results are removed; client-chosen run id.
    destruction_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: Backends: the backend's own state word and when the monitor last saw the job there.
    backend_state: Mapped[str | None] = mapped_column(String(64), nullable=True)
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    #: Renewed by triggers on every insert and update (migration 0005): the v1.0 list keeps
    #: each job's rendered document with it (jobs/listing.py). Never written by the code.
    list_rev: Mapped[int] = mapped_column(BigInteger, nullable=False, server_default="0")

    __table_args__ = (
        # The v1.0 list's keyset order (db/joblist.py), and any owner-only filter; with the
        # revision, the list's (id, revision) reads use the index alone.
        Index("ix_jobs_owner_created_id_rev", "owner", "created_at", "id", "list_rev"),
        Index("ix_jobs_phase_backend", "phase", "backend"),
        Index("ix_jobs_input_file", "input_file_id"),
        Index("ix_jobs_destruction", "destruction_at"),
    )


class JobEvent(Base):
    """A state change of a job."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("jobs.id", ondelete="CASCADE"), nullable=False
    )
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    from_phase: Mapped[str | None] = mapped_column(String(16), nullable=True)
    to_phase: Mapped[str] = mapped_column(String(16), nullable=False)
    reason: Mapped[str | None] = mapped_column(String(32), nullable=True)
    message: Mapped[str] = mapped_column(Text, nullable=False, default="")

    __table_args__ = (Index("ix_job_events_job", "job_id", "id"),)


class JobResult(Base):
    """A named result file of a finished job."""

    __tablename__ = "job_results"

    job_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    filename: Mapped[str] = mapped_column(String(255), nullable=False)
    mime: Mapped[str] = mapped_column(String(128), nullable=False)
    size: Mapped[int] = mapped_column(BigInteger, nullable=False)


class User(Base):
    """A user seen by the service, with optional per-user limits (None: the defaults)."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(255), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(255), nullable=False, default="")
    roles: Mapped[list[str]] = mapped_column(JSON, nullable=False, default=list)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    last_seen_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    quota_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    quota_active_jobs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    quota_time_limit: Mapped[int | None] = mapped_column(Integer, nullable=True)


class UsageSnapshot(Base):
    """The latest usage aggregates of one user (``owner='*'``: the whole service), written by
    ``caesar-rest accounter`` every period so that readers need not scan files and jobs."""

    __tablename__ = "usage_snapshots"

    owner: Mapped[str] = mapped_column(String(255), primary_key=True)
    computed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), nullable=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
