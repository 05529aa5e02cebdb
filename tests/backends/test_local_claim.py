"""The local runner's claim keeps the concurrency limit across processes."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

from caesar_rest.apps.registry import default_registry
from caesar_rest.backends.local import LocalBackend
from caesar_rest.db.engine import make_engine, make_sessionmaker
from caesar_rest.db.migrate import upgrade
from caesar_rest.db.models import JobRecord
from caesar_rest.jobs.service import JobService
from caesar_rest.jobs.states import Phase
from caesar_rest.settings import Settings
from caesar_rest.timeutil import utcnow


def test_concurrent_claims_respect_the_limit(tmp_path: Path, db_url: str) -> None:
    url = db_url
    settings = Settings(datadir=tmp_path / "data", jobdir=tmp_path / "jobs", max_concurrent_jobs=1)
    engine = make_engine(url)
    upgrade(engine)
    now = utcnow()
    with make_sessionmaker(engine).begin() as s:
        for i in range(6):
            s.add(
                JobRecord(
                    id=f"job{i}",
                    owner="alice",
                    app="sleep",
                    options={},
                    backend="local",
                    phase=Phase.QUEUED.value,
                    message="",
                    time_limit=60,
                    reldir=f"alice/job{i}",
                    created_at=now + timedelta(seconds=i),
                    updated_at=now,
                )
            )
    # Six "processes" (each its own engine, service and runner) claim at the same moment.
    barrier = threading.Barrier(6)
    claimed: list[str] = []
    engines = []

    def claim() -> None:
        eng = make_engine(url)
        engines.append(eng)
        svc = JobService(settings, make_sessionmaker(eng), default_registry([]))
        # Slow phase changes widen any window between counting the running jobs and marking
        # the claimed one EXECUTING (there must be none).
        for name in ("transition", "apply_transition"):
            real = getattr(svc, name)

            def slow(*args: Any, _real: Any = real, **kwargs: Any) -> Any:
                time.sleep(0.05)
                return _real(*args, **kwargs)

            setattr(svc, name, slow)
        runner = LocalBackend(svc)
        barrier.wait()
        job = runner._claim()
        if job is not None:
            claimed.append(job.id)

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with make_sessionmaker(engine)() as s:
        executing = s.query(JobRecord).filter(JobRecord.phase == Phase.EXECUTING.value).count()
    for eng in engines:
        eng.dispose()
    engine.dispose()
    assert executing == 1 and claimed == ["job0"]
