"""The item store: items, expiry, CAS, LRU eviction and memory accounting.

What lives here: the table of items and every rule about them, with results
that say what happened in protocol-neutral terms (``Status``). What does not:
locking (callers hold the store's ``RWLock``), per-command statistics
(``commands``), and anything about wire formats.

Nothing here does I/O or yields to another greenlet: once a call starts it
runs to completion, so the store lock is never held across a switch.

The clock is injected (``clock`` returns Unix seconds as a float), so tests
move time instead of sleeping. Expiry is enforced lazily, on access, as
memcached does; eviction reclaims expired items first when it meets them.
"""

from __future__ import annotations

import enum
import re
import time
from typing import Callable

MAX_KEY_LENGTH = 250

# memcached treats an expiry up to 30 days as relative seconds and anything
# larger as an absolute Unix time.
RELATIVE_EXPIRY_LIMIT = 60 * 60 * 24 * 30

# An item is bumped to the young end of the LRU at most this often, as in
# memcached (ITEM_UPDATE_INTERVAL): hot keys stay safe from eviction without
# reordering the table on every hit.
LRU_BUMP_INTERVAL = 60.0

# What one item costs beyond its key and value bytes in this process: the
# table slot, the Item object and its CAS, flag and time fields, and the two
# bytes objects' headers. Measured with tracemalloc (tests/unit/test_store.py
# keeps it honest) so that -m bounds real memory, not just payload.
ITEM_OVERHEAD = 240

# memcached's item header (48) + CAS (8) + the key's NUL + the value's CRLF:
# an item whose total exceeds the item size limit is "too large" there, so
# the same arithmetic gives the same boundary here.
MEMCACHED_ITEM_HEADER = 59

UINT64_MASK = (1 << 64) - 1

# strtoull as memcached's safe_strtoull uses it: optional leading white
# space, digits, then the end or more white space.
_COUNTER = re.compile(rb"[ \t\n\v\f\r]*\+?([0-9]+)(?:[ \t\n\v\f\r]|\Z)")


class Status(enum.Enum):
    """What a store operation did, independent of any protocol."""

    OK = "ok"  # found / stored / deleted / touched
    NOT_FOUND = "not_found"
    EXISTS = "exists"  # CAS mismatch
    NOT_STORED = "not_stored"  # add on a live key; replace/append/prepend on a missing one
    TOO_LARGE = "too_large"
    NO_MEMORY = "no_memory"
    NON_NUMERIC = "non_numeric"


OK = Status.OK
NOT_FOUND = Status.NOT_FOUND
EXISTS = Status.EXISTS
NOT_STORED = Status.NOT_STORED
TOO_LARGE = Status.TOO_LARGE
NO_MEMORY = Status.NO_MEMORY
NON_NUMERIC = Status.NON_NUMERIC


class Mode(enum.Enum):
    """The storage commands; they differ only in which prior state they accept."""

    SET = "set"
    ADD = "add"
    REPLACE = "replace"
    APPEND = "append"
    PREPEND = "prepend"


_WHOLE_VALUE_MODES = frozenset((Mode.SET, Mode.ADD, Mode.REPLACE))


class Item:
    """One cached value. ``exptime`` is absolute Unix time, 0 for never."""

    __slots__ = ("value", "flags", "exptime", "cas", "atime")

    def __init__(self, value: bytes, flags: int, exptime: float, cas: int, atime: float):
        self.value = value
        self.flags = flags
        self.exptime = exptime
        self.cas = cas
        self.atime = atime

    def __repr__(self) -> str:
        return (
            f"Item(value={self.value[:32]!r}, flags={self.flags}, "
            f"exptime={self.exptime}, cas={self.cas})"
        )


def item_size(key: bytes, value: bytes) -> int:
    """The bytes an item is accounted for against the memory limit."""
    return ITEM_OVERHEAD + len(key) + len(value)


