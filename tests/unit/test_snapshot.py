"""Unit tests for mbserver.snapshot and the store's side of it (records, load).

The clock is a ``FakeClock``: "the server was down for an hour" is a clock
advance. Files go to pytest's tmp_path. Crashes are simulated by making a
step of the write raise; a real SIGKILL mid-write is in
tests/integration/test_snapshot.py. Periodic saves fork a child that
writes the file: the tests wait for it, with a bound. Nothing here sleeps
on the wall clock or opens a socket.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import socket
import struct
import tracemalloc
import zlib

import gevent
import gevent.event
import pytest

from mbserver import snapshot
from mbserver.rwlock import RWLock
from mbserver.snapshot import (
    MAGIC,
    VERSION,
    SnapshotError,
    Snapshots,
    gc_paused,
    load_snapshot,
    write_snapshot,
)
from mbserver.record import MEMCACHED_ITEM_HEADER, pack as record
from mbserver.store import (
    EXISTS,
    ITEM_OVERHEAD,
    Mode,
    Store,
)
from ..items import get_item, item_size

SET = Mode.SET
# Bounds waits for the I/O thread so a broken writer fails instead of hanging.
HANG_GUARD = 30


@pytest.fixture
def store(clock) -> Store:
    return Store(clock=clock)


@pytest.fixture
def path(tmp_path):
    return tmp_path / "cache.snapshot"


def fill(store: Store, count: int, prefix: bytes = b"key") -> None:
    """Items with varied values, flags and expiries: none, relative, absolute."""
    now = int(store.clock())
    for i in range(count):
        ttl = (0, 3600 + i, now + 86400 + i)[i % 3]
        value = bytes([i % 256]) * (i % 300)
        store.store(SET, b"%s:%d" % (prefix, i), value, flags=i * 7919 & 0xFFFFFFFF, ttl=ttl)


def save(store: Store, path, **kwargs) -> snapshot.Written:
    keys, records = store.records()
    return write_snapshot(path, keys, records, store.clock(), **kwargs)


def load_into(path, clock, **store_kwargs) -> Store:
    """A new store, loaded from the snapshot as the server loads it."""
    store = Store(clock=clock, **store_kwargs)
    snapshots = Snapshots(path, store, RWLock())
    snapshots.load()
    snapshots.count_loaded()
    return store


def everything(store: Store) -> list:
    """Each live item's key and every field, least recently used first."""
    return [(key, tuple(item)) for key, item in store.items()]


