"""The item store: items, expiry, CAS, LRU eviction and memory accounting.

What lives here: ``Store``, the table of items and every rule about them,
implementing ``storage.ItemStore`` with results that say what happened in
protocol-neutral terms (``storage.Status``). What does not: the record
layout (``record``), locking (callers hold the store's ``RWLock``),
per-command statistics (``commands``), and anything about wire formats.

Nothing here does I/O or yields to another greenlet: once a call starts it
runs to completion, so the store lock is never held across a switch.

The clock is injected (``clock`` returns Unix seconds as a float), so tests
move time instead of sleeping. Expiry is enforced lazily, on access, as
memcached does; eviction reclaims expired items first when it meets them.

Per-class accounting: mbserver has no slab allocator, but every item falls
into one of memcached's size classes (``record.SizeClasses``), and the store
counts per class what `stats items` and `stats slabs` report: items, their
memcached size, the age of the oldest, and events (hits, sets, evictions...,
``ClassCounters``). On the request paths that is an index into a byte table
and a list or dict update per link, unlink and hit.
"""

from __future__ import annotations

import re
import struct
import sys
import time
from math import floor
from typing import Callable

from .record import (
    ATIME,
    ATIME_OFFSET,
    CAS,
    CAS_FLAGS,
    CAS_OFFSET,
    EXPTIME,
    HEADER,
    MAX_SLAB_CLASS,
    MEMCACHED_FLAGS_SIZE,
    MEMCACHED_ITEM_HEADER,
    TIMES,
    TIMES_FLAGS,
    VALUE_OFFSET,
    Item,
    SizeClasses,
    expired,
    unpack,
    with_exptime,
)
from .storage import (
    EXISTS,
    KEY_BINARY,
    NO_MEMORY,
    NON_NUMERIC,
    NOT_FOUND,
    NOT_STORED,
    OK,
    STALE,
    TOO_LARGE,
    WIN_SENT,
    Mode,
    Status,
)

__all__ = [
    "ClassCounters",
    "ITEM_OVERHEAD",
    "LRU_BUMP_INTERVAL",
    "RELATIVE_EXPIRY_LIMIT",
    "Store",
    "parse_counter",
    # the vocabulary a store speaks, from storage, for the store's users
    "EXISTS",
    "KEY_BINARY",
    "NO_MEMORY",
    "NON_NUMERIC",
    "NOT_FOUND",
    "NOT_STORED",
    "OK",
    "STALE",
    "TOO_LARGE",
    "WIN_SENT",
    "Mode",
    "Status",
]

# memcached treats an expiry up to 30 days as relative seconds and anything
# larger as an absolute Unix time.
RELATIVE_EXPIRY_LIMIT = 60 * 60 * 24 * 30

# An item is bumped to the young end of the LRU at most this often, as in
# memcached (ITEM_UPDATE_INTERVAL): hot keys stay safe from eviction without
# reordering the table on every hit.
LRU_BUMP_INTERVAL = 60.0

# What one item costs beyond its key and value bytes in this process: its
# table slot (amortised over the dict's growth), the key's and the record's
# object headers, and the record's 20-byte header. Measured with tracemalloc
# at 116-138 bytes (tests/unit/test_store.py keeps it honest), so that -m
# bounds real memory, not just payload.
ITEM_OVERHEAD = 128

UINT64_MASK = (1 << 64) - 1
_UINT32_MAX = 0xFFFFFFFF

# strtoull as memcached's safe_strtoull uses it: optional leading white
# space, digits, then the end or more white space.
_COUNTER = re.compile(rb"[ \t\n\v\f\r]*\+?([0-9]+)(?:[ \t\n\v\f\r]|\Z)")

# memcached's size of an item (record.memcached_size) is its key and value
# lengths plus one of these, and a record is 20 bytes longer than its value.
_NTOTAL = MEMCACHED_ITEM_HEADER
_NTOTAL_FLAGS = MEMCACHED_ITEM_HEADER + MEMCACHED_FLAGS_SIZE
# The 8-byte granule that SizeClasses.table is indexed by, (ntotal + 7) >> 3,
# is (len(key) + len(record) + one of these) >> 3.
_GRANULE = _NTOTAL + 7 - VALUE_OFFSET
_GRANULE_FLAGS = _NTOTAL_FLAGS + 7 - VALUE_OFFSET

# A class's items of one last-access second, and their memcached size,
# packed into one int (count << 48 | bytes): a link or unlink is one update.
_COUNT_SHIFT = 48
_ONE_ITEM = 1 << _COUNT_SHIFT
_BYTES_MASK = _ONE_ITEM - 1

# Bound methods, not attribute lookups, on the request paths.
_times_flags = TIMES_FLAGS.unpack_from
_exptime = EXPTIME.unpack_from
_atime_flags = struct.Struct(">4xI8xI").unpack_from  # a record's last access and flags

# Plain names for the members: looking up Mode.SET costs several times a
# global name (an Enum class attribute), and these are on every store's path.
_SET, _ADD, _REPLACE, _APPEND, _PREPEND = (
    Mode.SET, Mode.ADD, Mode.REPLACE, Mode.APPEND, Mode.PREPEND
)


