"""The caesar app's default ``nproc``: the cores the backend granted the job."""

from __future__ import annotations

import os

import pytest

from caesar_rest.apps import grant
from caesar_rest.apps.caesar_run import pipeline_options
from caesar_rest.backends.process import job_environment


def test_grant_order_and_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grant, "usable_cpus", lambda: 8)
    assert grant.granted_cores({}) == 8  # no backend: the usable CPUs
    assert grant.granted_cores({"SLURM_CPUS_PER_TASK": "3"}) == 3
    assert grant.granted_cores({"CAESAR_JOB_CORES": "2", "SLURM_CPUS_PER_TASK": "3"}) == 2
    assert grant.granted_cores({"CAESAR_JOB_CORES": "64"}) == 8  # never above the CPUs
    assert grant.granted_cores({"CAESAR_JOB_CORES": "0", "SLURM_CPUS_PER_TASK": "x"}) == 8
    # What every backend puts in the job's environment is what the job reads back.
    assert grant.granted_cores(job_environment(5)) == 5


def test_usable_cpus_is_the_affinity() -> None:
    assert grant.usable_cpus() == len(os.sched_getaffinity(0))


def test_caesar_nproc_defaults_to_the_grant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grant, "usable_cpus", lambda: 8)
    monkeypatch.setenv("CAESAR_JOB_CORES", "4")
    assert pipeline_options({}).nproc == 4
    assert pipeline_options({"nproc": 1}).nproc == 1  # a given nproc wins
    monkeypatch.setenv("CAESAR_JOB_CORES", "1")
    assert pipeline_options({}).nproc == 1
