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
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caesar_rest import __version__
from caesar_rest.backends.cli import (
    add_backend_commands,
    add_legacy_backend_options,
    add_legacy_db_options,
    cmd_monitor,
    cmd_worker,
    legacy_backend_env,
    legacy_db_url,
)
from caesar_rest.client.cli import CLIENT_COMMANDS, add_client_commands, run_client_command

if TYPE_CHECKING:
    from caesar_rest.settings import Settings

# The predecessor's run_app.py options that need a value and have no effect here; its
# backend and database options are mapped in caesar_rest.backends.cli.
_LEGACY_IGNORED_VALUE = ("openid_realm", "mrcnn_weights", "slurm_batch_workdir")
_LEGACY_IGNORED_FLAGS = ("db", "no-db")
#: The predecessor's rclone volume options: settings of the same names (docs/storage.md).
_RCLONE_VALUE = ("mount_volume_path", "rclone_storage_name", "rclone_storage_path")

#: The predecessor's backend options (run_app.py and run_jobmonitor.py).
_LEGACY_BACKEND = (
    "job_monitoring_period",
    *(f"broker_{n}" for n in ("proto", "host", "port", "user", "pass")),
    *(f"result_backend_{n}" for n in ("proto", "host", "port", "user", "pass", "dbname")),
    "kube_config",
    "kube_incluster",
    "kube_cafile",
    "kube_keyfile",
    "kube_certfile",
    "slurm_keyfile",
    "slurm_user",
    "slurm_host",
    "slurm_port",
    "slurm_queue",
    "slurm_jobdir",
    "slurm_datadir",
    "slurm_max_cores_per_job",
)
#: The long options of the predecessor's scripts, which its argparse also took with one dash
#: (``-datadir``), by the command that takes them here: run_app.py -> serve (and worker, which
#: shares its backend options), run_jobmonitor.py -> monitor.
LEGACY_SINGLE_DASH: dict[str, tuple[str, ...]] = {
    "serve": (
        "datadir",
        "jobdir",
        "job_scheduler",
        "aai",
        "secretfile",
        "dbhost",
        "dbport",
        "dbname",
        "loglevel",
        "logtofile",
        "logdir",
        "logfile",
        "logfile_maxsize",
        "ssl",
        "debug",
        "nworkers",
        *_LEGACY_IGNORED_VALUE,
        *_LEGACY_IGNORED_FLAGS,
        *_RCLONE_VALUE,
        "mount_rclone_volume",
        *_LEGACY_BACKEND,
    ),
    "worker": ("datadir", "jobdir", "loglevel", "dbhost", "dbport", "dbname", *_LEGACY_BACKEND),
    "monitor": ("job_scheduler", "dbhost", "dbport", "dbname", *_LEGACY_BACKEND),
    "accounter": (
        "datadir",
        "jobdir",
        "dbhost",
        "dbport",
        "dbname",
        "job_monitoring_period",
        "mount_rclone_volume",
        "mount_volume_path",
        "rclone_storage_name",
        "rclone_storage_path",
    ),
}


