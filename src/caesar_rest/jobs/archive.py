"""The tar.gz archive of a job folder, built on demand and cached beside the folder."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

from caesar_rest.db.models import JobRecord
from caesar_rest.jobs.service import JobService


def ensure_archive(service: JobService, job: JobRecord) -> Path:
    """Build ``job_<id>.tar.gz`` if missing or older than the folder; return its path.

    Written to a temporary name and renamed, so a reader never sees a partial archive. With a
    remote volume, a job folder missing here is fetched from the remote first.
    """
    service.pull_folder(job)
    jdir = service.job_dir(job)
    target = service.archive_path(job)
    newest = max((p.stat().st_mtime for p in jdir.rglob("*") if p.is_file()), default=0.0)
    if target.exists() and target.stat().st_mtime >= newest:
        return target
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        tar.add(jdir, arcname=f"job_{job.id}")
    os.replace(tmp, target)
    return target
