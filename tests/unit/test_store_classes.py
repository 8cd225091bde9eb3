"""Unit tests for the store's per-size-class accounting (what `stats items` and `stats slabs` show).

memcached's size classes (record.SizeClasses), the store's per-class item
counts, memory and ages (checked against a recount over the items after
random operations), and the per-class event counters, which must add up to
the global ones memcached derives from them. The clock is a FakeClock.
"""

from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import given, settings, strategies as st

from mbserver.record import SizeClasses, flags_of, memcached_size, value_length
from mbserver.storage import KEY_BINARY
from mbserver.store import LRU_BUMP_INTERVAL, OK, Mode, Store

from .conftest import FakeClock
from .textclient import Client

SET, ADD, REPLACE, APPEND, PREPEND = Mode.SET, Mode.ADD, Mode.REPLACE, Mode.APPEND, Mode.PREPEND

# `memcached -vv` 1.6.18 with its defaults (-n 48 -f 1.25 -I 1m): its 39 classes.
MEMCACHED_CLASSES = [
    96, 120, 152, 192, 240, 304, 384, 480, 600, 752, 944, 1184, 1480, 1856, 2320,
    2904, 3632, 4544, 5680, 7104, 8880, 11104, 13880, 17352, 21696, 27120, 33904,
    42384, 52984, 66232, 82792, 103496, 129376, 161720, 202152, 252696, 315872,
    394840, 524288,
]  # fmt: skip


def recount(store: Store) -> dict[int, tuple[int, int, int]]:
    """class_usage worked out the slow way, from every live record."""
    usage: dict[int, list[int]] = defaultdict(lambda: [0, 0, 1 << 62])
    for key, rec in zip(*store.records()):
        size = memcached_size(len(key), value_length(rec), flags_of(rec))
        entry = usage[store.classes.of(size)]
        entry[0] += 1
        entry[1] += size
        entry[2] = min(entry[2], int.from_bytes(rec[4:8], "big"))
    return {cls: tuple(entry) for cls, entry in sorted(usage.items())}


def class_of(store: Store, key: bytes) -> int:
    rec = store.lookup(key)
    return store.classes.of(memcached_size(len(key), value_length(rec), flags_of(rec)))


# -- memcached's size classes -------------------------------------------------


def test_the_default_classes_are_memcacheds():
    classes = SizeClasses()
    assert classes.sizes == MEMCACHED_CLASSES
    assert (classes.largest, classes.chunk_max) == (39, 524288)
    assert classes.chunks_per_page(1) == 10922
    assert classes.chunks_per_page(39) == 2


@pytest.mark.parametrize("max_item_size", [1024, 64 << 10, 1 << 20, 64 << 20])
def test_the_lookup_table_agrees_with_the_search(max_item_size):
    classes = SizeClasses(max_item_size)
    for size in range(1, classes.chunk_max + 2000, 3):
        expected = min(
            [i + 1 for i, chunk in enumerate(classes.sizes) if chunk >= size],
            default=classes.largest,
        )
        assert classes.of(size) == expected, size


def test_below_512k_the_item_limit_is_the_largest_chunk():
    # memcached refuses a slab_chunk_max above -I: started with -o
    # slab_chunk_max equal to -I, it lays out these classes.
    assert SizeClasses(1024).sizes == [96, 120, 152, 192, 240, 304, 384, 480, 600, 752, 1024]
    assert SizeClasses(1 << 30).sizes == MEMCACHED_CLASSES


# -- items, memory and ages per class ------------------------------------------


def test_items_land_in_memcacheds_classes(clock):
    store = Store(clock=clock)
    store.store(SET, b"a:1", b"x")  # 59 + 3 + 1 = 63: class 1
    store.store(SET, b"b", b"0123456789", flags=5)  # 59 + 1 + 10 + 4 = 74: class 1
    store.store(SET, b"big", b"x" * 2000)  # 2062: class 15 (2320)
    store.store(SET, b"huge", b"x" * 600000)  # past slab_chunk_max: the top class
    assert store.class_usage() == {
        1: (2, 63 + 74, int(clock())),
        15: (1, 2062, int(clock())),
        39: (1, 600063, int(clock())),
    }


def test_age_is_the_oldest_items_last_access(clock):
    store = Store(clock=clock)
    t0 = int(clock())
    store.store(SET, b"a", b"1")
    clock.advance(42)
    store.store(SET, b"b", b"1")
    assert store.class_usage()[1][2] == t0
    store.delete(b"a")
    assert store.class_usage()[1][2] == t0 + 42
    clock.advance(LRU_BUMP_INTERVAL)
    store.get_record(b"b")  # a hit a minute later moves b to the young end
    assert store.class_usage()[1][2] == int(clock())
    clock.advance(5)
    store.touch(b"b", 100)  # a touch is an access
    assert store.class_usage() == recount(store)


