"""Protocol-neutral command semantics: a Request in, a Result out.

What lives here: the request and result types every protocol codec shares,
and ``Commands.execute``, which takes the store lock, calls the store, counts
the statistics, and releases the lock before returning. What does not: bytes
on the wire (``protocol/``) and sockets (``connection``).

The lock is held only around store calls, which never yield, so no greenlet
can be holding it while it waits on a socket.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from . import stats as statsmod
from .rwlock import RWLock
from .store import (
    EXISTS,
    NOT_FOUND,
    NO_MEMORY,
    OK,
    TOO_LARGE,
    Item,
    Mode,
    Status,
    Store,
    unpack,
)

if TYPE_CHECKING:
    from .config import Settings
    from .stats import Stats


class Request(NamedTuple):
    """One parsed command. Codecs fill in the fields their command uses."""

    command: str  # see Commands.execute for the names
    key: bytes = b""
    value: bytes = b""
    flags: int = 0
    exptime: int = 0  # memcached exptime (ttl or Unix time), or a flush delay
    cas: int = 0
    delta: int = 0
    initial: int | None = None  # incr/decr: create missing keys with this
    refused: bool = False  # a store whose value was too large to accept
    # Protocol bookkeeping, ignored by the command layer:
    opcode: int = 0
    opaque: int = 0
    quiet: bool = False
    echo_key: bool = False


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


_MODES = {mode.value: mode for mode in Mode}

_CAS_MODES = frozenset((Mode.SET, Mode.ADD, Mode.REPLACE))

# Builds a Result without the Python-level __new__ of a NamedTuple call:
# this is on every store's path.
_new = tuple.__new__

RESULT_OK = Result(OK)
RESULT_NOT_FOUND = Result(NOT_FOUND)


class Commands:
    """Executes requests against one store, under its lock, counting stats."""

    def __init__(self, store: Store, lock: RWLock, stats: Stats, settings: Settings):
        self.store = store
        self.lock = lock
        self.stats = stats
        self.settings = settings
        self._handlers = {
            "get": self._get,
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
            "unknown": self._nothing,  # the codec answers it; nothing to do here
        }
        for mode in _MODES:
            self._handlers[mode] = self._store

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
        stats = self.stats
        hits = len(records) - records.count(None)
        stats.cmd_get += len(records)
        stats.get_hits += hits
        stats.get_misses += len(records) - hits
        return records

    def _get(self, request: Request) -> Result:
        record = self.get_many([request.key])[0]
        if record is None:
            return RESULT_NOT_FOUND
        item = unpack(record)
        return Result(OK, item.cas, item)

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
        store = self.store
        with self.lock.write():
            if request.refused:
                status, cas = store.refuse(mode, request.key), 0
            else:
                status, cas = store.store(
                    mode,
                    request.key,
                    request.value,
                    request.flags,
                    request.exptime,
                    request.cas,
                )
        stats = self.stats
        if not request.refused:  # memcached never counts a refused value as a set
            stats.cmd_set += 1
        if request.cas and mode in _CAS_MODES:
            # memcached counts these for set/add/replace carrying a CAS
            # (its NREAD_CAS) only, not for append/prepend.
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
        # As memcached: a hit counts once the value parsed and the CAS
        # matched; a counter created from `initial` counts as neither.
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
        return Result(status, new_cas, number=number)

    def _flush(self, request: Request) -> Result:
        with self.lock.write():
            self.store.flush(request.exptime)
        self.stats.cmd_flush += 1
        return RESULT_OK

    # -- the rest --------------------------------------------------------

    def _stats(self, request: Request) -> Result:
        group = request.key.decode("ascii", "replace").strip()
        # `stats reset` writes; every other group only reads.
        with self.lock.write() if group == "reset" else self.lock.read():
            pairs = self._stat_group(group)
        if pairs is None:
            return RESULT_NOT_FOUND
        return Result(OK, stats=pairs)

    def _stat_group(self, group: str) -> list[tuple[str, str]] | None:
        store, stats, settings = self.store, self.stats, self.settings
        if group == "":
            return statsmod.general(stats, store, settings)
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
        if group == "reset":
            stats.reset()
            store.reset_counters()
            return []
        return None

    def _nothing(self, request: Request) -> Result:
        return RESULT_OK
