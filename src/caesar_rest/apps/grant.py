"""The cores a job was granted, as the job itself learns them (standard library only).

Every backend of the service puts the job's cores in the job's environment as
``CAESAR_JOB_CORES`` (:func:`caesar_rest.backends.process.job_environment`): the local runner,
the Celery worker, the Slurm batch script and the Kubernetes pod alike. Under Slurm without
it (a job submitted by hand) ``SLURM_CPUS_PER_TASK`` is Slurm's own grant. Outside any backend
(``caesar-rest find``, a program run by hand) the grant is the CPUs this process may run on
(``os.sched_getaffinity``, which Slurm's and Docker's CPU sets restrict). A grant is never
more than the CPUs this process may run on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from caesar_rest.jobs.folder import CORES_ENV

#: Slurm's per-task CPU grant (set when the job asked for ``--cpus-per-task``).
SLURM_CPUS_ENV = "SLURM_CPUS_PER_TASK"


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask; ``os.cpu_count()`` where there is none).

    Returns
    -------
    int
        At least 1.
    """
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def granted_cores(env: Mapping[str, str] | None = None) -> int:
    """The cores granted to this job: ``CAESAR_JOB_CORES``, else ``SLURM_CPUS_PER_TASK``, else
    the usable CPUs; never more than the usable CPUs.

    Parameters
    ----------
    env
        Environment to read (default: ``os.environ``).

    Returns
    -------
    int
        At least 1. A value that is not a positive integer is skipped.
    """
    env = os.environ if env is None else env
    cpus = usable_cpus()
    for name in (CORES_ENV, SLURM_CPUS_ENV):
        text = env.get(name, "").strip()
        if text.isdigit() and int(text) > 0:
            return min(int(text), cpus)
    return cpus