def legacy_argv(argv: list[str]) -> list[str]:
    """``argv`` with the predecessor's single-dash long options (``-datadir x``,
    ``-logfile_maxsize=5``) spelt with two dashes, for the command that takes them.

    Only the names in :data:`LEGACY_SINGLE_DASH` are rewritten, and nothing after ``--``.
    """
    out = list(argv)
    command = next((i for i, a in enumerate(out) if not a.startswith("-")), None)
    if command is None or out[command] not in LEGACY_SINGLE_DASH:
        return out
    names = set(LEGACY_SINGLE_DASH[out[command]])
    for i in range(command + 1, len(out)):
        arg = out[i]
        if arg == "--":
            break
        if arg.startswith("-") and not arg.startswith("--") and arg[1:].split("=")[0] in names:
            out[i] = "-" + arg
    return out


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
    p.add_argument(
        "--logfile_maxsize", type=float, help="rotate the log file at this size (MB, default 5)"
    )
    p.add_argument("--debug", action="store_true", default=None, help="debug logging")
    p.add_argument(
        "--ssl",
        action="store_true",
        default=None,
        help="serve HTTPS with --ssl-certfile/--ssl-keyfile; without them with a self-signed "
        "pair made at start (as the predecessor did; clients must trust or skip it)",
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
    p.add_argument(
        "--secretfile",
        help="flask-oidc client_secrets.json: sets the OIDC issuer, client id and secret",
    )
    add_legacy_db_options(p)
    add_legacy_backend_options(p)
    add_rclone_options(p)
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


def add_rclone_options(p: argparse.ArgumentParser) -> None:
    """The predecessor's rclone volume options (``--mount_rclone_volume`` and the three
    values), as the settings of the same names."""
    for name in _RCLONE_VALUE:
        p.add_argument(f"--{name}", dest=name, help=f"remote storage: the {name} setting")
    p.add_argument(
        "--mount_rclone_volume",
        dest="mount_rclone_volume",
        action="store_true",
        default=None,
        help="keep the data and job folders on the rclone remote (docs/storage.md)",
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
    "mount_rclone_volume",
    *_RCLONE_VALUE,
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


def _db_settings(args: argparse.Namespace) -> Settings:
    """The settings of a command that opens the database: the command-line values and the
    predecessor's ``--dbhost/--dbport/--dbname`` go to the environment, then the settings are
    read afresh.

    Parameters
    ----------
    args
        The parsed command line.

    Returns
    -------
    Settings
        The settings, with the command line's values.

    Raises
    ------
    ValueError
        Conflicting database options (see :func:`legacy_db_url`).
    """
    from caesar_rest.settings import get_settings

    _apply_env(args)
    db_url = legacy_db_url(args)
    if db_url is not None:
        os.environ["CAESAR_REST_DB_URL"] = db_url
    get_settings.cache_clear()
    return get_settings()


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


def _legacy_serve_env(args: argparse.Namespace) -> dict[str, str]:
    """``CAESAR_REST_*`` variables for ``--dbhost/--dbport/--dbname`` and ``--secretfile``.

    Raises
    ------
    ValueError
        Conflicting database options, or an unreadable client secrets file.
    """
    from caesar_rest.auth.oidc import read_client_secrets

    env: dict[str, str] = {}
    db_url = legacy_db_url(args)
    if db_url is not None:
        env["CAESAR_REST_DB_URL"] = db_url
    if args.secretfile:
        for key, value in read_client_secrets(args.secretfile).items():
            env[f"CAESAR_REST_OIDC_{key.upper()}"] = value
        # The predecessor introspected every token with these client credentials: opaque
        # tokens keep working (JWTs are still checked locally), unless the setting says no.
        if "CAESAR_REST_OIDC_CLIENT_SECRET" in env:
            env["CAESAR_REST_OIDC_INTROSPECTION"] = os.environ.get(
                "CAESAR_REST_OIDC_INTROSPECTION", "true"
            )
    return env


def db_error(exc: Exception) -> str:
    """One line saying why the database could not be opened (the driver's first line)."""
    from caesar_rest.db.engine import db_error as first_line

    return first_line(exc)


def _migrate_at_start(url: str) -> str | None:
    """Upgrade the database at ``url``; an error message (one line) when it cannot be opened."""
    from sqlalchemy.exc import DBAPIError

    from caesar_rest.db.engine import make_engine
    from caesar_rest.db.migrate import upgrade

    _sqlite_folder(url)
    engine = make_engine(url)
    try:
        upgrade(engine)
    except DBAPIError as exc:
        return f"cannot open the database {_where(url)}: {db_error(exc)}"
    finally:
        engine.dispose()
    return None


def _where(url: str) -> str:
    """The database URL with its password hidden, for messages."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _sqlite_folder(url: str) -> None:
    """Create the folder of a SQLite file (``sqlite:///path``); other databases need none."""
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)


def self_signed_pair(folder: Path, host: str) -> tuple[Path, Path]:
    """Write a self-signed certificate and its key (PEM) into ``folder``; return their paths.

    The predecessor's ``--ssl`` served Flask's ``ssl_context='adhoc'``, a pair made at each
    start: this does the same, for ``host``, ``localhost`` and ``127.0.0.1``, valid one year.
    """
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host or "localhost")])
    alt: list[x509.GeneralName] = [x509.DNSName("localhost")]
    for h in {host, "127.0.0.1"}:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            if h:
                alt.append(x509.DNSName(h))
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = folder / "cert.pem", folder / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.touch(mode=0o600)
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile


def _tls_files(settings: Settings, stack: contextlib.ExitStack) -> tuple[str, str] | None:
    """The certificate and key files to serve TLS with (None: plain HTTP).

    Raises
    ------
    ValueError
        Only one of the two files is given, or a given file does not exist.
    """
    if not settings.ssl:
        return None
    cert, key = settings.ssl_certfile, settings.ssl_keyfile
    if (cert is None) != (key is None):
        raise ValueError("--ssl needs both --ssl-certfile and --ssl-keyfile (or neither)")
    if cert is None or key is None:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="caesar-tls-")))
        made = self_signed_pair(folder, settings.host)
        return str(made[0]), str(made[1])
    for path in (cert, key):
        if not path.is_file():
            raise ValueError(f"no such TLS file: {path}")
    return str(cert), str(key)


def cmd_serve(args: argparse.Namespace) -> int:
    """Migrate, then run uvicorn."""
    from caesar_rest.logconfig import configure_logging, get_logger
    from caesar_rest.settings import get_settings

    ignored = sorted(k[7:] for k, v in vars(args).items() if k.startswith("legacy_") and v)
    _apply_env(args)
    os.environ.update(legacy_backend_env(args, "backend_poll_interval"))
    try:
        os.environ.update(_legacy_serve_env(args))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    get_settings.cache_clear()
    settings: Settings = get_settings()
    configure_logging(settings)
    log = get_logger("caesar_rest.cli")
    if ignored:
        log.warning(
            "legacy_options_ignored",
            options=ignored,
            note="MongoDB options have no equivalent; use --db-url for the database",
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
    with contextlib.ExitStack() as stack:
        try:
            tls = _tls_files(settings, stack)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        if settings.ssl and not (settings.ssl_certfile and settings.ssl_keyfile):
            log.warning(
                "tls_self_signed",
                note="--ssl without --ssl-certfile/--ssl-keyfile: a self-signed pair made at "
                "start; clients must trust it or skip verification",
            )
        settings.ensure_dirs()
        problem = _migrate_at_start(settings.database_url)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 2
        _serve(settings, args.uds, tls)
    return 0


def _serve(settings: Settings, uds: str | None, tls: tuple[str, str] | None) -> None:
    """Print where, then run uvicorn until it stops."""
    import uvicorn

    from caesar_rest.httpserver import uvicorn_options

    if settings.workers > 1 and settings.metrics:
        # Request metrics are summed over the worker processes through files in this folder.
        mdir = settings.datadir.resolve().parent / f".metrics-{os.uname().nodename}-{settings.port}"
        shutil.rmtree(mdir, ignore_errors=True)
        mdir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(mdir)
    scheme = "https" if tls else "http"
    where = f"{scheme}://{settings.host}:{settings.port}"
    if uds:
        where = f"unix:{uds}" + (" (TLS)" if tls else "")
        _remove_stale_socket(uds)
    print(
        f"caesar-rest {__version__} serving on {where} "
        f"(database {_where(settings.database_url)}, data {settings.datadir})",
        flush=True,
    )
    uvicorn.run(
        "caesar_rest.api.app:app_from_env",
        factory=True,
        host=settings.host,
        port=settings.port,
        uds=uds,
        workers=settings.workers,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        timeout_graceful_shutdown=30,
        ssl_certfile=tls[0] if tls else None,
        ssl_keyfile=tls[1] if tls else None,
        # Read timeouts (headers, body pauses), keep-alive and the connection limit.
        **uvicorn_options(settings),
    )


def cmd_migrate(args: argparse.Namespace) -> int:
    """Bring the database schema to ``--revision`` (upgrade or downgrade) and say where it is.

    Only a SQLite file's folder is created (no data or job folders: a PostgreSQL deployment has
    none here); a database that cannot be opened is one line on stderr and exit code 2.
    """
    from sqlalchemy.exc import DBAPIError

    from caesar_rest.db.engine import make_engine
    from caesar_rest.db.migrate import RevisionError, migrate_to

    try:
        url = _db_settings(args).database_url
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _sqlite_folder(url)
    engine = make_engine(url)
    try:
        at = migrate_to(engine, args.revision)
    except RevisionError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except DBAPIError as exc:
        print(f"error: cannot open the database {_where(url)}: {db_error(exc)}", file=sys.stderr)
        return 2
    finally:
        engine.dispose()
    print(f"database at {at or 'base (no schema)'}: {_where(url)}")
    return 0


def cmd_find(args: argparse.Namespace, rest: list[str]) -> int:
    """Run an app on a local file, without the server, writing the job outputs to --out."""
    from caesar_rest.apps.base import LOG_RESULT, OptionError, parse_cli_options
    from caesar_rest.apps.registry import default_registry

    registry = default_registry(find_extra_apps())
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
        module = in_tree_program(argv)
        if module is not None:
            rc = run_program_here(module, argv[3:], out, logf, quiet=args.quiet)
        else:
            rc = _run_program_process(argv, out, logf, quiet=args.quiet)
    if rc == 0:
        written = [spec.filename for spec in app.results if (out / spec.filename).exists()]
        print(f"wrote {', '.join(written)} in {out}")
    else:
        print(f"error: {app.name} ended with code {rc}; see {out / 'job.log'}", file=sys.stderr)
    return rc


#: The environment variable of the ``extra_apps`` setting, the one setting ``find`` reads.
EXTRA_APPS_ENV = "CAESAR_REST_EXTRA_APPS"


def find_extra_apps(env: Mapping[str, str] | None = None, cwd: Path | None = None) -> list[str]:
    """The ``extra_apps`` setting of ``find``, read without the settings where nothing sets it.

    Building every setting (pydantic, each backend's section, the ``.env`` file) took about
    0.4 s of ``find``'s start-up, for a command that needs only the apps it may run. Only the
    environment variable (in any case, as the settings match it) or a ``.env`` file in the
    working folder can set it: then the settings are read as usual, so the value, and any
    error in them, are theirs.

    Parameters
    ----------
    env
        Environment (default: ``os.environ``).
    cwd
        Working folder (default: the current one).

    Returns
    -------
    list of str
        ``module:Class`` strings (the setting's default: none).
    """
    env = os.environ if env is None else env
    dotenv = (Path.cwd() if cwd is None else cwd) / ".env"
    if not dotenv.exists() and not any(k.upper() == EXTRA_APPS_ENV for k in env):
        return []
    from caesar_rest.settings import get_settings

    return list(get_settings().extra_apps)


def in_tree_program(argv: list[str]) -> str | None:
    """The module of an in-tree app program run as ``python -m caesar_rest.apps.X``, or None.

    Parameters
    ----------
    argv
        An app's command (:meth:`~caesar_rest.apps.base.App.command`).

    Returns
    -------
    str or None
        The module name, when ``argv`` runs one with this interpreter.
    """
    here = len(argv) >= 3 and argv[0] == sys.executable and argv[1] == "-m"
    if here and argv[2].startswith("caesar_rest.apps.") and argv[2].endswith("_run"):
        return argv[2]
    return None


def run_program_here(module: str, args: list[str], out: Path, logf: Any, quiet: bool) -> int:
    """Run an in-tree app program in this process (one interpreter start-up, not two).

    Everything written on file descriptors 1 and 2 (Python and C libraries alike) goes to
    ``logf`` and, unless ``quiet``, to this process's standard output, as with a child
    process; the working folder is ``out`` while it runs.

    Parameters
    ----------
    module
        The program's module (it has ``main(argv) -> int``).
    args
        Its arguments.
    out
        Working folder.
    logf
        Binary file receiving the log.
    quiet
        Whether to keep the log off the terminal.

    Returns
    -------
    int
        The program's exit code.
    """
    import importlib
    import threading

    from caesar_rest.apps.coldstart import loading

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    read_end, write_end = os.pipe()
    terminal = os.fdopen(os.dup(saved[0]), "wb", buffering=0)

    def pump() -> None:
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                logf.write(chunk)
                if not quiet:
                    terminal.write(chunk)

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    cwd = os.getcwd()
    try:
        os.dup2(write_end, 1)
        os.dup2(write_end, 2)
        os.close(write_end)
        os.chdir(out)
        with loading():  # the science stack, without the collector's passes over it
            program = importlib.import_module(module)
        rc = int(program.main(args))
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.chdir(cwd)
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in saved:
            os.close(fd)
        reader.join()
        terminal.close()
    return rc


def _run_program_process(argv: list[str], out: Path, logf: Any, quiet: bool) -> int:
    proc = subprocess.Popen(  # noqa: S603 - argument list, no shell
        argv, cwd=out, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdout is not None
    for line in proc.stdout:
        logf.write(line)
        if not quiet:
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
    return proc.wait()


def _accounter_parser(sub: Any) -> None:
    a = sub.add_parser(
        "accounter",
        help="store per-user usage aggregates periodically",
        description="Every --period seconds, compute every user's usage (files, sizes, jobs by "
        "state, run and CPU time) and the service totals, and store them in the database "
        "(table usage_snapshots). Takes the predecessor's run_accounter.py options.",
    )
    a.add_argument("--db-url", "--db_url", dest="db_url", help="SQLAlchemy database URL")
    a.add_argument("--datadir", help="data folder (locates the default SQLite file)")
    a.add_argument("--jobdir", help="folder of job folders")
    a.add_argument("--loglevel", help="DEBUG, INFO, WARN, ERROR")
    a.add_argument(
        "--period",
        "--job_monitoring_period",
        "--job-monitoring-period",
        dest="period",
        type=float,
        default=30.0,
        help="seconds between passes (default 30, as run_accounter.py)",
    )
    a.add_argument("--once", action="store_true", help="one pass, then exit")
    add_legacy_db_options(a)
    add_rclone_options(a)


def cmd_accounter(args: argparse.Namespace) -> int:
    """Run the accounter until SIGTERM/SIGINT (or one pass with --once)."""
    import signal
    import threading

    from sqlalchemy.exc import SQLAlchemyError

    from caesar_rest.auth.accounter import run_pass
    from caesar_rest.db.engine import make_engine, make_sessionmaker
    from caesar_rest.logconfig import configure_logging, get_logger

    try:
        settings = _db_settings(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    log = get_logger("caesar_rest.accounter")
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    stop = threading.Event()

    def _stop(_sig: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while True:
            try:
                users = run_pass(engine, sessions)
                log.info("accounter_pass", action="accounter", users=users)
            except SQLAlchemyError as exc:
                # The predecessor's loop died on its first error; this one says why and goes on
                # (or stops with --once: a script sees the failure).
                msg = f"cannot store usage in {_where(settings.database_url)}: {db_error(exc)}"
                if args.once:
                    print(f"error: {msg} (has `caesar-rest migrate` run?)", file=sys.stderr)
                    return 2
                log.error("accounter_failed", action="accounter", error=msg)
            if args.once or stop.wait(args.period):
                return 0
    finally:
        engine.dispose()


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
    m.add_argument(
        "--revision",
        default="head",
        help="target revision: head (default), base or a number such as 0001; an older one "
        "than the database's downgrades",
    )
    add_legacy_db_options(m)
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
    _accounter_parser(sub)
    add_client_commands(sub)  # upload, apps, describe, submit, status, wait, ... (a client)
    _compare_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    parser = build_parser()
    args, rest = parser.parse_known_args(legacy_argv(sys.argv[1:] if argv is None else argv))
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
    if args.command == "accounter":
        return cmd_accounter(args)
    if args.command == "compare":
        from caesar_rest.catalogue.compare import run_compare_command  # numpy/scipy on demand

        return run_compare_command(
            args.catalog_a, args.catalog_b, args.radius, args.plot, args.json
        )
    return cmd_migrate(args)


if __name__ == "__main__":
    sys.exit(main())
