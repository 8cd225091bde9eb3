"""Warm restarts: the store's items written to a snapshot file and read back.

What lives here: the snapshot file format, ``write_snapshot`` (atomic, and
optionally cooperative so clients keep being served while it runs),
``SnapshotFile`` (reading one a block at a time, checking as it goes) and
``load_snapshot`` (all of it at once), and ``Snapshots``, which ties them to
one store and its lock for the server: a load in the background while
clients are served, a save by a forked child every ``--snapshot-interval``
seconds, and a last save on a graceful stop. What does not: sockets,
options and signals (``server``), and the rules for items, which stay in
``store`` (``Store.records``, ``Store.begin_load``, ``Store.load``).

The file (version 2), all integers big-endian::

    header  magic b"\\x89MBSNAP\\n", version u32, written_at u32 (Unix seconds),
            items u64, data_bytes u64, max_cas u64, crc32 u32
    block*  items u32, data_length u32, soonest u32, crc32 u32,
            lengths: 2 x items u32 (a key's length, then its record's, per item),
            data: data_length bytes (each key followed by its record)

A record is the store's own item record (``record``: exptime u32, atime u32,
CAS u64, flags u32, then the value), copied as it is, so the expiry travels
as an absolute Unix time and remaining TTLs survive a restart whatever its
length. Items come least recently used first. The header says how many
records the blocks hold, the sum of their key and record lengths (so a
loader knows before reading them whether they fit the memory limit) and a
CAS no record exceeds (new CAS values continue above it, even for writes
made while the file is still loading); its CRC-32 covers the fields before
it. A block holds at most BATCH_ITEMS items or about BATCH_BYTES of data;
``soonest`` is its earliest non-zero exptime (0: nothing in it expires), so
a loader checks expiry item by item only in blocks that need it; its CRC-32
covers its first three fields, the lengths and the data. The file ends with
the last block. A new record layout needs a new version.

What a damaged file loses: every block is checked before any of its records
is used, so a version 2 file damaged or cut short part way loads every block
before the damage, each of them intact, and none from the damaged block on
(a damaged header loads nothing). Version 1 files, which the previous
release wrote, are still read::

    header   magic, version u32 (1), written_at u32
    record*  key_length u16, record_length u32, key, record
    trailer  0xFFFF u16, count u64, crc32 u32 (of every byte before it)

With one checksum for the whole file, nothing in it is known intact until
all of it has been read: a version 1 file is checked whole before any
record is loaded, and a damaged one loads nothing.

Serving meanwhile. A load reads the header before the server listens and
the blocks after, one at a time between clients' requests (``Snapshots.load``;
the store keeps what clients write or delete meanwhile from it). A save
cannot walk the item table a slice at a time, as a dict cannot be iterated
across yields while clients change it, and copying its references in one
step stops every client (0.27 s for the keys alone at 10 million items):
so a periodic save forks, and the child writes the table as it was at the
fork; the one pause is the fork itself (the kernel copies the page tables:
2-4 ms per million items of 100 B here). The final save, with no clients
left, runs in the server's process.

Atomicity: the file is written under a temporary name in the same directory,
flushed and fsynced, renamed over the path, and the directory is fsynced. A
crash or SIGKILL at any moment leaves either the previous snapshot or the
new one, never a mix; a temporary file left by a dead writer is removed by
the next write.
"""

from __future__ import annotations

import contextlib
import gc
import io
import logging
import os
import re
import signal
import struct
import sys
import time
import zlib
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from itertools import accumulate, repeat
from operator import add, getitem
from typing import NamedTuple

import gevent
import gevent.event
import gevent.lock
import gevent.os
import gevent.threadpool

from .record import MAX_KEY_LENGTH, VALUE_OFFSET, expired
from .rwlock import RWLock
from .storage import ItemStore
from .store import ITEM_OVERHEAD

log = logging.getLogger("mbserver.snapshot")

MAGIC = b"\x89MBSNAP\n"  # the high first byte catches text-mode mangling, as PNG's does
VERSION = 2
_PREAMBLE = struct.Struct(">8sII")  # magic, version, written_at: every version starts so
_HEADER = struct.Struct(">8sIIQQQI")  # ... items, data_bytes, max_cas, crc32
_BLOCK = struct.Struct(">IIII")  # items, data_length, soonest, crc32
_CRC_SIZE = 4
_LITTLE = sys.byteorder == "little"
# Version 1.
_V1_RECORD = struct.Struct(">HI")  # key length, record length
_V1_TRAILER = struct.Struct(">HQI")  # END, count, crc32
_V1_END = 0xFFFF
# A version 1 file does not say how large its CAS values are, and its load
# begins before they are read: CAS values continue from here, 2**52, past
# any count of writes a server can reach (142 years at a million a second)
# and still exact in clients that keep a CAS in a double.
V1_CAS_FLOOR = 1 << 52

