"""Service configuration: the core settings and one section per subsystem (pydantic-settings).

Every setting can be set from the environment with the ``CAESAR_REST_`` prefix (for example
``CAESAR_REST_DATADIR=/srv/caesar/data``), from a ``.env`` file, or from the ``caesar-rest serve``
command line, which also accepts the predecessor's ``run_app.py`` option names.

:class:`Settings` holds the service core (network, storage, jobs, UWS, users, quotas, logging)
and the sections ``celery``, ``slurm``, ``kube`` and ``oidc``, each read by the subsystem it
configures (``settings.slurm.url``). A section's variables keep the names they had when all
settings were one class (``CAESAR_REST_SLURM_URL``, ``CAESAR_REST_BROKER_URL``), and
``Settings(slurm_url=...)`` still works: flat names are routed into their section.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails, InitErrorDetails
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]

#: Prefix of every environment variable of the service.
ENV_PREFIX = "CAESAR_REST_"


class _Section(BaseSettings):
    """Base of the subsystem sections: the same ``.env`` file and rules as :class:`Settings`.

    A section reads its own variables (``env_prefix`` of the subclass, or a field's
    ``validation_alias`` where the historical name lacks the section prefix).
    """

    model_config = SettingsConfigDict(
        env_file=".env",
        extra="ignore",
        validate_default=True,
        validate_by_name=True,
        validate_by_alias=True,
    )

    @classmethod
    def flat_names(cls) -> dict[str, str]:
        """``{flat name: field name}``: the name each field had in the single settings class.

        The flat name is the environment variable without ``CAESAR_REST_``, lower case.
        """
        return {env_name(cls, name)[len(ENV_PREFIX) :].lower(): name for name in cls.model_fields}


def env_name(model: type[BaseSettings], field: str) -> str:
    """The environment variable of ``field`` of a settings class (prefix or alias)."""
    info = model.model_fields[field]
    if isinstance(info.validation_alias, str):
        return info.validation_alias.upper()
    return f"{model.model_config.get('env_prefix', '')}{field}".upper()


class CelerySettings(_Section):
    """The celery backend: broker, result store, queue and worker behaviour (docs/backends.md).

    Environment names: ``CAESAR_REST_CELERY_<FIELD>``, except ``CAESAR_REST_BROKER_URL`` and
    ``CAESAR_REST_RESULT_BACKEND``, which keep their historical names.
    """

    model_config = SettingsConfigDict(env_prefix="CAESAR_REST_CELERY_")

    broker_url: str | None = Field(
        None,
        validation_alias="CAESAR_REST_BROKER_URL",
        description="Celery broker URL (amqp://... or redis://...); setting it enables the "
        "celery backend. Default when job_scheduler is celery: amqp://guest:guest@localhost:5672//.",
    )
    result_backend: str | None = Field(
        None,
        validation_alias="CAESAR_REST_RESULT_BACKEND",
        description="Celery result backend URL (default redis://localhost:6379/0).",
    )
    queue: str = Field(
        "celery",
        description="Celery queue the jobs are sent to and `caesar-rest worker` consumes (the "
        "predecessor's `celery ... worker -Q celery` consumes the default).",
    )
    concurrency: int | None = Field(
        None, ge=1, description="caesar-rest worker: jobs at once per worker (default: cores)."
    )
    heartbeat: float = Field(
        10.0, gt=0, description="Celery worker: seconds between job heartbeats in the database."
    )
    hard_time_margin: float = Field(
        60.0,
        ge=1,
        description="Celery: the worker stops a job at its time limit; Celery's soft limit "
        "follows kill grace + 5 s later and its hard limit (process killed) this much later.",
    )
    max_reruns: int = Field(
        2, ge=0, description="Celery: times a job is run again after its worker was lost."
    )
    visibility_timeout: int = Field(
        3600,
        ge=60,
        description="Redis broker only: seconds before an unacknowledged task is delivered again.",
    )


class SlurmSettings(_Section):
    """The slurm backend: slurmrestd, its tokens, and the batch jobs (docs/backends.md).

    Environment names: ``CAESAR_REST_SLURM_<FIELD>``.
    """

    model_config = SettingsConfigDict(env_prefix="CAESAR_REST_SLURM_")

    url: str | None = Field(
        None,
        description="slurmrestd base URL, e.g. http://slurm-head:6820; setting it (or "
        "slurm_host) enables the slurm backend.",
    )
    host: str | None = Field(
        None, description="slurmrestd host (legacy; used when slurm_url is not set)."
    )
    port: int = Field(6820, ge=1, le=65535, description="slurmrestd port (with slurm_host).")
    user: str | None = Field(
        None, description="Slurm user the jobs run as (JWT 'sun' claim; default: this user)."
    )
    keyfile: Path | None = Field(
        None, description="Slurm's HS256 JWT key (jwt_hs256.key) to mint tokens from."
    )
    token: SecretStr | None = Field(
        None, description="A ready JWT for slurmrestd (instead of slurm_keyfile)."
    )
    token_lifespan: int = Field(
        1800, ge=60, description="Lifetime in seconds of the tokens minted from slurm_keyfile."
    )
    api_version: str | None = Field(
        None,
        description="slurmrestd API version such as v0.0.38 or v0.0.41 (default: the newest "
        "supported one in the server's OpenAPI document).",
    )
    partition: str | None = Field(
        None, description="Slurm partition (legacy --slurm_queue; default: the cluster's)."
    )
    jobdir: Path | None = Field(
        None, description="The job folder root as mounted on the cluster (default: jobdir)."
    )
    datadir: Path | None = Field(
        None, description="The data folder as mounted on the cluster (default: datadir)."
    )
    max_cores: int = Field(
        4, ge=1, description="Most CPUs a Slurm job asks for (legacy slurm_max_cores_per_job)."
    )
    memory_mb: int = Field(
        0, ge=0, description="Memory per Slurm job in MB (0: the partition's default)."
    )
    python: str | None = Field(
        None,
        description="Python interpreter with caesar_rest installed, as seen on the cluster "
        "(default: this one's path).",
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment variables for Slurm jobs (JSON)."
    )
    exact_time_limit: bool = Field(
        True,
        description="Enforce the time limit to the second inside the batch script (Slurm "
        "counts whole minutes; its own limit then stays one minute later as a backstop).",
    )
    timeout: float = Field(10.0, gt=0, description="slurmrestd request timeout (s).")
    verify_tls: bool = Field(True, description="Verify slurmrestd's TLS certificate.")
    mpi_ranks: int = Field(
        0,
        ge=0,
        le=4096,
        description="MPI ranks of a job of slurm_mpi_apps (0 or 1: one process); each rank "
        "gets the job's cores. A job given no-mpi runs as one process.",
    )
    mpi_nodes: int = Field(
        0, ge=0, le=4096, description="Nodes the MPI ranks are spread over (0: Slurm's choice)."
    )
    mpi_launcher: str = Field(
        "srun",
        pattern=r"^(/[\w./-]+/)?(srun|mpirun|mpiexec)$",
        description="Launcher of the ranks inside the batch job: srun (with --mpi="
        "slurm_mpi_type) or OpenMPI's mpirun/mpiexec, a bare name (the job's PATH) or a path.",
    )
    mpi_type: str = Field(
        "pmix",
        pattern=r"^[a-z0-9_]+$",
        description="srun's --mpi plugin (pmix, pmi2, ...; see srun --mpi=list).",
    )
    mpi_apps: list[str] = Field(
        default_factory=lambda: ["caesar"],
        description="Apps whose programs share their work over MPI ranks (JSON list).",
    )


class KubeSettings(_Section):
    """The kubernetes backend: cluster access, the job image, volumes and limits (docs/backends.md).

    Environment names: ``CAESAR_REST_KUBE_<FIELD>``.
    """

    model_config = SettingsConfigDict(env_prefix="CAESAR_REST_KUBE_")

    image: str | None = Field(
        None,
        description="Container image for Kubernetes jobs (caesar_rest and the apps installed); "
        "setting it enables the kubernetes backend.",
    )
    images: dict[str, str] = Field(
        default_factory=dict, description="Per-app image overrides, {app: image} (JSON)."
    )
    namespace: str | None = Field(
        None, description="Namespace of the Jobs (default: in-cluster or kubeconfig context's)."
    )
    incluster: bool = Field(False, description="Use the pod's service account.")
    config: Path | None = Field(None, description="kubeconfig file (default ~/.kube/config).")
    context: str | None = Field(None, description="kubeconfig context (default: current).")
    certfile: Path | None = Field(None, description="Client certificate override (legacy).")
    keyfile: Path | None = Field(None, description="Client key override (legacy).")
    cafile: Path | None = Field(None, description="Cluster CA override (legacy).")
    pvc: str | None = Field(
        None, description="PersistentVolumeClaim holding the data folder (and the job folders)."
    )
    jobs_pvc: str | None = Field(
        None, description="PersistentVolumeClaim of the job folders (default: kube_pvc)."
    )
    data_subpath: str = Field(
        "data", description="Path of the data folder inside kube_pvc ('' for its root)."
    )
    jobs_subpath: str = Field(
        "jobs", description="Path of the job folder root inside the jobs PVC ('' for its root)."
    )
    python: str = Field("python3", description="Python interpreter inside the job image.")
    cpu_limit: float = Field(
        4.0, gt=0, description="Most CPUs a Kubernetes job may use (request: the app's cores)."
    )
    memory_request: str = Field("1Gi", description="Memory request of a Kubernetes job.")
    memory_limit: str = Field("4Gi", description="Memory limit of a Kubernetes job.")
    ttl_seconds: int = Field(
        600, ge=0, description="ttlSecondsAfterFinished: finished Jobs are deleted after this."
    )
    run_as_user: int = Field(1000, ge=1, description="UID the job container runs as.")
    run_as_group: int = Field(1000, ge=1, description="GID the job container runs as.")
    service_account: str | None = Field(
        None, description="Service account of the job pods (default: the namespace's default)."
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = Field(
        "IfNotPresent", description="imagePullPolicy of the job container."
    )
    image_pull_secrets: list[str] = Field(
        default_factory=list, description="Image pull secrets of the job pods (JSON list)."
    )


class OIDCSettings(_Section):
    """OIDC bearer tokens (with ``aai``): the provider, token checks and roles.

    Environment names: ``CAESAR_REST_OIDC_<FIELD>``.
    """

    model_config = SettingsConfigDict(env_prefix="CAESAR_REST_OIDC_")

    issuer: str | None = Field(
        None, description="OIDC issuer URL; its discovery document gives the JWKS and endpoints."
    )
    audience: str | None = Field(
        None, description="Audience (aud) that access tokens must carry for this service."
    )
    algorithms: list[str] = Field(
        default_factory=lambda: ["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"],
        description="Signature algorithms accepted for JWT access tokens (never 'none'/HS*).",
    )
    leeway: int = Field(
        10, ge=0, le=300, description="Clock skew allowed on exp/nbf/iat, in seconds."
    )
    jwks_refresh: float = Field(
        10.0, ge=0, description="Least seconds between two JWKS refetches (unknown key ids)."
    )
    introspection: bool = Field(
        False, description="Validate opaque (non-JWT) tokens at the introspection endpoint."
    )
    client_id: str | None = Field(
        None, description="Client id of this service at the provider (introspection)."
    )
    client_secret: str | None = Field(
        None, description="Client secret of this service at the provider (introspection)."
    )
    web_client_id: str | None = Field(
        None,
        description="Public client id of the web application at the provider (authorization "
        "code flow with PKCE, redirect URI <public URL>/app/); unset: the page cannot log in.",
    )
    web_scope: str = Field(
        "openid api", description="Scopes the web application asks for when it logs in."
    )
    roles_claim: str = Field(
        "roles", description="Claim holding the user's roles; dots address nested claims."
    )
    admin_role: str = Field("admin", description="Role that grants administration.")
    http_timeout: float = Field(5.0, gt=0, description="Timeout of calls to the provider.")
    max_token_bytes: int = Field(
        8192, ge=256, le=1048576, description="Longest bearer token read (longer: 401)."
    )
    negative_cache_size: int = Field(
        10000, ge=0, description="Refused opaque tokens remembered (by hash); 0: none."
    )
    negative_cache_ttl: float = Field(
        60.0, ge=0, description="Seconds a refused opaque token is answered 401 from memory."
    )
    introspection_rate: float = Field(
        10.0, ge=0, description="Introspection calls per second per process (0: no limit)."
    )
    introspection_burst: int = Field(
        20, ge=1, description="Introspection calls allowed at once above the rate."
    )

    @field_validator("algorithms")
    @classmethod
    def _asymmetric_only(cls, value: list[str]) -> list[str]:
        # Public keys must never serve as an HMAC secret, and unsigned tokens are no tokens.
        bad = [a for a in value if a.lower() == "none" or a.upper().startswith("HS")]
        if bad:
            raise ValueError(f"not accepted for access tokens: {bad} (asymmetric only)")
        return value


def _in_section(name: str, error: ErrorDetails) -> InitErrorDetails:
    """A section's validation error, located under the section (``slurm.port``)."""
    detail = InitErrorDetails(type=error["type"], loc=(name, *error["loc"]), input=error["input"])
    if "ctx" in error:
        detail["ctx"] = error["ctx"]
    return detail


