"""gunicorn settings for caesar-rest: a gunicorn master with uvicorn worker processes.

    gunicorn -c deploy/gunicorn/gunicorn.conf.py
    gunicorn -c deploy/gunicorn/gunicorn.conf.py --bind unix:/run/caesar-rest/caesar-rest.sock

This replaces the predecessor's uwsgi.ini (uWSGI has no ASGI support): docs/deployment.md has
the table of what replaces each uwsgi setting. Command-line options override what is set here;
the service settings come from the environment (CAESAR_REST_*, as for ``caesar-rest serve``).

Before the first worker starts, the master does what ``caesar-rest serve`` does before it
serves: it creates the data and job folders, migrates the database and, with several workers,
makes the folder through which the workers sum their request metrics.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from caesar_rest.settings import get_settings

_settings = get_settings()

# The application factory, called once in each worker (no preload: each worker opens its own
# database pool and backends, as under ``caesar-rest serve --workers N``).
wsgi_app = "caesar_rest.api.app:app_from_env()"
# uvicorn_worker.UvicornWorker with the service's HTTP protocol: header and body read timeouts
# and the connection limit (CAESAR_REST_HEADER_TIMEOUT, _BODY_TIMEOUT, _MAX_CONNECTIONS, per
# worker process; docs/deployment.md "Timeouts").
worker_class = "caesar_rest.httpserver.UvicornWorker"

# uwsgi `socket` / `http`: CAESAR_REST_HOST and _PORT, or --bind unix:PATH on the command line.
bind = [f"{_settings.host}:{_settings.port}"]
# uwsgi `processes`: CAESAR_REST_WORKERS (or --workers). An ASGI worker serves many requests
# at once on its event loop (blocking work runs in its thread pool), so uwsgi `threads` has
# no counterpart.
workers = max(1, _settings.workers)
# uwsgi `chmod-socket 660`: the unix socket is created with this umask, so 0660 (owner and group:
# nginx's user is in the service's group).
umask = 0o117
# uwsgi `socket-timeout 65` / harakiri: a worker whose event loop has not answered gunicorn's
# heartbeat for this long is killed and replaced (requests themselves are bounded by nginx's
# proxy timeouts, uploads and downloads stream).
timeout = 120
# uwsgi `die-on-term`: SIGTERM stops gracefully; workers finish their requests within this
# many seconds, then are killed (``caesar-rest serve`` waits as long).
graceful_timeout = 30
# Idle keep-alive connections (uvicorn's timeout_keep_alive): CAESAR_REST_KEEP_ALIVE_TIMEOUT
# (default 5 s). nginx closes its idle upstream connections first (keepalive_timeout 4s in the
# upstream blocks), so that it never reuses a connection the app has just closed.
keepalive = _settings.keep_alive_timeout
# uwsgi `buffer-size 32768` (the largest request header block): nginx bounds the headers it
# passes on (large_client_header_buffers); gunicorn's limit_request_* apply to its own (WSGI)
# workers only, the uvicorn worker parses with httptools.
# X-Forwarded-* are trusted from these addresses (nginx on this host).
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1,::1")
# The app writes its own JSON access log (with the request id): no second one from gunicorn.
accesslog = None
loglevel = str(_settings.loglevel).lower()
# gunicorn's own lines (master and worker start and stop) in its plain format on stdout (the
# journal, like the start-up line of ``caesar-rest serve``): stderr carries the app's JSON
# lines, which filebeat reads.
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"},
    },
    "handlers": {
        "stdout": {
            "class": "logging.StreamHandler",
            "stream": "ext://sys.stdout",
            "formatter": "plain",
        },
    },
    "loggers": {
        "gunicorn.error": {"handlers": ["stdout"], "level": loglevel.upper(), "propagate": False},
    },
    # The app configures the rest of logging in each worker.
    "root": {"level": "WARNING", "handlers": []},
}
proc_name = "caesar-rest"
# gunicorn >= 27 opens a control socket in the home folder by default: several instances on
# one host would share it, and signals (systemctl reload/stop) are the interface here.
control_socket_disable = True


def metrics_dir(port: int) -> Path:
    """The folder of the workers' request metrics (``caesar-rest serve`` uses the same one)."""
    return _settings.datadir.resolve().parent / f".metrics-{os.uname().nodename}-{port}"


def on_starting(server: Any) -> None:
    """In the master, before any worker: folders, database migration, metrics folder."""
    from caesar_rest.db.engine import make_engine
    from caesar_rest.db.migrate import upgrade

    _settings.ensure_dirs()
    engine = make_engine(_settings.database_url)
    upgrade(engine)
    engine.dispose()
    if server.cfg.workers > 1 and _settings.metrics:
        # Set before the workers import prometheus_client (they are forked after this hook
        # and load the app then): each worker counts into its own files in this folder and
        # a scrape of any of them sums them all.
        mdir = metrics_dir(_settings.port)
        shutil.rmtree(mdir, ignore_errors=True)
        mdir.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(mdir)
