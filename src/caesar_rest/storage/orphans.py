"""Stored files without a file record: set aside at start-up, never deleted.

An upload is moved into its user's folder before its record commits (``register.py``). A
server stopped between the two, or a power loss that undoes the commit (SQLite's
``synchronous=NORMAL``), leaves a file that no record names: no user can list, download or
delete it, and it still counts on disk. At start-up such files older than a grace period are
moved to ``<data>/.orphans/<user folder>/`` and logged; an operator decides what to do with
them.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from caesar_rest.db.models import FileRecord

ORPHANS = ".orphans"


def quarantine_orphans(
    datadir: Path,
    sessions: sessionmaker[Session],
    grace: float = 3600.0,
    keep: tuple[Path, ...] = (),
) -> list[str]:
    """Move the files of the users' folders that no record names to ``<data>/.orphans``.

    Parameters
    ----------
    datadir
        The data folder (user folders ``<data>/<user folder>/<file>``).
    sessions
        Session factory of the service's database.
    grace
        Files modified less than this many seconds ago are left alone: another process may be
        about to commit their record.
    keep
        Folders never touched even when they lie in the data folder (the job and log
        folders, when configured there).

    Returns
    -------
    list of str
        The moved files, as ``<user folder>/<file>``.
    """
    if not datadir.is_dir():
        return []
    with sessions() as s:
        known = set(s.scalars(select(FileRecord.relpath)))
    kept = {p.resolve() for p in keep}
    now = time.time()
    moved: list[str] = []
    for folder in sorted(datadir.iterdir()):
        if folder.name.startswith(".") or not folder.is_dir() or folder.is_symlink():
            continue
        real = folder.resolve()
        if any(real == k or real in k.parents or k in real.parents for k in kept):
            continue
        for path in sorted(folder.iterdir()):
            rel = f"{folder.name}/{path.name}"
            if rel in known or not path.is_file() or path.is_symlink():
                continue
            dest = datadir / ORPHANS / folder.name / path.name
            # Every worker process runs this at start-up: another may move the file first.
            with contextlib.suppress(FileNotFoundError):
                if now - path.stat().st_mtime < grace:
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, dest)
                moved.append(rel)
    return moved
