"""The v1.0 job list: keyset pages behind an opaque cursor, and the predecessor's full list.

Two answers share one renderer:

* **The full list** (``GET /jobs`` without paging parameters, as the predecessor's clients
  send it): every job of the caller, oldest first, the predecessor's JSON array. It is
  streamed: read :data:`BATCH` jobs at a time with the keyset query (each batch one index
  range scan) and written as it is read, so that neither the rows nor the answer are ever
  held whole. Jobs created while it streams come after the last one read and are included;
  no job is listed twice.
* **Pages** (any of ``limit``, ``cursor``, ``order``, ``offset``): at most ``limit`` jobs
  (:data:`DEFAULT_PAGE` when not given, at most :data:`MAX_PAGE`), the same array, and
  cursors to the next and the previous page, which the route sends as ``Link`` headers
  (RFC 8288). A cursor names a position (the creation time and id of a job), not a count, so
  pages stay right while jobs are added or removed: a walk from the first page along ``next``
  lists every job that existed at its start exactly once.

Both are assembled from the jobs' rendered documents (:class:`RowCache`): each job's document
is kept with the revision of its row (``jobs.list_rev``, which the database renews on every
insert and update, migration 0005), and an answer reads only the ids and revisions of its
jobs, from the keyset index alone, and renders again only the jobs whose revision changed.
A service whose jobs change all the time thus pays for the changed jobs, not for the list
(``docs/benchmarks.md``, "documents kept by row revision"); this works the same on SQLite
and on PostgreSQL.

On SQLite whole answers are kept as well (:class:`AnswerCache`): a rendered answer is kept
with the marker of the database's content it was read at
(:meth:`~caesar_rest.db.joblist.JobListStore.version`, SQLite's ``PRAGMA data_version``,
which any commit of any connection of any process changes) and served again while the marker
is the same, so that clients polling the list between two changes cost a pragma and a copy.
Without such a marker (a database server), or with ``job_list_answer_cache`` off, no whole
answer is kept. A kept full list is held whole, up to :data:`CACHE_ENTRY_BYTES`; longer ones
are only streamed.

On PostgreSQL (with migration 0006) the database says what changed instead
(:mod:`caesar_rest.db.pgfeed`, LISTEN/NOTIFY): after a sync with the feed, which hands on
every change committed before the answer was asked for, the ids of a page or batch are kept
(:attr:`JobLister.lists`) until a notified insert, delete or move of one of the owner's jobs,
and each job's document until a notified write of that job; an answer that finds both reads
nothing from the database but the sync's empty query. On the event loop, the route syncs
without blocking and serves such a page from memory (:meth:`JobLister.page_async`,
:meth:`JobLister.stream_async`).

Cursors are opaque to clients: URL-safe base64 of a small JSON array (format version,
order, direction, creation time, job id). A cursor that does not decode is refused with 400.
A cursor carries no owner: it only says where to start in the caller's own jobs.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import threading
from collections import OrderedDict
from collections.abc import AsyncIterator, Hashable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from json.encoder import encode_basestring_ascii as _js
from typing import Any, Literal

from anyio import to_thread

from caesar_rest.db.joblist import JobListStore, ListKey, ListQuery
from caesar_rest.db.pgfeed import ChangeFeed, Changes, conninfo
from caesar_rest.errors import Invalid
from caesar_rest.storage.paths import is_job_id

#: Jobs of a page when the request names no ``limit``.
DEFAULT_PAGE = 100
#: The largest ``limit`` of a page.
MAX_PAGE = 1000
#: Jobs read per batch of the streamed full list.
BATCH = 1000
#: Pages up to this size are read on the event loop on SQLite (about 2 us a job).
INLINE_PAGE = 200
#: Jobs per batch of the full list when it is read on the event loop (SQLite): about 1-2 ms
#: of the loop per batch, other requests are served between two batches.
INLINE_BATCH = 500
#: The cursor format's version (first element of the array).
CURSOR_VERSION = 1
#: Bytes of rendered answers (full lists and pages) a service process keeps.
CACHE_BYTES = 64 * 1024 * 1024
#: The longest answer kept (a full list of about 45,000 jobs).
CACHE_ENTRY_BYTES = 16 * 1024 * 1024
#: Bytes of page and batch ids kept (PostgreSQL, lists kept by notification; the ids
#: themselves are shared with the documents).
LIST_BYTES = 16 * 1024 * 1024
#: Bytes counted for keeping one list of ids besides its 8 bytes an id.
LIST_OVERHEAD = 400

_STATES = {
    "PENDING": "PENDING",
    "QUEUED": "PENDING",
    "HELD": "PENDING",
    "EXECUTING": "RUNNING",
    "SUSPENDED": "RUNNING",
    "COMPLETED": "SUCCESS",
}


class BadCursor(Invalid):
    """A ``cursor`` this service did not make, or one for another order (400)."""


def _check_limit(limit: int) -> None:
    """Raise :class:`~caesar_rest.errors.Invalid` for a page size out of bounds."""
    if not 1 <= limit <= MAX_PAGE:
        raise Invalid(f"limit must be between 1 and {MAX_PAGE}; got {limit}")


def _state(phase: str, reason: str | None) -> str:
    """``jobs.states.legacy_state`` without the enum round trip (the list's hot loop)."""
    state = _STATES.get(phase)
    if state is not None:
        return state
    if phase == "ERROR":
        return "TIMED-OUT" if reason == "timeout" else "FAILURE"
    if phase == "ABORTED":
        return "CANCELED" if reason == "canceled" else "ABORTED"
    return "UNKNOWN"


def render_each(rows: list[tuple[Any, ...]]) -> list[str]:
    """Jobs (tuples in ``db.joblist.ListRow`` order) as the predecessor's list documents, in
    JSON, one string each.

    The fields and values of the documents as they were built from dictionaries and
    ``json.dumps``; ``job_inputs`` and ``tag`` are written as stored (their JSON text). One
    loop with local names: this is the cost of a job rendered anew.
    """
    out: list[str] = []
    add = out.append
    js, states = _js, _STATES
    for jid, date, app, inputs, fid, tag, backend, phase, reason, msg, pid, bjid, el, ex in rows:
        state = states.get(phase) or _state(phase, reason)
        add(
            f'{{"job_id":{js(jid)},"submit_date":"{date}","app":{js(app)},'
            f'"job_inputs":{"null" if inputs is None else inputs},'
            f'"data_inputs":{"null" if fid is None else js(fid)},"metadata":"",'
            f'"tag":{"null" if tag is None else tag},"scheduler":{js(backend)},'
            f'"state":"{state}","status":{js(msg)},'
            f'"pid":{js(str(pid) if pid is not None else (bjid or ""))},'
            f'"elapsed_time":{0 if el is None else el!r},"exit_code":{-1 if ex is None else ex}}}'
        )
    return out


#: A rendered job: id, ``submit_date`` (the cursor's position), document, row revision.
Doc = tuple[str, str, str, int]
#: How an answer reads its jobs: from the lists kept by notification (``"fed"``), from them
#: without reading the database (``"memory"``), or by revision (None).
Fed = Literal["fed", "memory"] | None


class _NeedsRead(Exception):
    """An answer from memory alone (``JobLister.page_async``) needs the database."""


class RowCache:
    """Rendered documents of single jobs, each kept under the id and revision
    (``jobs.list_rev``) of the row it was rendered from.

    The database gives a row a new revision on every write (migration 0005), so a document
    found under a job's current (id, revision) pair is that row's document now. One document
    is kept a job (a newer revision replaces the older). Entries go oldest first once they
    hold more than ``max_bytes``; one rendered again moves to the end. Lookups take no lock
    (a ``dict`` read is atomic); changes do.

    Parameters
    ----------
    max_bytes
        The budget of all entries (documents and :attr:`OVERHEAD` bytes of keeping each).
    """

    #: Bytes counted for keeping one entry besides its document (the id, date, revision,
    #: key and tuple objects and the dictionaries' slots, as ``sys.getsizeof`` counts them).
    OVERHEAD = 480

    def __init__(self, max_bytes: int = CACHE_BYTES):
        self.max_bytes = max_bytes
        self._docs: dict[tuple[str, int], Doc] = {}
        #: The key kept for each job id (to drop an older revision's document).
        self._keys: dict[str, tuple[str, int]] = {}
        self._bytes = 0
        self._lock = threading.Lock()
        #: The lowest revision a document of a job may have (:meth:`raise_floors`).
        self._floors: dict[str, int] = {}
        #: Renewed by :meth:`clear`: documents read before are not kept (:meth:`put`).
        self.era = 0
        #: Rows served from a kept document, and rendered anew.
        self.hits = 0
        self.misses = 0

    def get(self, key: tuple[str, int]) -> Doc | None:
        """The document of job ``key[0]`` at revision ``key[1]``, or None."""
        return self._docs.get(key)

    def current(self, ids: list[str]) -> list[Doc | None]:
        """The kept document of each of ``ids`` whatever its revision (None: none kept).

        Where the revisions a document must reach are raised as jobs change
        (:meth:`raise_floors`), every kept document is as new as the last change seen.
        """
        # Two lookups a job, in C (map): the hot loop of the lists kept by notification.
        return list(map(self._docs.get, map(self._keys.get, ids)))  # type: ignore[arg-type]

    def raise_floors(self, revs: list[tuple[str, int]]) -> None:
        """Documents of job ``id`` older than ``rev`` are out of date, for each pair: drop
        the kept one and keep none such from now on."""
        with self._lock:
            floors, keys, store = self._floors, self._keys, self._docs
            for jid, rev in revs:
                if rev > floors.get(jid, rev - 1):
                    floors[jid] = rev
                key = keys.get(jid)
                if key is not None and key[1] < rev:
                    del keys[jid]
                    self._bytes -= len(store.pop(key)[2]) + self.OVERHEAD
            if len(floors) > self.MAX_FLOORS:
                self._clear()

    #: Floors kept at most (~15 MB); beyond, everything is dropped (:meth:`clear`): a cost in
    #: speed only, bounded memory per API process.
    MAX_FLOORS = 100_000

    def clear(self) -> None:
        """Drop every document and floor; documents read before are not kept (``era``)."""
        with self._lock:
            self._clear()

    def _clear(self) -> None:
        self._docs.clear()
        self._keys.clear()
        self._floors.clear()
        self._bytes = 0
        self.era += 1

    def put(self, docs: list[Doc], era: int | None = None) -> None:
        """Keep ``docs`` (replacing any other revision of the same jobs).

        With ``era`` (:attr:`era` before they were read), documents read before a
        :meth:`clear` or below their job's floor are not kept.
        """
        with self._lock:
            store, keys, floors = self._docs, self._keys, self._floors
            if era is not None and era != self.era:
                return
            if floors:
                docs = [d for d in docs if d[3] >= floors.get(d[0], d[3])]
            for doc in docs:
                old = keys.pop(doc[0], None)
                if old is not None:
                    self._bytes -= len(store.pop(old)[2]) + self.OVERHEAD
                key = (doc[0], doc[3])
                store[key] = doc
                keys[doc[0]] = key
                self._bytes += len(doc[2]) + self.OVERHEAD
            while self._bytes > self.max_bytes and store:
                first = next(iter(store))
                del keys[first[0]]
                self._bytes -= len(store.pop(first)[2]) + self.OVERHEAD

    @property
    def size(self) -> int:
        """Bytes counted."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._docs)


def encode_cursor(descending: bool, backwards: bool, row: tuple[Any, ...]) -> str:
    """The opaque cursor of a position: after (``backwards``: before) ``row``."""
    doc = [CURSOR_VERSION, "d" if descending else "a", "p" if backwards else "n"]
    raw = json.dumps([*doc, row[1], row[0]], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


@dataclass(frozen=True)
class Cursor:
    """A decoded cursor: the order, the direction and the position."""

    descending: bool
    backwards: bool
    key: ListKey


def decode_cursor(text: str) -> Cursor:
    """The cursor ``text`` made by :func:`encode_cursor` (raises :class:`BadCursor`)."""
    try:
        if len(text) > 256:
            raise ValueError("too long")
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        version, order, way, created, job_id = json.loads(raw)
        if version != CURSOR_VERSION or order not in ("a", "d") or way not in ("n", "p"):
            raise ValueError("unknown cursor")
        if not isinstance(job_id, str) or not is_job_id(job_id):
            raise ValueError("bad job id")
        when = datetime.fromisoformat(created)
        if when.tzinfo is None:
            raise ValueError("no offset")
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise BadCursor(
            "Invalid cursor: pass the cursor of a Link header of an earlier page as it is"
        ) from None
    return Cursor(order == "d", way == "p", ListKey(when.astimezone(UTC), job_id))


@dataclass(frozen=True)
class Page:
    """One page: its JSON array, the cursors of its neighbours (None: none there), how many
    jobs it holds and the page size it was asked with (that of its neighbours' links)."""

    body: bytes
    next: str | None
    prev: str | None
    count: int
    limit: int


class AnswerCache:
    """Rendered answers, each valid for the content marker it was read at.

    Least recently used entries go first once the answers hold more than ``max_bytes``.
    Thread-safe (pages may be rendered in worker threads).

    Parameters
    ----------
    max_bytes
        The budget of all entries.
    max_entry
        Answers longer than this are not kept.
    """

    def __init__(self, max_bytes: int = CACHE_BYTES, max_entry: int = CACHE_ENTRY_BYTES):
        self.max_bytes = max_bytes
        self.max_entry = min(max_entry, max_bytes)
        self._entries: OrderedDict[Hashable, tuple[Hashable, Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        #: Answers served from the cache, and looked up but not found (or stale).
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable, version: Hashable | None) -> Any | None:
        """The answer kept for ``key`` at ``version``; None if there is none (or no version)."""
        if version is None:
            return None
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] != version:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return entry[1]

    def put(self, key: Hashable, version: Hashable | None, value: Any, size: int) -> None:
        """Keep ``value`` (``size`` bytes) for ``key``, read at ``version`` (None: not kept)."""
        if version is None or size > self.max_entry:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old[2]
            self._entries[key] = (version, value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, _, n) = self._entries.popitem(last=False)
                self._bytes -= n

    @property
    def size(self) -> int:
        """Bytes held."""
        return self._bytes


class JobLister:
    """The v1.0 job list of a service.

    Parameters
    ----------
    store
        The keyset reads.
    cache
        The rendered answers (default: a new :class:`AnswerCache`).
    rows
        The rendered jobs (default: a new :class:`RowCache`).
    answers
        Whether whole answers are kept (where the store has a content marker).
    """

    def __init__(
        self,
        store: JobListStore,
        cache: AnswerCache | None = None,
        rows: RowCache | None = None,
        answers: bool = True,
    ):
        self.store = store
        self.cache = AnswerCache() if cache is None else cache
        self.rows = RowCache() if rows is None else rows
        #: Whether whole answers are kept at all (off: every answer is assembled from rows).
        self.answers = answers
        #: PostgreSQL's notifications of job changes, where its triggers send them.
        self.feed = (
            ChangeFeed(conninfo(store.reader.engine), self._changed) if store.notifies else None
        )
        #: The ids of pages and batches, kept while the notifications say they hold.
        self.lists = AnswerCache(LIST_BYTES, LIST_BYTES // 4)
        #: Renewed as notifications say lists changed: one owner's, every owner's, all.
        self._owner_gens: dict[str, int] = {}
        self._every_gen = 0
        self._epoch = 0
        self._gens_lock = threading.Lock()

    #: Owners whose list changes are counted at most; beyond, every list is renewed: a cost
    #: in speed only, bounded memory per API process (as ``RowCache.MAX_FLOORS``).
    MAX_OWNER_GENS = 10_000

    def _changed(self, changes: Changes) -> None:
        """Forget what the notifications of one round trip make out of date (the feed's
        handler; its two connections may call it at once)."""
        with self._gens_lock:
            if changes.reset:
                self.rows.clear()
                self._epoch += 1
            self.rows.raise_floors(changes.revs)
            gens = self._owner_gens
            if changes.every or changes.reset or len(gens) >= self.MAX_OWNER_GENS:
                # Every list is out of date (or the owners' count is dropped, which renews
                # every list too): the owners' counts start again under a new every-marker.
                gens.clear()
                self._every_gen += 1
            for owner in changes.owners:
                gens[owner] = gens.get(owner, 0) + 1

    def _list_marker(self, owner: str) -> tuple[int, int, int]:
        """Changes with every notified change to ``owner``'s list (read after a sync and
        before the ids it marks)."""
        return (self._epoch, self._every_gen, self._owner_gens.get(owner, 0))

    def _sync(self) -> bool:
        """Whether this answer may use the lists kept by notification: the feed handed on
        every change committed before now."""
        return self.feed is not None and self.store.revisions and self.feed.sync()

    async def _sync_async(self) -> bool:
        """:meth:`_sync` on an event loop, without blocking it (``ChangeFeed.sync_async``):
        True, and the answer's ``page(..., synced=True)`` may use the lists kept."""
        return self.feed is not None and self.store.revisions and await self.feed.sync_async()

    async def page_async(
        self,
        owner: str,
        limit: int = DEFAULT_PAGE,
        cursor: str | None = None,
        descending: bool | None = None,
        offset: int = 0,
    ) -> Page:
        """:meth:`page` for the event loop: read on it where that is quick (SQLite, up to
        :data:`INLINE_PAGE` jobs); on PostgreSQL with its notifications, after a sync that
        does not block, from memory on it where the page's ids and documents are kept; else
        read in a worker thread. Parameters and errors as for :meth:`page`."""
        if self.inline and limit <= INLINE_PAGE:
            return self.page(owner, limit, cursor, descending, offset)
        read = partial(self.page, owner, limit, cursor, descending, offset)
        if self.feed is not None and await self._sync_async():
            _check_limit(limit)
            try:
                return self._page(owner, limit, cursor, descending, offset, "memory")
            except _NeedsRead:
                read = partial(read, synced=True)
        return await to_thread.run_sync(read)

    async def stream_async(self, owner: str) -> AsyncIterator[bytes]:
        """:meth:`stream` for the event loop: on SQLite batch by batch on it
        (:data:`INLINE_BATCH` jobs each); on PostgreSQL with its notifications, after a sync
        that does not block, from memory on it (each batch that needs the database read in
        a worker thread); else in worker threads.

        In worker threads several lists at once only contend for the GIL (the rendering is
        Python), and each batch pays a thread hand-off: on the loop they take turns by batch.
        """
        if not self.inline and self.feed is not None and await self._sync_async():
            # Every change committed before now seen: the batches kept in memory on the
            # loop, each one that needs the database read in a worker thread.
            walk = self.walk(owner)
            yield b"["
            while not walk.done:
                chunk = walk.step("memory")
                if chunk is None:
                    chunk = await to_thread.run_sync(walk.step, "fed")
                if chunk:
                    yield chunk
                await asyncio.sleep(0)
            yield b"]"
        elif not self.inline:
            chunks = self.stream(owner)
            while (chunk := await to_thread.run_sync(next, chunks, None)) is not None:
                yield chunk
        else:
            for chunk in self.stream(owner, INLINE_BATCH):
                yield chunk
                await asyncio.sleep(0)  # let other requests in between two batches

    def close(self) -> None:
        """Close the feed's connection (where there is one)."""
        if self.feed is not None:
            self.feed.close()

    def _version(self) -> Hashable | None:
        """The store's marker of the database's content; None when answers are not kept."""
        return self.store.version() if self.answers else None

    def _docs(self, query: ListQuery, fed: Fed = None) -> tuple[list[Doc], int]:
        """The jobs ``query`` asks for, rendered, and how many the database listed.

        The ids (and revisions) are read first, from the keyset index alone; only the jobs
        whose document is not kept at their revision are read whole (by id) and rendered,
        then kept. A job removed between the two reads is left out. Without revisions in the
        database (:attr:`~caesar_rest.db.joblist.JobListStore.revisions`) every job is read
        and rendered, as before there were any.

        With ``fed`` (a sync returned True for this answer), from what PostgreSQL's
        notifications say is still right: the ids are kept under the owner's list marker
        read before they were (a notified insert, delete or move renews it), and a kept
        document is the job's current one (every notified change of the job drops it,
        :meth:`RowCache.raise_floors`). With ``"memory"``, :class:`_NeedsRead` is raised
        rather than reading the database.
        """
        store, rows = self.store, self.rows
        keys: list[tuple[str, int]] | None = None
        if fed is not None:
            ids = self._kept_ids(query, fed == "fed")
            docs = rows.current(ids)
        elif store.revisions:
            keys = store.keys(query)
            # One lookup a job by its (id, revision) pair as read, in C (map): the hot loop.
            docs = list(map(rows.get, keys))
        else:
            found = store.page(query)
            every = zip(found, render_each(found), strict=True)
            return [(r[0], r[1], doc, 0) for r, doc in every], len(found)
        if None not in docs:  # the common case, a scan in C
            rows.hits += len(docs)
            return docs, len(docs)  # type: ignore[return-value]  # no None
        if fed == "memory":
            raise _NeedsRead
        if keys is not None:
            ids = [k[0] for k in keys]
        return self._fill(query.owner, ids, docs), len(docs)

    def _kept_ids(self, query: ListQuery, read: bool) -> list[str]:
        """The ids ``query`` asks for as kept by notification; read and kept where they are
        not (``read`` False: :class:`_NeedsRead` instead)."""
        marker = self._list_marker(query.owner)
        ids: list[str] | None = self.lists.get(query, marker)
        if ids is None:
            if not read:
                raise _NeedsRead
            ids = self.store.ids(query)
            self.lists.put(query, marker, ids, LIST_OVERHEAD + 8 * len(ids))
        return ids

    def _fill(self, owner: str, ids: list[str], docs: list[Doc | None]) -> list[Doc]:
        """``docs`` (the kept document of each of ``ids``, None where there is none) with the
        missing ones read by id, rendered and kept; a job removed meanwhile is left out."""
        rows = self.rows
        missing = [jid for jid, doc in zip(ids, docs, strict=True) if doc is None]
        rows.hits += len(ids) - len(missing)
        rows.misses += len(missing)
        era = rows.era  # before the read: documents read across a reset are not kept
        found = self.store.by_id(owner, missing)
        fresh: dict[str, Doc] = {
            r[0]: (r[0], r[1], doc, rev)
            for (r, rev), doc in zip(found, render_each([r for r, _ in found]), strict=True)
        }
        rows.put(list(fresh.values()), era)
        out = [
            doc if doc is not None else fresh.get(jid) for doc, jid in zip(docs, ids, strict=True)
        ]
        return [d for d in out if d is not None]

    @property
    def inline(self) -> bool:
        """Whether a small page may be read on the event loop (the SQLite reader)."""
        return self.store.inline

    def page(
        self,
        owner: str,
        limit: int = DEFAULT_PAGE,
        cursor: str | None = None,
        descending: bool | None = None,
        offset: int = 0,
        synced: bool = False,
    ) -> Page:
        """One page of ``owner``'s jobs.

        Parameters
        ----------
        owner
            Whose jobs.
        limit
            At most this many (1 to :data:`MAX_PAGE`).
        cursor
            A cursor of an earlier page (its order applies); None: the first page.
        descending
            Newest first (None: as the cursor says, else oldest first).
        offset
            Skip this many jobs first (the first page only; prefer cursors).
        synced
            :meth:`_sync_async` returned True for this answer (no sync here).

        Raises
        ------
        Invalid
            A limit out of bounds, a cursor with an offset, or an order against the cursor's.
        BadCursor
            A cursor that does not decode.
        """
        _check_limit(limit)
        if synced or self._sync():
            return self._page(owner, limit, cursor, descending, offset, "fed")
        # The marker before the read: a change committed during it changes the marker.
        version = self._version()
        key = ("page", owner, limit, cursor, descending, offset)
        page: Page | None = self.cache.get(key, version)
        if page is None:
            page = self._page(owner, limit, cursor, descending, offset)
            self.cache.put(key, version, page, len(page.body))
        return page

    def _page(
        self,
        owner: str,
        limit: int,
        cursor: str | None,
        descending: bool | None,
        offset: int,
        fed: Fed = None,
    ) -> Page:
        if cursor is None:
            return self._first(owner, limit, bool(descending), offset, fed)
        if offset:
            raise Invalid("offset cannot be combined with cursor")
        cur = decode_cursor(cursor)
        if descending is not None and descending != cur.descending:
            raise Invalid("order differs from the cursor's; drop one of them")
        if cur.backwards:
            # The page before: read it in the opposite order, then turn it round.
            back = ListQuery(owner, limit + 1, cur.key, not cur.descending)
            docs, _ = self._docs(back, fed)
            more = len(docs) > limit
            docs = docs[:limit][::-1]
            prev = encode_cursor(cur.descending, True, docs[0]) if more else None
            nxt = encode_cursor(cur.descending, False, docs[-1]) if docs else None
            return self._render(docs, nxt, prev, limit)
        docs, _ = self._docs(ListQuery(owner, limit + 1, cur.key, cur.descending), fed)
        more = len(docs) > limit
        docs = docs[:limit]
        nxt = encode_cursor(cur.descending, False, docs[-1]) if more else None
        prev = encode_cursor(cur.descending, True, docs[0]) if docs else None
        return self._render(docs, nxt, prev, limit)

    def _first(self, owner: str, limit: int, descending: bool, offset: int, fed: Fed) -> Page:
        docs, _ = self._docs(ListQuery(owner, limit + 1, None, descending, offset), fed)
        more = len(docs) > limit
        docs = docs[:limit]
        nxt = encode_cursor(descending, False, docs[-1]) if more else None
        prev = encode_cursor(descending, True, docs[0]) if docs and offset else None
        return self._render(docs, nxt, prev, limit)

    @staticmethod
    def _render(docs: list[Doc], nxt: str | None, prev: str | None, limit: int) -> Page:
        body = "[" + ",".join([d[2] for d in docs]) + "]"
        return Page(body.encode(), nxt, prev, len(docs), limit)

    def walk(self, owner: str, batch: int = BATCH) -> Walk:
        """The batches of ``owner``'s full list in turn (:meth:`stream` without the brackets
        and the answer cache; for the event loop, a step at a time)."""
        return Walk(self, owner, batch)

    def stream(self, owner: str, batch: int = BATCH) -> Iterator[bytes]:
        """The full list of ``owner``'s jobs, oldest first, as chunks of one JSON array.

        Each chunk is one batch of ``batch`` jobs read with the keyset query after the last
        job of the batch before, so that the rows read are bounded by a batch. The answer
        is kept in :attr:`cache` (up to its ``max_entry`` bytes) and, while the store's
        marker stays the same, sent again whole as one chunk.
        """
        fed: Fed = "fed" if self._sync() else None  # once, before the first batch
        version = None if fed else self._version()  # before the first read (see page)
        key = ("all", owner)
        whole: bytes | None = self.cache.get(key, version)
        if whole is not None:
            yield whole
            return
        keep: list[bytes] | None = [b"["] if version is not None else None
        size = 2
        yield b"["
        walk = self.walk(owner, batch)
        while not walk.done:
            chunk = walk.step(fed)
            if not chunk:
                continue
            if keep is not None:
                keep.append(chunk)
                size += len(chunk)
                if size > self.cache.max_entry:
                    keep = None  # too long to keep: streamed only
            yield chunk
        if keep is not None:  # before the last chunk: a consumer may stop after it
            keep.append(b"]")
            self.cache.put(key, version, b"".join(keep), size)
        yield b"]"


class Walk:
    """The batches of one owner's full list, oldest first, read one :meth:`step` at a time,
    each after the last job of the batch before (:meth:`JobLister.walk`).

    Parameters
    ----------
    lister
        Whose lists.
    owner
        Whose jobs.
    batch
        Jobs read per step.
    """

    def __init__(self, lister: JobLister, owner: str, batch: int):
        self.lister = lister
        self.owner = owner
        self.batch = batch
        self.after: ListKey | None = None
        self.first = True
        #: Whether the last batch was read.
        self.done = False

    def step(self, fed: Fed = None) -> bytes | None:
        """The next batch's part of the JSON array (``b""``: nothing this time, step again).

        ``fed`` as for ``JobLister._docs``; with ``"memory"``, None where the batch needs
        the database (nothing changed: step again with ``"fed"``, in a worker thread).
        """
        try:
            query = ListQuery(self.owner, self.batch, self.after)
            docs, listed = self.lister._docs(query, fed)
        except _NeedsRead:
            return None
        if not docs:
            # None listed: the end. Every job of the batch removed meanwhile: read on.
            self.done = not listed
            return b""
        text = ",".join([d[2] for d in docs])
        chunk = (text if self.first else "," + text).encode()
        self.first = False
        if listed < self.batch:
            self.done = True
        else:
            last = docs[-1]
            self.after = ListKey(datetime.fromisoformat(last[1]), last[0])
        return chunk
