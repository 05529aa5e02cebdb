"""The Celery application: configuration, the job task, and ``caesar-rest worker``.

One task, ``caesar_rest.run_job(job_id)``, runs a job that the API has already stored and moved
to QUEUED (the API side is :mod:`caesar_rest.backends.celery_backend`, the task body
:mod:`caesar_rest.backends.celery_worker`). Delivery is at-least-once: the task
is acknowledged late and rejected (so delivered again) when its worker process dies, and the
task itself makes a repeated delivery harmless by checking the job's phase and heartbeat in the
database first.

Two worker commands consume the jobs the API sends (to the queue ``celery_queue``, by default
``celery``, Celery's own default name): ``caesar-rest worker`` and the predecessor's
``celery --broker=URL --result-backend=URL --app=caesar_rest worker -Q celery``, which finds
:func:`service_celery` as ``caesar_rest.celery``. A result backend whose client library is not
installed (``mongodb://`` without pymongo) is refused when the app is built, so at start-up
rather than at the first job.
"""

from __future__ import annotations

import logging
import os
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from celery import Celery, Task
from celery.exceptions import ImproperlyConfigured
from celery.signals import setup_logging, worker_process_init, worker_ready
from kombu.utils.url import maybe_sanitize_url

from caesar_rest.settings import CelerySettings, Settings

TASK_NAME = "caesar_rest.run_job"
DEFAULT_BROKER = "amqp://guest:guest@localhost:5672//"
DEFAULT_RESULT_BACKEND = "redis://localhost:6379/0"


def broker_url(celery: CelerySettings) -> str:
    """The effective broker URL."""
    return celery.broker_url or DEFAULT_BROKER


def result_backend_url(celery: CelerySettings) -> str:
    """The effective result backend URL."""
    return celery.result_backend or DEFAULT_RESULT_BACKEND


class ResultBackendError(RuntimeError):
    """The configured Celery result backend cannot be used here (its library is missing)."""


#: Result backend scheme -> (the module its Celery backend needs, the pip extra that brings it).
_BACKEND_LIBRARIES = {"mongodb": ("pymongo", "mongodb"), "mongodb+srv": ("pymongo", "mongodb")}


def make_celery(celery: CelerySettings) -> Celery:
    """A Celery app configured from the ``celery`` settings, with the job task registered.

    Raises
    ------
    ResultBackendError
        When the result backend needs a library that is not installed.
    """
    app = Celery("caesar_rest", broker=broker_url(celery), backend=result_backend_url(celery))
    app.conf.update(
        # A job is acknowledged only when its task has returned, and handed to another worker
        # when the process running it dies: nothing is lost with a worker.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        timezone="UTC",
        enable_utc=True,
        task_default_queue=celery.queue,
        task_default_routing_key=celery.queue,
        result_expires=7 * 86400,
        result_extended=True,
        broker_connection_retry_on_startup=True,
        # Redis broker only: redelivery of unacknowledged tasks after this many seconds.
        broker_transport_options={"visibility_timeout": celery.visibility_timeout},
        result_backend_transport_options={"retry_policy": {"timeout": 5.0}},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )

    @worker_process_init.connect(weak=False)
    def _warm(**_: Any) -> None:
        # Build the job service (database pool, app registry) before the first task, so that
        # its start-up does not eat into that task's time limit.
        from caesar_rest.backends.celery_worker import worker_fork_server, worker_service

        worker_service()
        worker_fork_server()  # its imports run beside the worker's start

    @worker_ready.connect(weak=False)
    def _ready(sender: Any = None, **_: Any) -> None:
        # Whatever the log level and format (Celery redirects sys.stdout to its logger):
        # scripts/celery.sh waits for this line on the real standard output.
        os.write(1, f"caesar-rest worker {getattr(sender, 'hostname', '')} ready\n".encode())

    @app.task(name=TASK_NAME, bind=True, acks_late=True, reject_on_worker_lost=True)
    def run_job(self: Task, job_id: str) -> dict[str, Any]:
        """Run the job ``job_id`` on this worker (see celery_worker.execute)."""
        from caesar_rest.backends.celery_worker import execute

        return execute(self, job_id)

    check_result_backend(app)
    return app


def _scheme(url: str) -> str:
    return urlsplit(url).scheme.lower()


def check_result_backend(app: Celery) -> None:
    """Refuse a result backend that Celery could not use at the first job.

    Celery imports a backend's client library only when it first stores a result; without it
    every job would fail at dispatch. The URL is the one the app will use (the ``celery`` CLI's
    ``--result-backend`` included: it overrides the setting through ``CELERY_RESULT_BACKEND``).

    Raises
    ------
    ResultBackendError
        With what to install, or what to configure instead.
    """
    url = str(app.conf.result_backend or "")
    need = _BACKEND_LIBRARIES.get(_scheme(url))
    try:
        if need is not None:
            __import__(need[0])
        app.backend  # noqa: B018 - builds the backend: Celery's own checks of the URL
    except (ImportError, ImproperlyConfigured) as exc:
        hint = (
            f"install the {need[0]} library (pip install 'caesar-rest[{need[1]}]')"
            if need is not None
            else "install its client library"
        )
        raise ResultBackendError(
            f"Celery result backend {maybe_sanitize_url(url)!s} cannot be used: {exc}. "
            f"Either {hint}, or use Redis (CAESAR_REST_RESULT_BACKEND=redis://host:6379/0, "
            "--result_backend_proto redis)."
        ) from exc