# A block holds this many items, or a little more than this many bytes,
# whichever comes first: small enough for its keys and records to stay in
# the CPU's cache while each C loop passes over them (encoding blocks of
# 10,000 items of 100 B takes 0.7 us an item at 10 million items, blocks
# of 2,000 take 0.4 us), and a millisecond or so of work, the longest a
# save in this process or a load holds the hub (a load, the store lock).
BATCH_ITEMS = 2000
BATCH_BYTES = 1 << 20
# The writer asks the kernel to start writing out every this many bytes.
WRITEBACK_BYTES = 32 << 20
# Reading a version 1 file: this much at a time (more only for a record that is larger).
READ_SIZE = 1 << 20

_TEMP = re.compile(r"\.tmp\.(\d+)\.(\d+)")
_EXPTIME, _CAS = slice(0, 4), slice(8, 16)  # in a record


class SnapshotError(Exception):
    """The file is not a snapshot this version can load: foreign, corrupt or truncated."""


class Written(NamedTuple):
    count: int  # items written
    expired: int  # items skipped because they had expired
    size: int  # bytes in the file
    seconds: float


class Loaded(NamedTuple):
    pairs: list[tuple[bytes, bytes]]  # (key, record), least recently used first
    count: int  # items in the file
    expired: int  # dropped because they expired before ``now``
    trimmed: int  # oldest items dropped to stay within ``keep_bytes``
    written_at: int | None  # when the snapshot was written; None when there was none


def accounted(data_bytes: int, items: int) -> int:
    """What items whose keys and records add up to ``data_bytes`` count against -m."""
    return data_bytes + items * (ITEM_OVERHEAD - VALUE_OFFSET)


# -- writing -------------------------------------------------------------------

# Temporary files this process is writing now: the cleanup of stale ones
# must never remove them.
_in_flight: set[str] = set()
_sequence = iter(range(1, 1 << 62))
# The cooperative writer's file I/O runs here, one job at a time and in
# order, so a job that cleans up after a killed write always runs after the
# write it interrupted.
_io_pool: gevent.threadpool.ThreadPool | None = None


def write_snapshot(
    path: str | os.PathLike,
    keys: Sequence[bytes],
    records: Sequence[bytes],
    now: float,
    *,
    max_cas: int | None = None,
    cooperative: bool = False,
) -> Written:
    """Write the items (``keys[i]``, ``records[i]``) whose records have not expired
    by ``now`` to ``path``, in that order.

    ``max_cas``: no record's CAS is larger (``Store.last_cas`` when the
    records were taken); found from the records when not given, at 0.06 us
    an item more.

    Atomic: ``path`` is replaced only by a complete, fsynced file. Raises
    OSError when the file cannot be written; the previous snapshot is then
    left as it was. The sequences must not change while they are written:
    pass the lists ``Store.records`` returns.

    With ``cooperative`` the call runs in a greenlet without stalling the
    others: it encodes a block at a time, a few milliseconds of work, and
    hands each to an I/O thread. Every system call (write, fsync, the
    rename, which frees the old file's blocks, and the directory's fsync)
    can block for tens of milliseconds on a busy disk; in the thread it
    blocks only this greenlet, and while it waits the hub polls sockets and
    serves clients.
    """
    started = time.perf_counter()
    path = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(path)
    _remove_stale_temps(directory, name)
    temp = f"{path}.tmp.{os.getpid()}.{next(_sequence)}"
    run = _io_thread().apply if cooperative else _call
    _in_flight.add(temp)
    fd = -1
    finished = False
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        # The header's totals are known only at the end: a placeholder now,
        # the real one written over it before the file is made durable.
        run(_write_chunk, (fd, bytes(_HEADER.size)))
        size = flushed = _HEADER.size
        tally = [0, 0, 0, 0]  # items written, items expired, data bytes, largest CAS
        for block in _encode(keys, records, int(now), tally, max_cas is None):
            run(_write_chunk, (fd, block))
            size += len(block)
            if size - flushed >= WRITEBACK_BYTES:
                run(_write_back, (fd, flushed, size - flushed))
                flushed = size
        largest_cas = tally[3] if max_cas is None else max_cas
        header = _HEADER.pack(MAGIC, VERSION, int(now), tally[0], tally[2], largest_cas, 0)
        header = header[:-_CRC_SIZE] + _crc(header[:-_CRC_SIZE])
        run(_write_chunk, (fd, header, 0))
        owned, fd = fd, -1  # _finish closes it, whatever happens
        run(_finish, (owned, temp, path, directory))
        finished = True
    finally:
        if not finished:
            if cooperative:
                # Queued behind any job still running for the interrupted
                # write: the descriptor is never closed under its feet.
                _io_thread().spawn(_abandon, fd, temp)
            else:
                _abandon(fd, temp)
        _in_flight.discard(temp)
    return Written(tally[0], tally[1], size, time.perf_counter() - started)


def _crc(data: bytes, crc: int = 0) -> bytes:
    return zlib.crc32(data, crc).to_bytes(_CRC_SIZE, "big")


