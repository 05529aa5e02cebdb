"""Command-line pieces of the job backends: ``caesar-rest worker``, ``caesar-rest monitor`` and
the predecessor's backend option names (``run_app.py``/``run_jobmonitor.py``), mapped onto
settings through ``CAESAR_REST_*`` environment variables so that child processes see them too.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

if TYPE_CHECKING:
    from caesar_rest.settings import Settings

#: Legacy option -> setting, where the value carries over as is.
_DIRECT = {
    "kube_config": "kube_config",
    "kube_cafile": "kube_cafile",
    "kube_keyfile": "kube_keyfile",
    "kube_certfile": "kube_certfile",
    "slurm_keyfile": "slurm_keyfile",
    "slurm_user": "slurm_user",
    "slurm_host": "slurm_host",
    "slurm_port": "slurm_port",
    "slurm_queue": "slurm_partition",
    "slurm_jobdir": "slurm_jobdir",
    "slurm_datadir": "slurm_datadir",
    "slurm_max_cores_per_job": "slurm_max_cores",
}


def add_legacy_backend_options(p: argparse.ArgumentParser, poll_help: str = "") -> None:
    """Add the predecessor's backend options (underscore names) to ``p``."""
    g = p.add_argument_group("job backends (the predecessor's option names)")
    g.add_argument(
        "--job_monitoring_period",
        "--job-monitoring-period",
        dest="job_monitoring_period",
        type=float,
        help=poll_help or "seconds between looks at remote job states",
    )
    for proto, names in (
        ("broker", ("proto", "host", "port", "user", "pass")),
        ("result_backend", ("proto", "host", "port", "user", "pass", "dbname")),
    ):
        for n in names:
            g.add_argument(f"--{proto}_{n}", dest=f"{proto}_{n}", help=f"Celery {proto} {n}")
    for name in _DIRECT:
        g.add_argument(f"--{name}", dest=name, help=f"sets {_DIRECT[name]}")
    g.add_argument(
        "--kube_incluster",
        action="store_true",
        default=None,
        help="use the pod's service account for Kubernetes",
    )


def legacy_backend_env(args: argparse.Namespace, poll_setting: str) -> dict[str, str]:
    """``CAESAR_REST_*`` variables for the legacy backend options given in ``args``."""
    env: dict[str, str] = {}
    get = vars(args).get
    if get("job_monitoring_period") is not None:
        env[f"CAESAR_REST_{poll_setting.upper()}"] = str(get("job_monitoring_period"))
    for legacy, setting in _DIRECT.items():
        if get(legacy) is not None:
            env[f"CAESAR_REST_{setting.upper()}"] = str(get(legacy))
    if get("kube_incluster"):
        env["CAESAR_REST_KUBE_INCLUSTER"] = "true"
    if any(get(f"broker_{n}") is not None for n in ("proto", "host", "port", "user", "pass")):
        proto = get("broker_proto") or "amqp"
        default_port = "6379" if proto == "redis" else "5672"
        host = get("broker_host") or "localhost"
        port = get("broker_port") or default_port
        user, pw = get("broker_user"), get("broker_pass")
        if proto == "redis":
            auth = _auth(user, pw)
            env["CAESAR_REST_BROKER_URL"] = f"redis://{auth}{host}:{port}/0"
        else:
            auth = _auth(user or "guest", pw or "guest")
            env["CAESAR_REST_BROKER_URL"] = f"{proto}://{auth}{host}:{port}//"
    rb = ("proto", "host", "port", "user", "pass", "dbname")
    if any(get(f"result_backend_{n}") is not None for n in rb):
        proto = get("result_backend_proto") or "redis"
        host = get("result_backend_host") or "localhost"
        port = get("result_backend_port") or ("27017" if proto == "mongodb" else "6379")
        db = get("result_backend_dbname") or ("caesardb" if proto == "mongodb" else "0")
        # The predecessor parsed user and password but left them out of the URL.
        auth = _auth(get("result_backend_user"), get("result_backend_pass"))
        env["CAESAR_REST_RESULT_BACKEND"] = f"{proto}://{auth}{host}:{port}/{db}"
    return env


#: The predecessor's database defaults (MongoDB's were localhost, 27017, caesardb); the port
#: default here is PostgreSQL's.
_DB_DEFAULTS = {"dbhost": "localhost", "dbport": "5432", "dbname": "caesardb"}


def add_legacy_db_options(p: argparse.ArgumentParser) -> None:
    """The predecessor's ``--dbhost/--dbport/--dbname``, here naming a PostgreSQL database."""
    g = p.add_argument_group("database (the predecessor's option names)")
    g.add_argument("--dbhost", help="PostgreSQL host (builds the database URL; default localhost)")
    g.add_argument("--dbport", help="PostgreSQL port (default 5432)")
    g.add_argument("--dbname", help="PostgreSQL database name (default caesardb)")


def legacy_db_url(args: argparse.Namespace) -> str | None:
    """The database URL that ``--dbhost/--dbport/--dbname`` name, or None when none is given.

    User and password are left to libpq (``PGUSER``, ``PGPASSWORD``, ``~/.pgpass``), as the
    predecessor's options had none.

    Raises
    ------
    ValueError
        ``--db-url`` is given too: the two ways of naming the database conflict.
    """
    get = vars(args).get
    if all(get(name) is None for name in _DB_DEFAULTS):
        return None
    if get("db_url"):
        raise ValueError("give --db-url or --dbhost/--dbport/--dbname, not both")
    host, port, name = (get(n) or d for n, d in _DB_DEFAULTS.items())
    if not str(port).isdigit():
        raise ValueError(f"--dbport must be a port number, not {port!r}")
    return f"postgresql+psycopg://{quote(host, safe='')}:{port}/{quote(name, safe='')}"


