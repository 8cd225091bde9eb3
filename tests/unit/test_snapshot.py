"""Unit tests for mbserver.snapshot and the store's side of it (records, restore).

The clock is a ``FakeClock``: "the server was down for an hour" is a clock
advance. Files go to pytest's tmp_path. Crashes are simulated by making a
step of the write raise; a real SIGKILL mid-write is in
tests/integration/test_snapshot.py. Nothing here sleeps or opens a socket.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
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
    return write_snapshot(path, zip(keys, records), store.clock(), **kwargs)


def load_into(path, clock, **store_kwargs) -> Store:
    store = Store(clock=clock, **store_kwargs)
    store.restore(load_snapshot(path, clock()).pairs)
    return store


def everything(store: Store) -> list:
    """Each live item's key and every field, least recently used first."""
    return [(key, tuple(item)) for key, item in store.items()]


def temp_files(path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name != path.name)


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

    def test_restore_drops_records_already_expired(self, store, clock):
        rec = record(b"v", 0, int(clock()), 5, int(clock()))
        assert store.restore([(b"k", rec)]) == 0
        assert len(store) == 0

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


class TestStoreRestore:
    def test_lru_order_is_preserved(self, store, clock, path):
        for key in (b"a", b"b", b"c", b"d"):
            store.store(SET, key, b"v")
        clock.advance(120)
        get_item(store, b"b")  # bumped to the young end
        store.touch(b"a", 0)
        save(store, path)
        restored = load_into(path, clock)
        assert [key for key, _ in restored.items()] == [b"c", b"d", b"b", b"a"]

    def test_eviction_after_a_restore_takes_the_least_recently_used(self, store, clock, path):
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
        fresh = Store(clock=clock)
        fresh.restore(load_snapshot(path, clock()).pairs)
        assert fresh.store(SET, b"new", b"v")[1] == top + 1
        # A client holding a pre-restart CAS cannot overwrite a newer item.
        old_cas = get_item(fresh, b"key:5").cas
        fresh.store(SET, b"key:5", b"newer")
        assert fresh.store(SET, b"key:5", b"stale write", cas=old_cas)[0] is EXISTS

    def test_restore_accounts_bytes_and_evicts_past_the_limit(self, store, clock, path):
        for i in range(100):
            store.store(SET, b"k%03d" % i, b"x" * 1000)
        save(store, path)
        one = item_size(b"k000", b"x" * 1000)
        restored = load_into(path, clock, limit_bytes=30 * one)
        assert restored.bytes <= 30 * one
        assert restored.bytes == sum(item_size(k, i.value) for k, i in restored.items())
        keys = [key for key, _ in restored.items()]
        assert keys[-1] == b"k099" and len(keys) >= 29  # the youngest are kept

    def test_restore_skips_items_over_the_item_size_limit(self, store, clock, path):
        store.store(SET, b"big", b"x" * 5000)
        store.store(SET, b"small", b"x" * 10)
        save(store, path)
        restored = load_into(path, clock, max_item_size=2000)
        assert [key for key, _ in restored.items()] == [b"small"]

    def test_restore_replaces_a_key_already_present(self, store, clock):
        store.store(SET, b"k", b"old" * 100)
        rec = record(b"new", 1, 0, 77, int(clock()))
        store.restore([(b"k", rec)])
        assert get_item(store, b"k").value == b"new"
        assert store.bytes == item_size(b"k", b"new")

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
        with open(path, "wb") as f:
            f.write(b"SQLite format 3\x00")
            f.truncate(10 << 30)  # sparse: 10 GiB that are never read
        tracemalloc.start()
        try:
            with pytest.raises(SnapshotError, match="not an mbserver snapshot"):
                load_snapshot(path, clock())
            assert tracemalloc.get_traced_memory()[1] < 1 << 20
        finally:
            tracemalloc.stop()

    def test_a_record_length_past_the_end_allocates_nothing(self, path, clock):
        # A valid header, then a record claiming 4 GiB, in a file of 10 GiB
        # of holes: refused without reading or allocating the claim.
        header = struct.pack(">8sII", MAGIC, VERSION, int(clock()))
        with open(path, "wb") as f:
            f.write(header + struct.pack(">HI", 3, 0xFFFFFFFF) + b"key")
            f.truncate(1 << 30)
        tracemalloc.start()
        try:
            with pytest.raises(SnapshotError):
                load_snapshot(path, clock())
            assert tracemalloc.get_traced_memory()[1] < 4 << 20
        finally:
            tracemalloc.stop()

    def test_a_key_longer_than_memcached_allows_is_corrupt(self, path, clock):
        body = struct.pack(">8sII", MAGIC, VERSION, 0) + struct.pack(">HI", 251, 20)
        body += b"k" * 251 + bytes(20)
        body += struct.pack(">HQ", 0xFFFF, 1)
        path.write_bytes(body + zlib.crc32(body).to_bytes(4, "big"))
        with pytest.raises(SnapshotError, match="bad record lengths"):
            load_snapshot(path, clock())

    def test_a_wrong_count_with_a_valid_checksum_is_refused(self, small_snapshot, path, clock):
        body = small_snapshot[:-12] + struct.pack(">Q", 4)
        path.write_bytes(body + zlib.crc32(body).to_bytes(4, "big"))
        with pytest.raises(SnapshotError, match="3 records, trailer says 4"):
            load_snapshot(path, clock())

    def test_another_version_is_refused_by_name(self, small_snapshot, path, clock):
        path.write_bytes(MAGIC + struct.pack(">I", VERSION + 1) + small_snapshot[12:])
        with pytest.raises(SnapshotError, match=f"version {VERSION + 1} snapshot"):
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
            lambda fd, data, crc: chunks.append(len(data)) or real(fd, data, crc),
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

    def test_a_corrupt_snapshot_is_logged_and_the_store_starts_empty(
        self, store, path, caplog, small_snapshot
    ):
        path.write_bytes(small_snapshot[:-1])
        fresh = Store(clock=store.clock)
        assert Snapshots(path, fresh, RWLock()).load() == 0
        assert len(fresh) == 0
        errors = [r for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and "snapshot refused" in errors[0].getMessage()
        assert str(path) in errors[0].getMessage()

    def test_a_missing_snapshot_starts_empty(self, store, path):
        assert Snapshots(path, store, RWLock()).load() == 0

    def test_an_unwritable_snapshot_is_logged_not_raised(self, store, tmp_path, caplog):
        fill(store, 10)
        result = Snapshots(tmp_path / "no such dir" / "snap", store, RWLock()).save()
        assert result is None
        assert any("cannot write snapshot" in r.getMessage() for r in caplog.records)

    def test_save_takes_the_read_lock_only_to_copy_the_table(self, store, path, monkeypatch):
        lock = RWLock()
        held = []
        monkeypatch.setattr(
            snapshot, "_write_chunk",
            lambda fd, data, crc, real=snapshot._write_chunk: held.append(lock.locked)
            or real(fd, data, crc),
        )
        fill(store, 10)
        Snapshots(path, store, lock).save()
        assert held and not any(held)

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


def test_item_size_limit_matches_the_store(store):
    # restore() uses the store's own size rule: one byte over -I is refused.
    limit = 1024
    small = Store(max_item_size=limit, clock=store.clock)
    fits = limit - MEMCACHED_ITEM_HEADER - 1
    rec = record(b"x" * fits, 0, 0, 1, 0)
    assert small.restore([(b"k", rec)]) == 1
    rec = record(b"x" * (fits + 1), 0, 0, 2, 0)
    assert small.restore([(b"j", rec)]) == 0
