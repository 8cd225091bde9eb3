"""`watch`: memcached's log stream of fetches, stores, evictions, deletions and connections.

What lives here: ``Logger``, which the command layer, the store and the
server tell about events, and which renders each as memcached 1.6 renders
it (``ts=... gid=... type=item_get key=... status=...``) into the buffer of
every watcher that asked for its kind; ``Watcher``, one watching
connection's bounded buffer. What does not: parsing `watch` (``protocol``)
or sending the lines (``connection``, which streams a watcher's buffer).

Nothing here does I/O or yields. A watcher's buffer holds at most
``WATCHER_BUFFER`` bytes: a watcher that reads slowly loses lines, as
memcached's does, and the next line it gets is preceded by
``skipped=<n>``; nobody else ever waits for it. When nobody watches, the
request path pays one attribute check per hook (``logger.fetchers`` and
its siblings are plain booleans).
"""

from __future__ import annotations

import time
from typing import Callable
from urllib.parse import quote

from .record import (
    ATIME,
    ATIME_OFFSET,
    VALUE_OFFSET,
    SizeClasses,
    exptime_of,
    flags_of,
    memcached_size,
)

FETCHERS, MUTATIONS, EVICTIONS, CONNEVENTS, DELETIONS = 1, 2, 4, 8, 16
KINDS = {
    b"fetchers": FETCHERS,
    b"mutations": MUTATIONS,
    b"evictions": EVICTIONS,
    b"connevents": CONNEVENTS,
    b"deletions": DELETIONS,
}
WATCHER_LIMIT = 20  # memcached's
WATCHER_BUFFER = 256 * 1024  # bytes a watcher may have unsent, as memcached's
_SKIP_ROOM = 128  # room kept for a skipped=<n> line, as memcached

# How memcached's logger names what happened.
GET_FOUND, GET_NOT_FOUND, GET_EXPIRED = b"found", b"not_found", b"expired"
STORE_STATUS = {
    "ok": b"stored",
    "not_stored": b"not_stored",
    "exists": b"exists",
    "not_found": b"not_found",
    "too_large": b"too_large",
    "no_memory": b"no_memory",
}
CLOSE_NORMAL, CLOSE_ERROR, CLOSE_IDLE, CLOSE_SHUTDOWN = b"normal", b"error", b"idle_timeout", b"shutdown"


def uriencode(key: bytes) -> bytes:
    """A key as memcached's uriencode writes it: unreserved characters as they are."""
    return quote(key, safe="").encode()


class _LogCounts:
    """memcached's log_* stats, for a Logger not given a Stats (tests)."""

    log_worker_written = log_watcher_skipped = log_watcher_sent = log_watchers = 0


def _nothing() -> None:
    pass


class Watcher:
    """One watching connection: what it asked for, and its unsent lines."""

    __slots__ = ("kinds", "lines", "size", "skipped", "wake")

    def __init__(self, kinds: int):
        self.kinds = kinds
        self.lines: list[bytes] = []
        self.size = 0
        self.skipped = 0
        # Called when lines arrive, from whatever logs them (a greenlet or
        # the hub): it must not switch, only arrange a wakeup.
        self.wake: Callable[[], None] = _nothing

    def take(self) -> bytes:
        """Every line buffered, now handed over for sending."""
        data = b"".join(self.lines)
        self.lines.clear()
        self.size = 0
        return data


