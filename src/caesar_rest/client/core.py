"""A Python client of caesar-rest: upload images, run apps, wait, fetch results.

Jobs go through the UWS 1.1 interface (``/uws/jobs``, JSON mirror); uploads, apps and option
schemas through the v1.0 API. Waiting uses the server's blocking ``WAIT``, so a client makes
one request per phase change instead of polling.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import Message
from email.utils import parsedate_to_datetime
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urljoin

import httpx

from caesar_rest import __version__
from caesar_rest.client.constants import DEFAULT_URL, TOKEN_ENV, TOKEN_FILE_ENV, URL_ENV
from caesar_rest.client.models import (
    FINAL_PHASES,
    AppInfo,
    AppOption,
    FileInfo,
    Job,
    JobRef,
    ResultInfo,
)
from caesar_rest.client.resumable import DEFAULT_CHUNK, ResumableUpload, ResumeError

V1 = "/caesar/api/v1.0"
#: Files larger than this are uploaded by the resumable (tus) upload unless told otherwise.
RESUMABLE_ABOVE = 64 * 1024 * 1024
UWS_JOBS = "/uws/jobs"
CHUNK = 1024 * 1024
#: Longest single WAIT the client asks for (the server may cap it lower).
WAIT_STEP = 60.0
#: Phases in which the server blocks a WAIT; in others the client sleeps between looks.
_BLOCKING = frozenset({"PENDING", "QUEUED", "EXECUTING"})
_FILE_ID = re.compile(r"^[0-9a-f]{32}$")

#: Methods whose repetition has no further effect (RFC 9110 §9.2.2): the only ones retried.
IDEMPOTENT = frozenset({"GET", "HEAD", "PUT", "DELETE", "OPTIONS"})
#: Answers after which the request is tried again: too many requests, service unavailable.
RETRY_STATUSES = frozenset({429, 503})
#: Transport failures that are tried again: no connection, or a connection dropped.
_RETRY_ERRORS = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.RemoteProtocolError,
    httpx.ReadError,
)

#: ``progress(bytes_done, bytes_total)``.
Progress = Callable[[int, int], None]
#: ``progress(result_id, bytes_done, bytes_total or None)``.
DownloadProgress = Callable[[str, int, int | None], None]


class CaesarError(Exception):
    """The service refused a request, or could not be reached.

    Attributes
    ----------
    status
        The HTTP status (None when there was no answer).
    message
        The service's explanation.
    body
        The JSON error body, when there was one.
    """

    def __init__(self, status: int | None, message: str, body: Any = None):
        super().__init__(f"{status}: {message}" if status else message)
        self.status = status
        self.message = message
        self.body = body


class CaesarTimeout(CaesarError):
    """A wait ran out of time before the job ended."""


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently idempotent requests are tried again.

    A request is tried again after a 429 or 503 answer or a connection error, up to
    ``attempts`` tries in all; the pause is the answer's ``Retry-After`` (seconds or an HTTP
    date) when it gives one, else ``backoff`` doubled at each try, and never more than
    ``max_delay``. A cut download is resumed from where it stopped with the same budget.

    Attributes
    ----------
    attempts
        Tries in all (1: no retry).
    backoff
        First pause in seconds.
    max_delay
        Longest pause in seconds (a longer ``Retry-After`` is cut to it).
    """

    attempts: int = 4
    backoff: float = 0.5
    max_delay: float = 30.0

    def delay(self, tried: int, response: httpx.Response | None = None) -> float:
        """Seconds to pause after the ``tried``-th failed try (1-based).

        Parameters
        ----------
        tried
            Tries made so far.
        response
            The refusing answer, whose ``Retry-After`` wins when it is readable.

        Returns
        -------
        float
            The pause, at most :attr:`max_delay`.
        """
        wait = self.backoff * 2.0 ** (tried - 1)
        after = retry_after(response) if response is not None else None
        if after is not None:
            wait = after
        return max(0.0, min(wait, self.max_delay))