def test_replacing_moves_an_item_between_classes(clock):
    store = Store(clock=clock)
    store.store(SET, b"k", b"x")
    store.store(SET, b"k", b"x" * 3000)
    assert store.class_usage() == {17: (1, 3060, int(clock()))}  # 2904 < 3060 <= 3632
    store.store(APPEND, b"k", b"y" * 3000)
    assert list(store.class_usage()) == [20]  # 5680 < 6060 <= 7104
    assert store.class_usage() == recount(store)


def test_flush_and_a_load_keep_the_accounting(clock):
    store = Store(clock=clock)
    for i in range(10):
        store.store(SET, b"k%d" % i, b"v" * i * 100, flags=i % 2)
    keys, recs = store.records()
    store.flush()
    assert store.class_usage() == {}
    other = Store(clock=clock)
    other.begin_load(0)
    other.load([x for pair in zip(keys, recs) for x in pair])
    other.end_load()
    assert other.class_usage() == {}  # counted after the load, a slice at a time
    while other.account_loaded():
        pass
    assert other.class_usage() == recount(other) != {}


OPERATIONS = st.lists(
    st.tuples(
        st.sampled_from(
            ["set", "add", "replace", "append", "prepend", "cas", "delete", "incr",
             "decr", "get", "touch", "advance", "flush", "mg_fetch", "load", "account"]
        ),
        st.integers(0, 7),  # key
        st.integers(0, 3000),  # value length / delta / seconds
        st.integers(0, 1),  # flags
    ),
    max_size=60,
)  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(OPERATIONS)
def test_class_usage_always_matches_a_recount(operations):
    """Also while a snapshot loads, once what it loaded has been counted."""
    clock = FakeClock()
    store = Store(limit_bytes=40_000, clock=clock)  # small: evictions happen
    # The snapshot: each key at most once, as a writer writes it.
    source = Store(clock=clock)
    for k in range(8):
        source.store(SET, b"key-%d" % k, b"s" * (k * 400), flags=k % 2)
    snapshot = dict(zip(*source.records()))
    store.begin_load(0)
    for op, k, n, flags in operations:
        key = b"key-%d" % k
        if op == "load":
            keys = [key for key in (key, b"key-%d" % ((k + 1) % 8)) if snapshot.pop(key, None)]
            source_items = dict(zip(*source.records()))
            store.load([x for key in keys for x in (key, source_items[key])])
        elif op == "account":
            store.account_loaded()
        elif op in ("set", "add", "replace", "append", "prepend"):
            store.store(Mode(op), key, b"7" * n, flags, ttl=n % 3)
        elif op == "cas":
            rec = store.lookup(key)
            cas = int.from_bytes(rec[8:16], "big") if rec is not None and n % 2 else 12345
            store.store(SET, key, b"v" * n, flags, cas=cas)
        elif op == "delete":
            store.delete(key)
        elif op in ("incr", "decr"):
            store.arith(key, op == "incr", n * 10**15, initial=n if flags else None)
        elif op == "get":
            store.get_many([key, b"key-%d" % ((k + 1) % 8)])
        elif op == "touch":
            store.touch(key, n % 4)
        elif op == "advance":
            clock.advance(n % 90)
        elif op == "flush":
            store.flush(n % 3)
        else:
            store.fetch(key)
        if not store._unaccounted:
            assert store.class_usage() == recount(store)
    store.end_load()
    while store.account_loaded():
        pass
    assert store.class_usage() == recount(store)


# -- events per class -----------------------------------------------------------


def test_hits_sets_and_deletes_are_counted_in_the_items_class(clock):
    store = Store(clock=clock)
    counters = store.counters
    store.store(SET, b"small", b"x")
    store.store(SET, b"large", b"x" * 3000)
    store.get_record(b"small")
    store.get_many([b"large", b"small", b"missing"])
    assert (counters.get_hits[1], counters.get_hits[17]) == (2, 1)
    store.store(ADD, b"small", b"y" * 3000)  # not stored, but a set of a class 17 item
    assert (counters.cmd_set[1], counters.cmd_set[17]) == (1, 2)
    store.touch(b"large", 10)
    store.delete(b"small")
    assert (counters.touch_hits[17], counters.delete_hits[1]) == (1, 1)