def parse_counter(value: bytes) -> int | None:
    """The unsigned 64-bit number a counter item holds, or None if it holds none."""
    match = _COUNTER.match(value)
    if match is None:
        return None
    number = int(match.group(1))
    return number if number <= UINT64_MASK else None


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
        # Insertion order is LRU order: the first key is the least recently used.
        self._items: dict[bytes, Item] = {}
        self._last_cas = 0
        # A delayed flush: items last touched at or before this time are dead
        # once the clock reaches it (memcached's oldest_live).
        self._flush_at: float | None = None
        self.bytes = 0
        self.total_items = 0
        self.evictions = 0
        self.reclaimed = 0

    # -- reading ---------------------------------------------------------

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: bytes) -> bool:
        return self._live(key, self.clock()) is not None

    def get(self, key: bytes) -> Item | None:
        """The live item for key, bumped in the LRU; None on a miss."""
        now = self.clock()
        item = self._live(key, now)
        if item is not None:
            self._bump(key, item, now)
        return item

    def touch(self, key: bytes, ttl: int) -> Item | None:
        """Give a live item a new expiry; None on a miss."""
        now = self.clock()
        item = self._live(key, now)
        if item is not None:
            item.exptime = self.expiry(ttl, now)
            self._bump(key, item, now)
        return item

    def items(self) -> list[tuple[bytes, Item]]:
        """A snapshot of the live items, least recently used first."""
        now = self.clock()
        return [(k, i) for k, i in self._items.items() if not self._dead(i, now)]

    def reset_counters(self) -> None:
        self.total_items = self.evictions = self.reclaimed = 0

    def oldest_age(self) -> float:
        """Seconds since the least recently used item was last bumped."""
        for item in self._items.values():
            return max(0.0, self.clock() - item.atime)
        return 0.0

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
        """Store by mode's rules; returns the status and the new item's CAS."""
        now = self.clock()
        old = self._live(key, now)
        if cas and mode in _WHOLE_VALUE_MODES:
            # memcached turns a set/add/replace that carries a CAS into a
            # compare-and-swap, whatever its mode.
            if old is None:
                return NOT_FOUND, 0
            if old.cas != cas:
                return EXISTS, 0
        elif mode is Mode.ADD:
            if old is not None:
                self._bump(key, old, now)  # memcached counts a failed add as an access
                return NOT_STORED, 0
        elif mode is not Mode.SET:
            if old is None:
                return NOT_STORED, 0
            if cas and old.cas != cas:
                return EXISTS, 0
        if mode is Mode.APPEND:
            value, flags, exptime = old.value + value, old.flags, old.exptime
        elif mode is Mode.PREPEND:
            value, flags, exptime = value + old.value, old.flags, old.exptime
        else:
            exptime = self.expiry(ttl, now)
        status = self._check_size(key, value)
        if status is not OK:
            if mode is Mode.APPEND or mode is Mode.PREPEND:
                # memcached fails the joined item's allocation: "not stored".
                return NOT_STORED, 0
            if mode is Mode.SET and old is not None:
                # As memcached: a failed set must not leave stale data behind.
                self._unlink(key, old)
            return status, 0
        return self._link(key, value, flags, exptime, now, old)

    def refuse(self, mode: Mode, key: bytes) -> Status:
        """A store whose value was too large to read: drop what a set would replace."""
        if mode is Mode.SET:
            old = self._items.get(key)
            if old is not None:
                self._unlink(key, old)
        return TOO_LARGE

    def delete(self, key: bytes, cas: int = 0) -> Status:
        item = self._live(key, self.clock())
        if item is None:
            return NOT_FOUND
        if cas and item.cas != cas:
            return EXISTS
        self._unlink(key, item)
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
        now = self.clock()
        item = self._live(key, now)
        if item is None:
            if initial is None:
                return NOT_FOUND, 0, 0
            status, new_cas = self._link(
                key, str(initial).encode(), 0, self.expiry(ttl, now), now, None
            )
            return status, (initial if status is OK else 0), new_cas
        if cas and item.cas != cas:
            return EXISTS, 0, 0
        number = parse_counter(item.value)
        if number is None:
            return NON_NUMERIC, 0, 0
        number = (number + delta) & UINT64_MASK if incr else max(0, number - delta)
        digits = str(number).encode()
        old_len = len(item.value)
        if len(digits) < old_len:
            # memcached rewrites a shorter number in place, padded with
            # spaces; clients parse it the same and text GETs show it so.
            digits = digits.ljust(old_len)
        self.bytes += len(digits) - old_len
        item.value = digits
        item.cas = self._next_cas()
        self._bump(key, item, now)
        return OK, number, item.cas

    def flush(self, delay: int = 0) -> None:
        """Invalidate every item now, or at the time ``delay`` names."""
        now = self.clock()
        deadline = self.expiry(delay, now) if delay else 0
        if deadline and deadline > now:
            self._flush_at = deadline
            return
        self._items.clear()
        self.bytes = 0
        self._flush_at = None

    # -- rules -----------------------------------------------------------

    def expiry(self, ttl: int, now: float) -> float:
        """memcached's exptime: 0 never, ≤30 days relative, else absolute."""
        if ttl == 0:
            return 0
        if ttl < 0:
            return -1.0  # already expired, as memcached treats negative times
        if ttl > RELATIVE_EXPIRY_LIMIT:
            return float(ttl)
        return now + ttl

    def _dead(self, item: Item, now: float) -> bool:
        exptime = item.exptime
        if exptime and exptime <= now:
            return True
        flush_at = self._flush_at
        return flush_at is not None and item.atime <= flush_at <= now

    def _live(self, key: bytes, now: float) -> Item | None:
        item = self._items.get(key)
        if item is None:
            return None
        if self._dead(item, now):
            self._unlink(key, item)
            self.reclaimed += 1
            return None
        return item

    def _bump(self, key: bytes, item: Item, now: float) -> None:
        if now - item.atime >= LRU_BUMP_INTERVAL:
            item.atime = now
            items = self._items
            del items[key]
            items[key] = item

    def _check_size(self, key: bytes, value: bytes) -> Status:
        if len(key) + len(value) + MEMCACHED_ITEM_HEADER > self.max_item_size:
            return TOO_LARGE
        if item_size(key, value) > self.limit_bytes:
            return NO_MEMORY
        return OK

    def _next_cas(self) -> int:
        self._last_cas = cas = (self._last_cas + 1) & UINT64_MASK or 1
        return cas

    def _link(
        self,
        key: bytes,
        value: bytes,
        flags: int,
        exptime: float,
        now: float,
        old: Item | None,
    ) -> tuple[Status, int]:
        if old is not None:
            self._unlink(key, old)
        size = item_size(key, value)
        if self.bytes + size > self.limit_bytes:
            self._evict(size)
        cas = self._next_cas()
        self._items[key] = Item(value, flags, exptime, cas, now)
        self.bytes += size
        self.total_items += 1
        return OK, cas

    def _unlink(self, key: bytes, item: Item) -> None:
        del self._items[key]
        self.bytes -= item_size(key, item.value)

    def _evict(self, needed: int) -> None:
        """Free room for ``needed`` bytes from the least recently used end.

        Evicts a little past the need (1/256 of the limit) in one pass:
        a dict keeps deleted slots at its front until it next resizes, so
        freeing one item per store would rescan them on every store.
        """
        target = self.limit_bytes - needed - (self.limit_bytes >> 8)
        now = self.clock()
        victims = []
        freed = 0
        excess = self.bytes - target
        for key, item in self._items.items():
            if freed >= excess:
                break
            victims.append((key, item))
            freed += item_size(key, item.value)
        for key, item in victims:
            self._unlink(key, item)
            if self._dead(item, now):
                self.reclaimed += 1
            else:
                self.evictions += 1