def retry_after(response: httpx.Response) -> float | None:
    """The pause a ``Retry-After`` header asks for, in seconds (None when absent or unreadable).

    Parameters
    ----------
    response
        The answer.

    Returns
    -------
    float or None
        Seconds from now (an HTTP date in the past gives 0).
    """
    value = response.headers.get("retry-after")
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def resolve_token(token: str | None = None, token_file: str | Path | None = None) -> str | None:
    """The bearer token: the argument, else the file, else ``$CAESAR_REST_TOKEN``, else the
    file named by ``$CAESAR_REST_TOKEN_FILE``; None when there is none.

    Raises
    ------
    CaesarError
        When a token file cannot be read or is empty.
    """
    if token:
        return token.strip()
    path = token_file
    if path is None and os.environ.get(TOKEN_ENV):
        return os.environ[TOKEN_ENV].strip()
    if path is None:
        path = os.environ.get(TOKEN_FILE_ENV) or None
    if path is None:
        return None
    try:
        text = Path(path).expanduser().read_text().strip()
    except OSError as exc:
        raise CaesarError(None, f"cannot read the token file {path}: {exc}") from None
    if not text:
        raise CaesarError(None, f"the token file {path} is empty")
    return text


def _form_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _quote_header(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "").replace("\n", "")