def _auth(user: str | None, pw: str | None) -> str:
    if not user and not pw:
        return ""
    return f"{quote(user or '', safe='')}:{quote(pw or '', safe='')}@"


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db-url", "--db_url", dest="db_url", help="SQLAlchemy database URL")
    p.add_argument("--datadir", help="folder of uploaded files (as mounted here)")
    p.add_argument("--jobdir", help="folder of job folders (as mounted here)")
    p.add_argument("--loglevel", help="DEBUG, INFO, WARN, ERROR")
    add_legacy_db_options(p)


def add_backend_commands(sub: Any) -> None:
    """The ``worker`` and ``monitor`` subcommands."""
    w = sub.add_parser(
        "worker",
        help="run a Celery worker for the celery backend",
        description="Run a Celery worker that executes caesar-rest jobs, with this service's "
        "settings (CAESAR_REST_* variables, .env). The job and data folders must be reachable "
        "here at the same paths as on the API hosts (a shared file system).",
    )
    _common(w)
    w.add_argument("--concurrency", type=int, help="jobs at once (default: cores)")
    w.add_argument("--queue", "--queues", dest="queue", help="queue to consume")
    w.add_argument("--hostname", help="Celery node name (default caesar-<pid>@<host>)")
    w.add_argument("--broker-url", dest="broker_url", help="broker URL")
    w.add_argument("--result-backend", dest="result_backend", help="result backend URL")
    add_legacy_backend_options(w)
    m = sub.add_parser(
        "monitor",
        help="reconcile non-final jobs with their backends",
        description="Every --period seconds, bring each non-final job in line with its "
        "backend (Celery, Slurm, Kubernetes; local jobs of this machine whose process is "
        "gone). A job no backend can account for is marked ERROR after --lost-after seconds. "
        "Several copies may run: each pass takes a lock per backend.",
    )
    _common(m)
    m.add_argument("--period", type=float, help="seconds between passes (default 30)")
    m.add_argument(
        "--lost-after", dest="lost_after", type=float, help="seconds unseen before lost (600)"
    )
    m.add_argument("--once", action="store_true", help="one pass, then exit")
    m.add_argument("--job_scheduler", "--job-scheduler", dest="job_scheduler", help="default")
    add_legacy_backend_options(m, poll_help="seconds between passes (alias of --period)")


_COMMON_SETTINGS = ("db_url", "datadir", "jobdir", "loglevel", "job_scheduler")


def _settings(args: argparse.Namespace, extra: dict[str, Any], poll_setting: str) -> Settings:
    """Put the command-line values into the environment (child processes see them too), then
    read the settings afresh and configure logging.

    Raises
    ------
    ValueError
        Conflicting database options (see :func:`legacy_db_url`).
    """
    from caesar_rest.logconfig import configure_logging
    from caesar_rest.settings import get_settings

    db_url = legacy_db_url(args)
    if db_url is not None:
        os.environ["CAESAR_REST_DB_URL"] = db_url
    for name in _COMMON_SETTINGS:
        value = getattr(args, name, None)
        if value is not None:
            if name in ("datadir", "jobdir"):
                value = str(Path(value).resolve())
            os.environ[f"CAESAR_REST_{name.upper()}"] = str(value)
    os.environ.update(legacy_backend_env(args, poll_setting))
    for name, value in extra.items():
        if value is not None:
            os.environ[f"CAESAR_REST_{name.upper()}"] = str(value)
    get_settings.cache_clear()
    settings = get_settings()
    configure_logging(settings)
    return settings


def cmd_worker(args: argparse.Namespace) -> int:
    """Run a Celery worker with the project's settings."""
    from caesar_rest.backends.celery_app import run_worker, worker_argv

    extra = {"broker_url": args.broker_url, "result_backend": args.result_backend}
    try:
        settings = _settings(args, extra, "backend_poll_interval")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    settings.ensure_dirs()
    argv = worker_argv(settings, args.concurrency, args.loglevel, args.queue, args.hostname)
    run_worker(settings, argv)
    return 0


def _schema_problem(engine: Any) -> str | None:
    """One line saying why the monitor cannot use the database (None: it can)."""
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    from caesar_rest.db.engine import db_error
    from caesar_rest.db.models import JobRecord

    where = engine.url.render_as_string(hide_password=True)
    try:
        found = inspect(engine).has_table(JobRecord.__tablename__)
    except SQLAlchemyError as exc:
        return f"cannot open the database {where}: {db_error(exc)}"
    return None if found else f"no job tables in {where}: run `caesar-rest migrate` first"


def cmd_monitor(args: argparse.Namespace) -> int:
    """Run the monitor until SIGTERM/SIGINT (or one pass with --once)."""
    from caesar_rest.backends.monitor import Monitor
    from caesar_rest.logconfig import get_logger

    extra = {"monitor_period": args.period, "monitor_lost_after": args.lost_after}
    try:
        settings = _settings(args, extra, "monitor_period")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    monitor = Monitor.from_settings(settings)
    problem = _schema_problem(monitor.engine)
    if problem is not None:
        monitor.close()
        print(f"error: {problem}", file=sys.stderr)
        return 2
    if args.once:
        monitor.run_once(wait=30.0)  # a single pass waits for a busy backend
        monitor.close()
        return 0
    stop = threading.Event()

    def _stop(_sig: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    get_logger("caesar_rest.monitor").info(
        "monitor_started",
        period=settings.monitor_period,
        lost_after=settings.monitor_lost_after,
        backends=sorted(monitor.service.backends),
    )
    monitor.run(stop)
    monitor.close()
    return 0
