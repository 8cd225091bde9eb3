"""What a store promises the rest of the server: its interface and its vocabulary.

What lives here: ``ItemStore``, the contract between the command layer (and
the stats, metrics and snapshot code) and a store; ``Status``, what a store
operation did, in protocol-neutral terms that each codec maps to its own
reply; ``Mode``, the storage commands; and the meta marks an item can carry.
What does not: an implementation (``store.Store`` is the one there is) or
the record layout (``record``), which every store hands out.

A second store (sharded, say, or off-heap) implements ``ItemStore`` and
hands out records in ``record``'s layout; the codecs and the command layer
need no change. Every method is called with the store's lock held (reads
under a read hold, everything else under a write hold) and must never
yield to another greenlet: that is what lets the lock be held only around
store calls and never across socket I/O.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Callable, Iterable, Protocol

from .record import Item, SizeClasses

if TYPE_CHECKING:
    from .store import ClassCounters


class Status(enum.Enum):
    """What a store operation did, independent of any protocol."""

    OK = "ok"  # found / stored / deleted / touched
    NOT_FOUND = "not_found"
    EXISTS = "exists"  # CAS mismatch
    NOT_STORED = "not_stored"  # add on a live key; replace/append/prepend on a missing one
    TOO_LARGE = "too_large"
    NO_MEMORY = "no_memory"
    NON_NUMERIC = "non_numeric"


# Module-level names for the members: an Enum attribute lookup costs several
# times a global name's, and these are on every request's path.
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


# What the meta commands remember about an item beyond its record, as
# memcached keeps it in the item's it_flags. They belong to one item:
# storing a new one under the key clears them.
STALE = 1  # invalidated (md I, or ms I with an older CAS): mg answers X
WIN_SENT = 2  # a client has been told it won the recache (W); others get Z
KEY_BINARY = 4  # stored by ms with b: mg's k gives the key back in base64


class ItemStore(Protocol):
    """The operations the command layer, stats, metrics and snapshots use.

    Records (``bytes``) are in ``record``'s layout; ``None`` is a miss.
    Expiry times are memcached exptimes as clients send them (``ttl``) or
    absolute Unix seconds (``exptime``), as each method says.
    """

    clock: Callable[[], float]
    started: float  # the clock's reading when the store was made
    limit_bytes: int  # -m
    bytes: int  # bytes accounted against limit_bytes
    total_items: int
    evictions: int
    reclaimed: int
    # Told of each live item evicted: (key, record, fetched, now); None when
    # nobody watches evictions.
    on_evict: Callable[[bytes, bytes, bool, float], None] | None
    get_expired: int  # lookups that met an expired item
    oldest_live: float | None  # when the last flush_all took or takes effect
    classes: SizeClasses  # memcached's size classes for -I
    counters: ClassCounters  # events per size class

    def __len__(self) -> int: ...

    # reads (a read hold suffices)
    def get_many(self, keys: Iterable[bytes]) -> list[bytes | None]:
        """Each key's live record, bumped in the LRU and marked fetched."""

    def get_record(self, key: bytes) -> bytes | None:
        """``get_many`` for one key."""

    def fetch(self, key: bytes) -> None:
        """What a get does to a hit (fetched, maybe bumped), not counted (mg)."""

    def count_hit(self, key: bytes, touch: bool) -> None:
        """Count a get or touch hit on key's item in its size class (mg)."""

    def lookup(self, key: bytes) -> bytes | None:
        """The live record, neither bumped nor marked fetched."""

    def fetched(self, key: bytes) -> bool:
        """Whether a client has read the item since it was stored (mg h)."""

    def marks(self, key: bytes) -> int:
        """The item's meta marks (STALE | WIN_SENT | KEY_BINARY)."""

    def items(self) -> list[tuple[bytes, Item]]:
        """Every live item, least recently used first."""

    def class_usage(self) -> dict[int, tuple[int, int, int]]:
        """Per class holding items: (items, memcached bytes, oldest last access)."""

    def table_bytes(self) -> int:
        """The item table's own size in memory."""

    def keys(self) -> list[bytes]:
        """Every key, least recently used first (a walk's starting copy)."""

    def entries(
        self, keys: Iterable[bytes], classes: frozenset[int] | None = None, binary_keys: bool = True
    ) -> list[tuple[bytes, bytes, int, bool]]:
        """(key, record, class, fetched) of those keys still live (a dump's slice)."""

    def expiry(self, ttl: int, now: float) -> int:
        """A client's exptime as absolute Unix seconds (0 never, 1 already expired)."""

    # writes (a write hold)
    def store(
        self, mode: Mode, key: bytes, value: bytes, flags: int = 0, ttl: int = 0, cas: int = 0
    ) -> tuple[Status, int]:
        """Store by ``mode``'s rules, as a compare-and-swap if ``cas``; (status, new CAS)."""

    def refuse(self, mode: Mode, key: bytes) -> Status:
        """A value too large to read: drop what a set would have replaced; TOO_LARGE."""

    def delete(self, key: bytes, cas: int = 0) -> Status: ...

    def arith(
        self,
        key: bytes,
        incr: bool,
        delta: int,
        initial: int | None = None,
        ttl: int = 0,
        cas: int = 0,
    ) -> tuple[Status, int, int]:
        """incr/decr; a miss is created holding ``initial`` unless it is None.
        (status, new value, new CAS)."""

    def touch(self, key: bytes, ttl: int) -> Item | None: ...

    def touch_record(self, key: bytes, ttl: int) -> bytes | None:
        """``touch``, returning the new record (a GAT answers with it)."""

    def flush(self, delay: int = 0) -> None:
        """Invalidate every item now, or at the exptime ``delay`` names."""

    def track_fetches(self) -> None:
        """From now on, remember which items no client has read (mg h)."""

    def set_marks(self, key: bytes, marks: int) -> None: ...

    def vivify(self, key: bytes) -> bytes:
        """Create an empty item (mg N on a miss); its record."""

    def set_expiry(self, key: bytes, exptime: int) -> bytes | None:
        """Give the live item an absolute exptime without bumping it; its new record."""

    def invalidate(self, key: bytes, cas: int = 0, ttl: int | None = None) -> tuple[Status, int]:
        """md I: mark the item stale with a new CAS; (status, new CAS)."""

    def store_stale(self, key: bytes, value: bytes, flags: int, cas: int) -> tuple[Status, int]:
        """ms I: store a value whose CAS is older than the item's, marked stale."""

    def reset_counters(self) -> None:
        """Zero total_items, evictions, reclaimed and the class counters (stats reset)."""

    def crawl(
        self, keys: Iterable[bytes], classes: frozenset[int] | None, remaining: list[int] | None
    ) -> None:
        """The LRU crawler on a slice of keys: reclaim expired items (a write hold)."""

    def shrink(self, limit_bytes: int, most: int) -> bool:
        """Take a new memory limit (cache_memlimit), evicting at most ``most``
        items per call toward it; True once the items fit."""

    # snapshots (mbserver/snapshot.py)
    last_cas: int  # the CAS of the latest write: no item's is larger

    def fits(self, size: int) -> bool:
        """Whether an item whose key and value add up to ``size`` bytes may be stored."""

    def records(self) -> tuple[list[bytes], list[bytes]]:
        """Every key and its record, least recently used first (a read hold)."""

    def begin_load(self, max_cas: int) -> None:
        """A background load begins (a write hold): from now on the keys clients
        write or delete are kept from it, and CAS values continue above ``max_cas``."""

    def load(self, items: list[bytes], size: int | None = None) -> int:
        """Add a slice of the load (key, record, key, record...; ``size`` their
        lengths added up, if known) at the young end, leaving out the keys
        clients wrote or deleted (a write hold); how many were added, -1 once
        a flush has ended the load."""

    def end_load(self) -> None:
        """The background load is over (a write hold)."""

    def account_loaded(self) -> bool:
        """Count one slice of the loaded items in their size classes (a write
        hold); whether any are left."""