class _MultipartFile:
    """A streamed multipart/form-data body: fields, then one file part named ``file``."""

    def __init__(self, fields: Iterable[tuple[str, str]], path: Path, progress: Progress | None):
        self.path = path
        self.size = path.stat().st_size
        self.progress = progress
        self.boundary = uuid.uuid4().hex
        b = self.boundary
        head = "".join(
            f'--{b}\r\nContent-Disposition: form-data; name="{_quote_header(k)}"\r\n\r\n{v}\r\n'
            for k, v in fields
        )
        head += (
            f'--{b}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="{_quote_header(path.name)}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        self.head = head.encode("utf-8")
        self.tail = f"\r\n--{b}--\r\n".encode()

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    @property
    def length(self) -> int:
        return len(self.head) + self.size + len(self.tail)

    def __iter__(self) -> Iterator[bytes]:
        yield self.head
        sent = 0
        if self.progress:
            self.progress(0, self.size)
        with open(self.path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                sent += len(chunk)
                yield chunk
                if self.progress:
                    self.progress(sent, self.size)
        yield self.tail


def _filename(response: httpx.Response, fallback: str) -> str:
    """The file name of a download (Content-Disposition), reduced to a safe base name."""
    name = ""
    header = response.headers.get("content-disposition")
    if header:
        msg = Message()
        msg["content-disposition"] = header
        name = msg.get_filename() or ""
    name = name.replace("\\", "/").rsplit("/", 1)[-1].lstrip(".")
    return name or fallback


@dataclass
class _Partial:
    """A download under way: where it goes and how much of it has arrived.

    The bytes go to ``tmp`` (``.<result>.<hash of the URL>.part`` in the target folder) and
    what is needed to resume them to ``meta`` beside it (the URL, the server's validator, the
    full size). A download cut short leaves both, so that the next download of the same URL,
    in this process or a later one, asks for the rest (``Range`` from the part's size, with
    ``If-Range``); a file changed since comes whole and replaces the part.
    """

    tmp: Path
    meta: Path
    url: str
    target: Path | None = None
    done: int = 0
    total: int | None = None
    validator: str | None = None

    @classmethod
    def open(cls, out: Path, rid: str, url: str) -> _Partial:
        """The state of ``url``'s download into ``out``, resumed from a part left on disk."""
        key = hashlib.sha256(url.encode()).hexdigest()[:16]
        tmp = out / f".{rid}.{key}.part"
        state = cls(tmp=tmp, meta=tmp.with_name(tmp.name + ".json"), url=url)
        try:
            saved = json.loads(state.meta.read_text())
            size = tmp.stat().st_size
        except (OSError, ValueError):
            state.discard()
            return state
        if isinstance(saved, dict) and saved.get("url") == url and size > 0:
            state.done, state.total = size, saved.get("total")
            state.validator = saved.get("validator")
        return state

    def save(self) -> None:
        """Record what resuming needs (before the body's bytes are written)."""
        data = {"url": self.url, "validator": self.validator, "total": self.total}
        self.meta.write_text(json.dumps(data))

    def restart(self) -> None:
        """Forget the bytes so far: the next request asks for the whole file."""
        self.done, self.total, self.validator = 0, None, None

    def discard(self) -> None:
        """Remove the part and its record."""
        for path in (self.tmp, self.meta):
            with contextlib.suppress(OSError):
                path.unlink()


class _Restart(Exception):
    """The part on disk cannot be continued (416, or another size): fetch from the start."""


def _range_total(header: str | None) -> int | None:
    """The full size from ``Content-Range: bytes a-b/size`` (None when not given)."""
    if not header or "/" not in header:
        return None
    size = header.rsplit("/", 1)[1].strip()
    return int(size) if size.isdigit() else None


def _not_continuable(response: httpx.Response, state: _Partial) -> bool:
    """Whether the answer to a resumed request says the part cannot be continued: 416 (the
    file is no longer than the part), or a part of a file of another size."""
    if response.status_code == 416:
        return True
    if response.status_code != 206:
        return False
    total = _range_total(response.headers.get("content-range"))
    return state.total is not None and total is not None and total != state.total


def _cut_message(rid: str, exc: Exception, state: _Partial) -> str:
    """The error of a download given up, saying what was kept for the next try."""
    msg = f"download of {rid} failed: {exc}"
    if state.done and state.validator:
        msg += f" ({state.done} bytes kept in {state.tmp}; downloading again resumes)"
    return msg


class CaesarClient:
    """Client of one caesar-rest service.

    Parameters
    ----------
    url
        Service root (default ``$CAESAR_REST_URL``, else ``http://127.0.0.1:8080``).
    token
        Bearer token; else read from ``token_file``, ``$CAESAR_REST_TOKEN`` or the file named
        by ``$CAESAR_REST_TOKEN_FILE`` (see :func:`resolve_token`).
    token_file
        File holding the token.
    timeout
        Timeout of ordinary requests in seconds (waits get their own).
    verify
        TLS verification: True, False or a CA bundle path.
    transport
        An httpx transport (tests).
    retry
        Retries of idempotent requests and resumption of cut downloads (default
        :class:`RetryPolicy()`: 4 tries, pauses from 0.5 s doubling, ``Retry-After`` honoured).
    sleep
        How to pause between tries (tests).

    Examples
    --------
    >>> with CaesarClient("http://127.0.0.1:8080") as c:  # doctest: +SKIP
    ...     job = c.submit("sep", "image.fits", {"seedthr": 5})
    ...     job = c.wait(job.job_id)
    ...     c.download(job.job_id, "out")
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        token_file: str | Path | None = None,
        timeout: float = 60.0,
        verify: bool | str = True,
        transport: httpx.BaseTransport | None = None,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self.url = (url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/")
        # X-CAESAR-Client: a non-browser client, let through the cross-site check.
        headers = {"User-Agent": f"caesar-rest-client/{__version__}", "X-CAESAR-Client": "python"}
        tok = resolve_token(token, token_file)
        if tok:
            headers["Authorization"] = f"Bearer {tok}"
        self.timeout = timeout
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=timeout,
            verify=verify,
            transport=transport,
        )

    # --- plumbing ------------------------------------------------------------------------
    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> CaesarClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        # Only idempotent requests are tried again: a POST may have had its effect.
        attempts = max(1, self.retry.attempts) if method.upper() in IDEMPOTENT else 1
        tried = 0
        while True:
            tried += 1
            try:
                response = self._http.request(method, url, **kw)
            except _RETRY_ERRORS as exc:
                if tried >= attempts:
                    raise self._transport_error(exc) from None
                self._sleep(self.retry.delay(tried))
                continue
            except httpx.HTTPError as exc:
                raise self._transport_error(exc) from None
            if response.status_code in RETRY_STATUSES and tried < attempts:
                self._sleep(self.retry.delay(tried, response))
                continue
            self._check(response)
            return response

    def _transport_error(self, exc: httpx.HTTPError) -> CaesarError:
        if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
            return CaesarError(None, f"{self.url} did not answer in time: {exc}")
        return CaesarError(None, f"cannot reach {self.url}: {exc}")

    @staticmethod
    def _check(response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        body: Any = None
        message = response.reason_phrase
        try:
            response.read()
            body = response.json()
            if isinstance(body, dict) and body.get("status"):
                message = str(body["status"])
        except ValueError:
            text = response.text.strip()
            message = text[:500] or message
        raise CaesarError(response.status_code, message, body)

    def _json(self, method: str, url: str, **kw: Any) -> Any:
        headers = {"Accept": "application/json", **kw.pop("headers", {})}
        return self._request(method, url, headers=headers, **kw).json()

    def _job_url(self, job_id: str) -> str:
        if not re.fullmatch(r"[0-9A-Za-z-]{1,64}", job_id):
            raise CaesarError(None, f"not a job id: {job_id!r}")
        return f"{UWS_JOBS}/{job_id}"

    def _post_then_get(self, url: str, data: Mapping[str, str]) -> Job:
        """POST a UWS change (303), then read the job it points to."""
        r = self._request("POST", url, data=dict(data), follow_redirects=False)
        location = r.headers.get("location") or url
        return Job.from_json(self._json("GET", urljoin(self.url + "/", location)))

    # --- files and apps ------------------------------------------------------------------
    def upload(
        self,
        path: str | Path,
        tag: str | None = None,
        progress: Progress | None = None,
        resumable: bool | None = None,
        chunk_size: int = DEFAULT_CHUNK,
        state_dir: str | Path | None = None,
    ) -> FileInfo:
        """Upload a FITS image (streamed); ``progress(done, total)`` follows the bytes sent.

        Parameters
        ----------
        path
            The local file.
        tag
            A label stored with the file.
        progress
            ``progress(bytes_done, bytes_total)``.
        resumable
            Send it by the resumable (tus) upload, in chunks of ``chunk_size`` bytes: a cut
            connection is resumed where the server stopped, and so is an interrupted earlier
            run of the same upload (its URL is kept under ``state_dir``, by default
            ``~/.cache/caesar-rest/uploads``). Default: for files over
            :data:`RESUMABLE_ABOVE` bytes.
        chunk_size
            Bytes per request of a resumable upload.
        state_dir
            Where a resumable upload keeps its URL until it is complete.

        Returns
        -------
        FileInfo
            The stored file, with the id to submit jobs on.
        """
        path = Path(path)
        if resumable is None:
            resumable = path.stat().st_size > RESUMABLE_ABOVE
        if resumable:
            return self._upload_resumable(path, tag, progress, chunk_size, state_dir)
        body = _MultipartFile([("tag", tag)] if tag else [], Path(path), progress)
        r = self._request(
            "POST",
            f"{V1}/upload",
            content=iter(body),
            headers={"Content-Type": body.content_type, "Content-Length": str(body.length)},
            timeout=httpx.Timeout(self.timeout, write=None, read=None),
        )
        return FileInfo.from_upload(r.json())

    def _upload_resumable(
        self,
        path: Path,
        tag: str | None,
        progress: Progress | None,
        chunk_size: int,
        state_dir: str | Path | None,
    ) -> FileInfo:
        up = ResumableUpload(
            self._http,
            f"{V1}/files/tus",
            path,
            tag=tag,
            chunk_size=chunk_size,
            state_dir=Path(state_dir) if state_dir is not None else None,
            tries=max(1, self.retry.attempts),
            sleep=lambda tried: self._sleep(self.retry.delay(tried)),
            progress=progress,
        )
        try:
            reply = up.run()
        except ResumeError as exc:
            raise CaesarError(exc.status, exc.message, exc.body) from None
        except httpx.HTTPError as exc:
            raise self._transport_error(exc) from None
        return FileInfo.from_upload(reply)

    def apps(self) -> list[AppInfo]:
        """The service's apps."""
        data = self._json("GET", f"{V1}/apps")
        details = data.get("details") or [{"name": n} for n in data.get("apps", [])]
        return [
            AppInfo(
                name=str(d["name"]),
                description=str(d.get("description") or ""),
                available=bool(d.get("available", True)),
                reason=d.get("reason"),
            )
            for d in details
        ]

    def describe(self, app: str) -> list[AppOption]:
        """The options of ``app``, in the service's order."""
        data = self._json("GET", f"{V1}/app/{app}/describe")
        return [AppOption.from_describe(name, spec) for name, spec in data.items()]

    # --- jobs ----------------------------------------------------------------------------
    def submit(
        self,
        app: str,
        image: str | Path,
        options: Mapping[str, Any] | None = None,
        run: bool = True,
        run_id: str | None = None,
        execution_duration: int | None = None,
        destruction: datetime | None = None,
        progress: Progress | None = None,
    ) -> Job:
        """Create a job of ``app`` on ``image`` and (with ``run``) start it.

        Parameters
        ----------
        app
            App name (see :meth:`apps`).
        image
            A file id from :meth:`upload`, or the path of a local FITS image, which is sent
            with the request (``progress`` follows it).
        options
            The app's options by name (see :meth:`describe`).
        run
            Start at once (UWS ``PHASE=RUN``); else the job waits in PENDING for :meth:`run`.
        run_id, execution_duration, destruction
            UWS job controls: a label of yours, the time limit in seconds (the server clamps
            it), and when the job and its results are removed.

        Returns
        -------
        Job
            The new job.
        """
        fields: list[tuple[str, str]] = [("app", app)]
        fields += [(k, _form_value(v)) for k, v in (options or {}).items()]
        if run:
            fields.append(("PHASE", "RUN"))
        if run_id is not None:
            fields.append(("RUNID", run_id))
        if execution_duration is not None:
            fields.append(("EXECUTIONDURATION", str(int(execution_duration))))
        if destruction is not None:
            when = destruction if destruction.tzinfo else destruction.replace(tzinfo=UTC)
            fields.append(("DESTRUCTION", when.isoformat()))
        text = str(image)
        if isinstance(image, str) and _FILE_ID.match(text) and not Path(text).exists():
            r = self._request(
                "POST", UWS_JOBS, data=dict([*fields, ("file", text)]), follow_redirects=False
            )
        else:
            path = Path(image)
            if not path.is_file():
                raise CaesarError(None, f"no such file: {path} (and not a file id)")
            body = _MultipartFile(fields, path, progress)
            r = self._request(
                "POST",
                UWS_JOBS,
                content=iter(body),
                headers={"Content-Type": body.content_type, "Content-Length": str(body.length)},
                follow_redirects=False,
                timeout=httpx.Timeout(self.timeout, write=None, read=None),
            )
        location = r.headers.get("location")
        if r.status_code != 303 or not location:
            raise CaesarError(r.status_code, "the service did not answer with the new job")
        return Job.from_json(self._json("GET", urljoin(self.url + "/", location)))

    def status(self, job_id: str) -> Job:
        """The job now."""
        return Job.from_json(self._json("GET", self._job_url(job_id)))

    def run(self, job_id: str) -> Job:
        """Start a PENDING job."""
        return self._post_then_get(f"{self._job_url(job_id)}/phase", {"PHASE": "RUN"})

    def cancel(self, job_id: str) -> Job:
        """Abort the job (nothing happens to a job that has ended)."""
        return self._post_then_get(f"{self._job_url(job_id)}/phase", {"PHASE": "ABORT"})

    def delete(self, job_id: str) -> None:
        """Destroy the job and its results (aborting it if it runs)."""
        # Not following the 303: it points to the whole job list.
        self._request("DELETE", self._job_url(job_id), follow_redirects=False)

    def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        on_change: Callable[[Job], None] | None = None,
    ) -> Job:
        """Wait until the job ends, with the server's blocking WAIT (no busy polling).

        Parameters
        ----------
        timeout
            Seconds to wait at most (None: as long as it takes).
        on_change
            Called with the job at each phase change seen.

        Raises
        ------
        CaesarTimeout
            When ``timeout`` passes first.
        CaesarError
            When the job is PENDING (created without running: nothing would happen).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        job = self.status(job_id)
        if job.phase == "PENDING":
            raise CaesarError(None, f"job {job_id} is PENDING: start it first (run)")
        pause = 0.5
        while job.phase not in FINAL_PHASES:
            left = WAIT_STEP if deadline is None else deadline - time.monotonic()
            if left <= 0:
                raise CaesarTimeout(None, f"job {job_id} still {job.phase} after {timeout} s")
            step = min(WAIT_STEP, left)
            if job.phase in _BLOCKING:
                data = self._json(
                    "GET",
                    self._job_url(job_id),
                    params={"WAIT": str(max(1, int(step))), "PHASE": job.phase},
                    timeout=httpx.Timeout(self.timeout, read=step + self.timeout),
                )
                new = Job.from_json(data)
            else:  # HELD, SUSPENDED, UNKNOWN: the server answers at once; look now and then
                time.sleep(min(pause, step))
                pause = min(pause * 1.5, 10.0)
                new = self.status(job_id)
            if new.phase != job.phase and on_change is not None:
                on_change(new)
            job = new
        return job

    def results(self, job_id: str) -> list[ResultInfo]:
        """The job's results (aliases included, marked by ``alias_of``)."""
        data = self._json("GET", f"{self._job_url(job_id)}/results")
        return [ResultInfo.from_json(r) for r in data.get("results", [])]

    def download(
        self,
        job_id: str,
        dest: str | Path = ".",
        names: Iterable[str] | None = None,
        progress: DownloadProgress | None = None,
    ) -> list[Path]:
        """Download the job's results into ``dest`` (created if needed).

        Parameters
        ----------
        names
            Result ids to fetch (default: all, without aliases).
        progress
            ``progress(result_id, done, total)`` as bytes arrive.

        Returns
        -------
        list of Path
            The files written, named as the service names them (``catalog.vot``, ...).
        """
        wanted = set(names) if names is not None else None
        results = self.results(job_id)
        if wanted is not None:
            unknown = wanted - {r.id for r in results}
            if unknown:
                raise CaesarError(404, f"job {job_id} has no result {', '.join(sorted(unknown))}")
        out = Path(dest)
        out.mkdir(parents=True, exist_ok=True)
        written: list[Path] = []
        for res in results:
            if wanted is None and res.alias_of:
                continue
            if wanted is not None and res.id not in wanted:
                continue
            written.append(self._download_one(res, out, progress))
        return written

    def _download_one(self, res: ResultInfo, out: Path, progress: DownloadProgress | None) -> Path:
        """Fetch one result into ``out``; a cut transfer is resumed with a ``Range`` request,
        in this call and, from the part it leaves on disk, in a later one."""
        url = urljoin(self.url + "/", res.href)
        state = _Partial.open(out, res.id, url)
        tried = 0
        try:
            while True:
                tried += 1
                try:
                    response = self._fetch_part(url, res.id, out, state, progress)
                except _Restart:
                    state.restart()  # bytes already sent do not count as a try
                    tried -= 1
                    continue
                except _RETRY_ERRORS as exc:
                    if tried >= max(1, self.retry.attempts):
                        raise CaesarError(None, _cut_message(res.id, exc, state)) from None
                    self._sleep(self.retry.delay(tried))
                    continue
                except httpx.HTTPError as exc:
                    raise CaesarError(None, _cut_message(res.id, exc, state)) from None
                if response is not None and tried < max(1, self.retry.attempts):
                    self._sleep(self.retry.delay(tried, response))
                    continue
                if response is not None:
                    self._check(response)
                assert state.target is not None
                os.replace(state.tmp, state.target)
                state.discard()
                return state.target
        except BaseException:
            if not (state.done and state.validator):
                state.discard()  # nothing a later call could verify and continue
            raise

    def _fetch_part(
        self,
        url: str,
        rid: str,
        out: Path,
        state: _Partial,
        progress: DownloadProgress | None,
    ) -> httpx.Response | None:
        """One GET of a download, from ``state.done`` on; the answer when it is to be retried
        (429/503), else None once the body is in ``state.tmp``."""
        headers: dict[str, str] = {}
        if state.done:
            headers["Range"] = f"bytes={state.done}-"
            if state.validator:
                # A result that changed since is sent whole (200), not spliced.
                headers["If-Range"] = state.validator
        with self._http.stream("GET", url, headers=headers) as r:
            if r.status_code in RETRY_STATUSES:
                r.read()  # a short refusal, read for its message
                return r
            if state.done and _not_continuable(r, state):
                r.read()
                raise _Restart
            self._check(r)
            if state.target is None:
                state.target = out / _filename(r, rid)
            if r.status_code != 206:  # the whole file: (re)start from its first byte
                state.done = 0
                state.total = int(r.headers.get("content-length", 0)) or None
            else:
                state.total = _range_total(r.headers.get("content-range")) or state.total
            state.validator = r.headers.get("etag") or r.headers.get("last-modified")
            state.save()
            with open(state.tmp, "ab" if state.done else "wb") as fh:
                # Chunks as they arrive: a sized iterator would hold back what a cut loses.
                for chunk in r.iter_bytes():
                    fh.write(chunk)
                    state.done += len(chunk)
                    if progress:
                        progress(rid, state.done, state.total)
        return None

    def jobs(
        self,
        phases: Iterable[str] | None = None,
        after: datetime | None = None,
        last: int | None = None,
        inputs: bool = True,
    ) -> list[JobRef]:
        """The caller's jobs (UWS filters: any of ``phases``, created ``after``, ``last`` n).

        With ``inputs``, each job's app, input file id and the input's file name are filled
        in from the v1.0 job and file lists (two more requests; left empty when the service
        does not answer them).
        """
        params: list[tuple[str, str]] = [("PHASE", p.upper()) for p in phases or ()]
        if after is not None:
            when = after if after.tzinfo else after.replace(tzinfo=UTC)
            params.append(("AFTER", when.isoformat()))
        if last is not None:
            params.append(("LAST", str(last)))
        data = self._json("GET", UWS_JOBS, params=params)
        refs = [JobRef.from_json(j) for j in data.get("jobs", [])]
        if inputs and refs:
            self._add_inputs(refs)
        return refs

    def _add_inputs(self, refs: list[JobRef]) -> None:
        try:
            jobs = self._json("GET", f"{V1}/jobs")
            files = self._json("GET", f"{V1}/fileids")
        except CaesarError:
            return  # the list stays usable without them
        names = {
            str(f.get("fileid")): str(f.get("filename_orig") or "")
            for f in files
            if isinstance(f, dict)
        }
        by_id = {str(j.get("job_id")): j for j in jobs if isinstance(j, dict)}
        for ref in refs:
            job = by_id.get(ref.job_id)
            if job is None:
                continue
            ref.app = str(job.get("app") or "")
            ref.input_file = str(job.get("data_inputs") or "")
            ref.input_name = names.get(ref.input_file, "")