def result_backend_problem(celery: CelerySettings) -> str | None:
    """Why the result backend of these settings cannot be used here (None: it can)."""
    try:
        make_celery(celery).close()
    except ResultBackendError as exc:
        return str(exc)
    return None


def result_backend_check(app: Celery, timeout: float = 2.0) -> str:
    """Reach the app's result backend: ``"ok"`` or ``"error: ..."`` (for ``/readyz``).

    Redis and MongoDB are pinged, ``rpc://`` (results through the broker) is a broker login,
    and SQLAlchemy (``db+...``) a connection; any other backend is only built (``"ok (not
    probed)"``). Short timeouts: probes must be quick.
    """
    url = str(app.conf.result_backend or "")
    scheme = _scheme(url)
    try:
        if scheme in ("redis", "rediss", "unix"):
            import redis

            client = redis.Redis.from_url(
                url, socket_connect_timeout=timeout, socket_timeout=timeout
            )
            try:
                client.ping()
            finally:
                client.close()
        elif scheme in _BACKEND_LIBRARIES:
            import pymongo

            mongo: Any = pymongo.MongoClient(url, serverSelectionTimeoutMS=int(timeout * 1000))
            try:
                mongo.admin.command("ping")
            finally:
                mongo.close()
        elif scheme == "rpc":
            with app.connection_for_write() as conn:
                conn.ensure_connection(max_retries=0, timeout=timeout)
        elif scheme.startswith("db+"):
            from sqlalchemy import create_engine, text

            engine = create_engine(url[3:])
            try:
                with engine.connect() as db:
                    db.execute(text("SELECT 1"))
            finally:
                engine.dispose()
        else:
            app.backend  # noqa: B018
            return "ok (not probed)"
        return "ok"
    except Exception as exc:  # report, do not raise
        return f"error: {type(exc).__name__}"


@cache
def service_celery() -> Celery:
    """The Celery app of this service's settings (``CAESAR_REST_*``), built once.

    ``caesar_rest.celery`` is this app, for the predecessor's worker command
    ``celery --app=caesar_rest worker ...`` and its systemd unit (``CELERY_APP="caesar_rest"``).
    The worker processes read the same settings to reach the database and the job folders, and
    log like ``caesar-rest worker`` does.
    """
    from caesar_rest.settings import get_settings

    setup_logging.connect(_service_logging, weak=False)
    return make_celery(get_settings().celery)


def _service_logging(loglevel: Any = None, logfile: Any = None, **_: Any) -> None:
    # Celery's setup_logging signal: with a receiver Celery leaves logging to it. The level
    # and the log file given on the command line (--loglevel, --logfile: `celery multi` and
    # the predecessor's unit) win over the settings, as with Celery's own logging.
    from caesar_rest.logconfig import configure_logging
    from caesar_rest.settings import get_settings

    update: dict[str, Any] = {}
    name = logging.getLevelName(loglevel) if isinstance(loglevel, int) else str(loglevel)
    if name.upper() in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        update["loglevel"] = name.upper()
    if logfile:
        path = Path(str(logfile)).absolute()
        update.update(logtofile=True, logdir=path.parent, logfile=path.name)
    configure_logging(get_settings().model_copy(update=update))


def worker_argv(
    settings: Settings,
    concurrency: int | None = None,
    loglevel: str | None = None,
    queues: str | None = None,
    hostname: str | None = None,
) -> list[str]:
    """The ``celery worker`` arguments for this service's settings."""
    argv = [
        "worker",
        "--loglevel",
        (loglevel or settings.loglevel).upper(),
        "--queues",
        queues or settings.celery.queue,
        "--hostname",
        hostname or f"caesar-{os.getpid()}@%h",
        "--without-gossip",
        "--without-mingle",  # revokes are checked against the database anyway
        "--pool",
        "prefork",
    ]
    conc = concurrency or settings.celery.concurrency
    if conc:
        argv += ["--concurrency", str(conc)]
    return argv


def run_worker(settings: Settings, argv: list[str]) -> None:
    """Run a Celery worker in this process until it is stopped.

    Raises
    ------
    SystemExit
        With status 2 when the result backend cannot be used (the reason is logged).
    """
    try:
        app = make_celery(settings.celery)
    except ResultBackendError as exc:
        from caesar_rest.logconfig import get_logger

        get_logger("caesar_rest.worker").error("result_backend_unusable", note=str(exc))
        raise SystemExit(2) from None
    app.worker_main(argv)
