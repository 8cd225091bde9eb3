"""Protocol-neutral command semantics: a Request in, a Result out.

What lives here: the request and result types every protocol codec shares,
and ``Commands.execute``, which takes the store lock, calls the store, counts
the statistics, and releases the lock before returning; and ``Admin``, what
the operator commands (shutdown, cache_memlimit, verbosity, refresh_certs)
ask of the server, which implements it. What does not: bytes on the wire
(``protocol/``), sockets (``connection``) and the server itself.

The lock is held only around store calls, which never yield, so no greenlet
can be holding it while it waits on a socket. For the same reason the
commonest calls (a GET, a multi-get, a store) skip taking it when it is
``free``: a hold taken and released around code no other greenlet can
interrupt is invisible to every other greenlet, and costs two calls a
request. When it is not free they take it and wait their turn (rwlock).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import TYPE_CHECKING, Iterator, NamedTuple, Protocol

from . import hotkeys, statgroups
from .crawler import LruCrawler, walk
from .record import Item, memcached_size, unpack
from .rwlock import RWLock
from .watch import Logger
from .stats import PrefixStats
from .storage import (
    EXISTS,
    KEY_BINARY,
    NO_MEMORY,
    NOT_FOUND,
    NOT_STORED,
    OK,
    STALE,
    TOO_LARGE,
    WIN_SENT,
    ItemStore,
    Mode,
    Status,
)

if TYPE_CHECKING:
    from .config import Settings
    from .snapshot import LoadProgress
    from .stats import Stats


class Request(NamedTuple):
    """One parsed command. Codecs fill in the fields their command uses."""

    command: str  # see Commands.execute for the names
    key: bytes = b""
    value: bytes = b""
    flags: int = 0
    exptime: int = 0  # memcached exptime (ttl or Unix time)
    cas: int = 0
    delta: int = 0
    initial: int | None = None  # incr/decr: create missing keys with this
    refused: bool = False  # a store whose value was too large to accept
    # Protocol bookkeeping, ignored by the command layer:
    opcode: int = 0
    opaque: int = 0
    quiet: bool = False
    echo_key: bool = False


class StatsRequest(NamedTuple):
    """``stats [group [args...]]`` (binary: the STAT key, split at spaces)."""

    group: bytes = b""  # b"" for the general stats, b"settings", b"items" ...
    args: tuple[bytes, ...] = ()
    opcode: int = 0
    opaque: int = 0

    command = "stats"
    quiet = False


class DumpRequest(NamedTuple):
    """A key dump: `lru_crawler metadump CLASSES` or `stats cachedump CLASS LIMIT`.

    ``classes`` is a set of size classes, None for every class, or the
    crawler's BADCLASS when the request named an invalid one (memcached
    reports that only after other checks). The command layer hands out the
    items a slice at a time (``Commands.dump``); the protocol writes them.
    """

    kind: str  # "metadump" or "cachedump"
    classes: frozenset[int] | None | str = None
    limit: int = 0  # cachedump: at most this many items (0: no limit)

    command = "dump"
    quiet = False


class CrawlerRequest(NamedTuple):
    """`lru_crawler crawl|tocrawl|sleep|enable|disable`, arguments checked."""

    verb: str
    classes: frozenset[int] | None | str = None  # crawl
    number: int = 0  # tocrawl, sleep

    command = "lru_crawler"
    quiet = False


class FlushRequest(NamedTuple):
    """``flush_all [delay]``: invalidate every item now, or at ``delay``."""

    delay: int = 0  # a memcached exptime: relative seconds or a Unix time
    quiet: bool = False
    opcode: int = 0
    opaque: int = 0

    command = "flush"


class AdminRequest(NamedTuple):
    """An operator's command, which the server carries out (see ``Admin``).

    ``command``: "shutdown", "cache_memlimit", "verbosity" or "refresh_certs".
    """

    command: str
    number: int = 0  # cache_memlimit: megabytes; verbosity: the level
    graceful: bool | None = False  # shutdown: "shutdown graceful"; None: an unknown mode
    quiet: bool = False  # noreply
    opcode: int = 0
    opaque: int = 0


class WatchRequest(NamedTuple):
    """``watch [kinds...]``: the connection becomes a log watcher (see ``watch``)."""

    kinds: int  # watch.FETCHERS | watch.MUTATIONS | ...

    command = "watch"


class AdminResult(NamedTuple):
    """What an operator's command did: ``status`` is one of the ADMIN_* names."""

    status: str
    message: str = ""  # ADMIN_FAILED: why (refresh_certs: memcached's words)


