"""Job backends: where and how job processes run.

==========================  ==================================================================
module                      what it holds
==========================  ==================================================================
``__init__``                :func:`build_backends`: "local" and every configured remote backend
``process.py``              the job process: wrapper argv and path remap, environment, launch,
                            pid + start-time checks, process-group kill
``wrapper.py``              ``python -m caesar_rest.backends.wrapper``: runs the app, writes
                            ``exit.json``
``pids.py``                 a process by pid and start time (``process_alive``)
``forkserver.py``           warm starts: the fork server and its client (``ForkServer``)
``local.py``                the local runner: dispatcher, supervisors, the monitor's local pass
``remote.py``               :class:`RemoteBackend` (reconciliation of an engine's view),
                            ``BackendView``, ``Seen``
``celery_app.py``           the Celery application, the task, ``caesar-rest worker``
``celery_backend.py``       Celery, API side: send, revoke, settle from task results
``celery_worker.py``        Celery, worker side: the task body (run, heartbeat, re-run)
``slurm.py``                Slurm batch jobs through slurmrestd (``slurmrest.py``: the client)
``kubernetes.py``           Kubernetes ``batch/v1`` Jobs
``monitor.py``              ``caesar-rest monitor``: every backend's :meth:`reconcile`, periodically
``cli.py``                  the ``worker``/``monitor`` command lines and the legacy option names
==========================  ==================================================================

This package module stays light: ``python -m caesar_rest.backends.wrapper`` imports it first, and
each backend's module (with its client library) is imported only when it is configured.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from caesar_rest.jobs.backend import JobBackend
    from caesar_rest.jobs.service import JobService

__all__ = ["BACKENDS", "build_backends"]

#: Every backend: (name, "module:class", the setting that turns it on (None: always on), its
#: settings section (None: the core settings only)).
BACKENDS: tuple[tuple[str, str, str | None, str | None], ...] = (
    ("local", "caesar_rest.backends.local:LocalBackend", None, None),
    ("celery", "caesar_rest.backends.celery_backend:CeleryBackend", "celery_enabled", "celery"),
    ("slurm", "caesar_rest.backends.slurm:SlurmBackend", "slurm_enabled", "slurm"),
    ("kubernetes", "caesar_rest.backends.kubernetes:KubernetesBackend", "kube_enabled", "kube"),
)


def build_backends(service: JobService) -> dict[str, JobBackend]:
    """The local backend and every backend whose settings are present, by name.

    A job keeps the backend it was submitted to, so each configured backend stays reachable for
    status and cancel whatever the current default is. Each backend gets the service and its
    own settings section (``settings.slurm`` for the slurm backend).

    Parameters
    ----------
    service
        The job service the backends report to.

    Returns
    -------
    dict
        Backend name -> backend (not started).
    """
    settings = service.settings
    backends: dict[str, JobBackend] = {}
    for name, target, switch, section in BACKENDS:
        if switch is not None and not getattr(settings, switch):
            continue
        module, _, cls = target.partition(":")
        sections = () if section is None else (getattr(settings, section),)
        backends[name] = getattr(importlib.import_module(module), cls)(service, *sections)
    return backends