def _table_bytes(table: dict | set) -> int:
    """A dict's or set's own size in memory, its hash table without the
    objects it holds: ``sys.getsizeof`` where the interpreter has it.
    PyPy has none; there, the size of a CPython dict of that many entries
    (a power-of-two index at most two-thirds full, 24 bytes an entry),
    which says nothing of the space deleted entries still hold."""
    try:
        return sys.getsizeof(table)
    except TypeError:
        slots = 8
        while slots * 2 < len(table) * 3:
            slots <<= 1
        index_bytes = 1 if slots <= 0x80 else 2 if slots <= 0x8000 else 4 if slots <= 1 << 31 else 8
        return slots * index_bytes + (slots * 2 // 3) * 24


def _cas(rec: bytes) -> int:
    return CAS.unpack_from(rec, CAS_OFFSET)[0]


def parse_counter(value: bytes) -> int | None:
    """The unsigned 64-bit number a counter item holds, or None if it holds none."""
    match = _COUNTER.match(value)
    if match is None:
        return None
    number = int(match.group(1))
    return number if number <= UINT64_MASK else None


class ClassCounters:
    """Events per memcached size class: one list per counter, indexed by class.

    What `stats items` (evicted ... direct_reclaims) and `stats slabs`
    (get_hits ... touch_hits) show per class; memcached's global figures are
    their sums. ``evicted_time`` is not a count: the seconds between the
    last eviction and that item's last access.
    """

    NAMES = (
        "evicted",
        "evicted_nonzero",
        "evicted_time",
        "outofmemory",
        "reclaimed",
        "expired_unfetched",
        "evicted_unfetched",
        "crawler_reclaimed",
        "crawler_items_checked",
        "direct_reclaims",
        "get_hits",
        "cmd_set",
        "delete_hits",
        "incr_hits",
        "decr_hits",
        "cas_hits",
        "cas_badval",
        "touch_hits",
    )
    __slots__ = NAMES

    def __init__(self) -> None:
        for name in self.NAMES:
            setattr(self, name, [0] * (MAX_SLAB_CLASS + 1))

    def reset(self) -> None:
        """Zero every counter in place: the store's request paths hold the lists."""
        for name in self.NAMES:
            counts = getattr(self, name)
            counts[:] = [0] * len(counts)

    def total(self, name: str) -> int:
        return sum(getattr(self, name))


class Store:
    """The table of items. Callers hold the store lock around every call."""

    def __init__(
        self,
        limit_bytes: int = 64 << 20,
        max_item_size: int = 1 << 20,
        clock: Callable[[], float] = time.time,
    ):
        self.limit_bytes = limit_bytes
        self.max_item_size = max_item_size
        self.clock = clock
        self.started = clock()
        # key -> record (see the layout above). Insertion order is LRU
        # order: the first key is the least recently used.
        self._items: dict[bytes, bytes] = {}
        self._last_cas = 0
        # A delayed flush's deadline: the first call at or after it empties
        # the table (memcached's oldest_live, applied eagerly).
        self._flush_at: float | None = None
        # When the last flush_all took or takes effect (`stats settings`' "oldest").
        self.oldest_live: float | None = None
        self.bytes = 0
        self.total_items = 0
        self.evictions = 0
        self.reclaimed = 0
        self.get_expired = 0  # lookups that found an expired item (and dropped it)
        # memcached's size classes for -I, and the byte table the request
        # paths look an item's class up in.
        self.classes = SizeClasses(max_item_size)
        # Indexed by an item's 8-byte granule; an item past its end (over
        # slab_chunk_max, rare) is in the top class. A list, not the bytes:
        # CPython indexes lists faster (512 KiB).
        self._class_table = list(self.classes.table)
        self._granules = len(self._class_table)
        self._top_class = self.classes.largest
        # Per class: last-access second -> that second's items and their
        # memcached size, packed (_ONE_ITEM). The class's item count and
        # memory are the sum, its oldest item's age the smallest key: both
        # read at stats time, never walking the table.
        self._ages: list[dict[int, int]] = [{} for _ in range(MAX_SLAB_CLASS + 1)]
        self.counters = ClassCounters()
        self._get_hits = self.counters.get_hits
        self._cmd_set = self.counters.cmd_set
        # Beside the records, so that record[8:] stays a binary GET reply's
        # tail: the meta commands' marks (STALE ...), and the keys of items
        # no client has fetched yet (mg's h: "hit before"). A set, not a bit
        # per item, because the record has no bit to spare; it holds only
        # items stored and not yet read.
        self._marks: dict[bytes, int] = {}
        self._unfetched: set[bytes] = set()
        # The set costs ~35 bytes an item, so it is kept only once a client
        # uses the meta commands (the only ones that can ask): a cache used
        # through get/set alone pays nothing for it.
        self._track_fetches = False
        # Told of every live item evicted: (key, record, fetched, now). The
        # command layer sets it while someone runs `watch evictions`.
        self.on_evict: Callable[[bytes, bytes, bool, float], None] | None = None
        # While a snapshot loads in the background (begin_load to end_load):
        # the keys clients have written or deleted since it began, which the
        # rest of the load must leave alone. None otherwise, so the write
        # paths pay one attribute check when no load runs.
        self._claims: set[bytes] | None = None
        # Slices a load added (key, record, key, record...) whose items are
        # not yet counted in their classes' _ages: see account_loaded. Until
        # then their lists stay alive: 16 bytes an item (160 MiB at 10
        # million), and the records of any the clients replaced meanwhile.
        self._unaccounted: list[list[bytes]] = []

    # -- reading ---------------------------------------------------------

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: bytes) -> bool:
        return self._live(key, self._now()) is not None

    def get_many(self, keys) -> list[bytes | None]:
        """Each key's live record (see the layout above), or None; hits are
        bumped and counted in their class's get_hits.

        The GET path of both protocols: one call for a whole multi-get.
        """
        return self._lookup(keys, self._now(), self._get_hits)

    def get_record(self, key: bytes) -> bytes | None:
        """One key's live record or None: get_many for a lone GET, the
        commonest read, without building lists when nothing needs doing.

        ``_now`` is written out: a call is a tenth of this path.
        """
        now = self.clock()
        if self._flush_at is not None and now >= self._flush_at:
            self._flush_now()
        rec = self._items.get(key)
        if rec is None:
            return None
        exptime, atime, flags = _times_flags(rec)
        if (exptime and exptime <= now) or self._unfetched or now - atime >= LRU_BUMP_INTERVAL:
            return self._lookup((key,), now, self._get_hits)[0]
        try:
            cls = self._class_table[
                (len(key) + len(rec) + (_GRANULE_FLAGS if flags else _GRANULE)) >> 3
            ]
        except IndexError:
            cls = self._top_class
        self._get_hits[cls] += 1
        return rec

    def fetch(self, key: bytes) -> None:
        """What a GET does to a hit, without counting it: marked fetched,
        maybe bumped (mg, which counts its hit itself with ``count_hit``)."""
        self._lookup((key,), self._now(), None)

    def count_hit(self, key: bytes, touch: bool) -> None:
        """Count a hit on key's live item in its class: a get, or a touch."""
        rec = self._items.get(key)
        if rec is not None:
            counts = self.counters.touch_hits if touch else self._get_hits
            counts[self._class_of(key, rec)] += 1

    def _lookup(self, keys, now: float, hits: list[int] | None) -> list[bytes | None]:
        items = self._items
        found = []
        append = found.append
        times = _times_flags
        unfetched = self._unfetched
        table = self._class_table
        # A record's times are whole seconds: exptime <= now exactly when
        # exptime <= floor(now), and now - atime >= LRU_BUMP_INTERVAL exactly
        # when atime <= floor(now - LRU_BUMP_INTERVAL). Comparing ints with
        # ints, once per key, costs a third of comparing them with a float
        # (callgrind: about 580 instructions a key of a multi-get).
        second = floor(now)
        bump_by = floor(now - LRU_BUMP_INTERVAL)
        for key in keys:
            rec = items.get(key)
            if rec is not None:
                exptime, atime, flags = times(rec)
                if exptime and exptime <= second:
                    self._reclaim(key, rec)
                    self.get_expired += 1
                    rec = None
                else:
                    if unfetched:
                        unfetched.discard(key)
                    if atime <= bump_by:
                        rec = self._bump(key, rec, now)
                    if hits is not None:
                        try:
                            cls = table[
                                (len(key) + len(rec) + (_GRANULE_FLAGS if flags else _GRANULE)) >> 3
                            ]
                        except IndexError:
                            cls = self._top_class
                        hits[cls] += 1
            append(rec)
        return found

    def touch(self, key: bytes, ttl: int) -> Item | None:
        """Give a live item a new expiry; None on a miss."""
        rec = self.touch_record(key, ttl)
        return None if rec is None else unpack(rec)

    def touch_record(self, key: bytes, ttl: int) -> bytes | None:
        """``touch``, returning the item's new record (a text GAT writes it as a GET)."""
        now = self._now()
        rec = self._live(key, now)
        if rec is None:
            return None
        cas, flags = CAS_FLAGS.unpack_from(rec, CAS_OFFSET)
        new = HEADER.pack(self.expiry(ttl, now), int(now), cas, flags) + rec[VALUE_OFFSET:]
        # Re-inserted at the young end: a touch is an access.
        cls = self._move(key, rec, new)
        self._unfetched.discard(key)  # and a fetch, as memcached counts it
        self.counters.touch_hits[cls] += 1
        return new

    def items(self) -> list[tuple[bytes, Item]]:
        """A snapshot of the live items, least recently used first."""
        now = self._now()
        return [(k, unpack(r)) for k, r in self._items.items() if not expired(r, now)]

    def reset_counters(self) -> None:
        self.total_items = self.evictions = self.reclaimed = self.get_expired = 0
        self.counters.reset()

    def class_usage(self) -> dict[int, tuple[int, int, int]]:
        """Each class holding items: (items, their memcached bytes, the
        oldest one's last-access Unix second), in class order."""
        self._now()  # a delayed flush that is due empties the table first
        usage = {}
        counting = bool(self._unaccounted)
        for cls, ages in enumerate(self._ages):
            if ages:
                held = sum(ages.values())
                if not counting:
                    usage[cls] = (held >> _COUNT_SHIFT, held & _BYTES_MASK, min(ages))
                elif held > 0:
                    # Loaded items still being counted: a bucket may be
                    # below zero (see account_loaded).
                    oldest = min(atime for atime, n in ages.items() if n > 0)
                    usage[cls] = (held >> _COUNT_SHIFT, held & _BYTES_MASK, oldest)
        return usage

    def table_bytes(self) -> int:
        """The item table's own size in memory (its hash table, not the items)."""
        return _table_bytes(self._items)

    # -- walking the table a slice at a time (dumps, the crawler, stats sizes) --

    def keys(self) -> list[bytes]:
        """Every key, least recently used first, copied in one C call.

        The table cannot be walked in pieces across other clients' changes
        (a dict iterator dies when the dict changes size), so a walk starts
        from this copy: 8 bytes a key and about 25 ms per million keys,
        under the caller's hold. The items themselves are then read a slice
        at a time with ``entries``, each under its own hold.
        """
        self._now()
        return list(self._items)

    def entries(
        self, keys, classes: frozenset[int] | None = None, binary_keys: bool = True
    ) -> list[tuple[bytes, bytes, int, bool]]:
        """(key, record, class, fetched) for those of ``keys`` still live,
        in ``classes`` (None: any) and, unless ``binary_keys``, not stored
        with a binary key (mbserver's mark for ms b)."""
        now = self._now()
        items = self._items
        unfetched = self._unfetched
        marks = self._marks
        found = []
        for key in keys:
            rec = items.get(key)
            if rec is None or expired(rec, now):
                continue
            cls = self._class_of(key, rec)
            if classes is not None and cls not in classes:
                continue
            if not binary_keys and marks and marks.get(key, 0) & KEY_BINARY:
                continue
            found.append((key, rec, cls, key not in unfetched))
        return found

    def crawl(self, keys, classes: frozenset[int] | None, remaining: list[int] | None) -> None:
        """The LRU crawler's work on a slice of keys: reclaim the expired items
        of ``classes`` (None: all), counting checks and reclaims per class.

        ``remaining`` (per class, or None for no limit) is how many more
        items of each class this crawl may check; it is decremented here.
        """
        now = self._now()
        items = self._items
        counters = self.counters
        for key in keys:
            rec = items.get(key)
            if rec is None:
                continue
            cls = self._class_of(key, rec)
            if classes is not None and cls not in classes:
                continue
            if remaining is not None:
                if remaining[cls] <= 0:
                    continue
                remaining[cls] -= 1
            counters.crawler_items_checked[cls] += 1
            if expired(rec, now):
                if key in self._unfetched:
                    counters.expired_unfetched[cls] += 1
                self._unlink(key, rec)
                counters.crawler_reclaimed[cls] += 1

    # -- what the meta commands need (commands.Commands._mg and friends) --

    def lookup(self, key: bytes) -> bytes | None:
        """key's live record, neither bumped nor counted as fetched (mg u, me)."""
        return self._live(key, self._now())

    def track_fetches(self) -> None:
        """Remember, from now on, which items no client has read (for mg's h).

        Items stored before this count as read: the meta commands call it
        before anything else, so a client using them sees exact answers.
        """
        self._track_fetches = True

    def fetched(self, key: bytes) -> bool:
        """Whether a client has read key's item since it was stored (mg h)."""
        return key not in self._unfetched

    def marks(self, key: bytes) -> int:
        """key's meta marks (STALE, WIN_SENT, KEY_BINARY); 0 for none."""
        return self._marks.get(key, 0)

    def set_marks(self, key: bytes, marks: int) -> None:
        """Replace key's meta marks; the caller has checked the item is live."""
        if marks:
            self._marks[key] = marks
        else:
            self._marks.pop(key, None)

    def vivify(self, key: bytes) -> bytes:
        """Create an empty item for key (mg N on a miss): flags 0, never expires; its record."""
        self._link(key, (b"",), 0, 0, 0, self._now(), None)
        return self._items[key]

    def set_expiry(self, key: bytes, exptime: int) -> bytes | None:
        """Give key's live item the absolute ``exptime`` (see ``expiry``) in place.

        Unlike ``touch`` this is not an access: the item keeps its place in
        the LRU and its last-access time, as memcached's mg T does.
        """
        rec = self._live(key, self._now())
        if rec is None:
            return None
        rec = with_exptime(rec, exptime)
        self._items[key] = rec
        return rec

    def invalidate(self, key: bytes, cas: int = 0, ttl: int | None = None) -> tuple[Status, int]:
        """md I: mark key's item stale with a new CAS, keeping its value; (status, CAS).

        A non-zero ``cas`` must match. ``ttl`` (memcached exptime), when
        given, replaces the expiry. The win token is cleared, so the next
        mg of the stale item wins the recache.
        """
        if self._claims is not None:
            self._claims.add(key)
        now = self._now()
        rec = self._live(key, now)
        if rec is None:
            return NOT_FOUND, 0
        exptime, atime, old_cas, flags = HEADER.unpack_from(rec)
        if cas and old_cas != cas:
            return EXISTS, 0
        if ttl is not None:
            exptime = self.expiry(ttl, now)
        new_cas = self._next_cas()
        self._items[key] = HEADER.pack(exptime, atime, new_cas, flags) + rec[VALUE_OFFSET:]
        self.set_marks(key, (self._marks.get(key, 0) | STALE) & ~WIN_SENT)
        return OK, new_cas

    def store_stale(self, key: bytes, value: bytes, flags: int, cas: int) -> tuple[Status, int]:
        """ms I: store a value whose CAS is older than the item's, marked stale.

        As memcached: the new item keeps the old one's expiry and sent win
        token; a CAS that is not older is EXISTS.
        """
        now = self._now()
        old = self._live(key, now)
        if old is None:
            return NOT_FOUND, 0
        exptime, _, old_cas, _ = HEADER.unpack_from(old)
        if cas >= old_cas:
            return EXISTS, 0
        status = self._check_size(key, len(value))
        if status is not OK:
            return status, 0
        won = self._marks.get(key, 0) & WIN_SENT
        # The store() this follows counted a bad CAS; it was a stale win.
        cls = self._class_of(key, old)
        self.counters.cas_badval[cls] -= 1
        self.counters.cas_hits[cls] += 1
        status, new_cas = self._link(key, (value,), len(value), flags, exptime, now, old)
        self.set_marks(key, STALE | won)
        return status, new_cas

    # -- writing ---------------------------------------------------------

    def store(
        self,
        mode: Mode,
        key: bytes,
        value: bytes,
        flags: int = 0,
        ttl: int = 0,
        cas: int = 0,
    ) -> tuple[Status, int]:
        """Store by mode's rules; returns the status and the new item's CAS.

        memcached counts every set in the class of the item it allocates for
        the request's value (cmd_set), whatever becomes of it: the linked
        item's class when it is stored, ``_count_set`` on the other ways out.
        """
        now = self.clock()  # _now, written out: every store asks
        if self._flush_at is not None and now >= self._flush_at:
            self._flush_now()
        old = self._live(key, now)
        if cas and mode is not _APPEND and mode is not _PREPEND:
            # memcached turns a set/add/replace that carries a CAS into a
            # compare-and-swap, whatever its mode; it counts the outcome in
            # the class of the item compared with.
            if old is None:
                self._count_set(key, value, flags)
                return NOT_FOUND, 0
            if _cas(old) != cas:
                self._count_set(key, value, flags)
                self.counters.cas_badval[self._class_of(key, old)] += 1
                return EXISTS, 0
            self.counters.cas_hits[self._class_of(key, old)] += 1
        elif mode is _ADD:
            if old is not None:
                self._count_set(key, value, flags)
                self._bump(key, old, now)  # memcached counts a failed add as an access
                return NOT_STORED, 0
        elif mode is not _SET:
            if old is None:
                self._count_set(key, value, flags)
                return NOT_STORED, 0
            if cas and _cas(old) != cas:
                self._count_set(key, value, flags)
                return EXISTS, 0
        if mode is _APPEND or mode is _PREPEND:
            self._count_set(key, value, flags)  # the appended piece's class
            exptime, _, _, flags = HEADER.unpack_from(old)
            size = len(old) - VALUE_OFFSET + len(value)
            if self._check_size(key, size) is not OK:
                # memcached fails the joined item's allocation: "not stored".
                return NOT_STORED, 0
            if mode is _APPEND:
                parts = (memoryview(old)[VALUE_OFFSET:], value)
            else:
                parts = (value, memoryview(old)[VALUE_OFFSET:])
            return self._link(key, parts, size, flags, exptime, now, old)
        # _check_size, written out: every store asks.
        size = len(key) + len(value)
        if size + MEMCACHED_ITEM_HEADER > self.max_item_size:
            status = TOO_LARGE
        elif ITEM_OVERHEAD + size > self.limit_bytes:
            status = NO_MEMORY
        else:
            status = OK
        if status is not OK:
            cls = self._count_set(key, value, flags)
            if mode is _SET and old is not None:
                # As memcached: a failed set must not leave stale data behind.
                self._unlink(key, old)
            if mode is _SET and self._claims is not None:
                self._claims.add(key)
            if status is NO_MEMORY:
                self.counters.outofmemory[cls] += 1
            return status, 0
        exptime = self.expiry(ttl, now) if ttl else 0
        return self._link(key, (value,), len(value), flags, exptime, now, old, True, self._cmd_set)

    def _count_set(self, key: bytes, value: bytes, flags: int) -> int:
        """Count a set in the class of an item of key, value and flags; the class."""
        cls = self.classes.of(len(key) + len(value) + (_NTOTAL_FLAGS if flags else _NTOTAL))
        self._cmd_set[cls] += 1
        return cls

    def refuse(self, mode: Mode, key: bytes) -> Status:
        """A store whose value was too large to read: drop what a set would replace."""
        if mode is _SET:
            if self._claims is not None:
                self._claims.add(key)
            old = self._items.get(key)
            if old is not None:
                self._unlink(key, old)
        return TOO_LARGE

    def delete(self, key: bytes, cas: int = 0) -> Status:
        if self._claims is not None:
            self._claims.add(key)  # not loaded yet, perhaps: it must stay deleted
        rec = self._live(key, self._now())
        if rec is None:
            return NOT_FOUND
        if cas and _cas(rec) != cas:
            return EXISTS
        self.counters.delete_hits[self._unlink(key, rec)] += 1
        return OK

    def arith(
        self,
        key: bytes,
        incr: bool,
        delta: int,
        initial: int | None = None,
        ttl: int = 0,
        cas: int = 0,
    ) -> tuple[Status, int, int]:
        """INCR/DECR: returns (status, new value, new CAS).

        A missing key is created holding ``initial`` unless initial is None.
        Increments wrap at 2**64; decrements stop at 0.
        """
        now = self._now()
        rec = self._live(key, now)
        if rec is None:
            if initial is None:
                return NOT_FOUND, 0, 0
            digits = str(initial).encode()
            status, new_cas = self._link(
                key, (digits,), len(digits), 0, self.expiry(ttl, now), now, None
            )
            return status, (initial if status is OK else 0), new_cas
        exptime, atime, old_cas, flags = HEADER.unpack_from(rec)
        if cas and old_cas != cas:
            return EXISTS, 0, 0
        old_value = rec[VALUE_OFFSET:]
        number = parse_counter(old_value)
        if number is None:
            return NON_NUMERIC, 0, 0
        number = (number + delta) & UINT64_MASK if incr else max(0, number - delta)
        hits = self.counters.incr_hits if incr else self.counters.decr_hits
        hits[self._class_of(key, rec)] += 1
        digits = str(number).encode()
        in_place = len(digits) <= len(old_value)
        if in_place:
            # memcached rewrites a number that fits in place, padded with
            # spaces (clients parse it the same; text GETs show it so), and
            # only a longer one counts as a new item.
            digits = digits.ljust(len(old_value))
            # The same item, so it keeps its meta marks and fetched state.
            fetched = key not in self._unfetched
            marks = self._marks.get(key, 0)
        status, new_cas = self._link(
            key, (digits,), len(digits), flags, exptime, now, rec, new_item=not in_place
        )
        if in_place:
            if fetched:
                self._unfetched.discard(key)
            self.set_marks(key, marks)
        return status, number, new_cas

    def flush(self, delay: int = 0) -> None:
        """Invalidate every item now, or at the time ``delay`` names."""
        now = self.clock()
        deadline = self.expiry(delay, now) if delay else 0
        if deadline > now:
            self._flush_at = self.oldest_live = deadline
        else:
            self.oldest_live = now
            self._flush_now()

    # -- rules -----------------------------------------------------------

    def expiry(self, ttl: int, now: float) -> int:
        """memcached's exptime: 0 never, ≤30 days relative, else absolute.

        Whole seconds, as memcached keeps them: a time in the past (or a
        negative ttl) is 1, which has always passed.
        """
        if ttl == 0:
            return 0
        if ttl < 0:
            return 1
        if ttl > RELATIVE_EXPIRY_LIMIT:
            return min(ttl, _UINT32_MAX) if ttl > now else 1
        return min(int(now) + ttl, _UINT32_MAX)

    def _now(self) -> float:
        now = self.clock()
        if self._flush_at is not None and now >= self._flush_at:
            self._flush_now()
        return now

    def _flush_now(self) -> None:
        # Everything goes, what a background load has still to add too:
        # load() refuses from now on.
        self._claims = None
        self._unaccounted.clear()
        self._items.clear()
        self._marks.clear()
        self._unfetched.clear()
        for ages in self._ages:
            ages.clear()
        self.bytes = 0
        self._flush_at = None

    def _live(self, key: bytes, now: float) -> bytes | None:
        rec = self._items.get(key)
        if rec is not None:
            exptime = _exptime(rec)[0]  # record.expired, written out: every store asks
            if exptime and exptime <= now:
                self._reclaim(key, rec)
                self.get_expired += 1
                return None
        return rec

    def _reclaim(self, key: bytes, rec: bytes) -> int:
        """Drop an expired item met on the way (mbserver expires lazily); its class."""
        cls = self._unlink(key, rec)
        self.reclaimed += 1
        self.counters.reclaimed[cls] += 1
        return cls

    def _bump(self, key: bytes, rec: bytes, now: float) -> bytes:
        """Move key to the young end of the LRU if it was last bumped long enough ago."""
        if now - TIMES.unpack_from(rec)[1] < LRU_BUMP_INTERVAL:
            return rec
        new = rec[:ATIME_OFFSET] + ATIME.pack(int(now)) + rec[CAS_OFFSET:]
        self._move(key, rec, new)
        return new

    def _move(self, key: bytes, rec: bytes, new: bytes) -> int:
        """Replace key's record with ``new`` (as long, with the same flags,
        another last access) at the young end of the LRU; the item's class."""
        items = self._items
        del items[key]
        items[key] = new
        atime, flags = _atime_flags(rec)
        ntotal = len(key) + len(rec) - VALUE_OFFSET + (_NTOTAL_FLAGS if flags else _NTOTAL)
        cls = self.classes.of(ntotal)
        ages = self._ages[cls]
        unit = ntotal + _ONE_ITEM
        try:
            held = ages[atime] - unit
        except KeyError:  # loaded, not yet counted (account_loaded)
            held = -unit
        if held:
            ages[atime] = held
        else:
            del ages[atime]
        atime = _atime_flags(new)[0]
        ages[atime] = ages.get(atime, 0) + unit
        return cls

    def _class_of(self, key: bytes, rec: bytes) -> int:
        """The memcached size class of key's item, given its record."""
        flags = _atime_flags(rec)[1]
        return self.classes.of(
            len(key) + len(rec) - VALUE_OFFSET + (_NTOTAL_FLAGS if flags else _NTOTAL)
        )

    def _check_size(self, key: bytes, value_len: int) -> Status:
        if len(key) + value_len + MEMCACHED_ITEM_HEADER > self.max_item_size:
            return TOO_LARGE
        if ITEM_OVERHEAD + len(key) + value_len > self.limit_bytes:
            return NO_MEMORY
        return OK

    def _next_cas(self) -> int:
        self._last_cas = cas = (self._last_cas + 1) & UINT64_MASK or 1
        return cas

    def _link(
        self,
        key: bytes,
        parts: tuple,
        value_len: int,
        flags: int,
        exptime: int,
        now: float,
        old: bytes | None,
        new_item: bool = True,
        sets: list[int] | None = None,
    ) -> tuple[Status, int]:
        """Store a new record for key made of the value parts, replacing old.

        ``sets``, if given, is the per-class count to bump in the new item's
        class (the cmd_set of a store).
        """
        if old is not None:
            self._unlink(key, old)
        size = len(key) + value_len
        if self.bytes + size + ITEM_OVERHEAD > self.limit_bytes:
            self._evict(size + ITEM_OVERHEAD)
        # _next_cas, written out: every store links.
        self._last_cas = cas = (self._last_cas + 1) & UINT64_MASK or 1
        atime = int(now)
        meta = HEADER.pack(exptime, atime, cas, flags)
        self._items[key] = meta + parts[0] if len(parts) == 1 else b"".join((meta, *parts))
        if self._track_fetches:
            self._unfetched.add(key)
        if self._claims is not None:
            self._claims.add(key)
        self.bytes += size + ITEM_OVERHEAD
        self.total_items += new_item
        size += _NTOTAL_FLAGS if flags else _NTOTAL  # memcached's size of the item
        granule = (size + 7) >> 3
        cls = self._class_table[granule] if granule < self._granules else self._top_class
        ages = self._ages[cls]
        ages[atime] = ages.get(atime, 0) + size + _ONE_ITEM
        if sets is not None:
            sets[cls] += 1
        return OK, cas

    def _unlink(self, key: bytes, rec: bytes) -> int:
        """Remove key's item (its record is ``rec``); its size class."""
        del self._items[key]
        if self._unfetched:
            self._unfetched.discard(key)
        if self._marks:
            self._marks.pop(key, None)
        size = len(key) + len(rec) - VALUE_OFFSET
        self.bytes -= size + ITEM_OVERHEAD
        atime, flags = _atime_flags(rec)
        size += _NTOTAL_FLAGS if flags else _NTOTAL  # memcached's size of the item
        granule = (size + 7) >> 3
        cls = self._class_table[granule] if granule < self._granules else self._top_class
        ages = self._ages[cls]
        try:
            held = ages[atime] - size - _ONE_ITEM
        except KeyError:  # loaded, not yet counted (account_loaded)
            held = -size - _ONE_ITEM
        if held:
            ages[atime] = held
        else:
            del ages[atime]
        return cls

    def _evict(self, needed: int) -> None:
        """Free room for ``needed`` bytes from the least recently used end.

        Evicts a little past the need (1/256 of the limit) in one pass:
        a dict keeps deleted slots at its front until it next resizes, so
        freeing one item per store would rescan them on every store.
        """
        target = self.limit_bytes - needed - (self.limit_bytes >> 8)
        self._drop_oldest(self.bytes - target, len(self._items))
        # A set never shrinks as keys leave it: after a bulk load has been
        # read, its table would keep ~32 bytes per loaded item. Under memory
        # pressure, rebuild it to its size.
        unfetched = self._unfetched
        if _table_bytes(unfetched) > 64 * len(unfetched) + (1 << 16):
            self._unfetched = set(unfetched)

    def _drop_oldest(self, excess: int, most: int) -> None:
        """Evict least recently used items until ``excess`` bytes are freed
        or ``most`` items are gone; an expired one counts as reclaimed."""
        now = self.clock()
        victims = []
        freed = 0
        for key, rec in self._items.items():
            if freed >= excess or len(victims) >= most:
                break
            victims.append((key, rec))
            freed += ITEM_OVERHEAD + len(key) + len(rec) - VALUE_OFFSET
        counters = self.counters
        unfetched = self._unfetched
        on_evict = self.on_evict
        for key, rec in victims:
            was_unfetched = key in unfetched
            exptime, atime = TIMES.unpack_from(rec)
            if exptime and exptime <= now:
                cls = self._reclaim(key, rec)
                if was_unfetched:
                    counters.expired_unfetched[cls] += 1
            else:
                cls = self._unlink(key, rec)
                self.evictions += 1
                counters.evicted[cls] += 1
                if exptime:
                    counters.evicted_nonzero[cls] += 1
                counters.evicted_time[cls] = max(0, int(now) - atime)
                if was_unfetched:
                    counters.evicted_unfetched[cls] += 1
                if on_evict is not None:
                    on_evict(key, rec, not was_unfetched, now)
            # No background thread frees memory here: the store that needs
            # the room does it, as memcached counts a "direct reclaim".
            counters.direct_reclaims[cls] += 1

    def shrink(self, limit_bytes: int, most: int) -> bool:
        """Move toward a new memory limit (``cache_memlimit``): evict at most
        ``most`` least recently used items; True once the items fit it.

        Until they do, the limit the store enforces is what it holds, so a
        store meanwhile evicts only room for itself (as at any full limit),
        never the whole excess at once: the caller takes the lock per call
        and lets other clients in between.
        """
        if self.bytes > limit_bytes:
            self._drop_oldest(self.bytes - limit_bytes, most)
        self.limit_bytes = max(limit_bytes, self.bytes)
        return self.bytes <= limit_bytes

    # -- snapshots (mbserver/snapshot.py) ----------------------------------

    def records(self) -> tuple[list[bytes], list[bytes]]:
        """Every key and its record, least recently used first, as two parallel lists.

        Taken in one go, in C: two lists cost a third of the time and a
        fifth of the memory of a list of pairs (35 ms for 1,000,000 items,
        0.3-0.7 s for 10,000,000), so it is for a snapshot written where no
        client waits: in a forked child (``snapshot.Snapshots.save``) or on
        a graceful stop. Records are immutable, so the lists are a
        point-in-time view a snapshot can encode at leisure. Expired items
        are included (dropping them would be a Python loop here); the
        snapshot writer drops them. A pending delayed flush is folded into
        the expiries, so what it would remove still vanishes on time.
        """
        self._now()
        keys = list(self._items)
        recs = list(self._items.values())
        deadline = self._flush_at
        if deadline is not None:
            # expiry() made the deadline whole seconds; "exptime <= now"
            # then expires a record exactly when the flush would run.
            deadline = int(deadline)
            head = EXPTIME.pack(deadline)
            recs = [
                r if 0 < EXPTIME.unpack_from(r)[0] <= deadline else head + r[ATIME_OFFSET:]
                for r in recs
            ]
        return keys, recs

    @property
    def last_cas(self) -> int:
        """The CAS given to the latest write: no item's is larger."""
        return self._last_cas

    def fits(self, size: int) -> bool:
        """Whether an item whose key and value add up to ``size`` bytes may be stored (-I, -m)."""
        return (
            size + MEMCACHED_ITEM_HEADER <= self.max_item_size
            and ITEM_OVERHEAD + size <= self.limit_bytes
        )

    def begin_load(self, max_cas: int) -> None:
        """A snapshot is about to load in the background, while clients are served.

        From now until ``end_load`` the keys clients write or delete are
        remembered, so ``load`` never puts the snapshot's older copy over
        them, and new CAS values continue above ``max_cas`` (no CAS in the
        snapshot is larger), so a CAS a client read before the restart can
        never match a newer item.
        """
        self._last_cas = max(self._last_cas, max_cas)
        self._claims = set()

    def load(self, items: list[bytes], size: int | None = None) -> int:
        """Add a slice of the snapshot at the young end; how many items, or -1
        once a flush has ended the load.

        ``items`` is key, record, key, record..., least recently used first;
        the loader has dropped the expired ones and those that do not
        ``fit``. ``size``, if the loader knows it, is their lengths added up. Keys that clients wrote or deleted since ``begin_load``
        keep what the clients did. Past the memory limit the oldest items
        are evicted, as a store would. C loops only: about 4 ms for 10,000
        items, and more when the table doubles (at 5.6 million items,
        0.4 s, as when clients fill it).
        """
        self._now()
        claims = self._claims
        if claims is None:
            return -1
        if claims and not claims.isdisjoint(items[0::2]):
            items = [
                x
                for key, rec in zip(items[0::2], items[1::2])
                if key not in claims
                for x in (key, rec)
            ]
            size = None
        table = self._items
        count = len(items) // 2
        before = len(table)
        pairs = iter(items)
        table.update(zip(pairs, pairs))
        added = len(table) - before
        # Fewer only if the snapshot holds a key twice (never one it wrote):
        # the later copy replaced the earlier in place, and the bytes count
        # stays high by the earlier one's size, which -m then errs on.
        if size is None:
            size = sum(map(len, items))
        self.bytes += size + count * (ITEM_OVERHEAD - VALUE_OFFSET)
        self._unaccounted.append(items)
        if self.bytes > self.limit_bytes:
            self._evict(0)
        return added

    def account_loaded(self) -> bool:
        """Count one slice of loaded items in their size classes; whether any are left.

        ``load`` adds items with C loops only, about 0.85 us an item in all
        here; counting each in its class (``stats items``, ``stats slabs``)
        is a Python loop of 0.4-0.7 us more, so the loader runs this after
        its last block, a slice per write hold, where it delays no item.
        Until then a class's figures leave those items out, and an item
        removed before it was counted leaves its bucket below zero, which
        this brings back (``_unlink``, ``_move``, ``class_usage``).
        """
        pending = self._unaccounted
        if not pending:
            return False
        items = pending.pop()
        ages_list = self._ages
        table, granules, top = self._class_table, self._granules, self._top_class
        pairs = iter(items)
        for key, rec in zip(pairs, pairs):
            atime, flags = _atime_flags(rec)
            ntotal = len(key) + len(rec) - VALUE_OFFSET + (_NTOTAL_FLAGS if flags else _NTOTAL)
            granule = (ntotal + 7) >> 3
            ages = ages_list[table[granule] if granule < granules else top]
            held = ages.get(atime, 0) + ntotal + _ONE_ITEM
            if held:
                ages[atime] = held
            else:
                del ages[atime]
        return bool(pending)

    def end_load(self) -> None:
        """The background load is over: stop remembering what clients write."""
        self._claims = None
