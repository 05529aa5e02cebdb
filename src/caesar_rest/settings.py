"""Service configuration: one pydantic-settings class.

Every field can be set from the environment with the ``CAESAR_REST_`` prefix (for example
``CAESAR_REST_DATADIR=/srv/caesar/data``), from a ``.env`` file, or from the ``caesar-rest serve``
command line, which also accepts the predecessor's ``run_app.py`` option names.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


class Settings(BaseSettings):
    """All settings of the service, the job runners and the command-line tools."""

    model_config = SettingsConfigDict(
        env_prefix="CAESAR_REST_", env_file=".env", extra="ignore", validate_default=True
    )

    # --- network ---------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(8080, ge=0, le=65535, description="Port the HTTP server listens on.")
    workers: int = Field(1, ge=1, le=64, description="Number of API worker processes.")
    root_path: str = Field("", description="URL prefix when served behind a proxy sub-path.")
    ssl: bool = Field(False, description="Serve HTTPS with ssl_certfile/ssl_keyfile.")
    ssl_certfile: Path | None = Field(None, description="TLS certificate (PEM) for --ssl.")
    ssl_keyfile: Path | None = Field(None, description="TLS private key (PEM) for --ssl.")

    # --- storage ---------------------------------------------------------------------------
    datadir: Path = Field(
        Path("./caesar-data/data"), description="Folder where uploaded files are stored."
    )
    jobdir: Path = Field(Path("./caesar-data/jobs"), description="Folder of the job folders.")
    db_url: str | None = Field(
        None,
        description=(
            "SQLAlchemy database URL, e.g. postgresql+psycopg://user@host:5432/caesar. "
            "Default: SQLite file caesar-rest.sqlite3 in the parent of the data folder."
        ),
    )
    max_upload_mib: int = Field(
        1000, ge=1, description="Largest accepted upload in MiB (bigger ones get 413)."
    )
    upload_chunk_kib: int = Field(
        1024, ge=16, le=65536, description="Write buffer for uploads, in KiB."
    )
    upload_fsync: bool = Field(
        True,
        description=(
            "Put each upload on disk (the file, written back as it arrives and fsynced, then its "
            "folder) before it is registered and answered, so that an acknowledged upload "
            "survives a power loss (its record too on PostgreSQL; SQLite commits with "
            "synchronous=NORMAL, see docs/architecture.md). Turn off only where the storage "
            "guarantees durability otherwise."
        ),
    )

    # --- jobs ------------------------------------------------------------------------------
    job_scheduler: Literal["local", "celery", "slurm", "kubernetes"] = Field(
        "local",
        description="Default job backend for new jobs: 'local' (processes here), 'celery', "
        "'slurm' or 'kubernetes'. A job keeps the backend it was submitted to.",
    )
    max_concurrent_jobs: int = Field(
        default_factory=lambda: os.cpu_count() or 1,
        ge=1,
        description="Local runner: jobs executing at once on this machine (default: cores).",
    )
    job_time_limit: int = Field(
        3600, ge=1, description="Default execution time limit of a job in seconds (TIMED-OUT)."
    )
    max_job_time_limit: int = Field(
        86400, ge=1, description="Largest execution time limit a job may ask for, in seconds."
    )
    job_kill_grace: float = Field(
        5.0, ge=0, description="Seconds between SIGTERM and SIGKILL when a job is stopped."
    )
    job_poll_interval: float = Field(
        1.0, gt=0, description="Local runner: seconds between looks at the queue."
    )
    extra_apps: list[str] = Field(
        default_factory=list,
        description="Extra app classes to register, as 'module:Class' (plug-ins, tests).",
    )

    # --- remote job backends (docs/backends.md) -------------------------------------------
    backend_poll_interval: float = Field(
        5.0,
        ge=0,
        description="API processes: seconds between looks at the Slurm/Kubernetes/Celery "
        "states of their jobs (0: leave it to 'caesar-rest monitor').",
    )
    monitor_period: float = Field(
        30.0, gt=0, description="caesar-rest monitor: seconds between reconciliation passes."
    )
    monitor_lost_after: float = Field(
        600.0,
        gt=0,
        description="Seconds a non-final job may go unseen by its backend (no record, no "
        "heartbeat, no exit file) before it is marked ERROR as lost.",
    )
    broker_url: str | None = Field(
        None,
        description="Celery broker URL (amqp://... or redis://...); setting it enables the "
        "celery backend. Default when job_scheduler is celery: amqp://guest:guest@localhost:5672//.",
    )
    result_backend: str | None = Field(
        None, description="Celery result backend URL (default redis://localhost:6379/0)."
    )
    celery_queue: str = Field("caesar-rest", description="Celery queue the jobs are sent to.")
    celery_concurrency: int | None = Field(
        None, ge=1, description="caesar-rest worker: jobs at once per worker (default: cores)."
    )
    celery_heartbeat: float = Field(
        10.0, gt=0, description="Celery worker: seconds between job heartbeats in the database."
    )
    celery_hard_time_margin: float = Field(
        60.0,
        ge=1,
        description="Celery: the worker stops a job at its time limit; Celery's soft limit "
        "follows kill grace + 5 s later and its hard limit (process killed) this much later.",
    )
    celery_max_reruns: int = Field(
        2, ge=0, description="Celery: times a job is run again after its worker was lost."
    )
    celery_visibility_timeout: int = Field(
        3600,
        ge=60,
        description="Redis broker only: seconds before an unacknowledged task is delivered again.",
    )
    slurm_url: str | None = Field(
        None,
        description="slurmrestd base URL, e.g. http://slurm-head:6820; setting it (or "
        "slurm_host) enables the slurm backend.",
    )
    slurm_host: str | None = Field(
        None, description="slurmrestd host (legacy; used when slurm_url is not set)."
    )
    slurm_port: int = Field(6820, ge=1, le=65535, description="slurmrestd port (with slurm_host).")
    slurm_user: str | None = Field(
        None, description="Slurm user the jobs run as (JWT 'sun' claim; default: this user)."
    )
    slurm_keyfile: Path | None = Field(
        None, description="Slurm's HS256 JWT key (jwt_hs256.key) to mint tokens from."
    )
    slurm_token: SecretStr | None = Field(
        None, description="A ready JWT for slurmrestd (instead of slurm_keyfile)."
    )
    slurm_token_lifespan: int = Field(
        1800, ge=60, description="Lifetime in seconds of the tokens minted from slurm_keyfile."
    )
    slurm_api_version: str | None = Field(
        None,
        description="slurmrestd API version such as v0.0.38 or v0.0.41 (default: the newest "
        "supported one in the server's OpenAPI document).",
    )
    slurm_partition: str | None = Field(
        None, description="Slurm partition (legacy --slurm_queue; default: the cluster's)."
    )
    slurm_jobdir: Path | None = Field(
        None, description="The job folder root as mounted on the cluster (default: jobdir)."
    )
    slurm_datadir: Path | None = Field(
        None, description="The data folder as mounted on the cluster (default: datadir)."
    )
    slurm_max_cores: int = Field(
        4, ge=1, description="Most CPUs a Slurm job asks for (legacy slurm_max_cores_per_job)."
    )
    slurm_memory_mb: int = Field(
        0, ge=0, description="Memory per Slurm job in MB (0: the partition's default)."
    )
    slurm_python: str | None = Field(
        None,
        description="Python interpreter with caesar_rest installed, as seen on the cluster "
        "(default: this one's path).",
    )
    slurm_env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment variables for Slurm jobs (JSON)."
    )
    slurm_exact_time_limit: bool = Field(
        True,
        description="Enforce the time limit to the second inside the batch script (Slurm "
        "counts whole minutes; its own limit then stays one minute later as a backstop).",
    )
    slurm_timeout: float = Field(10.0, gt=0, description="slurmrestd request timeout (s).")
    slurm_verify_tls: bool = Field(True, description="Verify slurmrestd's TLS certificate.")
    kube_image: str | None = Field(
        None,
        description="Container image for Kubernetes jobs (caesar_rest and the apps installed); "
        "setting it enables the kubernetes backend.",
    )
    kube_images: dict[str, str] = Field(
        default_factory=dict, description="Per-app image overrides, {app: image} (JSON)."
    )
    kube_namespace: str | None = Field(
        None, description="Namespace of the Jobs (default: in-cluster or kubeconfig context's)."
    )
    kube_incluster: bool = Field(False, description="Use the pod's service account.")
    kube_config: Path | None = Field(None, description="kubeconfig file (default ~/.kube/config).")
    kube_context: str | None = Field(None, description="kubeconfig context (default: current).")
    kube_certfile: Path | None = Field(None, description="Client certificate override (legacy).")
    kube_keyfile: Path | None = Field(None, description="Client key override (legacy).")
    kube_cafile: Path | None = Field(None, description="Cluster CA override (legacy).")
    kube_pvc: str | None = Field(
        None, description="PersistentVolumeClaim holding the data folder (and the job folders)."
    )
    kube_jobs_pvc: str | None = Field(
        None, description="PersistentVolumeClaim of the job folders (default: kube_pvc)."
    )
    kube_data_subpath: str = Field(
        "data", description="Path of the data folder inside kube_pvc ('' for its root)."
    )
    kube_jobs_subpath: str = Field(
        "jobs", description="Path of the job folder root inside the jobs PVC ('' for its root)."
    )
    kube_python: str = Field("python3", description="Python interpreter inside the job image.")
    kube_cpu_limit: float = Field(
        4.0, gt=0, description="Most CPUs a Kubernetes job may use (request: the app's cores)."
    )
    kube_memory_request: str = Field("1Gi", description="Memory request of a Kubernetes job.")
    kube_memory_limit: str = Field("4Gi", description="Memory limit of a Kubernetes job.")
    kube_ttl_seconds: int = Field(
        600, ge=0, description="ttlSecondsAfterFinished: finished Jobs are deleted after this."
    )
    kube_run_as_user: int = Field(1000, ge=1, description="UID the job container runs as.")
    kube_run_as_group: int = Field(1000, ge=1, description="GID the job container runs as.")
    kube_service_account: str | None = Field(
        None, description="Service account of the job pods (default: the namespace's default)."
    )
    kube_image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="imagePullPolicy of the job container."
    )
    kube_image_pull_secrets: list[str] = Field(
        default_factory=list, description="Image pull secrets of the job pods (JSON list)."
    )

    # --- job lifetime and UWS --------------------------------------------------------------
    destruction_days: float = Field(
        7.0, gt=0, description="Days after creation when a job and its results are removed."
    )
    max_destruction_days: float = Field(
        30.0, gt=0, description="Latest destruction time a client may ask for, in days."
    )
    janitor_interval: float = Field(
        300.0, gt=0, description="Seconds between sweeps removing jobs past their destruction."
    )
    uws_wait_max: float = Field(
        60.0, ge=0, description="Longest UWS WAIT (long-poll) in seconds; WAIT=-1 gets this."
    )
    uws_wait_recheck: float = Field(
        0.25,
        gt=0,
        description="Seconds between database re-checks of waited-on jobs (catches phase "
        "changes made by other processes).",
    )

    # --- users -----------------------------------------------------------------------------
    aai: bool = Field(False, description="Require OIDC bearer tokens on every API route.")
    local_user: str = Field(
        "anonymous", description="Owner of every file and job when authentication is off."
    )
    local_user_admin: bool = Field(
        True, description="Whether the local user (authentication off) has the admin role."
    )
    oidc_issuer: str | None = Field(
        None, description="OIDC issuer URL; its discovery document gives the JWKS and endpoints."
    )
    oidc_audience: str | None = Field(
        None, description="Audience (aud) that access tokens must carry for this service."
    )
    oidc_algorithms: list[str] = Field(
        default_factory=lambda: ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"],
        description="Signature algorithms accepted for JWT access tokens (never 'none'/HS*).",
    )
    oidc_leeway: int = Field(
        10, ge=0, le=300, description="Clock skew allowed on exp/nbf/iat, in seconds."
    )
    oidc_jwks_refresh: float = Field(
        10.0, ge=0, description="Least seconds between two JWKS refetches (unknown key ids)."
    )
    oidc_introspection: bool = Field(
        False, description="Validate opaque (non-JWT) tokens at the introspection endpoint."
    )
    oidc_client_id: str | None = Field(
        None, description="Client id of this service at the provider (introspection)."
    )
    oidc_client_secret: str | None = Field(
        None, description="Client secret of this service at the provider (introspection)."
    )
    oidc_roles_claim: str = Field(
        "roles", description="Claim holding the user's roles; dots address nested claims."
    )
    oidc_admin_role: str = Field("admin", description="Role that grants administration.")
    oidc_http_timeout: float = Field(5.0, gt=0, description="Timeout of calls to the provider.")

    # --- quotas and limits -----------------------------------------------------------------
    quota_bytes: int = Field(
        10 * 1024**3, ge=0, description="Default stored bytes per user (uploads); 0: no limit."
    )
    quota_active_jobs: int = Field(
        20, ge=0, description="Default unfinished jobs per user; 0: no limit."
    )
    quota_time_limit: int = Field(
        86400, ge=1, description="Default largest execution time a user's job may have, s."
    )
    quota_warning_fraction: float = Field(
        0.8, gt=0, le=1, description="Answers carry a quota warning above this fraction of use."
    )
    max_submissions_per_minute: int = Field(
        60, ge=0, description="Job submissions per user per minute; 0: no limit."
    )
    max_json_body_kib: int = Field(1024, ge=1, description="Largest JSON request body, in KiB.")
    metrics: bool = Field(True, description="Serve Prometheus metrics at /metrics.")

    # --- logging ---------------------------------------------------------------------------
    loglevel: LogLevel = Field("INFO", description="Log level.")
    logtofile: bool = Field(False, description="Also write JSON log lines to logdir/logfile.")
    logdir: Path = Field(Path("./caesar-data/logs"), description="Folder of the log file.")
    logfile: str = Field("caesar-rest.json", description="Log file name.")
    logfile_maxsize: int = Field(5, ge=1, description="Rotate the log file at this size (MB).")
    logfile_backups: int = Field(5, ge=0, description="Rotated log files kept.")
    log_json: bool = Field(True, description="JSON lines on stderr (else a console format).")
    debug: bool = Field(False, description="Debug mode: log at DEBUG level.")

    @field_validator("loglevel", mode="before")
    @classmethod
    def _upper_level(cls, v: object) -> object:
        if isinstance(v, str):
            v = v.upper()
            return "WARNING" if v == "WARN" else v
        return v

    @property
    def database_url(self) -> str:
        """The effective database URL."""
        if self.db_url:
            return self.db_url
        path = (self.datadir.resolve().parent / "caesar-rest.sqlite3").as_posix()
        return f"sqlite:///{path}"

    @property
    def celery_enabled(self) -> bool:
        """Whether the celery backend is configured."""
        return self.job_scheduler == "celery" or self.broker_url is not None

    @property
    def slurm_enabled(self) -> bool:
        """Whether the slurm backend is configured."""
        return self.job_scheduler == "slurm" or bool(self.slurm_url or self.slurm_host)

    @property
    def kube_enabled(self) -> bool:
        """Whether the kubernetes backend is configured."""
        return self.job_scheduler == "kubernetes" or self.kube_image is not None

    @property
    def max_upload_bytes(self) -> int:
        """Upload limit in bytes."""
        return self.max_upload_mib * 1024 * 1024

    def ensure_dirs(self) -> None:
        """Create the data, job and log folders."""
        self.datadir.mkdir(parents=True, exist_ok=True)
        self.jobdir.mkdir(parents=True, exist_ok=True)
        if self.logtofile:
            self.logdir.mkdir(parents=True, exist_ok=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the environment, read once per process."""
    return Settings()
