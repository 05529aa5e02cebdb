"""The ``caesar-rest`` command: serve, migrate, find, and the client commands."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

from caesar_rest import __version__
from caesar_rest.backends.cli import (
    add_backend_commands,
    add_legacy_backend_options,
    cmd_monitor,
    cmd_worker,
    legacy_backend_env,
)
from caesar_rest.client.cli import CLIENT_COMMANDS, add_client_commands, run_client_command

# The predecessor's run_app.py options that need a value and have no effect here (MongoDB,
# rclone volumes, ...); its backend options are mapped in caesar_rest.backends.cli.
_LEGACY_IGNORED_VALUE = (
    "dbhost",
    "dbport",
    "dbname",
    "secretfile",
    "openid_realm",
    "mrcnn_weights",
    "slurm_batch_workdir",
    "mount_volume_path",
    "rclone_storage_name",
    "rclone_storage_path",
)
_LEGACY_IGNORED_FLAGS = ("db", "no-db", "mount_rclone_volume")


def _serve_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve",
        help="run the HTTP service",
        description="Run the HTTP service on the embedded default (SQLite, local runner) or as "
        "configured. Also accepts the predecessor's run_app.py option names.",
    )
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8080)")
    p.add_argument(
        "--uds", help="listen on this unix socket instead of host:port (nginx on the same host)"
    )
    p.add_argument("--workers", "--nworkers", type=int, help="API worker processes (default 1)")
    p.add_argument("--datadir", help="folder of uploaded files")
    p.add_argument("--jobdir", help="folder of job folders")
    p.add_argument("--db-url", "--db_url", dest="db_url", help="SQLAlchemy database URL")
    p.add_argument(
        "--job_scheduler",
        "--job-scheduler",
        dest="job_scheduler",
        help="default job backend: local, celery, slurm or kubernetes (default local)",
    )
    p.add_argument(
        "--max-concurrent-jobs",
        type=int,
        dest="max_concurrent_jobs",
        help="local runner: jobs at once (default: cores)",
    )
    p.add_argument(
        "--job-time-limit",
        type=int,
        dest="job_time_limit",
        help="default job time limit in seconds (default 3600)",
    )
    p.add_argument(
        "--max-upload-mib",
        type=int,
        dest="max_upload_mib",
        help="upload size limit in MiB (default 1000)",
    )
    p.add_argument("--loglevel", help="DEBUG, INFO, WARN, ERROR")
    p.add_argument("--logtofile", action="store_true", default=None, help="also log to a file")
    p.add_argument("--logdir", help="folder of the log file")
    p.add_argument("--logfile", help="log file name")
    p.add_argument("--logfile_maxsize", type=int, help="rotate the log file at this size (MB)")
    p.add_argument("--debug", action="store_true", default=None, help="debug logging")
    p.add_argument(
        "--ssl",
        action="store_true",
        default=None,
        help="serve HTTPS (needs --ssl-certfile/--ssl-keyfile)",
    )
    p.add_argument("--ssl-certfile", dest="ssl_certfile", help="TLS certificate (PEM)")
    p.add_argument("--ssl-keyfile", dest="ssl_keyfile", help="TLS key (PEM)")
    p.add_argument(
        "--aai",
        action="store_true",
        default=None,
        help="require OIDC bearer tokens (issuer and audience: CAESAR_REST_OIDC_ISSUER, "
        "CAESAR_REST_OIDC_AUDIENCE)",
    )
    add_legacy_backend_options(p)
    for name in _LEGACY_IGNORED_VALUE:
        p.add_argument(f"--{name}", dest=f"legacy_{name}", help=argparse.SUPPRESS)
    for name in _LEGACY_IGNORED_FLAGS:
        p.add_argument(
            f"--{name}",
            dest=f"legacy_{name.replace('-', '_')}",
            action="store_true",
            default=None,
            help=argparse.SUPPRESS,
        )


_SETTING_ARGS = (
    "host",
    "port",
    "workers",
    "datadir",
    "jobdir",
    "db_url",
    "job_scheduler",
    "max_concurrent_jobs",
    "job_time_limit",
    "max_upload_mib",
    "loglevel",
    "logtofile",
    "logdir",
    "logfile",
    "logfile_maxsize",
    "debug",
    "ssl",
    "ssl_certfile",
    "ssl_keyfile",
    "aai",
    "oidc_issuer",
    "oidc_audience",
)


def _apply_env(args: argparse.Namespace) -> None:
    """Command-line settings go to the environment, so worker processes see them too."""
    for name in _SETTING_ARGS:
        value = getattr(args, name, None)
        if value is None:
            continue
        if name in ("datadir", "jobdir", "logdir"):
            value = str(Path(value).resolve())
        os.environ[f"CAESAR_REST_{name.upper()}"] = (
            str(value).lower() if isinstance(value, bool) else str(value)
        )


def _remove_stale_socket(path: str) -> None:
    """Remove a unix socket left by a killed server (it would make the bind fail), but not
    one that a running server still answers on."""
    with contextlib.suppress(FileNotFoundError):
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            return
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(path)
            except ConnectionRefusedError:
                os.unlink(path)


def cmd_serve(args: argparse.Namespace) -> int:
    """Migrate, then run uvicorn."""
    import uvicorn

    from caesar_rest.db.engine import make_engine
    from caesar_rest.db.migrate import upgrade
    from caesar_rest.logconfig import configure_logging, get_logger
    from caesar_rest.settings import Settings, get_settings

    ignored = sorted(k[7:] for k, v in vars(args).items() if k.startswith("legacy_") and v)
    _apply_env(args)
    os.environ.update(legacy_backend_env(args, "backend_poll_interval"))
    get_settings.cache_clear()
    settings: Settings = get_settings()
    configure_logging(settings)
    log = get_logger("caesar_rest.cli")
    if ignored:
        log.warning(
            "legacy_options_ignored",
            options=ignored,
            note="MongoDB and rclone options have no equivalent; use --db-url for the database",
        )
    if settings.aai and not settings.oidc.issuer:
        log.error("aai_needs_issuer", note="set CAESAR_REST_OIDC_ISSUER (and _OIDC_AUDIENCE)")
        return 2
    if settings.celery_enabled:
        from caesar_rest.backends.celery_app import result_backend_problem

        problem = result_backend_problem(settings.celery)
        if problem:
            log.error("result_backend_unusable", note=problem)
            return 2
    settings.ensure_dirs()
    engine = make_engine(settings.database_url)
    upgrade(engine)
    engine.dispose()
    if settings.workers > 1 and settings.metrics:
        # Request metrics are summed over the worker processes through files in this folder.
        mdir = settings.datadir.resolve().parent / f".metrics-{os.uname().nodename}-{settings.port}"
        shutil.rmtree(mdir, ignore_errors=True)
        mdir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(mdir)
    scheme = "https" if settings.ssl else "http"
    where = f"{scheme}://{settings.host}:{settings.port}"
    if args.uds:
        where = f"unix:{args.uds}"
        _remove_stale_socket(args.uds)
    print(
        f"caesar-rest {__version__} serving on {where} "
        f"(database {settings.database_url.split('@')[-1]}, data {settings.datadir})",
        flush=True,
    )
    uvicorn.run(
        "caesar_rest.api.app:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        uds=args.uds,
        workers=settings.workers,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        timeout_graceful_shutdown=30,
        ssl_certfile=str(settings.ssl_certfile) if settings.ssl and settings.ssl_certfile else None,
        ssl_keyfile=str(settings.ssl_keyfile) if settings.ssl and settings.ssl_keyfile else None,
    )
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Upgrade the database schema to the latest revision."""
    from caesar_rest.db.engine import make_engine
    from caesar_rest.db.migrate import upgrade
    from caesar_rest.settings import get_settings

    _apply_env(args)
    get_settings.cache_clear()
    settings = get_settings()
    settings.ensure_dirs()
    engine = make_engine(settings.database_url)
    upgrade(engine, args.revision)
    engine.dispose()
    print(f"database at {args.revision}: {settings.database_url.split('@')[-1]}")
    return 0