def _encode(
    keys: Sequence[bytes], records: Sequence[bytes], now: int, tally: list[int], find_cas: bool
):
    """Yield the blocks, each whole; count what was written in ``tally`` (and
    with ``find_cas``, the largest CAS).

    The work per item is done by C loops over whole blocks (slices, lengths,
    the expiry column, joins): about 0.35 us an item of 100 B, against over
    1 us for a Python loop over the items.
    """
    start, end = 0, len(keys)
    while start < end:
        stop = min(end, start + BATCH_ITEMS)
        flat = [b""] * (2 * (stop - start))
        flat[0::2] = keys[start:stop]
        flat[1::2] = records[start:stop]
        lengths = array("I", map(len, flat))
        if sum(lengths) > BATCH_BYTES:
            # Cut after the item that brings the data to BATCH_BYTES.
            totals = list(accumulate(map(add, lengths[0::2], lengths[1::2])))
            cut = bisect_left(totals, BATCH_BYTES) + 1
            if cut < stop - start:
                stop = start + cut
                flat, lengths = flat[: 2 * cut], lengths[: 2 * cut]
        start = stop
        block = flat[1::2]
        exptimes = _column(block, _EXPTIME, "I")
        soonest = min(filter(None, exptimes), default=0)
        if soonest and soonest <= now:
            live = [i for i, exptime in enumerate(exptimes) if not exptime or exptime > now]
            tally[1] += len(block) - len(live)
            if not live:
                continue
            flat = [x for i in live for x in (flat[2 * i], flat[2 * i + 1])]
            lengths = array("I", map(len, flat))
            block = flat[1::2]
            soonest = min(filter(None, (exptimes[i] for i in live)), default=0)
        if find_cas:
            tally[3] = max(tally[3], max(_column(block, _CAS, "Q")))
        count = len(block)
        data = b"".join(flat)
        if _LITTLE:
            lengths.byteswap()
        head = _BLOCK.pack(count, len(data), soonest, 0)[:-_CRC_SIZE]
        lengths = lengths.tobytes()
        crc = _crc(data, zlib.crc32(lengths, zlib.crc32(head)))
        tally[0] += count
        tally[2] += len(data)
        yield b"".join((head, crc, lengths, data))


def _column(records: list[bytes], field: slice, typecode: str) -> array:
    """One header field of every record, as numbers (C loops only)."""
    column = array(typecode, b"".join(map(getitem, records, repeat(field))))
    if _LITTLE:
        column.byteswap()
    return column


def _io_thread() -> gevent.threadpool.ThreadPool:
    global _io_pool
    if _io_pool is None:
        _io_pool = gevent.threadpool.ThreadPool(1)
    return _io_pool


def _call(function, args):
    return function(*args)


def _write_chunk(fd: int, data: bytes, offset: int | None = None) -> None:
    """Write all of data, at the end of the file or at ``offset``."""
    view = memoryview(data)
    while view:
        if offset is None:
            view = view[os.write(fd, view) :]
        else:
            done = os.pwrite(fd, view, offset)
            view, offset = view[done:], offset + done


def _write_back(fd: int, offset: int, length: int) -> None:
    """Have the kernel start writing these bytes to disk now, rather than all
    at the final fsync (which then waited 0.6 s for 1.3 GiB here)."""
    if hasattr(os, "posix_fadvise"):
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_DONTNEED)


def _finish(fd: int, temp: str, path: str, directory: str) -> None:
    """Make the temporary file durable, put it in place, and make the rename durable."""
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, path)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _abandon(fd: int, temp: str) -> None:
    if fd >= 0:
        os.close(fd)
    _unlink_quietly(temp)


def _remove_stale_temps(directory: str, name: str) -> None:
    """Remove temporary files of this snapshot left by writers that died mid-write.

    A writer's file is stale when its process is gone, or when it is this
    process (a restart that got the same PID) but not one of its writes in
    progress. Another live writer's file is left alone.
    """
    prefix = name + ".tmp."
    try:
        entries = [e.name for e in os.scandir(directory) if e.name.startswith(prefix)]
    except OSError:
        return
    for entry in entries:
        match = _TEMP.fullmatch(entry, len(name))
        if match is None:
            continue
        temp = os.path.join(directory, entry)
        pid = int(match.group(1))
        if pid == os.getpid():
            if temp in _in_flight:
                continue
        elif _alive(pid):
            continue
        log.info("removing %s, left by an interrupted snapshot write", temp)
        _unlink_quietly(temp)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    return True


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# -- reading -------------------------------------------------------------------


class Block(NamedTuple):
    """One block's records, read and checked."""

    data: bytes  # version 2: the lengths then the data; version 1: records as in the file
    items: int
    soonest: int  # the earliest non-zero exptime (version 1: not known, 1)