def test_arithmetic_and_cas_count_in_the_old_items_class(clock):
    store = Store(clock=clock)
    counters = store.counters
    store.store(SET, b"n", b"99")
    store.arith(b"n", True, 1)  # 99 -> 100: a new, longer item, counted for the old
    store.arith(b"n", False, 1)
    store.arith(b"missing", True, 1)
    assert (counters.incr_hits[1], counters.decr_hits[1]) == (1, 1)
    cas = int.from_bytes(store.lookup(b"n")[8:16], "big")
    store.store(SET, b"n", b"x" * 3000, cas=cas + 1)
    store.store(SET, b"n", b"x" * 3000, cas=cas)
    assert (counters.cas_badval[1], counters.cas_hits[1]) == (1, 1)
    assert counters.cmd_set[17] == 2  # both sets, in the new value's class


def test_evictions_are_counted_per_class_with_their_details(clock):
    store = Store(limit_bytes=20_000, clock=clock)
    store.track_fetches()
    store.store(SET, b"old-with-ttl", b"x" * 3000, ttl=1000)
    store.store(SET, b"old-read", b"x" * 10)
    store.get_record(b"old-read")
    clock.advance(30)
    for i in range(20):
        store.store(SET, b"new-%d" % i, b"x" * 1000)
    counters = store.counters
    assert counters.evicted[17] >= 1 and counters.evicted_nonzero[17] == 1
    assert counters.evicted_unfetched[17] == 1  # stored and never read
    assert counters.evicted[1] == 1 and counters.evicted_unfetched[1] == 0
    assert counters.evicted_time[1] == 30  # seconds since its last access
    assert sum(counters.evicted) == store.evictions
    assert sum(counters.direct_reclaims) == store.evictions + store.reclaimed


def test_expired_items_count_as_reclaimed_in_their_class(clock):
    store = Store(clock=clock)
    store.track_fetches()
    store.store(SET, b"a", b"x", ttl=10)
    store.store(SET, b"b", b"x" * 3000, ttl=10)
    clock.advance(11)
    assert store.get_record(b"a") is None
    assert store.delete(b"b") is not OK
    assert (store.counters.reclaimed[1], store.counters.reclaimed[17]) == (1, 1)
    assert (store.reclaimed, store.get_expired) == (2, 2)
    assert store.class_usage() == {}


def test_reset_zeroes_the_counters_not_the_items(clock):
    store = Store(clock=clock)
    store.store(SET, b"a", b"x")
    store.get_record(b"a")
    store.reset_counters()
    assert store.counters.get_hits[1] == 0 and store.counters.cmd_set[1] == 0
    assert store.class_usage()[1][0] == 1


# -- walking the table ------------------------------------------------------------


def test_entries_filters_by_class_liveness_and_binary_keys(clock):
    store = Store(clock=clock)
    store.track_fetches()
    store.store(SET, b"a", b"x")
    store.store(SET, b"b", b"x" * 3000)
    store.store(SET, b"gone", b"x", ttl=5)
    store.store(SET, b"bin", b"x")
    store.set_marks(b"bin", KEY_BINARY)
    store.get_record(b"a")
    clock.advance(6)
    keys = store.keys()
    assert keys == [b"a", b"b", b"gone", b"bin"]
    found = {key: (cls, fetched) for key, _, cls, fetched in store.entries(keys + [b"nope"])}
    assert found == {b"a": (1, True), b"b": (17, False), b"bin": (1, False)}
    assert [e[0] for e in store.entries(keys, frozenset({17}))] == [b"b"]
    assert [e[0] for e in store.entries(keys, binary_keys=False)] == [b"a", b"b"]


def test_crawl_reclaims_expired_items_of_the_named_classes(clock):
    store = Store(clock=clock)
    store.track_fetches()
    for i in range(5):
        store.store(SET, b"s%d" % i, b"x", ttl=5)
        store.store(SET, b"l%d" % i, b"x" * 3000, ttl=5)
    store.store(SET, b"keep", b"x")
    clock.advance(6)
    store.crawl(store.keys(), frozenset({1}), None)
    counters = store.counters
    assert counters.crawler_reclaimed[1] == 5 and counters.crawler_items_checked[1] == 6
    assert counters.expired_unfetched[1] == 5
    assert len(store) == 6  # the class 17 items wait for their own crawl
    remaining = [2] * 64
    store.crawl(store.keys(), None, remaining)
    assert counters.crawler_items_checked[17] == 2 and remaining[17] == 0
    assert len(store) == 4


def test_me_reports_the_class_for_the_item_limit(clock):
    client = Client(clock, memory_limit=1 << 20, max_item_size=1024)
    client.send(b"set k 0 0 900\r\n" + b"x" * 900 + b"\r\n")
    # 59 + 1 + 900 = 960: past 752, the largest class below -I 1k is 1024, class 11.
    assert client.send(b"me k\r\n").endswith(b" cls=11 size=960\r\n")