def cmd_find(args: argparse.Namespace, rest: list[str]) -> int:
    """Run an app on a local file, without the server, writing the job outputs to --out."""
    from caesar_rest.apps.base import LOG_RESULT, OptionError, parse_cli_options
    from caesar_rest.apps.registry import default_registry
    from caesar_rest.settings import get_settings

    registry = default_registry(get_settings().extra_apps)
    app = registry.get(args.app)
    if app is None:
        print(
            f"error: unknown app {args.app!r}; apps: {', '.join(registry.names())}", file=sys.stderr
        )
        return 2
    if args.list_options:
        for opt in app.options:
            kind = "flag" if opt.is_flag else opt.type
            print(f"--{opt.name:28s} {kind:6s} default={opt.default!s:8s} {opt.description}")
        return 0
    image = Path(args.image).resolve()
    if not image.is_file():
        print(f"error: no such file: {image}", file=sys.stderr)
        return 2
    try:
        options = app.validate(parse_cli_options(app, rest))
    except OptionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    ok, why = app.availability()
    if not ok:
        print(f"error: app {app.name} is not available here: {why}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    argv = app.command(image, options, out)
    with open(out / LOG_RESULT.filename, "wb") as logf:
        proc = subprocess.Popen(  # noqa: S603 - argument list, no shell
            argv, cwd=out, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            logf.write(line)
            if not args.quiet:
                sys.stdout.buffer.write(line)
                sys.stdout.flush()
        rc = proc.wait()
    if rc == 0:
        written = [spec.filename for spec in app.results if (out / spec.filename).exists()]
        print(f"wrote {', '.join(written)} in {out}")
    else:
        print(f"error: {app.name} ended with code {rc}; see {out / 'job.log'}", file=sys.stderr)
    return rc


def _compare_parser(sub: Any) -> None:
    c = sub.add_parser(
        "compare",
        help="cross-match two catalogues",
        description="Cross-match two catalogues written by the apps (.csv, .vot or .json) by sky "
        "position; report matches, sources found by one side only, flux ratios (B/A) and position "
        "offsets.",
    )
    c.add_argument("catalog_a", help="first catalogue (A)")
    c.add_argument("catalog_b", help="second catalogue (B)")
    c.add_argument(
        "--radius", type=float, help="match radius in arcsec (default: 1.5 x the larger median maj)"
    )
    c.add_argument("--plot", help="also write a PNG of the comparison to this file")
    c.add_argument("--json", action="store_true", help="print the report as JSON")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser."""
    parser = argparse.ArgumentParser(
        prog="caesar-rest", description="caesar-rest: source extraction as a web service"
    )
    parser.add_argument("--version", action="version", version=f"caesar-rest {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    m = sub.add_parser(
        "migrate",
        help="upgrade the database schema",
        description="Apply the Alembic migrations to the database.",
    )
    m.add_argument("--db-url", "--db_url", dest="db_url", help="SQLAlchemy database URL")
    m.add_argument("--datadir", help="data folder (locates the default SQLite file)")
    m.add_argument("--revision", default="head", help="target revision (default head)")
    f = sub.add_parser(
        "find",
        help="run an app on a local image without the server",
        description="Run an app on IMAGE and write its outputs (catalog.csv, catalog.vot, "
        "catalog.json, catalog.reg, preview.png, job.log) to --out. App options follow as "
        "--name value or --flag.",
    )
    f.add_argument("image", help="FITS image")
    f.add_argument("--app", default="sep", help="app name (default sep)")
    f.add_argument("--out", default="caesar-out", help="output folder (default ./caesar-out)")
    f.add_argument("--quiet", action="store_true", help="do not echo the app's log")
    f.add_argument("--list-options", action="store_true", help="list the app's options and exit")
    add_backend_commands(sub)  # worker, monitor
    add_client_commands(sub)  # upload, apps, describe, submit, status, wait, ... (a client)
    _compare_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "find":
        return cmd_find(args, rest)
    if args.command in CLIENT_COMMANDS:
        return run_client_command(args, rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "serve":
        return cmd_serve(args)
    if args.command == "worker":
        return cmd_worker(args)
    if args.command == "monitor":
        return cmd_monitor(args)
    if args.command == "compare":
        from caesar_rest.catalogue.compare import run_compare_command  # numpy/scipy on demand

        return run_compare_command(
            args.catalog_a, args.catalog_b, args.radius, args.plot, args.json
        )
    return cmd_migrate(args)


if __name__ == "__main__":
    sys.exit(main())