class Logger:
    """Renders events for the watchers that want them, and counts what it did."""

    def __init__(self, clock: Callable[[], float] = time.time, store=None, stats=None):
        self.clock = clock
        # Where memcached's log_* stats are counted (a Stats; its own if none).
        self.stats = stats if stats is not None else _LogCounts()
        self.store = store  # told to report evictions while they are watched
        # memcached's size classes, for the clsid of each line.
        self.classes = store.classes if store is not None else SizeClasses()
        self.watchers: list[Watcher] = []
        self.gid = 0
        self.cfd = 0  # the descriptor of the connection being answered (set by it)
        self.fetchers = self.mutations = self.evictions = False
        self.connevents = self.deletions = self.requests = False

    # -- watchers --------------------------------------------------------

    def add(self, kinds: int) -> Watcher | None:
        """A new watcher for ``kinds``; None when WATCHER_LIMIT are watching."""
        if len(self.watchers) >= WATCHER_LIMIT:
            return None
        watcher = Watcher(kinds)
        self.watchers.append(watcher)
        self._update()
        return watcher

    def remove(self, watcher: Watcher) -> None:
        if watcher in self.watchers:
            self.watchers.remove(watcher)
            self._update()

    def _update(self) -> None:
        self.stats.log_watchers = len(self.watchers)
        kinds = 0
        for watcher in self.watchers:
            kinds |= watcher.kinds
        if self.store is not None:
            self.store.on_evict = self.evicted if kinds & EVICTIONS else None
            if kinds & EVICTIONS:
                # fetch=yes|no needs to know which items were read: items
                # stored from now on are tracked (earlier ones count as read).
                self.store.track_fetches()
        self.fetchers = bool(kinds & FETCHERS)
        self.mutations = bool(kinds & MUTATIONS)
        # Whether events about requests are watched: the connection being
        # answered then keeps ``cfd`` current.
        self.requests = bool(kinds & (FETCHERS | MUTATIONS | DELETIONS))
        self.evictions = bool(kinds & EVICTIONS)
        self.connevents = bool(kinds & CONNEVENTS)
        self.deletions = bool(kinds & DELETIONS)

    def size_class(self, key: bytes, value_length: int, flags: int) -> int:
        """The memcached size class an item of this shape lands in."""
        return self.classes.of(memcached_size(len(key), value_length, flags))

    def record_class(self, key: bytes, rec: bytes) -> int:
        return self.size_class(key, len(rec) - VALUE_OFFSET, flags_of(rec))

    # -- what the command layer and the store saw, as memcached logs it ---

    def got(self, key: bytes, rec: bytes | None) -> None:
        """A lookup of ``key`` (fetchers): ``rec`` is what it found."""
        if rec is None:
            self.item_get(key, GET_NOT_FOUND)
        else:
            self.item_get(key, GET_FOUND, self.record_class(key, rec), len(rec) - VALUE_OFFSET)

    def got_item(self, key: bytes, item) -> None:
        """``got``, for a lookup that returned an ``record.Item``."""
        if item is None:
            self.item_get(key, GET_NOT_FOUND)
        else:
            clsid = self.size_class(key, len(item.value), item.flags)
            self.item_get(key, GET_FOUND, clsid, len(item.value))

    def stored(
        self, key: bytes, command: bytes, status: str, rec: bytes | None, size: int, flags: int,
        exptime: int, now: float,
    ) -> None:
        """A storage command's outcome (mutations). ``rec`` is the item it
        left (None when nothing was stored); otherwise ``size``, ``flags``
        and ``exptime`` (absolute, 0 never) describe what it tried to store."""
        if rec is not None:
            exptime, size, clsid = exptime_of(rec), len(rec) - VALUE_OFFSET, self.record_class(key, rec)
        elif status in ("too_large", "no_memory"):
            clsid = 0  # never given a place
        else:
            clsid = self.size_class(key, size, flags)
        ttl = max(exptime - int(now), 0) if exptime > 1 else 0
        self.item_store(key, STORE_STATUS[status], command, ttl, clsid, size)

    def gone(self, key: bytes, command: bytes, rec: bytes) -> None:
        """``rec``, the item under ``key``, was deleted by ``command`` (deletions)."""
        self.deleted(key, command, self.record_class(key, rec), len(rec) - VALUE_OFFSET)

    def evicted(self, key: bytes, rec: bytes, fetched: bool, now: float) -> None:
        """``rec`` was evicted to make room (evictions)."""
        exptime = exptime_of(rec)
        ttl = exptime - int(now) if exptime else -1
        idle = max(int(now) - ATIME.unpack_from(rec, ATIME_OFFSET)[0], 0)
        self.eviction(key, fetched, ttl, idle, self.record_class(key, rec), len(rec) - VALUE_OFFSET)

    # -- events ------------------------------------------------------------
    # Each renders memcached 1.6's line; callers check the kind's flag first.

    def item_get(self, key: bytes, status: bytes, clsid: int = 0, size: int = 0) -> None:
        self._emit(
            FETCHERS,
            b"type=item_get key=%b status=%b clsid=%d cfd=%d size=%d\n"
            % (uriencode(key), status, clsid, self.cfd, size),
        )

    def item_store(
        self, key: bytes, status: bytes, command: bytes, ttl: int, clsid: int, size: int
    ) -> None:
        self._emit(
            MUTATIONS,
            b"type=item_store key=%b status=%b cmd=%b ttl=%d clsid=%d cfd=%d size=%d\n"
            % (uriencode(key), status, command, ttl, clsid, self.cfd, size),
        )

    def eviction(self, key: bytes, fetched: bool, ttl: int, idle: int, clsid: int, size: int) -> None:
        self._emit(
            EVICTIONS,
            b"type=eviction key=%b fetch=%b ttl=%d la=%d clsid=%d size=%d\n"
            % (uriencode(key), b"yes" if fetched else b"no", ttl, idle, clsid, size),
        )

    def deleted(self, key: bytes, command: bytes, clsid: int, size: int) -> None:
        self._emit(
            DELETIONS,
            b"type=deleted key=%b cmd=%b clsid=%d size=%d\n"
            % (uriencode(key), command, clsid, size),
        )

    def conn_new(self, host: str, port: int, transport: bytes, cfd: int) -> None:
        self._emit(
            CONNEVENTS,
            b"type=conn_new rip=%b rport=%d transport=%b cfd=%d\n"
            % (host.encode(), port, transport, cfd),
        )

    def conn_close(self, host: str, port: int, transport: bytes, reason: bytes, cfd: int) -> None:
        self._emit(
            CONNEVENTS,
            b"type=conn_close rip=%b rport=%d transport=%b reason=%b cfd=%d\n"
            % (host.encode(), port, transport, reason, cfd),
        )

    def _emit(self, kind: int, body: bytes) -> None:
        self.gid += 1
        stats = self.stats
        stats.log_worker_written += 1
        now = self.clock()
        seconds = int(now)
        # memcached prints the microseconds with %d: not padded to six digits.
        line = b"ts=%d.%d gid=%d " % (seconds, int((now - seconds) * 1e6), self.gid) + body
        for watcher in self.watchers:
            if not watcher.kinds & kind:
                continue
            if watcher.size + len(line) + _SKIP_ROOM > WATCHER_BUFFER:
                watcher.skipped += 1
                stats.log_watcher_skipped += 1
                continue
            if watcher.skipped:
                note = b"skipped=%d\n" % watcher.skipped
                watcher.lines.append(note)
                watcher.size += len(note)
                watcher.skipped = 0
            watcher.lines.append(line)
            watcher.size += len(line)
            stats.log_watcher_sent += 1
            watcher.wake()
