"""End to end: the predecessor README's curl sequence against a live server process.

Runs on the embedded default (SQLite) and on the real PostgreSQL server.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.e2e import run_curl_sequence
from tests.support.server import LiveServer


def test_curl_sequence_sqlite(tmp_path: Path, s17: Path) -> None:
    srv = LiveServer(tmp_path / "srv").start()
    try:
        run_curl_sequence(srv, s17, tmp_path)
    finally:
        srv.stop()
    assert (tmp_path / "srv" / "caesar-rest.sqlite3").is_file()


@pytest.mark.postgres
def test_curl_sequence_postgres(tmp_path: Path, s17: Path, pg_url: str) -> None:
    srv = LiveServer(tmp_path / "srv", db_url=pg_url).start()
    try:
        run_curl_sequence(srv, s17, tmp_path)
    finally:
        srv.stop()
    assert not (tmp_path / "srv" / "caesar-rest.sqlite3").exists()