class SnapshotFile:
    """A snapshot file opened for reading: its header read, its blocks read on demand.

    ``open`` reads only the header (and a version 1 file's trailer), so it
    is quick whatever the file's size. ``check`` reads a version 1 file
    whole to verify its checksum before any record is used (nothing for
    version 2, whose blocks are checked one by one). ``read_block`` reads
    and checks the next block (a fraction of a millisecond from the page
    cache); ``parse`` turns it into its keys and records with C loops
    (about 0.2 us an item). Raises
    SnapshotError for a file that is foreign, damaged or cut short, and
    OSError when it cannot be read.
    """

    def __init__(self, f, path: str):
        self._f = f
        self.path = path
        self.size = os.fstat(f.fileno()).st_size
        if hasattr(os, "posix_fadvise"):  # read from start to end: a larger readahead
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
        head = f.read(_PREAMBLE.size)
        if len(head) < len(MAGIC) or not head.startswith(MAGIC):
            raise SnapshotError(f"{path} is not an mbserver snapshot (no snapshot header)")
        if len(head) < _PREAMBLE.size:
            raise SnapshotError(f"{path} is truncated ({self.size} bytes)")
        _, self.version, self.written_at = _PREAMBLE.unpack(head)
        self.items_read = 0
        if self.version == 2:
            rest = f.read(_HEADER.size - _PREAMBLE.size)
            if len(rest) < _HEADER.size - _PREAMBLE.size:
                raise SnapshotError(f"{path} is truncated ({self.size} bytes)")
            header = head + rest
            _, _, _, self.items, self.data_bytes, self.max_cas, crc = _HEADER.unpack(header)
            if _crc(header[:-_CRC_SIZE]) != crc.to_bytes(_CRC_SIZE, "big"):
                raise SnapshotError(f"{path} is corrupt (header checksum mismatch)")
        elif self.version == 1:
            if self.size < _PREAMBLE.size + _V1_TRAILER.size:
                raise SnapshotError(f"{path} is truncated ({self.size} bytes)")
            f.seek(self.size - _V1_TRAILER.size)
            end, self.items, _ = _V1_TRAILER.unpack(f.read(_V1_TRAILER.size))
            if end != _V1_END:
                raise SnapshotError(f"{path} is truncated or corrupt (no trailer)")
            f.seek(_PREAMBLE.size)
            self.data_bytes = None  # not known before the records are read
            self.max_cas = V1_CAS_FLOOR
            self._checked = False
            self._buf, self._pos = b"", 0
            self._left = self.size - _V1_TRAILER.size - _PREAMBLE.size
        else:
            raise SnapshotError(
                f"{path} is a version {self.version} snapshot; "
                f"this mbserver reads versions 1 and {VERSION}"
            )

    @classmethod
    def open(cls, path: str | os.PathLike) -> SnapshotFile:
        """Open the file and read its header; FileNotFoundError if there is none."""
        path = os.fspath(path)
        f = open(path, "rb")
        try:
            return cls(f, path)
        except BaseException:
            f.close()
            raise

    def close(self) -> None:
        self._f.close()

    def check(self) -> Iterator[None]:
        """Verify a version 1 file's checksum, reading it whole (its records'
        framing and count are checked as they are read). A generator: it
        yields after each READ_SIZE bytes, so a caller can let others run."""
        if self.version != 1 or self._checked:
            return
        f, path = self._f, self.path
        f.seek(0)
        crc = 0
        left = self.size - _CRC_SIZE
        while left:
            data = f.read(min(left, READ_SIZE))
            if not data:
                raise SnapshotError(f"{path} is truncated (it shrank while being read)")
            crc = zlib.crc32(data, crc)
            left -= len(data)
            yield
        if f.read(_CRC_SIZE) != crc.to_bytes(_CRC_SIZE, "big"):
            raise SnapshotError(f"{path} is corrupt (checksum mismatch)")
        f.seek(_PREAMBLE.size)
        self._checked = True

    def read_block(self) -> Block | None:
        """The next block, checked; None after the last one."""
        if self.version == 1:
            return self._read_v1()
        f, path = self._f, self.path
        start = f.tell()
        head = f.read(_BLOCK.size)
        if not head:
            if self.items_read != self.items:
                raise SnapshotError(
                    f"{path} is truncated ({self.items_read} of {self.items} records)"
                )
            return None
        if self.items_read == self.items:
            raise SnapshotError(f"{path} is corrupt (data after the last record, at byte {start})")
        if len(head) < _BLOCK.size:
            raise SnapshotError(f"{path} is truncated (at byte {start})")
        items, data_length, soonest, crc = _BLOCK.unpack(head)
        body = 8 * items + data_length
        if not items or items > self.items - self.items_read or start + _BLOCK.size + body > self.size:
            raise SnapshotError(f"{path} is truncated or corrupt (a bad block at byte {start})")
        data = f.read(body)
        if len(data) < body:
            raise SnapshotError(f"{path} is truncated (it shrank while being read)")
        if _crc(data, zlib.crc32(head[:-_CRC_SIZE])) != crc.to_bytes(_CRC_SIZE, "big"):
            raise SnapshotError(f"{path} is corrupt (checksum mismatch in the block at byte {start})")
        self.items_read += items
        return Block(data, items, soonest)

    def parse(self, block: Block) -> tuple[list[bytes], int, int]:
        """A block's items as one list, in the file's order (key, record, key,
        record...); their keys' and records' lengths added up; and the
        largest key and value lengths added together (for ``drop_misfits``)."""
        if self.version == 1:
            return self._parse_v1(block)
        items, data = block.items, block.data
        lengths = array("I")
        lengths.frombytes(data[: 8 * items])
        if _LITTLE:
            lengths.byteswap()
        stream = io.BytesIO(data)
        stream.seek(8 * items)
        fields = list(map(stream.read, lengths))
        records = fields[1::2]
        longest_key = max(map(len, fields[0::2]))
        # The CRC says these are the bytes written; these say they are a
        # snapshot's, so that a damaged writer cannot load a record the store
        # cannot read. The lengths use up the data exactly: every read was
        # whole (a short one would leave the last, never empty, short too).
        if (
            stream.tell() != len(data)
            or len(fields[-1]) != lengths[-1]
            or longest_key > MAX_KEY_LENGTH
            or min(map(len, records)) < VALUE_OFFSET
        ):
            raise SnapshotError(f"{self.path} is corrupt (bad record lengths in a block)")
        largest = longest_key + max(map(len, records)) - VALUE_OFFSET
        return fields, len(data) - 8 * items, largest

    # version 1: a record stream, read once checked

    def _read_v1(self) -> Block | None:
        if not self._checked:
            raise RuntimeError("check() a version 1 snapshot before reading it")
        f, path = self._f, self.path
        buf, pos = self._buf, self._pos
        start = pos
        items = 0
        unpack = _V1_RECORD.unpack_from
        while True:
            n = len(buf)
            while items < BATCH_ITEMS and pos + _V1_RECORD.size <= n:
                key_len, rec_len = unpack(buf, pos)
                if key_len > MAX_KEY_LENGTH or rec_len < VALUE_OFFSET:
                    raise SnapshotError(f"{path} is corrupt (bad record lengths)")
                stop = pos + _V1_RECORD.size + key_len + rec_len
                if stop > n:
                    break
                pos = stop
                items += 1
            if items == BATCH_ITEMS:
                break
            if not self._left:
                if pos != n:
                    raise SnapshotError(
                        f"{path} is truncated or corrupt (a record runs into the trailer)"
                    )
                break
            # The bytes the record at pos still needs (or its length fields).
            if pos + _V1_RECORD.size <= n:
                key_len, rec_len = unpack(buf, pos)
                need = pos + _V1_RECORD.size + key_len + rec_len - n
            else:
                need = pos + _V1_RECORD.size - n
            if need > self._left:
                raise SnapshotError(f"{path} is truncated or corrupt (a record runs past the end)")
            data = f.read(min(self._left, max(need, READ_SIZE)))
            self._left -= len(data)
            buf, pos, start = buf[start:] + data, pos - start, 0
        self._buf, self._pos = buf, pos
        self.items_read += items
        if items:
            return Block(buf[start:pos], items, 1)
        if self.items_read != self.items:
            raise SnapshotError(
                f"{path} is corrupt ({self.items_read} records, trailer says {self.items})"
            )
        return None

    def _parse_v1(self, block: Block) -> tuple[list[bytes], int, int]:
        data, pos = block.data, 0
        unpack = _V1_RECORD.unpack_from
        items = []
        append = items.append
        largest = 0
        for _ in range(block.items):
            key_len, rec_len = unpack(data, pos)
            start = pos + _V1_RECORD.size
            pos = start + key_len + rec_len
            append(data[start : start + key_len])
            append(data[start + key_len : pos])
            largest = max(largest, key_len + rec_len - VALUE_OFFSET)
        return items, len(data) - _V1_RECORD.size * block.items, largest


