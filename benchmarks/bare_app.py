"""Bare baseline for ``api_load.py``: the least a FastAPI job-status route can do.

One handler reads one job row from the service's SQLite file with the standard ``sqlite3``
module and returns a few of its columns, in two variants: a ``def`` handler (FastAPI runs it
in its thread pool; one connection per worker thread) at the service's path, and an
``async def`` handler reading on the event loop (one connection) at the same path under
``/async``. For uploads, ``POST /upload-sink`` reads the body and discards it. It is served
the way ``caesar-rest serve`` serves the real application: uvicorn,
one process, httptools, uvloop when installed, no access log. No middleware, no
dependencies, no SQLAlchemy, no logging.

Run: ``python benchmarks/bare_app.py --port 8099 --db /path/to/caesar-rest.sqlite3``
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sqlite3
import threading
from typing import Any

import uvicorn
from fastapi import FastAPI, HTTPException, Request

DB_ENV = "CAESAR_BARE_APP_DB"

app = FastAPI()
_local = threading.local()

_QUERY = (
    "SELECT id, owner, phase, reason, message, exit_code, elapsed, created_at "
    "FROM jobs WHERE id = ?"
)


def _conn() -> sqlite3.Connection:
    """This thread's connection to the database file."""
    conn: sqlite3.Connection | None = getattr(_local, "conn", None)
    if conn is None:
        conn = sqlite3.connect(os.environ[DB_ENV])
        _local.conn = conn
    return conn


def _answer(job_id: str, row: Any) -> dict[str, Any]:
    """The answer for a row (the same for both handlers), or 404."""
    if row is None:
        raise HTTPException(404, f"Job {job_id} not found")
    return {
        "job_id": row[0],
        "owner": row[1],
        "phase": row[2],
        "reason": row[3],
        "status": row[4],
        "exit_code": row[5],
        "elapsed_time": row[6],
        "submit_date": row[7],
    }


@app.get("/caesar/api/v1.0/job/{job_id}/status")
def job_status(job_id: str) -> dict[str, Any]:
    """The job's row, or 404."""
    return _answer(job_id, _conn().execute(_QUERY, (job_id,)).fetchone())


_loop_conn: list[sqlite3.Connection] = []


@app.get("/async/caesar/api/v1.0/job/{job_id}/status")
async def job_status_async(job_id: str) -> dict[str, Any]:
    """The same read on the event loop (a primary-key read is far shorter than a hand-off)."""
    if not _loop_conn:
        _loop_conn.append(sqlite3.connect(os.environ[DB_ENV], check_same_thread=False))
    return _answer(job_id, _loop_conn[0].execute(_QUERY, (job_id,)).fetchone())


@app.post("/upload-sink")
async def upload_sink(request: Request) -> dict[str, int]:
    """Read the request body as it arrives and throw it away.

    The ceiling of any upload route served this way: no multipart parsing, no checksum, no
    file written.
    """
    n = 0
    async for chunk in request.stream():
        n += len(chunk)
    return {"bytes": n}


def main() -> None:
    """Serve the bare app on one uvicorn process."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--db", required=True, help="SQLite file holding the jobs table")
    args = parser.parse_args()
    os.environ[DB_ENV] = args.db
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        workers=1,
        http="httptools",
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
