"""``/accounting`` and ``/appstats`` answer from the accounter's stored aggregates while they are
recent, and compute on request otherwise; the answer says which (issue 15)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import update

from caesar_rest.api.app import create_app
from caesar_rest.auth.accounter import run_pass
from caesar_rest.db.engine import make_engine, make_sessionmaker
from caesar_rest.db.migrate import upgrade
from caesar_rest.db.models import UsageSnapshot

from tests.support.server import make_settings
from tests.support.usage_rows import add_file, fill

API = "/caesar/api/v1.0"
#: The predecessor's fields of /accounting (and /appstats' totals), kept in both sources.
LEGACY_FIELDS = {"timestamp", "datasize", "jobsize", "njobs", "njobs_completed", "njobs_failed"}


def counters(d: dict[str, Any]) -> dict[str, Any]:
    """The numbers only (no times, no source)."""
    drop = {"timestamp", "computed_at", "source", "quota", "warning"}
    return {k: v for k, v in d.items() if k not in drop}


def test_snapshot_then_live(tmp_path: Path, db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    fill(sessions)
    settings = make_settings(tmp_path, db_url=db_url, local_user="alice")
    with TestClient(create_app(settings, start_backends=False)) as client:
        # No pass yet: computed on request.
        live = client.get(f"{API}/accounting")
        assert live.status_code == 200 and live.headers["x-accounting-source"] == "live"
        assert live.json()["source"] == "live" and "computed_at" not in live.json()
        live_stats = client.get(f"{API}/appstats").json()
        assert live_stats["source"] == "live"

        assert run_pass(engine, sessions) == 3
        snap = client.get(f"{API}/accounting")
        assert snap.headers["x-accounting-source"] == "snapshot"
        body = snap.json()
        assert body["source"] == "snapshot" and body["computed_at"].endswith("+00:00")
        assert set(body) >= LEGACY_FIELDS and counters(body) == counters(live.json())
        assert (body["user"], body["nfiles"], body["datasize"], body["njobs"]) == (
            "alice",
            2,
            3.0,
            3,
        )
        assert body["quota"]["active_jobs"] == settings.quota_active_jobs
        stats = client.get(f"{API}/appstats")
        assert stats.headers["x-accounting-source"] == "snapshot"
        assert counters(stats.json()) == counters(live_stats)  # totals and per-user rows
        assert [u["user"] for u in stats.json()["users"]] == ["alice", "bob", "carol"]

        # A new file: the stored numbers stand until the next pass...
        with sessions() as s, s.begin():
            add_file(s, "alice", 3, 1024)
        assert client.get(f"{API}/accounting").json()["nfiles"] == 2
        # ...or until the last pass is older than accounting_snapshot_max_age (120 s).
        with sessions() as s, s.begin():
            old = datetime.now(UTC) - timedelta(seconds=121)
            s.execute(update(UsageSnapshot).values(computed_at=old))
        r = client.get(f"{API}/accounting")
        assert r.headers["x-accounting-source"] == "live" and r.json()["nfiles"] == 3
        assert client.get(f"{API}/appstats").json()["source"] == "live"

    # A user with nothing at the last pass has no row: zeros, still from the snapshot.
    assert run_pass(engine, sessions) == 3
    dave = make_settings(tmp_path, db_url=db_url, local_user="dave")
    with TestClient(create_app(dave, start_backends=False)) as client:
        r = client.get(f"{API}/accounting").json()
        assert r["source"] == "snapshot" and (r["nfiles"], r["njobs"], r["datasize"]) == (0, 0, 0.0)
    # 0: always on request.
    never = make_settings(
        tmp_path, db_url=db_url, local_user="alice", accounting_snapshot_max_age=0
    )
    with TestClient(create_app(never, start_backends=False)) as client:
        r = client.get(f"{API}/accounting")
        assert r.headers["x-accounting-source"] == "live" and r.json()["nfiles"] == 3
    engine.dispose()
