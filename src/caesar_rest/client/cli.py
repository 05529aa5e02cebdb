"""Client commands of ``caesar-rest``: upload, apps, describe, submit, status, wait, results,
download, cancel, delete and jobs, on :class:`caesar_rest.client.CaesarClient`.

Human output (tables, progress bars) goes to the terminal; ``--json`` prints one JSON document
on stdout for scripts. Progress and messages go to stderr, so stdout stays clean.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caesar_rest.client.constants import DEFAULT_URL, TOKEN_ENV, TOKEN_FILE_ENV, URL_ENV

if TYPE_CHECKING:  # imported when a command runs, so `caesar-rest serve` starts faster
    from rich.console import Console
    from rich.progress import Progress

    from caesar_rest.client.core import CaesarClient
    from caesar_rest.client.models import AppOption, Job

#: Exit codes: done, failed (or the service refused), usage error, still running when a wait
#: ran out of ``--timeout``.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_RUNNING = 0, 1, 2, 3


class UsageError(Exception):
    """A command-line mistake (exit code 2)."""


# --- parser --------------------------------------------------------------------------------
def _common() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("service")
    g.add_argument(
        "--url", help=f"service root URL (default ${URL_ENV}, else {DEFAULT_URL})", default=None
    )
    g.add_argument(
        "--token",
        help=f"bearer token (visible to other local users: prefer ${TOKEN_ENV} or --token-file)",
    )
    g.add_argument(
        "--token-file",
        dest="token_file",
        help=f"file holding the bearer token (default ${TOKEN_FILE_ENV})",
    )
    g.add_argument(
        "--retries",
        type=int,
        default=3,
        metavar="N",
        help="retry idempotent requests N times after 429/503 answers or connection errors, "
        "honouring Retry-After, and resume cut downloads (default 3; 0: never)",
    )
    g.add_argument("--json", action="store_true", help="print JSON on stdout (for scripts)")
    return p


def add_client_commands(sub: Any) -> None:
    """Add the client subcommands to the ``caesar-rest`` subparsers ``sub``."""
    common = [_common()]

    def cmd(name: str, help: str, description: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = sub.add_parser(
            name, help=help, description=description, parents=common
        )
        return parser

    p = cmd("upload", "upload a FITS image to a service", "Upload a FITS image; print its id.")
    p.add_argument("file", help="local FITS image")
    p.add_argument("--tag", help="a label stored with the file")
    p.add_argument(
        "--resumable",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="send it in chunks that a later run resumes after an interruption "
        "(default: for files over 64 MiB)",
    )

    cmd("apps", "list a service's apps", "List the apps of the service.")

    p = cmd("describe", "show an app's options", "Show the options of an app.")
    p.add_argument("app", help="app name")

    p = cmd(
        "submit",
        "run an app on an image at a service",
        "Create a job of --app on INPUT (a local FITS image, sent with the request, or the id "
        "of an uploaded file) and start it. App options follow as --name value or --flag "
        "(after INPUT), or as -o name=value. With --wait, wait for the end; with --download "
        "DIR, also fetch the results into DIR.",
    )
    p.add_argument("input", help="local FITS image or file id")
    p.add_argument("--app", required=True, help="app name (see: caesar-rest apps)")
    p.add_argument(
        "-o",
        "--option",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an app option (repeatable)",
    )
    p.add_argument("--no-run", action="store_true", help="create the job PENDING, do not start")
    p.add_argument("--run-id", dest="run_id", help="a label of yours (UWS runId)")
    p.add_argument(
        "--execution-duration",
        dest="execution_duration",
        type=int,
        help="time limit in seconds (the service clamps it)",
    )
    p.add_argument("--wait", action="store_true", help="wait until the job ends")
    p.add_argument(
        "--timeout",
        type=float,
        help=f"with --wait: give up after this many seconds (exit {EXIT_RUNNING})",
    )
    p.add_argument(
        "--download", metavar="DIR", help="download the results into DIR (implies --wait)"
    )

    p = cmd("status", "show a job", "Show a job: phase, times, parameters, results.")
    p.add_argument("job", help="job id")

    p = cmd(
        "wait",
        "wait until a job ends",
        f"Wait until the job ends: exit {EXIT_OK} when it COMPLETED, {EXIT_FAILED} when it "
        f"ended otherwise, {EXIT_RUNNING} when --timeout passed with the job still running.",
    )
    p.add_argument("job", help="job id")
    p.add_argument(
        "--timeout", type=float, help=f"give up after this many seconds (exit {EXIT_RUNNING})"
    )

    p = cmd("results", "list a job's results", "List the results of a job.")
    p.add_argument("job", help="job id")

    p = cmd("download", "download a job's results", "Download the results of a job into DIR.")
    p.add_argument("job", help="job id")
    p.add_argument("dir", nargs="?", default=".", help="target folder (default .)")
    p.add_argument(
        "--name",
        action="append",
        dest="names",
        metavar="ID",
        help="only this result (repeatable): catalog, catalog-csv, regions, preview, log, ...",
    )

    p = cmd("cancel", "abort a job", "Abort a queued or running job.")
    p.add_argument("job", help="job id")

    p = cmd("delete", "destroy a job", "Abort (if needed) and remove a job and its results.")
    p.add_argument("job", help="job id")

    p = cmd("jobs", "list your jobs", "List your jobs, oldest first (--last: newest first).")
    p.add_argument(
        "--phase", action="append", metavar="PHASE", help="only jobs in this phase (repeatable)"
    )
    p.add_argument("--after", help="only jobs created after this ISO-8601 instant")
    p.add_argument("--last", type=int, help="only the N most recent jobs")


# --- helpers -------------------------------------------------------------------------------
def _consoles() -> tuple[Console, Console]:
    from rich.console import Console

    return Console(), Console(stderr=True, log_path=False)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def _when(dt: datetime | None) -> str:
    return dt.astimezone().strftime("%Y-%m-%d %H:%M:%S") if dt else ""


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


_PHASE_STYLE = {"COMPLETED": "green", "ERROR": "red", "ABORTED": "yellow", "EXECUTING": "cyan"}


def _phase(phase: str) -> str:
    style = _PHASE_STYLE.get(phase)
    return f"[{style}]{phase}[/{style}]" if style else phase


def _parse_option_tokens(
    app: str, options: Sequence[AppOption], tokens: Sequence[str]
) -> dict[str, Any]:
    """App-option tokens, checked against the service's schema by the apps' own token parser."""
    from caesar_rest.apps.base import OptionError, parse_option_tokens

    try:
        return parse_option_tokens(tokens, {o.name: o.is_flag for o in options}, app)
    except OptionError as exc:
        raise UsageError(f"{exc}; see: caesar-rest describe {app}") from None


def _progress(err: Console) -> Progress:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=False,
    )


@contextmanager
def _upload_bar(err: Console, label: str, enabled: bool) -> Iterator[Callable[[int, int], None]]:
    if not enabled:
        yield lambda done, total: None
        return
    with _progress(err) as prog:
        task = prog.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            prog.update(task, completed=done, total=total)

        yield update


def _download(
    client: CaesarClient, err: Console, job_id: str, dest: str, names: list[str] | None, bar: bool
) -> list[Path]:
    if not bar:
        return client.download(job_id, dest, names)
    with _progress(err) as prog:
        tasks: dict[str, Any] = {}

        def update(rid: str, done: int, total: int | None) -> None:
            if rid not in tasks:
                tasks[rid] = prog.add_task(rid, total=total)
            prog.update(tasks[rid], completed=done, total=total)

        return client.download(job_id, dest, names, progress=update)


def _wait(client: CaesarClient, err: Console, job: Job, timeout: float | None, live: bool) -> Job:
    if not live:
        return client.wait(job.job_id, timeout=timeout)
    with err.status(f"job {job.job_id}: {_phase(job.phase)}") as status:

        def changed(new: Job) -> None:
            status.update(f"job {new.job_id}: {_phase(new.phase)}")
            err.log(f"{new.job_id} {_phase(new.phase)}")

        return client.wait(job.job_id, timeout=timeout, on_change=changed)


def _show_job(out: Console, job: Job) -> None:
    from rich.table import Table

    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("job", job.job_id)
    table.add_row("app", job.app)
    table.add_row("phase", _phase(job.phase))
    if job.run_id:
        table.add_row("run id", job.run_id)
    table.add_row("owner", job.owner or "")
    table.add_row("created", _when(job.creation_time))
    table.add_row("started", _when(job.start_time))
    table.add_row("ended", _when(job.end_time))
    table.add_row("time limit", f"{job.execution_duration} s")
    table.add_row("destruction", _when(job.destruction))
    if job.message:
        table.add_row("message", job.message)
    if job.error:
        table.add_row("error", f"[red]{job.error}[/red]")
    params = ", ".join(f"{k}={v}" for k, v in job.parameters.items())
    table.add_row("parameters", params)
    real = [r.id for r in job.results if not r.alias_of]
    table.add_row("results", ", ".join(real))
    out.print(table)


def _show_results(out: Console, job_id: str, results: Sequence[Any]) -> None:
    from rich.table import Table

    table = Table(title=f"results of {job_id}")
    for col in ("id", "size", "type", "url"):
        table.add_column(col)
    for r in results:
        rid = f"{r.id} (= {r.alias_of})" if r.alias_of else r.id
        table.add_row(rid, _size(r.size), r.mime_type, r.href)
    out.print(table)


def _show_files(out: Console, files: Sequence[Path]) -> None:
    from rich.table import Table

    table = Table(title="downloaded")
    table.add_column("file")
    table.add_column("size", justify="right")
    for f in files:
        table.add_row(str(f), _size(f.stat().st_size))
    out.print(table)


# --- commands ------------------------------------------------------------------------------
#: What every command gets: parsed arguments, app-option tokens, the client, stdout and stderr.
Command = Callable[[argparse.Namespace, list[str], "CaesarClient", "Console", "Console"], int]


def _emit(out: Console, args: argparse.Namespace, data: Any, human: Callable[[], None]) -> int:
    # Human output on the terminal, or one JSON document for scripts.
    if args.json:
        _print_json(data)
    else:
        human()
    return EXIT_OK


def _cmd_upload(
    args: argparse.Namespace, rest: list[str], client: CaesarClient, out: Console, err: Console
) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise UsageError(f"no such file: {path}")
    with _upload_bar(err, path.name, not args.json) as bar:
        info = client.upload(path, tag=args.tag, progress=bar, resumable=args.resumable)
    return _emit(
        out,
        args,
        info.to_dict(),
        lambda: out.print(
            f"uploaded {info.filename} ({_size(info.size)}) as [bold]{info.file_id}[/bold]"
        ),
    )


def _cmd_apps(
    args: argparse.Namespace, rest: list[str], client: CaesarClient, out: Console, err: Console
) -> int:
    apps = client.apps()

    def show() -> None:
        from rich.table import Table

        table = Table(title="apps")
        for col in ("app", "available", "description"):
            table.add_column(col)
        for a in apps:
            avail = "yes" if a.available else f"[red]no[/red] {a.reason or ''}"
            table.add_row(a.name, avail, a.description)
        out.print(table)

    return _emit(out, args, [a.to_dict() for a in apps], show)


def _option_range(o: AppOption) -> str:
    if o.allowed_values:
        return "|".join(o.allowed_values)
    if o.minimum is not None or o.maximum is not None:
        lo = "" if o.minimum is None else o.minimum
        hi = "" if o.maximum is None else o.maximum
        return f"{lo}..{hi}"
    return ""


def _cmd_describe(
    args: argparse.Namespace, rest: list[str], client: CaesarClient, out: Console, err: Console
) -> int:
    options = client.describe(args.app)

    def show() -> None:
        from rich.table import Table

        table = Table(title=f"options of {args.app}")
        for col in ("option", "type", "default", "range", "description"):
            table.add_column(col)
        for o in options:
            kind = "flag" if o.is_flag else o.type
            default = "" if o.default is None else str(o.default)
            table.add_row(f"--{o.name}", kind, default, _option_range(o), o.description)
        out.print(table)

    return _emit(out, args, [o.to_dict() for o in options], show)


def _cmd_status(
    args: argparse.Namespace, rest: list[str], client: CaesarClient, out: Console, err: Console
) -> int:
    job = client.status(args.job)
    return _emit(out, args, job.to_dict(), lambda: _show_job(out, job))


def _cmd_wait(
    args: argparse.Namespace, rest: list[str], client: CaesarClient, out: Console, err: Console
) -> int:
    job = _wait(client, err, client.status(args.job), args.timeout, not args.json)
    _emit(out, args, job.to_dict(), lambda: _show_job(out, job))
    return EXIT_OK if job.succeeded else EXIT_FAILED


def _cmd_results(
    args: argparse.Namespace, rest: list[str], client: CaesarClient, out: Console, err: Console
) -> int:
    results = client.results(args.job)
    data = [r.to_dict() for r in results]
    return _emit(out, args, data, lambda: _show_results(out, args.job, results))


def _cmd_download(
    args: argparse.Namespace, rest: list[str], client: CaesarClient, out: Console, err: Console
) -> int:
    files = _download(client, err, args.job, args.dir, args.names, not args.json)
    return _emit(out, args, [str(f) for f in files], lambda: _show_files(out, files))


def _cmd_cancel(
    args: argparse.Namespace, rest: list[str], client: CaesarClient, out: Console, err: Console
) -> int:
    job = client.cancel(args.job)
    return _emit(
        out, args, job.to_dict(), lambda: out.print(f"job {job.job_id}: {_phase(job.phase)}")
    )


def _cmd_delete(
    args: argparse.Namespace, rest: list[str], client: CaesarClient, out: Console, err: Console
) -> int:
    client.delete(args.job)
    return _emit(
        out,
        args,
        {"job_id": args.job, "deleted": True},
        lambda: out.print(f"job {args.job} deleted"),
    )


def _cmd_jobs(
    args: argparse.Namespace, rest: list[str], client: CaesarClient, out: Console, err: Console
) -> int:
    after = None
    if args.after:
        try:
            after = datetime.fromisoformat(args.after)
        except ValueError:
            raise UsageError(f"--after takes an ISO-8601 instant, not {args.after!r}") from None
    refs = client.jobs(phases=args.phase, after=after, last=args.last)

    def show() -> None:
        from rich.table import Table

        table = Table(title=f"jobs ({len(refs)})")
        for col in ("job", "app", "input", "phase", "run id", "created"):
            table.add_column(col)
        for r in refs:
            table.add_row(
                r.job_id,
                r.app,
                r.input_name or r.input_file,
                _phase(r.phase),
                r.run_id or "",
                _when(r.creation_time),
            )
        out.print(table)

    return _emit(out, args, [r.to_dict() for r in refs], show)


def _submit(
    args: argparse.Namespace, rest: list[str], client: CaesarClient, out: Console, err: Console
) -> int:
    human = not args.json
    options: dict[str, Any] = {}
    for item in args.option:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise UsageError(f"-o takes NAME=VALUE, not {item!r}")
        options[name] = value
    if rest:
        options.update(_parse_option_tokens(args.app, client.describe(args.app), rest))
    wait = args.wait or bool(args.download)
    if args.no_run and wait:
        raise UsageError("--no-run cannot be combined with --wait or --download")
    local = Path(args.input)
    label = local.name if local.is_file() else args.input
    with _upload_bar(err, label, human and local.is_file()) as bar:
        job = client.submit(
            args.app,
            local if local.is_file() else args.input,
            options,
            run=not args.no_run,
            run_id=args.run_id,
            execution_duration=args.execution_duration,
            progress=bar,
        )
    if human:
        err.print(f"job [bold]{job.job_id}[/bold] created: {_phase(job.phase)}")
    if not wait:
        if human:
            out.print(job.job_id)
        else:
            _print_json(job.to_dict())
        return EXIT_OK
    job = _wait(client, err, job, args.timeout, human)
    files: list[Path] = []
    if args.download:
        files = _download(client, err, job.job_id, args.download, None, human)
    if human:
        _show_job(out, job)
        if files:
            _show_files(out, files)
        if not job.succeeded:
            err.print(f"[red]job {job.job_id} ended {job.phase}: {job.error or job.message}[/red]")
    else:
        _print_json({"job": job.to_dict(), "files": [str(f) for f in files]})
    return EXIT_OK if job.succeeded else EXIT_FAILED


#: The command of each client subcommand.
_COMMANDS: dict[str, Command] = {
    "upload": _cmd_upload,
    "apps": _cmd_apps,
    "describe": _cmd_describe,
    "submit": _submit,
    "status": _cmd_status,
    "wait": _cmd_wait,
    "results": _cmd_results,
    "download": _cmd_download,
    "cancel": _cmd_cancel,
    "delete": _cmd_delete,
    "jobs": _cmd_jobs,
}
#: The client subcommands of ``caesar-rest``, in the order ``--help`` lists them.
CLIENT_COMMANDS: tuple[str, ...] = tuple(_COMMANDS)


def _cmd(args: argparse.Namespace, rest: list[str], client: CaesarClient) -> int:
    command = _COMMANDS.get(args.command)
    if command is None:
        raise UsageError(f"unknown command {args.command}")
    out, err = _consoles()
    return command(args, rest, client, out, err)


def run_client_command(args: argparse.Namespace, rest: list[str]) -> int:
    """Run a client subcommand; return the exit code (0 ok, 1 failed, 2 usage, 3 still running
    after a wait's ``--timeout``)."""
    if rest and args.command != "submit":
        print(f"error: unrecognized arguments: {' '.join(rest)}", file=sys.stderr)
        return EXIT_USAGE
    from caesar_rest.client.core import CaesarClient, CaesarError, CaesarTimeout, RetryPolicy

    if args.retries < 0:
        print("error: --retries takes a count >= 0", file=sys.stderr)
        return EXIT_USAGE
    retry = RetryPolicy(attempts=args.retries + 1)
    try:
        with CaesarClient(
            args.url, token=args.token, token_file=args.token_file, retry=retry
        ) as client:
            return _cmd(args, rest, client)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CaesarTimeout as exc:  # the job goes on: not a failure
        print(f"still running: {exc}", file=sys.stderr)
        return EXIT_RUNNING
    except CaesarError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
