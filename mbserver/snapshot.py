"""Warm restarts: the store's items written to a snapshot file and read back.

What lives here: the snapshot file format, ``write_snapshot`` (atomic, and
optionally cooperative so clients keep being served while it runs),
``load_snapshot`` (streaming and validating), and ``Snapshots``, which ties
them to one store and its lock for the server: load at start, save on a
graceful stop and every ``--snapshot-interval`` seconds. What does not:
sockets, options and signals (``server``), and the rules for items, which
stay in ``store`` (``Store.records`` and ``Store.restore``).

The file, all integers big-endian::

    header   magic b"\\x89MBSNAP\\n", version u32, written_at u32 (Unix seconds)
    record*  key_length u16, record_length u32, key, record
    trailer  0xFFFF u16, count u64, crc32 u32

A record is the store's own item record (``store.record``: exptime u32,
atime u32, CAS u64, flags u32, then the value), copied as it is, so the
expiry travels as an absolute Unix time and remaining TTLs survive a restart
whatever its length. Keys are at most 250 bytes, so a key length of 0xFFFF
marks the trailer; ``count`` is the number of records and the CRC-32 covers
every byte before it. A new record layout needs a new version.

Atomicity: the file is written under a temporary name in the same directory,
flushed and fsynced, renamed over the path, and the directory is fsynced. A
crash or SIGKILL at any moment leaves either the previous snapshot or the
new one, never a mix; a temporary file left by a dead writer is removed by
the next write.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import logging
import os
import re
import struct
import time
import zlib
from collections.abc import Callable, Iterable
from typing import NamedTuple

import gevent
import gevent.event
import gevent.lock
import gevent.threadpool

from .rwlock import RWLock
from .record import EXPTIME, MAX_KEY_LENGTH, VALUE_OFFSET
from .storage import ItemStore
from .store import ITEM_OVERHEAD

log = logging.getLogger("mbserver.snapshot")

MAGIC = b"\x89MBSNAP\n"  # the high first byte catches text-mode mangling, as PNG's does
VERSION = 1
_HEADER = struct.Struct(">8sII")  # magic, version, written_at
_RECORD = struct.Struct(">HI")  # key length, record length
_TRAILER = struct.Struct(">HQI")  # END, count, crc32
END = 0xFFFF
_CRC_SIZE = 4

# The cooperative writer encodes this many items or this many bytes,
# whichever comes first, between two yields to the hub: about a millisecond
# of work (bench/snapshot.py measures what clients see).
BATCH_ITEMS = 2000
BATCH_BYTES = 1 << 20
# The loader reads this much at a time (more only for a record that is larger).
READ_SIZE = 1 << 20

_TEMP = re.compile(r"\.tmp\.(\d+)\.(\d+)")


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
    pairs: Iterable[tuple[bytes, bytes]],
    now: float,
    *,
    cooperative: bool = False,
) -> Written:
    """Write the (key, record) pairs whose records have not expired by ``now`` to ``path``.

    Atomic: ``path`` is replaced only by a complete, fsynced file. Raises
    OSError when the file cannot be written; the previous snapshot is then
    left as it was. ``pairs`` must not change while it is written: pass
    the lists ``Store.records`` returns.

    With ``cooperative`` the call runs in a greenlet without stalling the
    others: it encodes ``BATCH_ITEMS`` items (or ``BATCH_BYTES``) at a time,
    about a millisecond's work, and hands each chunk to an I/O thread. Every
    system call (write, fsync, the rename, which frees the old file's blocks,
    and the directory's fsync) can block for tens of milliseconds on a busy
    disk; in the thread it blocks only this greenlet, and while it waits the
    hub polls sockets and serves clients.
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
        header = _HEADER.pack(MAGIC, VERSION, int(now))
        crc = run(_write_chunk, (fd, header, 0))
        size = len(header)
        tally = [0, 0]  # items written, items expired
        for chunk in _encode(pairs, int(now), tally):
            crc = run(_write_chunk, (fd, chunk, crc))
            size += len(chunk)
        end = _TRAILER.pack(END, tally[0], 0)[:-_CRC_SIZE]
        crc = zlib.crc32(end, crc)
        trailer = end + crc.to_bytes(_CRC_SIZE, "big")
        run(_write_chunk, (fd, trailer, crc))
        size += len(trailer)
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


def _encode(pairs, now: int, tally: list[int]):
    """Yield the records section in chunks of BATCH_ITEMS items or BATCH_BYTES bytes.

    Counts the items written and skipped as expired in ``tally``.
    """
    parts: list[bytes] = []
    append = parts.append
    pack = _RECORD.pack
    exptime_of = EXPTIME.unpack_from
    items = size = expired = 0
    for key, rec in pairs:
        exptime = exptime_of(rec)[0]
        if exptime and exptime <= now:
            expired += 1
            continue
        append(pack(len(key), len(rec)))
        append(key)
        append(rec)
        items += 1
        size += len(key) + len(rec)
        if items >= BATCH_ITEMS or size >= BATCH_BYTES:
            tally[0] += items
            tally[1] = expired
            items = size = 0
            chunk = b"".join(parts)
            parts.clear()
            yield chunk
    tally[0] += items
    tally[1] = expired
    if parts:
        yield b"".join(parts)


def _io_thread() -> gevent.threadpool.ThreadPool:
    global _io_pool
    if _io_pool is None:
        _io_pool = gevent.threadpool.ThreadPool(1)
    return _io_pool


def _call(function, args):
    return function(*args)


def _write_chunk(fd: int, data: bytes, crc: int) -> int:
    """Write all of data; returns the CRC-32 continued over it."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    return zlib.crc32(data, crc)


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


# -- loading -------------------------------------------------------------------


def load_snapshot(
    path: str | os.PathLike,
    now: float,
    *,
    keep_bytes: int | None = None,
) -> Loaded:
    """The (key, record) pairs in the snapshot at ``path`` that are live at ``now``.

    A missing file gives no pairs. A file that is not a complete, intact
    snapshot of this version raises SnapshotError; one that cannot be read
    raises OSError. The file is streamed: a foreign file is refused after its
    first 16 bytes, and no length field makes the loader allocate more than
    the file holds. With ``keep_bytes`` (the store's memory limit) the oldest
    items past that many accounted bytes are dropped while reading, as the
    store would evict them, so a snapshot from a larger ``-m`` never needs
    all its items in memory at once.
    """
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        log.info("no snapshot at %s; starting empty", os.fspath(path))
        return Loaded([], 0, 0, 0, None)
    with f:
        return _read(f, os.fspath(path), now, keep_bytes)


def _read(f, path: str, now: float, keep_bytes: int | None) -> Loaded:
    file_size = os.fstat(f.fileno()).st_size
    head = f.read(_HEADER.size)
    if len(head) < len(MAGIC) or not head.startswith(MAGIC):
        raise SnapshotError(f"{path} is not an mbserver snapshot (no snapshot header)")
    if len(head) < _HEADER.size or file_size < _HEADER.size + _TRAILER.size:
        raise SnapshotError(f"{path} is truncated ({file_size} bytes)")
    _, version, written_at = _HEADER.unpack(head)
    if version != VERSION:
        raise SnapshotError(
            f"{path} is a version {version} snapshot; this mbserver reads version {VERSION}"
        )
    crc = zlib.crc32(head)
    left = file_size - _TRAILER.size - _HEADER.size  # record bytes not read yet
    pairs: collections.deque[tuple[bytes, bytes]] = collections.deque()
    keep = pairs.append
    count = expired = trimmed = 0
    kept_bytes = 0
    unpack_record = _RECORD.unpack_from
    exptime_of = EXPTIME.unpack_from
    buf = b""
    pos = 0
    base = _HEADER.size  # the file offset of buf[0]
    while True:
        n = len(buf)
        while pos + _RECORD.size <= n:
            key_len, rec_len = unpack_record(buf, pos)
            if key_len > MAX_KEY_LENGTH or rec_len < VALUE_OFFSET:
                raise SnapshotError(f"{path} is corrupt (bad record lengths at byte {base + pos})")
            start = pos + _RECORD.size
            stop = start + key_len + rec_len
            if stop > n:
                break
            pos = stop
            count += 1
            if (exptime := exptime_of(buf, start + key_len)[0]) and exptime <= now:
                expired += 1
                continue
            keep((buf[start : start + key_len], buf[start + key_len : stop]))
            if keep_bytes is not None:
                kept_bytes += ITEM_OVERHEAD + key_len + rec_len - VALUE_OFFSET
                while kept_bytes > keep_bytes:
                    old_key, old_rec = pairs.popleft()
                    kept_bytes -= ITEM_OVERHEAD + len(old_key) + len(old_rec) - VALUE_OFFSET
                    trimmed += 1
        if not left:
            if pos != n:
                raise SnapshotError(
                    f"{path} is truncated or corrupt (a record runs into the trailer)"
                )
            break
        # The bytes the record at pos still needs (or its length fields).
        if pos + _RECORD.size <= n:
            key_len, rec_len = unpack_record(buf, pos)
            need = pos + _RECORD.size + key_len + rec_len - n
        else:
            need = pos + _RECORD.size - n
        if need > left:
            raise SnapshotError(f"{path} is truncated or corrupt (a record runs past the end)")
        data = f.read(min(left, max(need, READ_SIZE)))
        if len(data) < min(left, need):
            raise SnapshotError(f"{path} is truncated (it shrank while being read)")
        crc = zlib.crc32(data, crc)
        left -= len(data)
        base += pos
        buf = buf[pos:] + data
        pos = 0
    trailer = f.read(_TRAILER.size)
    if len(trailer) != _TRAILER.size:
        raise SnapshotError(f"{path} is truncated (it shrank while being read)")
    end, recorded_count, recorded_crc = _TRAILER.unpack(trailer)
    crc = zlib.crc32(trailer[:-_CRC_SIZE], crc)
    if end != END:
        raise SnapshotError(f"{path} is truncated or corrupt (no trailer)")
    if recorded_crc != crc:
        raise SnapshotError(f"{path} is corrupt (checksum mismatch)")
    if recorded_count != count:
        raise SnapshotError(f"{path} is corrupt ({count} records, trailer says {recorded_count})")
    return Loaded(list(pairs), count, expired, trimmed, written_at)


# -- the server's side -----------------------------------------------------------

RELEASE_SLICE = 100_000  # references dropped between two yields: about 1.5 ms


@contextlib.contextmanager
def gc_paused():
    """Keep the cyclic garbage collector off for a while.

    A snapshot makes containers of a million references (the lists
    ``Store.records`` returns, the loaded pairs) that hold no cycles. Every
    collection that meets one walks all its references: 30-140 ms for a
    million items, with every client stalled (bench/snapshot.py). With the
    collector off they are freed by reference counting before it runs.
    Not for overlapping use by several greenlets: the first to leave turns
    it back on.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Snapshots:
    """Warm restarts for one store: ``load`` at start, ``save`` on stop and periodically.

    Every method logs what happened and none raises for a bad or unwritable
    file: a cache that cannot be warmed starts empty, and one whose snapshot
    cannot be written keeps serving. Saves never overlap.
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
        self._saving = gevent.lock.Semaphore()
        self._stopping = gevent.event.Event()
        self._periodic: gevent.Greenlet | None = None

    def load(self) -> int:
        """Restore the snapshot into the store, before serving; returns the items in the store.

        Call it on an empty store: the count and the log line assume so.
        """
        started = time.perf_counter()
        with gc_paused():
            try:
                loaded = load_snapshot(self.path, self.clock(), keep_bytes=self.store.limit_bytes)
            except SnapshotError as exc:
                log.error("snapshot refused: %s; starting empty", exc)
                return 0
            except OSError as exc:
                log.error("cannot read snapshot %s: %s; starting empty", self.path, exc)
                return 0
            if loaded.written_at is None:
                return 0
            with self.lock.write():
                self.store.restore(loaded.pairs)
                items = len(self.store)
            count, expired, written_at = loaded.count, loaded.expired, loaded.written_at
            del loaded  # a million tuples: freed before the collector can see them
        log.info(
            "loaded %d items from %s in %.2f s (written %.0f s ago; %d had expired, "
            "%d did not fit -m or -I)",
            items,
            self.path,
            time.perf_counter() - started,
            max(0.0, self.clock() - written_at),
            expired,
            count - expired - items,
        )
        return items

    def save(self) -> Written | None:
        """Write every live item to the snapshot without stalling clients; None on failure."""
        with self._saving, gc_paused():
            with self.lock.read():
                keys, records = self.store.records()
            try:
                written = write_snapshot(
                    self.path, zip(keys, records), self.clock(), cooperative=True
                )
            except OSError as exc:
                log.error("cannot write snapshot %s: %s", self.path, exc)
                written = None
            # Freed before the collector can see them, and a slice at a
            # time: dropping a million references at once takes 15 ms.
            _release(keys, records)
        if written is None:
            return None
        log.info(
            "snapshot: %d items, %.1f MiB written to %s in %.2f s",
            written.count,
            written.size / (1 << 20),
            self.path,
            written.seconds,
        )
        return written

    def start_periodic(self, interval: float) -> None:
        """Save every ``interval`` seconds in a background greenlet until ``stop_periodic``."""
        if self._periodic is None:
            self._periodic = gevent.spawn(self._every, interval)

    def stop_periodic(self) -> None:
        """Stop the periodic saves, letting one in progress finish (it is atomic either way)."""
        self._stopping.set()
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


def _release(*lists: list) -> None:
    """Empty big lists from the end, a slice at a time, yielding in between."""
    for items in lists:
        while items:
            del items[-RELEASE_SLICE:]
            gevent.sleep(0)
