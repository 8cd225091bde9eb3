"""Protocol-neutral command semantics: a Request in, a Result out.

What lives here: the request and result types every protocol codec shares,
and ``Commands.execute``, which takes the store lock, calls the store, counts
the statistics, and releases the lock before returning; and ``Admin``, what
the operator commands (shutdown, cache_memlimit, verbosity, refresh_certs)
ask of the server, which implements it. What does not: bytes on the wire
(``protocol/``), sockets (``connection``) and the server itself.

The lock is held only around store calls, which never yield, so no greenlet
can be holding it while it waits on a socket.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, NamedTuple, Protocol

from . import hotkeys
from . import stats as statsmod
from .record import Item, unpack
from .rwlock import RWLock
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
        warmup: LoadProgress | None = None,
    ):
        self.store = store
        self.lock = lock
        self.stats = stats
        self.settings = settings
        self.admin = admin
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
            self._handlers[mode] = self._store
        for name in ("mg", "ms", "md", "ma", "me"):
            self._handlers[name] = self._tracking_fetches(self._handlers[name])

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
        lock.acquire_read()
        try:
            records = self.store.get_many(keys)
        finally:
            lock.release_read()
        if self.hot is not None:
            self.hot.saw_gets(keys)
        stats = self.stats
        count = len(records)
        misses = records.count(None)
        stats.cmd_get += count
        stats.get_hits += count - misses
        stats.get_misses += misses
        return records

    def get_record(self, key: bytes) -> bytes | None:
        """One key's item record or None: get_many for a lone GET."""
        lock = self.lock
        lock.acquire_read()
        try:
            record = self.store.get_record(key)
        finally:
            lock.release_read()
        if self.hot is not None:
            self.hot.saw_get(key)
        stats = self.stats
        stats.cmd_get += 1
        if record is None:
            stats.get_misses += 1
        else:
            stats.get_hits += 1
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
        return records

    def _gat(self, request: Request) -> Result:
        result = self._touch(request)
        if result.item is not None:
            return result
        return RESULT_NOT_FOUND

    def _touch(self, request: Request) -> Result:
        with self.lock.write():
            item = self.store.touch(request.key, request.exptime)
        self.stats.cmd_touch += 1
        if item is None:
            self.stats.touch_misses += 1
            return RESULT_NOT_FOUND
        self.stats.touch_hits += 1
        return Result(OK, item.cas, item)

    # -- writes ----------------------------------------------------------

    def _store(self, request: Request) -> Result:
        mode = _MODES[request.command]
        refused = request.refused
        lock = self.lock
        lock.acquire_write()
        try:
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
        finally:
            lock.release_write()
        if self.hot is not None:
            self.hot.saw_set(request.key)
        # memcached counts cas_* for set/add/replace carrying a CAS (its
        # NREAD_CAS) only, not for append/prepend.
        cas_mode = bool(request.cas) and mode is not _APPEND and mode is not _PREPEND
        self._count_store(refused, cas_mode, status)
        return _new(Result, (status, cas, None, 0, None))

    def _delete(self, request: Request) -> Result:
        with self.lock.write():
            status = self.store.delete(request.key, request.cas)
        if status is OK:
            self.stats.delete_hits += 1
        elif status is NOT_FOUND:
            self.stats.delete_misses += 1
        return Result(status)

    def _arith(self, request: Request) -> Result:
        incr = request.command == "incr"
        key, delta, cas = request.key, request.delta, request.cas
        store = self.store
        with self.lock.write():
            status, number, new_cas = store.arith(key, incr, delta, None, 0, cas)
            created = status is NOT_FOUND and request.initial is not None
            if created:
                status, number, new_cas = store.arith(
                    key, incr, delta, request.initial, request.exptime, cas
                )
        self._count_arith(incr, status, created)
        return Result(status, new_cas, number=number)

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
        # `stats reset` writes; every other group only reads.
        with self.lock.write() if group == "reset" else self.lock.read():
            pairs = self._stat_group(group)
        if pairs is None:
            return RESULT_NOT_FOUND
        return Result(OK, stats=pairs)

    def _stat_group(self, group: str) -> list[tuple[str, str]] | None:
        store, stats, settings = self.store, self.stats, self.settings
        if group == "":
            pairs = statsmod.general(stats, store, settings)
            if self.warmup is not None:
                # After memcached's fields, whose order tools may rely on.
                pairs += self.warmup.stat_pairs()
            return pairs
        if group == "settings":
            return statsmod.settings_group(settings, stats)
        if group == "items":
            return statsmod.items_group(store)
        if group == "slabs":
            return statsmod.slabs_group(store)
        if group == "sizes":
            return statsmod.sizes_group(store)
        if group == "conns":
            return statsmod.conns_group(stats)
        if group == "hotkeys":
            return hotkeys.stat_pairs(self.hot)
        if group == "reset":
            stats.reset()
            store.reset_counters()
            return []
        return None

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
                    store.get_many((key,))
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
        with self.lock.write():
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
        if self.hot is not None:
            self.hot.saw_set(key)
        self._count_store(request.refused, cas_mode, status)
        return MetaResult(status, cas=new_cas)

    def _md(self, request: MetaRequest) -> MetaResult:
        cas = request.compare_cas
        cas = 0 if cas is None else cas or NO_CAS_MATCH
        invalidate = "I" in request.order
        with self.lock.write():
            if invalidate:
                status, _ = self.store.invalidate(request.key, cas, request.ttl)
            else:
                status = self.store.delete(request.key, cas)
        if status is not OK:
            self.stats.delete_misses += 1  # memcached counts a CAS mismatch as a miss
        elif not invalidate:
            self.stats.delete_hits += 1
        return MetaResult(status)

    def _ma(self, request: MetaRequest) -> MetaResult:
        store = self.store
        key = request.key
        incr = request.mode != "decr"
        order = request.order if request.abort_at is None else request.order[: request.abort_at]
        with self.lock.write():
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