# A parsed block is one list, key, record, key, record... (``SnapshotFile.parse``):
# the store takes it so (``Store.load``), and these trim it in place.


def drop_expired(items: list[bytes], soonest: int, now: float) -> int:
    """Remove the items whose records have expired by ``now``; how many."""
    if not soonest or soonest > now:
        return 0
    return _keep(items, lambda key, rec: not expired(rec, now))


def drop_oldest(items: list[bytes], excess: int) -> tuple[int, int]:
    """Remove the first items until ``excess`` accounted bytes are gone.

    Returns (items removed, bytes still to remove).
    """
    count = len(items) // 2
    size = accounted(sum(map(len, items)), count)
    if size <= excess:
        items.clear()
        return count, excess - size
    removed = 0
    while excess > 0:
        excess -= accounted(len(items[2 * removed]) + len(items[2 * removed + 1]), 1)
        removed += 1
    del items[: 2 * removed]
    return removed, 0


def drop_misfits(items: list[bytes], largest: int, store: ItemStore) -> int:
    """Remove the items the store cannot take (over -I, or alone over -m); how many.

    ``largest``: no item's key and value add up to more (``SnapshotFile.parse``).
    """
    if store.fits(largest):  # the usual case: one check for the whole block
        return 0
    return _keep(items, lambda key, rec: store.fits(len(key) + len(rec) - VALUE_OFFSET))


def _keep(items: list[bytes], keep: Callable[[bytes, bytes], bool]) -> int:
    """Keep the items ``keep`` accepts; how many went."""
    kept = [x for key, rec in zip(items[0::2], items[1::2]) if keep(key, rec) for x in (key, rec)]
    removed = (len(items) - len(kept)) // 2
    items[:] = kept
    return removed


