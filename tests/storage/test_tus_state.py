"""The resumable-upload service's own state: metadata parsing and expiry."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from caesar_rest.auth.users import Limits
from caesar_rest.errors import Invalid, NotFound
from caesar_rest.storage.tus import TusService, parse_metadata, sweep_expired

from tests.support.server import make_settings

NO_LIMITS = Limits(bytes=0, active_jobs=0, time_limit=0)


def test_metadata_is_decoded() -> None:
    got = parse_metadata("filename UzE3LmZpdHM=, tag dMOpc3Q=,empty")
    assert got == {"filename": "S17.fits", "tag": "tést", "empty": ""}
    assert parse_metadata(None) == {} and parse_metadata("  ") == {}
    with pytest.raises(Invalid, match="given twice"):
        parse_metadata("a YQ==,a Yg==")


def test_expired_uploads_are_swept(tmp_path: Path) -> None:
    st = make_settings(tmp_path, tus_expiry_hours=1.0)
    tus = TusService(st, sessions=None)  # type: ignore[arg-type]  # no quota: no database
    old = tus.create("alice", 10, {"filename": "a.fits"}, NO_LIMITS)
    new = tus.create("alice", 10, {}, NO_LIMITS)
    assert tus.offset(old) == 0 and old.filename == "a.fits"
    now = time.time()
    assert sweep_expired(st, now=now + 1800) == 0
    # As if the first one had seen no bytes for two hours.
    old.touched = now - 7200
    tus._save(old)
    assert sweep_expired(st, now=now) == 1
    with pytest.raises(NotFound):
        tus.get("alice", old.id)
    assert tus.get("alice", new.id).length == 10
    with pytest.raises(NotFound):
        tus.get("bob", new.id)
    assert sorted(p.suffix for p in (st.datadir / ".tus" / "alice").iterdir()) == [".json", ".part"]