ADMIN_OK = "ok"
ADMIN_DISABLED = "disabled"  # shutdown without -A/--enable-shutdown
ADMIN_BAD_MODE = "bad_mode"  # shutdown with a mode other than "graceful"
ADMIN_FAILED = "failed"

# memcached's MAX_VERBOSITY_LEVEL: `verbosity 5` sets 2.
MAX_VERBOSITY = 2


class Admin(Protocol):
    """What the operator commands ask of the server. The server implements
    it, so neither the command layer nor a codec ever reaches into the
    server; a test hands ``Commands`` a fake."""

    def shutdown(self, graceful: bool) -> None:
        """Begin a graceful stop, as SIGTERM does; returns at once."""

    def set_memory_limit(self, limit_bytes: int) -> None:
        """Take a new -m and evict down to it before returning. May yield
        between slices of evictions, never holding the store lock across."""

    def set_verbosity(self, level: int) -> None:
        """Log from now on as ``-v`` given ``level`` times would."""

    def refresh_certs(self) -> str | None:
        """Reload the TLS certificate and key from their files: None, or why
        the running pair was kept (memcached's refresh_certs error line)."""


class GetMany(NamedTuple):
    """A run of GETs answered together (a multi-get, or pipelined GETs).

    ``context`` is the codec's own bookkeeping for writing the replies
    (binary: each GET's opcode and opaque); the command layer ignores it.
    """

    keys: list[bytes]
    context: object = None


class Result(NamedTuple):
    status: Status
    cas: int = 0
    item: Item | None = None
    number: int = 0  # incr/decr: the new value
    stats: list[tuple[str, str]] | None = None


class CrawlerResult(NamedTuple):
    """What `lru_crawler` did, as memcached's reply line says it."""

    line: str


# A CAS no item can have (they are 64-bit): memcached compares a CAS of 0
# literally where a request names one (text `cas`, ms/md with C0), so it
# never matches, while 0 in ``Request.cas`` means "no CAS".
NO_CAS_MATCH = 1 << 64


class MetaRequest(NamedTuple):
    """A meta command (mg ms md ma me), its flags parsed by the text codec.

    ``order`` is the request's flag letters in request order: within one
    command memcached applies T and N, and reports t and R, in that order,
    so "t T30" shows the old TTL and "T30 t" the new one.
    """

    command: str  # "mg", "ms", "md", "ma", "me"
    key: bytes
    value: bytes = b""  # ms: the data block
    order: str = ""
    ttl: int | None = None  # T: new memcached exptime
    vivify: int | None = None  # N: create on a miss, with this exptime
    recache: int | None = None  # mg R: win the recache if the TTL left is below this
    client_flags: int = 0  # ms F
    compare_cas: int | None = None  # C
    mode: str = ""  # ms: a Mode value ("set" ...); ma: "incr" or "decr"
    delta: int = 1  # ma D
    initial: int = 0  # ma J
    refused: bool = False  # ms: value too large, skipped unread
    # mg/ma: the reply is an error memcached finds at this flag, after the
    # command has run; the flags before it still take effect.
    abort_at: int | None = None
    context: object = None  # the codec's own bookkeeping; ignored here


class MetaResult(NamedTuple):
    status: Status
    item: Item | None = None  # the item as the command left it
    cas: int = 0  # ms, ma: the new item's CAS
    number: int = 0  # ma: the counter's new value
    ttl: int = -1  # t: seconds left as of the t flag (-1: never expires)
    fetched: bool = False  # h: read before this request
    idle: int = 0  # l: seconds since the last access, before this request
    won: bool = False  # W: this client is to recache the item
    stale: bool = False  # X
    win_sent: bool = False  # Z: another client already won
    binary_key: bool = False  # stored by ms with b (k shows the key in base64)
    created: bool = False  # ma: N made the counter (memcached answers that even under q)
    size_class: int = 0  # me: the item's memcached size class