def load_snapshot(
    path: str | os.PathLike,
    now: float,
    *,
    keep_bytes: int | None = None,
) -> Loaded:
    """The (key, record) pairs in the snapshot at ``path`` that are live at ``now``, all at once.

    A missing file gives no pairs. A file that is not a complete, intact
    snapshot raises SnapshotError; one that cannot be read raises OSError.
    With ``keep_bytes`` (a memory limit) the oldest items past that many
    accounted bytes are left out, as a store would evict them (version 2
    files, whose header says their size). The server loads with
    ``Snapshots.load`` instead, a block at a time.
    """
    try:
        snap = SnapshotFile.open(path)
    except FileNotFoundError:
        log.info("no snapshot at %s; starting empty", os.fspath(path))
        return Loaded([], 0, 0, 0, None)
    pairs: list[tuple[bytes, bytes]] = []
    expired_count = trimmed = 0
    excess = _excess(snap, keep_bytes)
    with contextlib.closing(snap):
        for _ in snap.check():
            pass
        while (block := snap.read_block()) is not None:
            items, _, _ = snap.parse(block)
            expired_count += drop_expired(items, block.soonest, now)
            if excess:
                dropped, excess = drop_oldest(items, excess)
                trimmed += dropped
            pairs.extend(zip(items[0::2], items[1::2]))
        return Loaded(pairs, snap.items, expired_count, trimmed, snap.written_at)


def _excess(snap: SnapshotFile, keep_bytes: int | None) -> int:
    """The accounted bytes past ``keep_bytes`` in the file, as its header says."""
    if keep_bytes is None or snap.data_bytes is None:
        return 0
    return max(0, accounted(snap.data_bytes, snap.items) - keep_bytes)


# -- the server's side -----------------------------------------------------------

RELEASE_SLICE = 100_000  # references dropped between two yields: about 1.5 ms
# Between two blocks the loader waits for the hub to be idle, or this long at
# most: under requests that never leave it idle clients still get it 5/6 of
# the time, and the load goes on.
LOAD_PAUSE = 0.005
# How much lower the forked writer's priority is than the server's.
CHILD_NICENESS = 10
# How often a waiting save looks whether its child has exited, in seconds.
REAP_INTERVAL = 0.01


@contextlib.contextmanager
def gc_paused():
    """Keep the cyclic garbage collector off for a while.

    A save on a graceful stop makes two lists of a million references
    (``Store.records``) that hold no cycles. Every collection that meets
    one walks all its references: 30-140 ms for a million items
    (bench/snapshot.py). With the collector off they are freed by
    reference counting before it runs. Not for overlapping use by several
    greenlets: the first to leave turns it back on.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class LoadProgress:
    """How far the background load has come: what `stats` and /healthz show.

    Plain attributes, set by the loader; reading them never yields.
    """

    __slots__ = ("loading", "file_items", "read_items", "loaded_items")

    def __init__(self):
        self.loading = False
        self.file_items = 0  # records in the file, as its header (or trailer) says
        self.read_items = 0  # records read from it so far, used or not
        self.loaded_items = 0  # items added to the cache so far

    @property
    def fraction(self) -> float:
        """The share of the file's records read (less than 1.0 after a load a
        flush or a damaged block ended early)."""
        if not self.file_items:
            return 1.0
        return min(1.0, self.read_items / self.file_items)

    def stat_pairs(self) -> list[tuple[str, str]]:
        """The lines `stats` adds after memcached's general stats."""
        return [
            ("snapshot_loading", "1" if self.loading else "0"),
            ("snapshot_load_progress", f"{self.fraction:.4f}"),
            ("snapshot_loaded_items", str(self.loaded_items)),
            ("snapshot_file_items", str(self.file_items)),
        ]

    def describe(self) -> str:
        """One line for /healthz while loading."""
        return (
            f"warming: {self.fraction:.0%} of the snapshot read, "
            f"{self.loaded_items} of {self.file_items} items loaded"
        )


