"""The Celery application: configuration, the job task, and ``caesar-rest worker``.

One task, ``caesar_rest.run_job(job_id)``, runs a job that the API has already stored and moved
to QUEUED (the API side is :mod:`caesar_rest.backends.celery_backend`, the task body
:mod:`caesar_rest.backends.celery_worker`). Delivery is at-least-once: the task
is acknowledged late and rejected (so delivered again) when its worker process dies, and the
task itself makes a repeated delivery harmless by checking the job's phase and heartbeat in the
database first.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init, worker_ready

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


def make_celery(celery: CelerySettings) -> Celery:
    """A Celery app configured from the ``celery`` settings, with the job task registered."""
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
        from caesar_rest.backends.celery_worker import worker_service

        worker_service()

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

    return app


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
    """Run a Celery worker in this process until it is stopped."""
    app = make_celery(settings.celery)
    app.worker_main(argv)