_MODES = {mode.value: mode for mode in Mode}

_APPEND, _PREPEND = Mode.APPEND, Mode.PREPEND

# Builds a Result without the Python-level __new__ of a NamedTuple call:
# this is on every store's path.
_new = tuple.__new__

RESULT_OK = Result(OK)

# mg flags that make memcached hold the item locked and bump it only at the end.
_LOCKED_FLAGS = frozenset("hlTNR")
RESULT_NOT_FOUND = Result(NOT_FOUND)
_ADMIN_OK = AdminResult(ADMIN_OK)


class Commands:
    """Executes requests against one store, under its lock, counting stats.

    ``settings`` is the configuration as the stat groups report it: the
    operator commands replace it with their changes (``cache_memlimit``'s
    limit, ``verbosity``'s level). ``admin`` is the server, for those
    commands; without one (a test of the store's commands) they fail.
    ``warmup``, with ``--snapshot``, is the snapshot load's progress, which
    the general stats end with. ``hot``, with ``--hot-keys``, counts a
    sample of the gets and sets (``stats hotkeys``); None costs the GET and
    SET paths one attribute check each.
    """

    def __init__(
        self,
        store: ItemStore,
        lock: RWLock,
        stats: Stats,
        settings: Settings,
        admin: Admin | None = None,
        logger: Logger | None = None,
        warmup: LoadProgress | None = None,
    ):
        self.store = store
        self.lock = lock
        self.stats = stats
        self.settings = settings
        self.admin = admin
        self.logger = logger if logger is not None else Logger(stats.clock, store, stats)
        # The read paths' store calls, bound once (see RWLock.reading).
        self._store_get_record = store.get_record
        self._store_get_many = store.get_many
        self.warmup = warmup
        self.hot = hotkeys.HotKeys(settings.hot_keys) if settings.hot_keys else None
        self._handlers = {
            "gat": self._gat,
            "touch": self._touch,
            "delete": self._delete,
            "incr": self._arith,
            "decr": self._arith,
            "flush": self._flush,
            "stats": self._stats,
            "lru_crawler": self._lru_crawler,
            "noop": self._nothing,
            "version": self._nothing,
            "quit": self._nothing,
            "unknown": self._nothing,  # an unknown binary opcode: the codec answers it
            "mg": self._mg,
            "ms": self._ms,
            "md": self._md,
            "ma": self._ma,
            "me": self._me,
            "shutdown": self._shutdown,
            "cache_memlimit": self._cache_memlimit,
            "verbosity": self._verbosity,
            "refresh_certs": self._refresh_certs,
        }
        for mode in _MODES:
            self._handlers[mode] = self.store_request
        for name in ("mg", "ms", "md", "ma", "me"):
            self._handlers[name] = self._tracking_fetches(self._handlers[name])
        self.crawler = LruCrawler(store, lock)
        # `stats detail`: the counts are kept while detail stats are off (a
        # dump still shows them); ``detail`` is the table only while they
        # are on, so the request paths check one attribute.
        self.prefixes = PrefixStats(settings.prefix_delimiter)
        self.detail: PrefixStats | None = None

    def _tracking_fetches(self, handler):
        """A meta handler that first makes the store track unread items (mg's h)."""
        store = self.store

        def meta(request):
            store.track_fetches()
            return handler(request)

        return meta

    def execute(self, request: Request) -> Result:
        handler = self._handlers.get(request.command)
        if handler is None:
            raise ValueError(f"no such command: {request.command!r}")
        return handler(request)

    # -- reads -----------------------------------------------------------

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        """Each key's item record (layout in ``store``) or None, under one read lock.

        A read may still reorder the LRU or drop an expired item: that is
        safe under a read lock because store calls never yield, so no other
        greenlet runs while one is in progress.
        """
        lock = self.lock
        if lock.free:  # an untaken hold: see the module docstring
            records = self._store_get_many(keys)
        else:
            records = lock.reading(self._store_get_many, keys)
        if self.hot is not None:
            self.hot.saw_gets(keys)
        stats = self.stats
        count = len(records)
        misses = records.count(None)
        stats.cmd_get += count
        stats.get_hits += count - misses
        stats.get_misses += misses
        if self.logger.fetchers:
            for key, record in zip(keys, records):
                self.logger.got(key, record)
        if self.detail is not None:
            self.detail.record_gets(keys, records)
        return records

    def get_record(self, key: bytes) -> bytes | None:
        """One key's item record or None: get_many for a lone GET."""
        lock = self.lock
        if lock.free:  # an untaken hold: see the module docstring
            record = self._store_get_record(key)
        else:
            record = lock.reading(self._store_get_record, key)
        if self.hot is not None:
            self.hot.saw_get(key)
        stats = self.stats
        stats.cmd_get += 1
        if record is None:
            stats.get_misses += 1
        else:
            stats.get_hits += 1
        if self.logger.fetchers:
            self.logger.got(key, record)
        if self.detail is not None:
            self.detail.record_get(key, record is not None)
        return record

    def gat_many(self, keys: list[bytes], exptime: int) -> list[bytes | None]:
        """Touch each key (a text GAT) and return its new record or None, under one lock."""
        touch = self.store.touch_record
        with self.lock.write():
            records = [touch(key, exptime) for key in keys]
        stats = self.stats
        hits = len(records) - records.count(None)
        stats.cmd_touch += len(records)
        stats.touch_hits += hits
        stats.touch_misses += len(records) - hits
        if self.logger.fetchers:
            for key, record in zip(keys, records):
                self.logger.got(key, record)
        if self.detail is not None:
            self.detail.record_gets(keys, records)
        return records

    def _gat(self, request: Request) -> Result:
        result = self._touch(request)
        if result.item is not None:
            return result
        return RESULT_NOT_FOUND

    def _touch(self, request: Request) -> Result:
        with self.lock.write():
            item = self.store.touch(request.key, request.exptime)
        # memcached's binary TOUCH and GAT share its get path, and count in
        # the detail stats as gets; the text touch does not (a text request
        # has no opcode).
        if self.detail is not None and request.opcode:
            self.detail.record_get(request.key, item is not None)
        self.stats.cmd_touch += 1
        if self.logger.fetchers:
            self.logger.got_item(request.key, item)
        if item is None:
            self.stats.touch_misses += 1
            return RESULT_NOT_FOUND
        self.stats.touch_hits += 1
        return Result(OK, item.cas, item)

    # -- writes ----------------------------------------------------------

    def store_request(self, request: Request) -> Result:
        """A storage command (set, add, replace, append, prepend, cas):
        ``execute`` for these, callable directly where the command is known
        (the connection's lone SET)."""
        mode = _MODES[request.command]
        refused = request.refused
        watched = self.logger.requests
        if self.detail is not None:
            self.detail.record_set(request.key)
        lock = self.lock
        take = not lock.free  # else an untaken hold: see the module docstring
        if take:
            lock.acquire_write()
        try:
            if watched:
                before = self.store.lookup(request.key)
            if refused:
                status, cas = self.store.refuse(mode, request.key), 0
            else:
                status, cas = self.store.store(
                    mode,
                    request.key,
                    request.value,
                    request.flags,
                    request.exptime,
                    request.cas,
                )
            if watched:
                after = self.store.lookup(request.key) if status is OK else None
                now = self.store.clock()
                exptime = self.store.expiry(request.exptime, now)
        finally:
            if take:
                lock.release_write()
        if self.hot is not None:
            self.hot.saw_set(request.key)
        # memcached counts cas_* for set/add/replace carrying a CAS (its
        # NREAD_CAS) only, not for append/prepend.
        cas_mode = bool(request.cas) and mode is not _APPEND and mode is not _PREPEND
        if status is OK and not cas_mode and not refused:
            self.stats.cmd_set += 1  # _count_store's commonest case, written out
        else:
            self._count_store(refused, cas_mode, status)
        if watched:
            self._log_store(request.key, len(request.value), request.flags, refused,
                            b"cas" if cas_mode else mode.value.encode(), status, before, after,
                            exptime, now)
        return _new(Result, (status, cas, None, 0, None))

    def _log_store(
        self, key: bytes, size: int, flags: int, refused: bool, command: bytes,
        status: Status, before, after, exptime: int, now: float,
    ) -> None:
        """memcached's log of a storage command: the lookup of the old item,
        then the store (for a value too large to read, the other way round)."""
        logger = self.logger
        if logger.fetchers and not refused:
            logger.got(key, before)
        if logger.mutations:
            logger.stored(key, command, status.value, after, size, flags, exptime, now)
        if logger.fetchers and refused:
            logger.got(key, before)

    def _delete(self, request: Request) -> Result:
        watched = self.logger.requests
        if self.detail is not None:
            self.detail.record_delete(request.key)
        with self.lock.write():
            before = self.store.lookup(request.key) if watched else None
            status = self.store.delete(request.key, request.cas)
        if status is OK:
            self.stats.delete_hits += 1
        elif status is NOT_FOUND:
            self.stats.delete_misses += 1
        if watched:
            self._log_delete(request.key, b"delete", status, before)
        return Result(status)

    def _log_delete(self, key: bytes, command: bytes, status: Status, before) -> None:
        """memcached's log of a delete: the lookup, then the deletion."""
        if self.logger.fetchers:
            self.logger.got(key, before)
        if self.logger.deletions and status is OK and before is not None:
            self.logger.gone(key, command, before)

    def _arith(self, request: Request) -> Result:
        incr = request.command == "incr"
        key, delta, cas = request.key, request.delta, request.cas
        store = self.store
        watched = self.logger.requests
        with self.lock.write():
            before = store.lookup(key) if watched else None
            status, number, new_cas = store.arith(key, incr, delta, None, 0, cas)
            created = status is NOT_FOUND and request.initial is not None
            if created:
                status, number, new_cas = store.arith(
                    key, incr, delta, request.initial, request.exptime, cas
                )
            after = store.lookup(key) if watched and created and status is OK else None
        self._count_arith(incr, status, created)
        if watched:
            self._log_arith(key, before, created, status, after)
        return Result(status, new_cas, number=number)

    def _log_arith(self, key: bytes, before, created: bool, status: Status, after) -> None:
        """memcached's log of incr/decr: the lookup; a counter it creates is
        an add, which looks the key up again first."""
        logger = self.logger
        if logger.fetchers:
            logger.got(key, before)
            if created:
                logger.got(key, None)
        if created and logger.mutations:
            logger.stored(key, b"add", status.value, after, 0, 0, 0, self.store.clock())

    def _count_store(self, refused: bool, cas_mode: bool, status: Status) -> None:
        stats = self.stats
        if not refused:  # memcached never counts a refused value as a set
            stats.cmd_set += 1
        if cas_mode:
            if status is OK:
                stats.cas_hits += 1
            elif status is EXISTS:
                stats.cas_badval += 1
            elif status is NOT_FOUND:
                stats.cas_misses += 1
        if status is TOO_LARGE:
            stats.store_too_large += 1
        elif status is NO_MEMORY:
            stats.store_no_memory += 1

    def _count_arith(self, incr: bool, status: Status, created: bool) -> None:
        """As memcached: a hit counts once the value parsed and the CAS
        matched; a counter created from ``initial`` counts as neither."""
        stats = self.stats
        if status is OK and not created:
            if incr:
                stats.incr_hits += 1
            else:
                stats.decr_hits += 1
        elif status is NOT_FOUND:
            if incr:
                stats.incr_misses += 1
            else:
                stats.decr_misses += 1

    def _flush(self, request: FlushRequest) -> Result:
        with self.lock.write():
            self.store.flush(request.delay)
        self.stats.cmd_flush += 1
        return RESULT_OK

    # -- the rest --------------------------------------------------------

    def _stats(self, request: StatsRequest) -> Result:
        group = request.group.decode("ascii", "replace")
        if group == "sizes":
            pairs = statgroups.sizes_group(self._sizes())
        elif group == "detail":
            pairs = self._detail(request.args[0] if request.args else b"")
        else:
            # `stats reset` writes; every other group only reads.
            with self.lock.write() if group == "reset" else self.lock.read():
                pairs = self._stat_group(group)
        if pairs is None:
            return RESULT_NOT_FOUND
        return Result(OK, stats=pairs)

    def _stat_group(self, group: str) -> list[tuple[str, str]] | None:
        store, stats, settings = self.store, self.stats, self.settings
        if group == "":
            pairs = statgroups.general(stats, store, settings, self.crawler)
            if self.warmup is not None:
                # After memcached's fields, whose order tools may rely on.
                pairs += self.warmup.stat_pairs()
            return pairs
        if group == "settings":
            return statgroups.settings_group(
                settings, stats, store, self.crawler, self.detail is not None
            )
        if group == "items":
            return statgroups.items_group(store)
        if group == "slabs":
            return statgroups.slabs_group(store)
        if group == "conns":
            return statgroups.conns_group(stats, settings)
        if group in ("sizes_enable", "sizes_disable"):
            stats.sizes_enabled = group == "sizes_enable"
            return [("sizes_status", "enabled" if stats.sizes_enabled else "disabled")]
        if group == "hotkeys":
            return hotkeys.stat_pairs(self.hot)
        if group == "reset":
            stats.reset()
            store.reset_counters()
            self.prefixes.clear()
            self.crawler.starts = 0
            return []
        return None

    def _sizes(self) -> dict[int, int] | None:
        """Items per `stats sizes` bucket, counted a slice at a time; None
        after `stats sizes_disable`."""
        if not self.stats.sizes_enabled:
            return None
        buckets: Counter[int] = Counter()
        bucket = statgroups.size_bucket
        for entries in walk(self.store, self.lock, self.store.entries):
            buckets.update(bucket(key, rec) for key, rec, _, _ in entries)
        return buckets

    def _detail(self, verb: bytes) -> list[tuple[str, str]] | None:
        """`stats detail on|off|dump`: [] for on and off, the dump as one
        pair (memcached's binary protocol sends it so) for dump."""
        if verb == b"on":
            self.detail = self.prefixes
        elif verb == b"off":
            self.detail = None
        elif verb == b"dump":
            # Keys are bytes: surrogates carry any that are not UTF-8.
            return [("detailed", self.prefixes.dump().decode("utf-8", "surrogateescape"))]
        else:
            return None
        return []

    # -- key dumps and the crawler (text protocol only) -------------------

    def dump(self, request: DumpRequest) -> Iterator[list[tuple[bytes, bytes, int, bool]]]:
        """The items a dump shows, a slice at a time: lists of (key, record,
        size class, fetched), each read under the store lock and handed out
        with it released. metadump goes from the least recently used item,
        cachedump from the most recent and skips items stored with binary
        keys, as memcached's do. Stop early by closing the iterator.
        """
        store = self.store
        classes = request.classes
        cachedump = request.kind == "cachedump"

        def read(keys):
            return store.entries(keys, classes, binary_keys=not cachedump)

        yield from walk(store, self.lock, read, newest_first=cachedump)

    def _lru_crawler(self, request: CrawlerRequest) -> CrawlerResult:
        crawler = self.crawler
        verb = request.verb
        if verb == "crawl":
            line = crawler.crawl(request.classes)
        elif verb == "tocrawl":
            crawler.tocrawl = request.number
            line = "OK"
        elif verb == "sleep":
            crawler.sleep = request.number
            line = "OK"
        elif verb == "enable":
            line = "OK" if crawler.enable() else "ERROR failed to start lru crawler thread"
        else:
            crawler.disable()
            line = "OK"
        return CrawlerResult(line)

    def _nothing(self, request: Request) -> Result:
        return RESULT_OK

    # -- operator commands (the server acts, through Admin) ---------------

    def _shutdown(self, request: AdminRequest) -> AdminResult:
        # memcached checks -A before it looks at the mode.
        if not self.settings.enable_shutdown:
            return AdminResult(ADMIN_DISABLED)
        if request.graceful is None:
            return AdminResult(ADMIN_BAD_MODE)
        self.admin.shutdown(request.graceful)
        return _ADMIN_OK

    def _cache_memlimit(self, request: AdminRequest) -> AdminResult:
        limit = request.number << 20
        self.admin.set_memory_limit(limit)
        self.settings = replace(self.settings, memory_limit=limit)
        return _ADMIN_OK

    def _verbosity(self, request: AdminRequest) -> AdminResult:
        level = min(request.number, MAX_VERBOSITY)
        self.admin.set_verbosity(level)
        self.settings = replace(self.settings, verbosity=level)
        return _ADMIN_OK

    def _refresh_certs(self, request: AdminRequest) -> AdminResult:
        problem = self.admin.refresh_certs()
        return _ADMIN_OK if problem is None else AdminResult(ADMIN_FAILED, problem)

    # -- meta commands ---------------------------------------------------

    def _mg(self, request: MetaRequest) -> MetaResult:
        store = self.store
        key = request.key
        aborted = request.abort_at is not None
        order = request.order[: request.abort_at] if aborted else request.order
        with self.lock.write():  # may touch, vivify or hand out the win token
            rec = store.lookup(key)
            if self.logger.fetchers:
                self.logger.got(key, rec)
            created = rec is None and request.vivify is not None
            if created:
                rec = store.vivify(key)
            if rec is None:
                result = MetaResult(NOT_FOUND)
            else:
                now = store.clock()
                before = unpack(rec)
                exptime, atime = before.exptime, before.atime
                marks = store.marks(key)
                win_sent = bool(marks & WIN_SENT)
                stale = bool(marks & STALE)
                fetched = store.fetched(key)
                new_exptime, ttl, won = exptime, -1, False
                for letter in order:
                    if letter == "T":
                        new_exptime = store.expiry(request.ttl, now)
                    elif letter == "N":
                        if created:
                            new_exptime = store.expiry(request.vivify, now)
                            won = True
                    elif letter == "R":
                        if (
                            not win_sent
                            and not created
                            and new_exptime
                            and new_exptime < store.expiry(request.recache, now)
                        ):
                            won = True
                    elif letter == "t":
                        ttl = self._remaining(new_exptime, now)
                if new_exptime != exptime:
                    rec = store.set_expiry(key, new_exptime)
                if not aborted:
                    if stale and not win_sent:
                        won = True  # the first to see a stale item recaches it
                    if won:
                        store.set_marks(key, marks | WIN_SENT)
                # What a GET does to a hit: fetched, maybe bumped. memcached
                # does it last, so an error found on the way skips it, except
                # in a plain fetch (no h l T N R), where it comes first.
                if "u" not in request.order and not (
                    aborted and _LOCKED_FLAGS & set(request.order)
                ):
                    store.fetch(key)
                if not aborted:
                    store.count_hit(key, touch="T" in order)
                result = MetaResult(
                    OK,
                    unpack(rec),
                    ttl=ttl,
                    fetched=fetched,
                    idle=max(0, int(now) - atime),
                    won=won,
                    stale=stale,
                    win_sent=win_sent,
                    binary_key=bool(marks & KEY_BINARY),
                )
        if self.hot is not None:
            self.hot.saw_get(key)
        if not aborted:
            # As memcached: a miss always counts as a GET miss; a hit that
            # reached a T flag counts as a touch.
            stats = self.stats
            if result.status is not OK:
                stats.cmd_get += 1
                stats.get_misses += 1
            elif "T" in order:
                stats.cmd_touch += 1
                stats.touch_hits += 1
            else:
                stats.cmd_get += 1
                stats.get_hits += 1
        return result

    def _me(self, request: MetaRequest) -> MetaResult:
        store = self.store
        self.stats.cmd_meta += 1  # memcached 1.6.18 counts only me as a meta command
        with self.lock.read():
            rec = store.lookup(request.key)
            if rec is None:
                return MetaResult(NOT_FOUND)
            now = store.clock()
            fetched = store.fetched(request.key)
            marks = store.marks(request.key)
        item = unpack(rec)
        return MetaResult(
            OK,
            item,
            ttl=self._remaining(item.exptime, now),
            fetched=fetched,
            idle=max(0, int(now) - item.atime),
            binary_key=bool(marks & KEY_BINARY),
            size_class=store.classes.of(memcached_size(len(request.key), len(item.value), item.flags)),
        )

    def _ms(self, request: MetaRequest) -> MetaResult:
        store = self.store
        key = request.key
        mode = _MODES[request.mode]
        cas = request.compare_cas
        # As memcached's ms: C turns set and replace into a compare-and-swap
        # (against a literal 0 too); add ignores it; append and prepend
        # compare only a non-zero one.
        cas_mode = cas is not None and mode in (Mode.SET, Mode.REPLACE)
        if cas is None or mode is Mode.ADD:
            store_cas = 0
        elif cas_mode:
            store_cas = cas or NO_CAS_MATCH
        else:
            store_cas = cas
        watched = self.logger.requests
        with self.lock.write():
            before = store.lookup(key) if watched else None
            if request.refused:
                # Unlike set/add/..., ms drops the old item whatever its mode.
                status, new_cas = store.refuse(Mode.SET, key), 0
            else:
                status, new_cas = store.store(
                    mode, key, request.value, request.client_flags, request.ttl or 0, store_cas
                )
                if status is EXISTS and cas and cas_mode and "I" in request.order:
                    status, new_cas = store.store_stale(
                        key, request.value, request.client_flags, cas
                    )
                if status is OK and "b" in request.order:
                    store.set_marks(key, store.marks(key) | KEY_BINARY)
            if watched:
                after = store.lookup(key) if status is OK else None
                now = store.clock()
                exptime = store.expiry(request.ttl or 0, now)
        if self.hot is not None:
            self.hot.saw_set(key)
        self._count_store(request.refused, cas_mode, status)
        if watched:
            command = b"cas" if cas_mode else mode.value.encode()
            self._log_store(key, len(request.value), request.client_flags, request.refused,
                            command, status, before, after, exptime, now)
        return MetaResult(status, cas=new_cas)

    def _md(self, request: MetaRequest) -> MetaResult:
        cas = request.compare_cas
        cas = 0 if cas is None else cas or NO_CAS_MATCH
        invalidate = "I" in request.order
        watched = self.logger.requests
        with self.lock.write():
            before = self.store.lookup(request.key) if watched else None
            if invalidate:
                status, _ = self.store.invalidate(request.key, cas, request.ttl)
            else:
                status = self.store.delete(request.key, cas)
        if status is not OK:
            self.stats.delete_misses += 1  # memcached counts a CAS mismatch as a miss
        elif not invalidate:
            self.stats.delete_hits += 1
        if watched:
            self._log_delete(request.key, b"md", status if not invalidate else NOT_FOUND, before)
        return MetaResult(status)

    def _ma(self, request: MetaRequest) -> MetaResult:
        store = self.store
        key = request.key
        incr = request.mode != "decr"
        order = request.order if request.abort_at is None else request.order[: request.abort_at]
        watched = self.logger.requests
        with self.lock.write():
            before = store.lookup(key) if watched else None
            # memcached's ma compares only a non-zero CAS.
            status, number, cas = store.arith(
                key, incr, request.delta, None, 0, request.compare_cas or 0
            )
            created = False
            if status is NOT_FOUND and request.vivify is not None:
                # Created holding the initial value, the delta not applied.
                status, number, cas = store.arith(key, incr, request.delta, request.initial)
                created = status is OK
                if not created:
                    status = NOT_STORED
            item = None
            ttl = -1
            if status is OK:
                now = store.clock()
                rec = store.lookup(key)
                exptime = new_exptime = unpack(rec).exptime
                for letter in order:
                    if letter == "T":
                        new_exptime = store.expiry(request.ttl, now)
                    elif letter == "N" and created:
                        new_exptime = store.expiry(request.vivify, now)
                    elif letter == "t":
                        ttl = self._remaining(new_exptime, now)
                if new_exptime != exptime:
                    rec = store.set_expiry(key, new_exptime)
                item = unpack(rec)
        self._count_arith(incr, status, created)
        if watched:
            self._log_arith(key, before, created, status, rec if created else None)
        return MetaResult(status, item, cas, number, ttl, created=created)

    def _remaining(self, exptime: int, now: float) -> int:
        """The TTL memcached's t flag shows: seconds left, -1 for never.

        An item given an expiry in the past within the same command (T-1)
        shows what memcached prints for it: its internal "expired" time (1)
        minus its clock, which starts at 62 s, as an unsigned 32-bit number.
        """
        if exptime == 0:
            return -1
        if exptime == 1:
            return (1 - (int(now - self.store.started) + 62)) & 0xFFFFFFFF
        return exptime - int(now)