class Snapshots:
    """Warm restarts for one store: a background load at start, saves while serving and on stop.

    ``open`` reads the snapshot's header and readies the store (call it
    before serving); ``load`` then adds the items a block at a time while
    clients are served (``start_loading`` runs it in a greenlet). ``save``
    writes a snapshot from a forked child (every ``--snapshot-interval``
    seconds: ``start_periodic``); ``save(final=True)``, on a graceful
    stop, writes it from this process. Every method logs what happened and
    none raises for a bad or unwritable file: a cache that cannot be warmed
    starts empty, and one whose snapshot cannot be written keeps serving.
    Saves never overlap.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        store: ItemStore,
        lock: RWLock,
        clock: Callable[[], float] | None = None,
    ):
        self.path = os.fspath(path)
        self.store = store
        self.lock = lock
        self.clock = clock or store.clock
        self.progress = LoadProgress()
        self._file: SnapshotFile | None = None
        self._loader: gevent.Greenlet | None = None
        self._saving = gevent.lock.Semaphore()
        self._stopping = gevent.event.Event()
        self._periodic: gevent.Greenlet | None = None
        self._child: int | None = None  # the pid of a forked save's writer

    # -- loading

    def open(self) -> bool:
        """Read the snapshot's header and ready the store for its load; False if there is none.

        Quick whatever the file's size: call it before serving, so that
        every write a client makes is known to the load (``Store.begin_load``)
        and gets a CAS above the file's.
        """
        try:
            snap = SnapshotFile.open(self.path)
        except FileNotFoundError:
            log.info("no snapshot at %s; starting empty", self.path)
            return False
        except SnapshotError as exc:
            log.error("snapshot refused: %s; starting empty", exc)
            return False
        except OSError as exc:
            log.error("cannot read snapshot %s: %s; starting empty", self.path, exc)
            return False
        with self.lock.write():
            self.store.begin_load(snap.max_cas)
        self._file = snap
        progress = self.progress
        progress.loading = True
        progress.file_items = snap.items
        progress.read_items = progress.loaded_items = 0
        return True

    def start_loading(self) -> None:
        """Run ``load``, then ``count_loaded``, in a greenlet (after ``open``, once serving)."""
        if self._file is not None and self._loader is None:
            self._loader = gevent.spawn(self._load_and_count)

    def finish_loading(self) -> None:
        """Wait for a background load (and its count) to end."""
        if self._loader is not None:
            self._loader.join()

    @property
    def loading(self) -> bool:
        return self.progress.loading

    def load(self) -> int:
        """Load the snapshot into the store a block at a time; returns the items loaded.

        Opens it first unless ``open`` has. Clients are served between
        blocks: each is read, checked and parsed, then added under the
        store's write lock, about 1 ms in all for 2,000 items. Keys that
        clients wrote or deleted since the load began keep what the clients
        did; a flush ends the load. A damaged block ends it too, keeping
        what came before it (see the module's docstring).

        The reads are made here, not in a thread: from the page cache a
        block takes a fraction of a millisecond, and a thread must win the
        GIL back from a busy hub after every system call, up to 5 ms each
        time (a load beside a busy greenlet took 134 s instead of 10).
        """
        if self._file is None and not self.open():
            return 0
        started = time.perf_counter()
        snap, store, progress = self._file, self.store, self.progress
        loaded = expired_count = refused = trimmed = 0
        excess = _excess(snap, store.limit_bytes)
        log.info(
            "loading %d items from %s in the background (written %.0f s ago)",
            snap.items,
            self.path,
            max(0.0, self.clock() - snap.written_at),
        )
        flushed = False
        try:
            for _ in snap.check():
                _pause()
            while (block := snap.read_block()) is not None:
                items, size, largest = snap.parse(block)
                dropped = drop_expired(items, block.soonest, self.clock())
                expired_count += dropped
                if excess:
                    trimmed_now, excess = drop_oldest(items, excess)
                    trimmed += trimmed_now
                    dropped += trimmed_now
                misfits = drop_misfits(items, largest, store)
                refused += misfits
                if dropped or misfits:
                    size = sum(map(len, items))
                with self.lock.write():
                    added = store.load(items, size)
                progress.read_items += block.items
                if added < 0:
                    flushed = True
                    break
                loaded += added
                progress.loaded_items = loaded
                _pause()
        except SnapshotError as exc:
            log.error("snapshot damaged: %s; kept the %d items loaded before it", exc, loaded)
        except OSError as exc:
            log.error("cannot read snapshot %s: %s; kept the %d items loaded", self.path, exc, loaded)
        finally:
            snap.close()
            self._file = None
            with self.lock.write():
                store.end_load()
            progress.loading = False
        log.info(
            "loaded %d items from %s in %.2f s%s (%d had expired, %d did not fit -m or -I, "
            "%d were written or deleted by clients first)",
            loaded,
            self.path,
            time.perf_counter() - started,
            "; a flush_all ended the load" if flushed else "",
            expired_count,
            refused + trimmed,
            progress.read_items - loaded - expired_count - refused - trimmed,
        )
        return loaded

    def count_loaded(self) -> None:
        """Count the loaded items in their size classes (``Store.account_loaded``),
        a slice per hold of the lock, pausing between as the load does.

        The load leaves it for after its last block, so that it delays no
        item: 0.4-0.7 us an item, 4.4 s for 10 million here.
        """
        started = time.perf_counter()
        while True:
            with self.lock.write():
                more = self.store.account_loaded()
            if not more:
                break
            _pause()
        log.info("counted the loaded items in their size classes in %.2f s",
                 time.perf_counter() - started)

    def _load_and_count(self) -> None:
        self.load()
        self.count_loaded()

    # -- saving

    def save(self, *, final: bool = False) -> Written | None:
        """Write every live item to the snapshot; None if it was not written.

        A periodic save forks: the child process writes the table as it was
        at the fork (the kernel copies pages only as either side changes
        them), so clients wait only for the fork itself (it copies the page
        tables: 20-45 ms for 10 million items of 100 B here). It is skipped while a load is running: the file
        still holds what the load has not reached. The final save, on a
        graceful stop, waits for a load to end, then writes from this
        process, with no clients left to stall.
        """
        with self._saving:
            if final:
                self.finish_loading()
                written = self._save_here()
            elif self.loading:
                log.info("snapshot skipped: %s is still loading", self.path)
                return None
            else:
                written = self._save_forked()
        if written is not None:
            log.info(
                "snapshot: %d items, %.1f MiB written to %s in %.2f s",
                written.count,
                written.size / (1 << 20),
                self.path,
                written.seconds,
            )
        return written

    def _save_here(self) -> Written | None:
        with gc_paused():
            with self.lock.read():
                keys, records = self.store.records()
            try:
                written = write_snapshot(
                    self.path,
                    keys,
                    records,
                    self.clock(),
                    max_cas=self.store.last_cas,
                    cooperative=True,
                )
            except OSError as exc:
                log.error("cannot write snapshot %s: %s", self.path, exc)
                written = None
            # Freed before the collector can see them, and a slice at a
            # time: dropping a million references at once takes 15 ms.
            _release(keys, records)
        return written

    def _save_forked(self) -> Written | None:
        now = self.clock()
        read_end, write_end = os.pipe()
        try:
            pid = os.fork()
        except OSError as exc:
            os.close(read_end)
            os.close(write_end)
            # Under strict overcommit (vm.overcommit_memory=2) a large
            # process may not fork: skipped, rather than stalling clients.
            log.error("cannot fork to write snapshot %s: %s; skipped", self.path, exc)
            return None
        if pid == 0:
            os.close(read_end)
            _child_writes(self.store, self.path, now, write_end)  # never returns
        os.close(write_end)
        self._child = pid
        try:
            report = _read_all(read_end)
        finally:
            os.close(read_end)
            status = _reap(pid)
            self._child = None
        if report.startswith(b"ok "):
            count, expired_count, size, seconds = report.split()[1:]
            return Written(int(count), int(expired_count), int(size), float(seconds))
        if report.startswith(b"error "):
            log.error("cannot write snapshot %s: %s", self.path, report[6:].decode(errors="replace"))
        elif self._stopping.is_set():
            log.info("periodic snapshot abandoned for the final one")
        else:
            log.error("snapshot writer for %s died (%s)", self.path, _describe_status(status))
        return None

    def start_periodic(self, interval: float) -> None:
        """Save every ``interval`` seconds in a background greenlet until ``stop_periodic``."""
        if self._periodic is None:
            self._periodic = gevent.spawn(self._every, interval)

    def stop_periodic(self) -> None:
        """Stop the periodic saves; one in progress is abandoned (it is atomic either way)."""
        self._stopping.set()
        if self._child is not None:
            # The final save follows: no use finishing an older one first.
            with contextlib.suppress(ProcessLookupError):
                os.kill(self._child, signal.SIGKILL)
        if self._periodic is not None:
            self._periodic.join()
            self._periodic = None

    def _every(self, interval: float) -> None:
        while not self._stopping.wait(interval):
            try:
                self.save()
            except Exception:
                # A bug here must not end warm restarts for the process's life.
                log.exception("snapshot failed")


def _pause() -> None:
    """Let clients in between two blocks of a load.

    Not sleep(0): the hub runs 50 callbacks before it polls sockets again,
    so a loader yielding that way (a millisecond a block) kept a client
    waiting 50 ms. An idle watcher runs once the hub has polled and
    answered what came; the timeout keeps a busy hub from starving the load.
    """
    with gevent.Timeout(LOAD_PAUSE, False):
        gevent.idle()


def _child_writes(store: ItemStore, path: str, now: float, report_fd: int) -> None:
    """In a forked child: write the snapshot, report on ``report_fd``, and exit.

    Nothing else runs here: the table cannot change under the writer, so no
    lock is taken and the records are written as they were at the fork.
    The child dies with its parent, and leaves stopping to the parent (a
    signal to the process group does not cut a write short). It runs at a
    lower priority: where cores are scarce, clients come first (on this
    2-core machine the server's worst stall during a save was 49 ms
    without, 34 ms with).
    """
    code = 1
    try:
        # The server's sockets first: a copy held here would keep a client's
        # connection open after the server closed it, and the listening
        # port accepting, until the save ends.
        os.closerange(3, report_fd)
        os.closerange(report_fd + 1, os.sysconf("SC_OPEN_MAX"))
        gc.disable()  # the child frees nothing worth collecting before it exits
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        _die_with_parent()
        os.nice(CHILD_NICENESS)
        keys, records = store.records()
        written = write_snapshot(path, keys, records, now, max_cas=store.last_cas)
        report = b"ok %d %d %d %.6f" % (written.count, written.expired, written.size, written.seconds)
        code = 0
    except BaseException as exc:  # the parent reports it; the child only exits
        report = b"error " + str(exc).encode(errors="replace")
    try:
        os.write(report_fd, report)
    finally:
        os._exit(code)


def _die_with_parent() -> None:
    """Have the kernel kill this process if its parent dies (Linux), so that an
    orphan never renames an old snapshot over a newer server's."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_PDEATHSIG = 1
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:  # it died before the request took effect
        os._exit(1)


def _read_all(fd: int) -> bytes:
    """Read until end of file without blocking the hub."""
    gevent.os.make_nonblocking(fd)
    parts = []
    while chunk := gevent.os.nb_read(fd, 4096):
        parts.append(chunk)
    return b"".join(parts)


def _reap(pid: int) -> int:
    """Wait for a child without blocking the hub (it may take a while to tear
    down its copy of a large address space); its wait status."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        gevent.sleep(REAP_INTERVAL)


def _describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def _release(*lists: list) -> None:
    """Empty big lists from the end, a slice at a time, yielding in between."""
    for items in lists:
        while items:
            del items[-RELEASE_SLICE:]
            gevent.sleep(0)