def _build_section(name: str, section: type[_Section], values: dict[str, Any]) -> _Section:
    """``section(**values)`` (plus its environment); errors name the section (``slurm.port``)."""
    try:
        return section(**values)
    except ValidationError as exc:
        details = [_in_section(name, e) for e in exc.errors()]
        raise ValidationError.from_exception_data("Settings", details) from None
    except SettingsError as exc:
        # A JSON-valued variable that is no JSON: name the field as a validation error does.
        found = re.search(r'field "(\w+)"', str(exc))
        field = (found.group(1),) if found else ()
        detail = InitErrorDetails(
            type="value_error", loc=(name, *field), input=None, ctx={"error": str(exc)}
        )
        raise ValidationError.from_exception_data("Settings", [detail]) from None


class Settings(BaseSettings):
    """The service core and its sections: the service, the job runners and the command line."""

    model_config = SettingsConfigDict(
        env_prefix="CAESAR_REST_", env_file=".env", extra="ignore", validate_default=True
    )

    # --- network ---------------------------------------------------------------------------
    host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(8080, ge=0, le=65535, description="Port the HTTP server listens on.")
    workers: int = Field(1, ge=1, le=64, description="Number of API worker processes.")
    root_path: str = Field("", description="URL prefix when served behind a proxy sub-path.")
    ssl: bool = Field(
        False,
        description="Serve HTTPS with ssl_certfile/ssl_keyfile (without them: a self-signed pair "
        "made at start).",
    )
    ssl_certfile: Path | None = Field(None, description="TLS certificate (PEM) for --ssl.")
    ssl_keyfile: Path | None = Field(None, description="TLS private key (PEM) for --ssl.")
    header_timeout: float = Field(
        30.0,
        ge=0,
        description="Seconds a client has to send a request's line and headers, from the "
        "connection's start (kept alive: from the request's first byte); then the connection "
        "is closed (0: no limit).",
    )
    body_timeout: float = Field(
        60.0,
        ge=0,
        description="Longest pause in seconds between two parts of a request body (an upload); "
        "then the request gets 408 and nothing of it is kept (0: no limit).",
    )
    keep_alive_timeout: int = Field(
        5,
        ge=1,
        description="Seconds an idle kept-alive connection stays open between two requests "
        "(gunicorn: its keepalive).",
    )
    max_connections: int = Field(
        1000,
        ge=0,
        description="Open connections per server process; a request on one more gets 503 "
        "(0: no limit).",
    )

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
    db_busy_timeout: float = Field(
        30.0,
        gt=0,
        description="SQLite: seconds a statement waits for another connection's write lock "
        "before it fails (the request answers 503; a job's state write is tried again).",
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
    tus_expiry_hours: float = Field(
        24.0,
        gt=0,
        description="Hours an unfinished resumable (tus) upload is kept after its last bytes "
        "arrived; then it is removed and its upload URL answers 404.",
    )

    # --- remote storage (rclone; docs/storage.md) -----------------------------------------
    mount_rclone_volume: bool = Field(
        False,
        description="Keep the data and job folders on the rclone remote rclone_storage_name: "
        "uploads and job folders are copied there and verified before they are reported "
        "stored, job inputs are staged in and outputs out by the job itself (the local "
        "folders stay as staging area and cache).",
    )
    mount_volume_path: Path = Field(
        Path("/mnt/storage"),
        description="Local folder that mirrors the remote's folder: a data or job folder "
        "under it keeps its relative path on the remote (else 'data' and 'jobs'); also the "
        "pods' working folder of Kubernetes jobs.",
    )
    rclone_storage_name: str = Field(
        "neanias-nextcloud",
        description="rclone remote (a name from rclone.conf, or a connection string such as "
        ":webdav,url='https://host/remote.php/dav/files/u':).",
    )
    rclone_storage_path: str = Field(
        ".", description="Folder inside the remote that holds the data and job folders."
    )
    rclone_config: Path | None = Field(
        None, description="rclone.conf to use (default: rclone's own)."
    )
    rclone_flags: list[str] = Field(
        default_factory=list,
        description="Extra rclone flags (JSON list, each item an option or its value, e.g. "
        '["--bwlimit", "50M"]).',
    )
    rclone_timeout: float = Field(
        600.0, gt=0, description="Longest single rclone run (copy, check) in seconds."
    )
    rclone_verify: Literal["download", "hash"] = Field(
        "download",
        description="How copies to the remote are verified: 'download' reads them back and "
        "compares the bytes; 'hash' uses rclone check with the remote's hashes (sizes only "
        "on a remote without hashes).",
    )
    rclone_secret_name: str = Field(
        "rclone-secret",
        description="Kubernetes Secret with rclone.conf, mounted read-only in job pods.",
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
    job_memory_limit_mib: int = Field(
        4096,
        ge=0,
        description="Memory a job's program may allocate, in MiB (RLIMIT_DATA on every backend; "
        "Slurm's --mem when slurm_memory_mb is 0). Over it the job ends FAILURE with 'memory "
        "limit ... exceeded'. 0: no limit.",
    )
    job_cpu_time_limit: int = Field(
        0,
        ge=0,
        description="CPU seconds a job's program may use (RLIMIT_CPU; over it: TIMED-OUT). "
        "0: none (the wall-clock job_time_limit still holds).",
    )
    job_open_files_limit: int = Field(
        4096, ge=0, description="Files a job's program may hold open (RLIMIT_NOFILE). 0: none."
    )
    job_file_size_limit_mib: int = Field(
        16384,
        ge=0,
        description="Largest file a job's program may write, in MiB (RLIMIT_FSIZE). 0: none.",
    )
    job_fork_server: Literal["eager", "lazy", "off"] = Field(
        "eager",
        description="Local runner and Celery workers: start jobs from a fork server, a process "
        "that has imported the science stack once (warm starts, docs/backends.md), with the "
        "same session, limits, cancel and exit record as a new interpreter: each job is its "
        "own wrapper and records its end, so local jobs outlive a killed service as cold ones "
        "do. 'eager': the server starts with the local runner (when job_scheduler is local) "
        "and with each Celery pool process; 'lazy': with the first job (which waits for its "
        "imports); 'off': every job starts a new interpreter. When the server cannot start or "
        "has died, jobs start cold and the reason is logged.",
    )
    job_fork_server_preload: list[str] = Field(
        default_factory=lambda: [
            "numpy",
            "scipy.ndimage",
            "astropy.io.fits",
            "astropy.wcs",
            "threadpoolctl",
            "caesar_rest.apps.program",
            "caesar_rest.apps.caesar_run",
            "caesar_rest.apps.sep_run",
            "caesar_rest.apps.photutils_run",
            # What a caesar run imports on its way (classification, preview legend).
            "caesar_rest.classify",
            "caesar_rest.catalogue.preview",
            "PIL.ImageDraw",
            "PIL.ImageFile",
            "PIL.ImageFont",
        ],
        description="Modules the fork server imports before it serves (one that fails to "
        "import is skipped). Modules that start threads at import cannot be preloaded: the "
        "server then refuses to fork and jobs start cold.",
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
    celery: CelerySettings = Field(
        default_factory=lambda: CelerySettings(), description="The celery backend."
    )
    slurm: SlurmSettings = Field(
        default_factory=lambda: SlurmSettings(), description="The slurm backend."
    )
    kube: KubeSettings = Field(
        default_factory=lambda: KubeSettings(), description="The kubernetes backend."
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
    job_list_answer_cache: bool = Field(
        True,
        description="SQLite: keep whole rendered job lists (GET /jobs) while the database "
        "does not change (off: each answer is assembled from the jobs' rendered documents, "
        "kept by row revision either way).",
    )

    # --- users -----------------------------------------------------------------------------
    aai: bool = Field(False, description="Require OIDC bearer tokens on every API route.")
    local_user: str = Field(
        "anonymous", description="Owner of every file and job when authentication is off."
    )
    local_user_admin: bool = Field(
        True, description="Whether the local user (authentication off) has the admin role."
    )
    oidc: OIDCSettings = Field(
        default_factory=lambda: OIDCSettings(), description="OIDC bearer tokens."
    )

    accounting_snapshot_max_age: float = Field(
        120.0,
        ge=0,
        description="/accounting and /appstats answer from the aggregates stored by "
        "'caesar-rest accounter' while its last pass is at most this many seconds old, else "
        "compute them on request. 0: always on request.",
    )

    # --- browsers (docs/auth.md, "Cross-site requests") ------------------------------------
    public_url: str | None = Field(
        None,
        description="Public base URL of the service (behind a proxy): its origin counts as the "
        "service's own for the cross-site check.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins (scheme://host[:port]) of other sites whose pages may call the "
        "API: answered CORS and let through the cross-site check. Empty: CORS off.",
    )

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
    metrics_token: SecretStr | None = Field(
        None,
        description="With authentication on, a bearer token that may read /metrics (for the "
        "scraper); an admin's token may too. Unused with authentication off (/metrics open).",
    )
    ready_min_free_mib: int = Field(
        512,
        ge=0,
        description="/readyz answers 503 when the data or job folder's disk has less free "
        "space than this, MiB; 0: not checked.",
    )

    # --- logging ---------------------------------------------------------------------------
    loglevel: LogLevel = Field("INFO", description="Log level.")
    logtofile: bool = Field(False, description="Also write JSON log lines to logdir/logfile.")
    logdir: Path = Field(Path("./caesar-data/logs"), description="Folder of the log file.")
    logfile: str = Field("caesar-rest.json", description="Log file name.")
    logfile_maxsize: float = Field(
        5.0, gt=0, description="Rotate the log file at this size (MB; a decimal like 5.0 too)."
    )
    logfile_backups: int = Field(5, ge=0, description="Rotated log files kept.")
    log_json: bool = Field(True, description="JSON lines on stderr (else a console format).")
    debug: bool = Field(False, description="Debug mode: log at DEBUG level.")

    @model_validator(mode="before")
    @classmethod
    def _route_flat_names(cls, data: Any) -> Any:
        """Build each section from its flat keyword names (``slurm_url=``) and the environment.

        A section given as a mapping or an instance is merged with the flat names; either way
        the section reads its remaining fields from the environment itself.
        """
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for name, section in SECTIONS.items():
            given = data.get(name)
            flat = {
                field: data.pop(key) for key, field in section.flat_names().items() if key in data
            }
            if isinstance(given, _Section) and not flat:
                continue
            base = given.model_dump() if isinstance(given, _Section) else dict(given or {})
            data[name] = _build_section(name, section, {**base, **flat})
        return data

    @field_validator("rclone_flags")
    @classmethod
    def _flags_only(cls, value: list[str]) -> list[str]:
        # Options and their values only: a bare first item would be taken as a path.
        if value and not value[0].startswith("--"):
            raise ValueError("rclone_flags must start with an option (--name)")
        return value

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
        return self.job_scheduler == "celery" or self.celery.broker_url is not None

    @property
    def slurm_enabled(self) -> bool:
        """Whether the slurm backend is configured."""
        return self.job_scheduler == "slurm" or bool(self.slurm.url or self.slurm.host)

    @property
    def kube_enabled(self) -> bool:
        """Whether the kubernetes backend is configured."""
        return self.job_scheduler == "kubernetes" or self.kube.image is not None

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


#: The sections of :class:`Settings`, by attribute name.
SECTIONS: dict[str, type[_Section]] = {
    "celery": CelerySettings,
    "slurm": SlurmSettings,
    "kube": KubeSettings,
    "oidc": OIDCSettings,
}


def setting_fields() -> Iterator[tuple[str, str, FieldInfo]]:
    """Every setting as (environment variable, attribute path, field), in declaration order.

    Sections are expanded in place: ``("CAESAR_REST_SLURM_URL", "slurm.url", ...)``.
    """
    for name, info in Settings.model_fields.items():
        section = SECTIONS.get(name)
        if section is None:
            yield env_name(Settings, name), name, info
            continue
        for field, sub in section.model_fields.items():
            yield env_name(section, field), f"{name}.{field}", sub


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Settings from the environment, read once per process."""
    return Settings()
