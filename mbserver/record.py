"""One item's record: the bytes the store keeps and every codec and the snapshot read.

What lives here: the layout of an item record, packing and unpacking one,
the ``Item`` view of it, and memcached's size rules for an item (the key
limit, its item header, its slab size classes). What does not: where records
are kept, how they age or get evicted (``store``), or how a protocol frames
one on the wire (``protocol/``).

Each item is stored as ONE bytes object, a record: a 20-byte header, then
the value::

    [0:4]   exptime  uint32 Unix seconds; 0 never, 1 already expired
    [4:8]   atime    uint32 Unix seconds of the last LRU bump
    [8:16]  cas      uint64
    [16:20] flags    uint32
    [20:]   value

One object instead of an Item with int and float fields saves about 130
bytes an item (bench/, row e), and ``record[CAS_OFFSET:]`` (CAS, flags,
value) is laid out as a binary GET reply carries it, so replies slice it
directly. Records are immutable: a change makes a new one, so a record
handed out stays a consistent view of its item. Request paths read fields
with the structs and offsets below; everything else uses the functions.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

HEADER = struct.Struct(">IIQI")  # exptime, atime, cas, flags
TIMES = struct.Struct(">II")  # exptime, atime
TIMES_FLAGS = struct.Struct(">II8xI")  # exptime, atime, flags
EXPTIME = ATIME = FLAGS = struct.Struct(">I")
CAS = struct.Struct(">Q")
CAS_FLAGS = struct.Struct(">QI")
ATIME_OFFSET = 4
CAS_OFFSET = 8
FLAGS_OFFSET = 16
VALUE_OFFSET = 20

MAX_KEY_LENGTH = 250

# memcached's item header (48) + CAS (8) + the key's NUL + the value's CRLF:
# an item whose total exceeds the item size limit is "too large" there, so
# the same arithmetic gives the same boundary here.
MEMCACHED_ITEM_HEADER = 59
# memcached keeps the client flags in the item only when they are non-zero.
MEMCACHED_FLAGS_SIZE = 4


class Item(NamedTuple):
    """A copy of one record's fields, for callers off the request paths."""

    value: bytes
    flags: int
    exptime: int  # Unix seconds, 0 for never
    cas: int
    atime: int  # Unix seconds of the item's last LRU bump


def pack(value: bytes, flags: int, exptime: int, cas: int, atime: int) -> bytes:
    return HEADER.pack(exptime, atime, cas, flags) + value


def unpack(rec: bytes) -> Item:
    exptime, atime, cas, flags = HEADER.unpack_from(rec)
    return Item(rec[VALUE_OFFSET:], flags, exptime, cas, atime)


def exptime_of(rec: bytes) -> int:
    return EXPTIME.unpack_from(rec)[0]


def cas_of(rec: bytes) -> int:
    return CAS.unpack_from(rec, CAS_OFFSET)[0]


def flags_of(rec: bytes) -> int:
    return FLAGS.unpack_from(rec, FLAGS_OFFSET)[0]


def value_length(rec: bytes) -> int:
    return len(rec) - VALUE_OFFSET


def with_exptime(rec: bytes, exptime: int) -> bytes:
    """The same record with another expiry."""
    return EXPTIME.pack(exptime) + rec[ATIME_OFFSET:]


def expired(rec: bytes, now: float) -> bool:
    exptime = EXPTIME.unpack_from(rec)[0]
    return exptime != 0 and exptime <= now


# -- memcached's sizes --------------------------------------------------------


def memcached_size(key_length: int, value_length: int, flags: int = 0) -> int:
    """The bytes memcached 1.6 would allocate for this item (its ITEM_ntotal)."""
    return (
        MEMCACHED_ITEM_HEADER
        + key_length
        + value_length
        + (MEMCACHED_FLAGS_SIZE if flags else 0)
    )


# memcached's slab allocator, as its defaults lay it out (-n 48 -f 1.25,
# 1 MiB pages): mbserver allocates no slabs, but it sorts items into the same
# size classes so that `stats items`, `stats slabs` and `memcached-tool` mean
# what they mean on memcached.
SLAB_PAGE_SIZE = 1 << 20
SLAB_CHUNK_MAX = SLAB_PAGE_SIZE // 2  # memcached's slab_chunk_max
CHUNK_SIZE = 48  # -n: the smallest item's room beyond memcached's 48-byte header
GROWTH_FACTOR = 1.25  # -f
MAX_SLAB_CLASS = 63  # memcached's MAX_NUMBER_OF_SLAB_CLASSES - 1


def slab_sizes(smallest: int = 96, largest: int = SLAB_CHUNK_MAX, factor: float = GROWTH_FACTOR) -> list[int]:
    """memcached's slab class chunk sizes (-n 48, -f 1.25, up to slab_chunk_max).

    Class 1 holds items up to ``sizes[0]`` bytes, class 2 up to ``sizes[1]``,
    and so on; larger items are chained from chunks of the last class.
    """
    sizes = []
    size = smallest
    while size <= largest / factor:
        sizes.append(size)
        size = (int(size * factor) + 7) // 8 * 8
    sizes.append(largest)
    return sizes


class SizeClasses:
    """memcached's slab classes for one item size limit, and a fast size → class lookup.

    memcached refuses a slab_chunk_max above -I, so below -I 512k the
    largest chunk is -I itself (as memcached started with
    ``-o slab_chunk_max`` equal to -I lays them out).

    ``table[(ntotal + 7) >> 3]`` is the class of an item of ``ntotal``
    bytes (memcached_size) up to ``chunk_max``; larger items belong to the
    last class, ``largest``. Chunk sizes are multiples of 8, so an 8-byte
    granule decides the class: the store's hot paths pay one index, not a
    search.
    """

    __slots__ = ("chunk_max", "sizes", "largest", "table")

    def __init__(self, max_item_size: int = 1 << 20):
        self.chunk_max = min(SLAB_CHUNK_MAX, max_item_size)
        self.sizes = slab_sizes(CHUNK_SIZE + 48, self.chunk_max)
        self.largest = len(self.sizes)
        table = bytearray(self.chunk_max // 8 + 1)
        cls = 0
        for granule in range(len(table)):
            while granule * 8 > self.sizes[cls]:
                cls += 1
            table[granule] = cls + 1
        self.table = bytes(table)

    def of(self, ntotal: int) -> int:
        """The class of an item of ``ntotal`` bytes (memcached_size)."""
        granule = (ntotal + 7) >> 3
        return self.table[granule] if granule < len(self.table) else self.largest

    def chunk_size(self, cls: int) -> int:
        return self.sizes[cls - 1]

    def chunks_per_page(self, cls: int) -> int:
        return SLAB_PAGE_SIZE // self.sizes[cls - 1]