def temp_files(path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


def sparse_file(path, head: bytes, size: int) -> None:
    """``head``, then holes up to ``size`` bytes (never read, never on disk)."""
    with open(path, "wb") as f:
        f.write(head)
        f.truncate(size)


def refused_in(path, clock, reason: str, most: int) -> None:
    """load_snapshot refuses the file (the message matching ``reason``) having
    allocated fewer than ``most`` bytes at its peak."""
    tracemalloc.start()
    try:
        with pytest.raises(SnapshotError, match=reason):
            load_snapshot(path, clock())
        assert tracemalloc.get_traced_memory()[1] < most
    finally:
        tracemalloc.stop()


def header_cas(path) -> int:
    """The CAS bound a snapshot's header gives."""
    snap = snapshot.SnapshotFile.open(path)
    snap.close()
    return snap.max_cas


def v2_header(now: float, items: int, data_bytes: int = 0, max_cas: int = 0) -> bytes:
    """A version 2 header with a valid checksum, whatever it claims."""
    head = struct.pack(">8sIIQQQ", MAGIC, 2, int(now), items, data_bytes, max_cas)
    return head + zlib.crc32(head).to_bytes(4, "big")


def v2_block(keys: list[bytes], records: list[bytes], soonest: int = 0) -> bytes:
    """A version 2 block with a valid checksum, whatever it holds."""
    lengths = b"".join(struct.pack(">II", len(k), len(r)) for k, r in zip(keys, records))
    data = b"".join(x for pair in zip(keys, records) for x in pair)
    head = struct.pack(">III", len(keys), len(data), soonest)
    crc = zlib.crc32(data, zlib.crc32(lengths, zlib.crc32(head)))
    return head + crc.to_bytes(4, "big") + lengths + data


def v1_file(pairs, now: float) -> bytes:
    """A version 1 snapshot, as the previous release wrote them."""
    body = struct.pack(">8sII", MAGIC, 1, int(now))
    for key, rec in pairs:
        body += struct.pack(">HI", len(key), len(rec)) + key + rec
    body += struct.pack(">HQ", 0xFFFF, len(pairs))
    return body + zlib.crc32(body).to_bytes(4, "big")


# -- round trips ----------------------------------------------------------------


class TestRoundTrip:
    def test_every_item_comes_back_with_value_flags_cas_and_expiry(self, store, clock, path):
        fill(store, 3000)
        written = save(store, path)
        assert (written.count, written.expired) == (3000, 0)
        assert written.size == path.stat().st_size
        assert everything(load_into(path, clock)) == everything(store)

    def test_edge_values_round_trip(self, store, clock, path):
        store.store(SET, b"k" * 250, b"", flags=0xFFFFFFFF)
        store.store(SET, b"\x00\xff binary key", os.urandom(300_000))
        store.store(SET, b"empty", b"")
        save(store, path)
        assert everything(load_into(path, clock)) == everything(store)

    @pytest.mark.parametrize("read_size", [1, 7, 4096])
    def test_records_split_across_reads_load_the_same(
        self, store, clock, path, monkeypatch, read_size
    ):
        fill(store, 200)
        save(store, path)
        monkeypatch.setattr(snapshot, "READ_SIZE", read_size)
        assert everything(load_into(path, clock)) == everything(store)

    def test_an_empty_store_round_trips(self, store, clock, path):
        written = save(store, path)
        assert written.count == 0
        loaded = load_snapshot(path, clock())
        assert (loaded.pairs, loaded.count, loaded.written_at) == ([], 0, int(clock()))

    @pytest.mark.parametrize("cooperative", [False, True])
    def test_cooperative_and_blocking_writes_make_the_same_file(
        self, store, path, tmp_path, cooperative
    ):
        fill(store, 5000)
        save(store, path, cooperative=cooperative)
        other = tmp_path / "other"
        save(store, other, cooperative=not cooperative)
        assert path.read_bytes() == other.read_bytes()

    def test_the_header_bounds_every_cas(self, store, path, clock):
        cases = [1, (1 << 40) + 5, 7]
        write_snapshot(path, [b"a", b"b", b"c"], [record(b"v", 0, 0, c, 0) for c in cases], clock())
        assert header_cas(path) == (1 << 40) + 5
        fill(store, 10)
        store.delete(b"key:9")  # the latest CAS is no item's any more
        Snapshots(path, store, RWLock()).save()
        assert header_cas(path) == store.last_cas == 10

    def test_the_file_is_private(self, store, path):
        save(store, path)
        assert path.stat().st_mode & 0o777 == 0o600


class TestExpiry:
    def test_remaining_ttls_survive_the_downtime(self, store, clock, path):
        t0 = int(clock())
        store.store(SET, b"short", b"v", ttl=100)
        store.store(SET, b"long", b"v", ttl=10_000)
        store.store(SET, b"forever", b"v")
        save(store, path)
        clock.advance(60)  # down for a minute
        restored = load_into(path, clock)
        assert get_item(restored, b"short").exptime == t0 + 100
        clock.advance(39)
        assert b"short" in restored
        clock.advance(1)
        assert b"short" not in restored
        assert get_item(restored, b"long").exptime == t0 + 10_000
        assert get_item(restored, b"forever").exptime == 0

    def test_items_that_expired_while_down_are_dropped_on_load(self, store, clock, path):
        store.store(SET, b"short", b"v", ttl=100)
        store.store(SET, b"long", b"v", ttl=1000)
        save(store, path)
        clock.advance(100)
        loaded = load_snapshot(path, clock())
        assert [key for key, _ in loaded.pairs] == [b"long"]
        assert (loaded.count, loaded.expired) == (2, 1)

    def test_expired_items_are_not_written(self, store, clock, path):
        store.store(SET, b"gone", b"v", ttl=10)
        store.store(SET, b"kept", b"v")
        clock.advance(10)
        keys, _ = store.records()
        assert b"gone" in keys  # records() leaves the dropping to the writer
        written = save(store, path)
        assert (written.count, written.expired) == (1, 1)
        assert load_snapshot(path, clock()).count == 1

    def test_a_load_drops_records_that_expired_while_down(self, store, clock, path):
        store.store(SET, b"gone", b"v", ttl=5)
        store.store(SET, b"kept", b"v")
        save(store, path)
        clock.advance(5)
        assert [key for key, _ in load_into(path, clock).items()] == [b"kept"]

    def test_a_pending_delayed_flush_still_happens_after_a_restart(self, store, clock, path):
        store.store(SET, b"forever", b"v")
        store.store(SET, b"later", b"v", ttl=500)
        store.store(SET, b"sooner", b"v", ttl=50)
        store.flush(100)
        save(store, path)
        restored = load_into(path, clock)
        assert len(restored) == 3
        clock.advance(50)
        assert [key for key, _ in restored.items()] == [b"forever", b"later"]
        clock.advance(50)
        assert len(restored.items()) == 0


class TestLoadIntoAStore:
    def test_lru_order_is_preserved(self, store, clock, path):
        for key in (b"a", b"b", b"c", b"d"):
            store.store(SET, key, b"v")
        clock.advance(120)
        get_item(store, b"b")  # bumped to the young end
        store.touch(b"a", 0)
        save(store, path)
        restored = load_into(path, clock)
        assert [key for key, _ in restored.items()] == [b"c", b"d", b"b", b"a"]

    def test_eviction_after_a_load_takes_the_least_recently_used(self, store, clock, path):
        for i in range(10):
            store.store(SET, b"k%d" % i, b"x" * 100)
        save(store, path)
        limit = 10 * item_size(b"k0", b"x" * 100)
        restored = load_into(path, clock, limit_bytes=limit)
        restored.store(SET, b"new", b"x" * 100)
        keys = [key for key, _ in restored.items()]
        assert keys[-1] == b"new" and b"k0" not in keys and b"k9" in keys

    def test_cas_continues_above_the_largest_loaded_cas(self, store, clock, path):
        fill(store, 100)
        top = max(item.cas for _, item in store.items())
        save(store, path)
        fresh = load_into(path, clock)
        assert fresh.store(SET, b"new", b"v")[1] == top + 1
        # A client holding a pre-restart CAS cannot overwrite a newer item.
        old_cas = get_item(fresh, b"key:5").cas
        fresh.store(SET, b"key:5", b"newer")
        assert fresh.store(SET, b"key:5", b"stale write", cas=old_cas)[0] is EXISTS

    def test_a_load_accounts_bytes_and_keeps_the_youngest_past_the_limit(self, store, clock, path):
        for i in range(100):
            store.store(SET, b"k%03d" % i, b"x" * 1000)
        save(store, path)
        one = item_size(b"k000", b"x" * 1000)
        restored = load_into(path, clock, limit_bytes=30 * one)
        assert restored.bytes <= 30 * one
        assert restored.bytes == sum(item_size(k, i.value) for k, i in restored.items())
        keys = [key for key, _ in restored.items()]
        assert keys[-1] == b"k099" and len(keys) >= 29  # the youngest are kept

    def test_a_load_skips_items_over_the_item_size_limit(self, store, clock, path):
        store.store(SET, b"big", b"x" * 5000)
        store.store(SET, b"small", b"x" * 10)
        save(store, path)
        restored = load_into(path, clock, max_item_size=2000)
        assert [key for key, _ in restored.items()] == [b"small"]

    def test_a_key_already_in_the_store_keeps_its_value(self, store, clock, path):
        store.store(SET, b"k", b"from the file")
        store.store(SET, b"other", b"from the file")
        save(store, path)
        fresh = Store(clock=clock)
        snapshots = Snapshots(path, fresh, RWLock())
        assert snapshots.open()
        fresh.store(SET, b"k", b"newer")  # a client, before the load reached it
        assert snapshots.load() == 1
        assert get_item(fresh, b"k").value == b"newer"
        assert get_item(fresh, b"other").value == b"from the file"
        assert fresh.bytes == item_size(b"k", b"newer") + item_size(b"other", b"from the file")

    def test_load_trims_the_oldest_past_keep_bytes(self, store, clock, path):
        for i in range(100):
            store.store(SET, b"k%03d" % i, b"x" * 1000)
        save(store, path)
        one = ITEM_OVERHEAD + 4 + 1000
        loaded = load_snapshot(path, clock(), keep_bytes=10 * one)
        assert [key for key, _ in loaded.pairs] == [b"k%03d" % i for i in range(90, 100)]
        assert (loaded.count, loaded.trimmed) == (100, 90)


# -- refusing bad files -----------------------------------------------------------


@pytest.fixture
def small_snapshot(store, path) -> bytes:
    for i in range(3):
        store.store(SET, b"k%d" % i, b"value %d" % i, flags=i, ttl=1000)
    save(store, path)
    return path.read_bytes()


class TestRefusal:
    def test_every_single_corrupt_byte_is_refused(self, small_snapshot, path, clock):
        for offset in range(len(small_snapshot)):
            damaged = bytearray(small_snapshot)
            damaged[offset] ^= 0x01
            path.write_bytes(damaged)
            with pytest.raises(SnapshotError):
                load_snapshot(path, clock())

    def test_every_truncation_is_refused(self, small_snapshot, path, clock):
        for length in range(len(small_snapshot)):
            path.write_bytes(small_snapshot[:length])
            with pytest.raises(SnapshotError):
                load_snapshot(path, clock())

    def test_trailing_garbage_is_refused(self, small_snapshot, path, clock):
        path.write_bytes(small_snapshot + b"\x00")
        with pytest.raises(SnapshotError):
            load_snapshot(path, clock())

    def test_an_empty_file_is_refused(self, path, clock):
        path.write_bytes(b"")
        with pytest.raises(SnapshotError, match="not an mbserver snapshot"):
            load_snapshot(path, clock())

    @pytest.mark.parametrize(
        "content",
        [b"hello world\n", b"\x80\x01\x00\x05" + bytes(100), b"MBSNAP" + bytes(100), MAGIC[:7]],
    )
    def test_foreign_files_are_refused(self, path, clock, content):
        path.write_bytes(content)
        with pytest.raises(SnapshotError, match="not an mbserver snapshot"):
            load_snapshot(path, clock())

    def test_a_huge_foreign_file_is_refused_from_its_header(self, path, clock):
        sparse_file(path, b"SQLite format 3\x00", 10 << 30)  # 10 GiB that are never read
        refused_in(path, clock, "not an mbserver snapshot", 1 << 20)

    def test_a_block_length_past_the_end_allocates_nothing(self, path, clock):
        # A valid header, then a block claiming 4 GiB, in a file of 1 GiB
        # of holes: refused without reading or allocating the claim.
        head = v2_header(clock(), items=1) + struct.pack(">IIII", 1, 0xFFFFFFFF, 0, 0)
        sparse_file(path, head, 1 << 30)
        refused_in(path, clock, "bad block", 4 << 20)

    def test_a_version_1_record_length_past_the_end_allocates_nothing(self, path, clock):
        head = struct.pack(">8sII", MAGIC, 1, int(clock()))
        sparse_file(path, head + struct.pack(">HI", 3, 0xFFFFFFFF) + b"key", 1 << 30)
        refused_in(path, clock, "no trailer", 4 << 20)

    def test_a_key_longer_than_memcached_allows_is_corrupt(self, path, clock):
        path.write_bytes(v2_header(clock(), items=1) + v2_block([b"k" * 251], [bytes(20)]))
        with pytest.raises(SnapshotError, match="bad record lengths"):
            load_snapshot(path, clock())

    def test_a_version_1_key_longer_than_memcached_allows_is_corrupt(self, path, clock):
        path.write_bytes(v1_file([(b"k" * 251, bytes(20))], clock()))
        with pytest.raises(SnapshotError, match="bad record lengths"):
            load_snapshot(path, clock())

    @pytest.mark.parametrize("claimed", [(1, 25), (1, 19), (1, 20), (3, 21)])
    def test_lengths_that_do_not_use_up_the_data_exactly_are_corrupt(self, path, clock, claimed):
        data = b"k" + bytes(21)  # a key of 1 and a record of 21
        lengths = struct.pack(">II", *claimed)
        head = struct.pack(">III", 1, len(data), 0)
        crc = zlib.crc32(data, zlib.crc32(lengths, zlib.crc32(head))).to_bytes(4, "big")
        path.write_bytes(v2_header(clock(), items=1) + head + crc + lengths + data)
        with pytest.raises(SnapshotError, match="bad record lengths"):
            load_snapshot(path, clock())

    def test_a_record_shorter_than_its_header_is_corrupt(self, path, clock):
        path.write_bytes(v2_header(clock(), items=1) + v2_block([b"k"], [bytes(19)]))
        with pytest.raises(SnapshotError, match="bad record lengths"):
            load_snapshot(path, clock())

    def test_a_wrong_count_with_a_valid_checksum_is_refused(self, small_snapshot, path, clock):
        header = bytearray(small_snapshot[:44])
        struct.pack_into(">Q", header, 16, 4)
        header[40:] = zlib.crc32(header[:40]).to_bytes(4, "big")
        path.write_bytes(bytes(header) + small_snapshot[44:])
        with pytest.raises(SnapshotError, match="truncated .3 of 4 records"):
            load_snapshot(path, clock())

    def test_a_version_1_wrong_count_with_a_valid_checksum_is_refused(self, path, clock):
        body = v1_file([(b"k%d" % i, record(b"v", 0, 0, i + 1, 0)) for i in range(3)], clock())
        body = body[:-12] + struct.pack(">Q", 4)
        path.write_bytes(body + zlib.crc32(body).to_bytes(4, "big"))
        with pytest.raises(SnapshotError, match="3 records, trailer says 4"):
            load_snapshot(path, clock())

    @pytest.mark.parametrize("version", [0, VERSION + 1])
    def test_another_version_is_refused_by_name(self, small_snapshot, path, clock, version):
        path.write_bytes(MAGIC + struct.pack(">I", version) + small_snapshot[12:])
        with pytest.raises(SnapshotError, match=f"version {version} snapshot"):
            load_snapshot(path, clock())

    def test_a_missing_file_is_an_empty_cache(self, path, clock, caplog):
        caplog.set_level(logging.INFO, logger="mbserver.snapshot")
        loaded = load_snapshot(path, clock())
        assert (loaded.pairs, loaded.count, loaded.written_at) == ([], 0, None)
        records = [r for r in caplog.records if r.name == "mbserver.snapshot"]
        assert [r.levelname for r in records] == ["INFO"]
        assert "no snapshot" in records[0].getMessage()


# -- atomicity ----------------------------------------------------------------------


class Crash(Exception):
    """Stands in for the process dying at that point."""


@pytest.fixture
def previous(store, path) -> bytes:
    """A good snapshot already in place, whose items are all 'old:*'."""
    fill(store, 50, prefix=b"old")
    save(store, path)
    store.flush()
    fill(store, 5000, prefix=b"new")
    return path.read_bytes()


def fail_on_call(monkeypatch, target, name, n):
    """Make target.name raise Crash on its n-th call (1-based)."""
    real = getattr(target, name)
    calls = [0]

    def wrapper(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            raise Crash(name)
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapper)


def unused_pid() -> int:
    """A PID no process has now, as a writer's that died would be."""
    for pid in range(4_000_000, 1, -1):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return pid
        except PermissionError:
            pass
    raise AssertionError("no free PID")


class TestAtomicity:
    @pytest.mark.parametrize("cooperative", [False, True])
    @pytest.mark.parametrize(
        "target, name, n",
        [
            (snapshot, "_write_chunk", 1),  # the header
            (snapshot, "_write_chunk", 3),  # half way through the records (2000 a chunk)
            (snapshot, "_write_chunk", 5),  # the trailer
            (os, "fsync", 1),  # the file's data
            (os, "replace", 1),  # the rename
        ],
    )
    def test_a_crash_mid_write_leaves_the_previous_snapshot(
        self, store, path, previous, monkeypatch, cooperative, target, name, n
    ):
        monkeypatch.setattr(snapshot, "BATCH_ITEMS", 2000)
        fail_on_call(monkeypatch, target, name, n)
        with pytest.raises(Crash):
            save(store, path, cooperative=cooperative)
        if cooperative:
            snapshot._io_thread().join()  # the clean-up queued behind the write
        monkeypatch.undo()
        assert path.read_bytes() == previous
        assert temp_files(path) == []
        assert load_snapshot(path, store.clock()).count == 50

    @pytest.mark.parametrize("cooperative", [False, True])
    def test_a_full_disk_raises_and_keeps_the_previous(
        self, store, path, previous, monkeypatch, cooperative
    ):
        monkeypatch.setattr(snapshot, "BATCH_ITEMS", 500)  # the disk fills part way
        real_write = os.write
        written = [0]

        def write(fd, data):
            if written[0] > 100_000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            written[0] += len(data)
            return real_write(fd, data)

        monkeypatch.setattr(os, "write", write)
        with pytest.raises(OSError) as raised:
            save(store, path, cooperative=cooperative)
        assert raised.value.errno == errno.ENOSPC
        snapshot._io_thread().join()
        monkeypatch.undo()
        assert path.read_bytes() == previous
        assert temp_files(path) == []

    def test_a_dead_writers_temporary_file_is_removed_by_the_next_write(
        self, store, path, previous
    ):
        dead_pid = unused_pid()
        stale = path.parent / f"{path.name}.tmp.{dead_pid}.1"
        stale.write_bytes(previous[:100])
        ours = path.parent / f"{path.name}.tmp.{os.getpid()}.999999"  # a restart with our PID
        ours.write_bytes(b"x")
        live = path.parent / f"{path.name}.tmp.{os.getppid()}.1"  # a live writer's: left alone
        live.write_bytes(b"x")
        unrelated = path.parent / "other.tmp.1.1"
        unrelated.write_bytes(b"x")
        save(store, path)
        assert temp_files(path) == sorted([live.name, unrelated.name])
        assert load_snapshot(path, store.clock()).count == 5000

    def test_a_new_snapshot_replaces_the_previous(self, store, path, previous):
        written = save(store, path)
        assert written.count == 5000
        assert temp_files(path) == []
        keys = [key for key, _ in load_snapshot(path, store.clock()).pairs]
        assert keys[0] == b"new:0" and len(keys) == 5000


# -- not stalling clients ---------------------------------------------------------------


class TestCooperative:
    def run_beside_a_greenlet(self, store, path, cooperative) -> int:
        """Write while another greenlet counts how often it gets to run."""
        turns = [0]
        done = [False]

        def other():
            # idle(), not sleep(0): a sleep(0) loop keeps the hub running
            # callbacks and starves the I/O thread's completions.
            while not done[0]:
                turns[0] += 1
                gevent.idle()

        greenlet = gevent.spawn(other)
        gevent.sleep(0)
        before = turns[0]
        save(store, path, cooperative=cooperative)
        during = turns[0] - before
        done[0] = True
        greenlet.join()
        return during

    def test_a_cooperative_write_lets_other_greenlets_run(self, store, path, monkeypatch):
        monkeypatch.setattr(snapshot, "BATCH_ITEMS", 100)
        fill(store, 2000)
        # 20 batches, each written by the I/O thread while the hub runs others.
        assert self.run_beside_a_greenlet(store, path, cooperative=True) >= 20

    def test_a_blocking_write_does_not(self, store, path):
        fill(store, 2000)
        assert self.run_beside_a_greenlet(store, path, cooperative=False) == 0

    def test_batches_are_bounded_by_bytes_too(self, store, path, monkeypatch):
        monkeypatch.setattr(snapshot, "BATCH_BYTES", 10_000)
        for i in range(50):
            store.store(SET, b"k%d" % i, b"x" * 2000)
        chunks = []
        real = snapshot._write_chunk
        monkeypatch.setattr(
            snapshot,
            "_write_chunk",
            lambda fd, data, offset=None: chunks.append(len(data)) or real(fd, data, offset),
        )
        save(store, path)
        assert len(chunks) >= 10 and max(chunks) < 20_000


# -- the server's side ------------------------------------------------------------------


class TestSnapshots:
    def test_save_then_load_into_a_new_store(self, store, clock, path):
        fill(store, 500)
        assert Snapshots(path, store, RWLock()).save().count == 500
        clock.advance(30)
        fresh = Store(clock=clock)
        assert Snapshots(path, fresh, RWLock()).load() == 500
        assert everything(fresh) == everything(store)

    @pytest.mark.parametrize(
        "damage, logged",
        [
            (lambda data: data[:20] + b"x" + data[21:], "snapshot refused"),  # the header
            (lambda data: data[:-1], "snapshot damaged"),  # the only block
        ],
        ids=["header", "block"],
    )
    def test_a_damaged_snapshot_is_logged_and_the_store_starts_empty(
        self, store, path, caplog, small_snapshot, damage, logged
    ):
        path.write_bytes(damage(small_snapshot))
        fresh = Store(clock=store.clock)
        assert Snapshots(path, fresh, RWLock()).load() == 0
        assert len(fresh) == 0
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and logged in errors[0].getMessage()
        assert str(path) in errors[0].getMessage()

    def test_a_missing_snapshot_starts_empty(self, store, path):
        assert Snapshots(path, store, RWLock()).load() == 0

    def test_an_unwritable_snapshot_is_logged_not_raised(self, store, tmp_path, caplog):
        fill(store, 10)
        result = Snapshots(tmp_path / "no such dir" / "snap", store, RWLock()).save()
        assert result is None
        assert any("cannot write snapshot" in r.getMessage() for r in caplog.records)

    def test_periodic_saves_run_until_stopped(self, store, path, monkeypatch):
        fill(store, 10)
        snapshots = Snapshots(path, store, RWLock())
        saves = []
        third = gevent.event.Event()
        real = snapshots.save

        def counted():
            saves.append(real())
            if len(saves) == 3:
                third.set()

        monkeypatch.setattr(snapshots, "save", counted)
        snapshots.start_periodic(0)
        # Only a guard against a hang: the saves end on the I/O thread's time.
        with gevent.Timeout(HANG_GUARD):
            third.wait()
        snapshots.stop_periodic()
        count = len(saves)
        assert count >= 3 and all(w.count == 10 for w in saves)
        gevent.sleep(0)
        assert len(saves) == count
        assert load_snapshot(path, store.clock()).count == 10

    def test_the_collector_is_paused_and_restored(self):
        assert gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
            with gc_paused():
                assert not gc.isenabled()
            assert not gc.isenabled()
        assert gc.isenabled()


def test_loaded_items_are_counted_in_their_size_classes_after_the_load(clock, path):
    store = Store(clock=clock)
    fill(store, 3000)
    save(store, path)
    fresh = Store(clock=clock)
    snapshots = Snapshots(path, fresh, RWLock())
    assert snapshots.load() == 3000
    assert fresh.class_usage() == {}  # not counted yet: the load only adds
    fresh.delete(b"key:0")  # a client's delete before its item is counted
    fresh.store(SET, b"key:1", b"new")  # and a replacement
    snapshots.count_loaded()
    store.delete(b"key:0")
    store.store(SET, b"key:1", b"new")
    assert fresh.class_usage() == store.class_usage() != {}


def test_item_size_limit_matches_the_store(clock, path):
    # The load uses the store's own size rule: one byte over -I is refused.
    limit = 1024
    fits = limit - MEMCACHED_ITEM_HEADER - 1
    records = [record(b"x" * fits, 0, 0, 1, 0), record(b"x" * (fits + 1), 0, 0, 2, 0)]
    write_snapshot(path, [b"k", b"j"], records, clock())
    small = load_into(path, clock, max_item_size=limit)
    assert [key for key, _ in small.items()] == [b"k"]


# -- the background load ----------------------------------------------------------------


@pytest.fixture
def blocks_of_100(monkeypatch):
    """Blocks of 100 items, so 2,000 items make 20 blocks."""
    monkeypatch.setattr(snapshot, "BATCH_ITEMS", 100)


def wrap_store_load(monkeypatch, store: Store, before) -> list[int]:
    """Call ``before(n)`` ahead of the n-th Store.load (from 1); returns the slice sizes."""
    sizes = []
    real = store.load

    def load(items, size=None):
        sizes.append(len(items) // 2)
        before(len(sizes))
        return real(items, size)

    monkeypatch.setattr(store, "load", load)
    return sizes


class TestBackgroundLoad:
    def test_the_lock_is_held_for_one_block_at_a_time_and_clients_run_between(
        self, store, clock, path, blocks_of_100, monkeypatch
    ):
        fill(store, 2000)
        save(store, path)
        fresh, lock = Store(clock=clock), RWLock()
        snapshots = Snapshots(path, fresh, lock)
        wake = gevent.event.Event()
        turns = []  # a client's view each time it ran: was the lock free?
        seen = []  # at each Store.load: held by the loader? how often the client had run?

        def client():
            while True:
                wake.wait()
                wake.clear()
                turns.append(lock.free)

        def before_each_block(n):
            seen.append((lock.writer, len(turns)))
            wake.set()  # a request arrives: it must be answered before the next block

        sizes = wrap_store_load(monkeypatch, fresh, before_each_block)
        probe = gevent.spawn(client)
        assert snapshots.load() == 2000
        probe.kill()
        assert sizes == [100] * 20
        assert seen == [(True, n) for n in range(20)]  # one turn between every two blocks
        assert all(turns)  # and the lock was never held across a yield

    def test_writes_and_deletes_made_during_the_load_win_over_the_file(
        self, store, clock, path, blocks_of_100, monkeypatch
    ):
        fill(store, 2000)
        save(store, path)
        fresh = Store(clock=clock)

        def clients(n):  # before the third block: what clients did meanwhile
            if n == 3:
                fresh.store(SET, b"key:1950", b"written during the load")
                fresh.delete(b"key:1960")  # not loaded yet: a miss, and it stays deleted
                fresh.delete(b"key:5")  # loaded already
                fresh.store(SET, b"key:1970", b"x" * (2 << 20))  # too large: drops the old value
                fresh.arith(b"key:1980", True, 1, initial=7)  # created

        wrap_store_load(monkeypatch, fresh, clients)
        assert load_into_store(path, fresh) == 2000 - 4  # the four keys clients named first
        assert get_item(fresh, b"key:1950").value == b"written during the load"
        assert get_item(fresh, b"key:1980").value == b"7"
        for gone in (b"key:1960", b"key:5", b"key:1970"):
            assert get_item(fresh, gone) is None
        assert get_item(fresh, b"key:1990").value == get_item(store, b"key:1990").value
        assert len(fresh) == 2000 - 3
        assert fresh.bytes == sum(item_size(k, i.value) for k, i in fresh.items())

    def test_a_flush_during_the_load_empties_what_is_still_to_load(
        self, store, clock, path, blocks_of_100, monkeypatch, caplog
    ):
        caplog.set_level(logging.INFO, logger="mbserver.snapshot")
        fill(store, 2000)
        save(store, path)
        fresh = Store(clock=clock)

        def clients(n):
            if n == 5:
                fresh.flush()
                fresh.store(SET, b"after", b"the flush")

        wrap_store_load(monkeypatch, fresh, clients)
        snapshots = Snapshots(path, fresh, RWLock())
        assert snapshots.load() == 400
        assert [key for key, _ in fresh.items()] == [b"after"]
        assert not snapshots.loading
        assert any("a flush_all ended the load" in r.getMessage() for r in caplog.records)

    def test_a_damaged_block_keeps_the_intact_blocks_before_it(
        self, store, clock, path, blocks_of_100, caplog
    ):
        fill(store, 2000)
        save(store, path)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01  # in the tenth or eleventh block
        path.write_bytes(data)
        fresh = Store(clock=clock)
        loaded = Snapshots(path, fresh, RWLock()).load()
        assert loaded in (900, 1000)
        assert [key for key, _ in fresh.items()] == [b"key:%d" % i for i in range(loaded)]
        assert [get_item(fresh, b"key:%d" % i) for i in range(loaded)] == [
            get_item(store, b"key:%d" % i) for i in range(loaded)
        ]
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "checksum mismatch" in errors[0]
        assert f"kept the {loaded} items loaded before it" in errors[0]

    def test_a_file_cut_short_keeps_its_whole_blocks(self, store, clock, path, blocks_of_100):
        fill(store, 2000)
        save(store, path)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) * 3 // 4])
        fresh = Store(clock=clock)
        loaded = Snapshots(path, fresh, RWLock()).load()
        assert 1300 <= loaded < 1600 and loaded % 100 == 0
        assert len(fresh) == loaded

    def test_progress_says_how_far_the_load_is(
        self, store, clock, path, blocks_of_100, monkeypatch
    ):
        fill(store, 2000)
        save(store, path)
        fresh = Store(clock=clock)
        snapshots = Snapshots(path, fresh, RWLock())
        progress = snapshots.progress
        seen = []
        wrap_store_load(monkeypatch, fresh, lambda n: seen.append(dict(progress.stat_pairs())))
        snapshots.load()
        assert seen[0] == {
            "snapshot_loading": "1",
            "snapshot_load_progress": "0.0000",
            "snapshot_loaded_items": "0",
            "snapshot_file_items": "2000",
        }
        assert seen[10]["snapshot_load_progress"] == "0.5000"
        assert seen[10]["snapshot_loaded_items"] == "1000"
        assert dict(progress.stat_pairs()) == {
            "snapshot_loading": "0",
            "snapshot_load_progress": "1.0000",
            "snapshot_loaded_items": "2000",
            "snapshot_file_items": "2000",
        }

    def test_describe_says_warming_and_how_far(self):
        progress = snapshot.LoadProgress()
        progress.loading, progress.file_items, progress.read_items = True, 200, 50
        progress.loaded_items = 48
        assert progress.describe() == "warming: 25% of the snapshot read, 48 of 200 items loaded"


def load_into_store(path, store: Store) -> int:
    return Snapshots(path, store, RWLock()).load()


class TestVersion1Files:
    def pairs(self, clock) -> list[tuple[bytes, bytes]]:
        now = int(clock())
        return [
            (b"k%d" % i, record(b"value %d" % i, i, (0, now + 60, now - 1)[i % 3], 100 + i, now))
            for i in range(30)
        ]

    def test_a_version_1_file_loads(self, clock, path):
        pairs = self.pairs(clock)
        path.write_bytes(v1_file(pairs, clock()))
        live = [(k, r) for k, r in pairs if not 0 < struct.unpack(">I", r[:4])[0] <= clock()]
        assert load_snapshot(path, clock()).pairs == live
        fresh = load_into(path, clock)
        assert [(k, get_item(fresh, k)) for k, _ in live] == [
            (k, snapshot_item(r)) for k, r in live
        ]

    def test_cas_values_continue_above_the_version_1_floor(self, clock, path):
        path.write_bytes(v1_file(self.pairs(clock), clock()))
        fresh = Store(clock=clock)
        snapshots = Snapshots(path, fresh, RWLock())
        assert snapshots.open()  # before any record is read
        assert fresh.store(SET, b"new", b"v")[1] == snapshot.V1_CAS_FLOOR + 1
        assert snapshots.load() == 20  # the live ones, and the client's key kept

    def test_a_damaged_version_1_file_loads_nothing(self, clock, path, caplog):
        data = bytearray(v1_file(self.pairs(clock), clock()))
        data[-40] ^= 0x01  # near the end: its records before are unchecked
        path.write_bytes(data)
        fresh = Store(clock=clock)
        assert Snapshots(path, fresh, RWLock()).load() == 0
        assert len(fresh) == 0
        assert any("checksum mismatch" in r.getMessage() for r in caplog.records)

    def test_a_large_version_1_file_loads_in_blocks(self, clock, path, blocks_of_100):
        pairs = [(b"k%04d" % i, record(b"v" * (i % 50), 0, 0, i + 1, 0)) for i in range(1050)]
        path.write_bytes(v1_file(pairs, clock()))
        assert load_snapshot(path, clock()).pairs == pairs


def snapshot_item(rec: bytes):
    from mbserver.record import unpack

    return unpack(rec)


# -- saving by a forked child -----------------------------------------------------------


class Gate:
    """Holds a forked child's first write until the test opens it: the test acts
    while the child is writing, whatever the machine's speed. A named pipe,
    as the child keeps no descriptor of its parent's."""

    def __init__(self, monkeypatch, directory):
        self.fifo = os.path.join(directory, "gate")
        os.mkfifo(self.fifo)
        parent = os.getpid()
        real = snapshot._write_chunk

        def write_chunk(fd, data, offset=None):
            if os.getpid() != parent:
                snapshot._write_chunk = real
                with open(self.fifo, "rb") as gate:
                    gate.read(1)  # the child waits here, once
            real(fd, data, offset)

        monkeypatch.setattr(snapshot, "_write_chunk", write_chunk)

    def reached(self) -> None:
        """Wait for the child to be waiting at the gate."""
        with gevent.Timeout(HANG_GUARD):
            while True:
                try:  # fails until the child has opened its end
                    self.fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
                    return
                except OSError as exc:
                    if exc.errno != errno.ENXIO:
                        raise
                    gevent.sleep(0.001)

    def open(self) -> None:
        self.reached()
        os.write(self.fd, b"x")
        os.close(self.fd)


@pytest.fixture
def gate(monkeypatch, tmp_path_factory):
    return Gate(monkeypatch, tmp_path_factory.mktemp("gate"))  # away from the snapshot


def wait_for(condition) -> None:
    """Yield to other greenlets until ``condition()``; a hang fails instead of hanging."""
    with gevent.Timeout(HANG_GUARD):
        while not condition():
            gevent.sleep(0.001)


class TestForkedSave:
    def test_the_file_holds_the_table_as_at_the_fork_and_clients_run_meanwhile(
        self, store, clock, path, gate
    ):
        fill(store, 500)
        lock = RWLock()
        snapshots = Snapshots(path, store, lock)
        client = socket.socketpair()  # a client's connection, open across the fork
        saving = gevent.spawn(snapshots.save)
        wait_for(lambda: snapshots._child is not None)
        gate.reached()  # the child is writing, held at its first write
        turns = 0
        while turns < 100:  # this greenlet runs, and the lock is free, while the child writes
            assert lock.free
            turns += 1
            gevent.sleep(0)
        store.store(SET, b"after the fork", b"v")
        store.delete(b"key:7")
        # The child keeps none of the server's sockets, so closing one closes it.
        fds = f"/proc/{snapshots._child}/fd"
        assert not [n for n in os.listdir(fds) if os.readlink(f"{fds}/{n}").startswith("socket:")]
        for end in client:
            end.close()
        gate.open()
        written = saving.get(timeout=HANG_GUARD)
        assert written.count == 500
        keys = [key for key, _ in load_snapshot(path, clock()).pairs]
        assert b"key:7" in keys and b"after the fork" not in keys

    def test_a_save_that_cannot_fork_is_skipped(self, store, path, previous, monkeypatch, caplog):
        def no_fork():
            raise OSError(errno.ENOMEM, os.strerror(errno.ENOMEM))

        monkeypatch.setattr(os, "fork", no_fork)
        assert Snapshots(path, store, RWLock()).save() is None
        assert path.read_bytes() == previous
        assert any("cannot fork" in r.getMessage() for r in caplog.records)

    def test_stopping_abandons_a_periodic_save_for_the_final_one(
        self, store, path, previous, gate, caplog
    ):
        caplog.set_level(logging.INFO, logger="mbserver.snapshot")
        snapshots = Snapshots(path, store, RWLock())
        snapshots.start_periodic(0)
        wait_for(lambda: snapshots._child is not None)
        snapshots.stop_periodic()  # kills the child at the gate
        assert path.read_bytes() == previous
        assert any("abandoned" in r.getMessage() for r in caplog.records)
        assert snapshots.save(final=True).count == 5000
        assert temp_files(path) == []  # the killed child's temporary file went too

    def test_a_periodic_save_is_skipped_while_loading(self, store, clock, path, caplog):
        caplog.set_level(logging.INFO, logger="mbserver.snapshot")
        fill(store, 10)
        save(store, path)
        before = path.read_bytes()
        fresh = Store(clock=clock)
        snapshots = Snapshots(path, fresh, RWLock())
        assert snapshots.open()
        assert snapshots.save() is None
        assert path.read_bytes() == before
        assert any("still loading" in r.getMessage() for r in caplog.records)
        assert snapshots.load() == 10

    def test_the_final_save_waits_for_the_load(self, store, clock, path, blocks_of_100):
        fill(store, 2000)
        save(store, path)
        fresh = Store(clock=clock)
        snapshots = Snapshots(path, fresh, RWLock())
        assert snapshots.open()
        snapshots.start_loading()
        fresh.store(SET, b"during", b"the load")
        assert snapshots.save(final=True).count == 2001
        assert load_snapshot(path, clock()).count == 2001
