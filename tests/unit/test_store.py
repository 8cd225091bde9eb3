"""Unit tests for mbserver.store: modes, CAS, expiry, arithmetic, flush, LRU, memory.

The clock is a ``FakeClock`` (conftest): time moves only when a test says so,
so nothing here sleeps. Where memcached 1.6.18 is the reference for a rule,
the test says which behaviour of memcached it pins down.
"""

from __future__ import annotations

import gc
import tracemalloc

import pytest

from mbserver.record import MEMCACHED_ITEM_HEADER, pack
from mbserver.store import (
    EXISTS,
    LRU_BUMP_INTERVAL,
    NO_MEMORY,
    NON_NUMERIC,
    NOT_FOUND,
    NOT_STORED,
    OK,
    RELATIVE_EXPIRY_LIMIT,
    TOO_LARGE,
    Mode,
    Store,
    parse_counter,
)
from ..items import get_item, item_size

SET, ADD, REPLACE, APPEND, PREPEND = Mode.SET, Mode.ADD, Mode.REPLACE, Mode.APPEND, Mode.PREPEND
WHOLE_VALUE_MODES = (SET, ADD, REPLACE)
UINT64_MAX = (1 << 64) - 1


@pytest.fixture
def store(clock):
    return Store(clock=clock)


@pytest.fixture
def t0(clock) -> float:
    """The fake clock's starting time, a Unix time in 2023."""
    return clock()


def value_of(store: Store, key: bytes) -> bytes | None:
    item = get_item(store, key)
    return None if item is None else item.value


def lru_keys(store: Store) -> list[bytes]:
    """Live keys, least recently used first."""
    return [key for key, _ in store.items()]


# -- storage modes ----------------------------------------------------------


class TestModes:
    def test_set_creates_and_overwrites(self, store):
        status, cas1 = store.store(SET, b"k", b"one", flags=3)
        assert status is OK and cas1 > 0
        status, cas2 = store.store(SET, b"k", b"two", flags=4)
        assert status is OK and cas2 > cas1
        item = get_item(store, b"k")
        assert (item.value, item.flags, item.cas) == (b"two", 4, cas2)
        assert len(store) == 1

    def test_add_stores_only_a_missing_key(self, store):
        assert store.store(ADD, b"k", b"first")[0] is OK
        assert store.store(ADD, b"k", b"second") == (NOT_STORED, 0)
        assert value_of(store, b"k") == b"first"

    def test_add_succeeds_over_an_expired_item(self, store, clock):
        store.store(SET, b"k", b"old", ttl=10)
        clock.advance(10)
        assert store.store(ADD, b"k", b"new")[0] is OK
        assert value_of(store, b"k") == b"new"

    def test_replace_stores_only_an_existing_key(self, store):
        assert store.store(REPLACE, b"k", b"v") == (NOT_STORED, 0)
        assert b"k" not in store
        store.store(SET, b"k", b"old", flags=1)
        status, cas = store.store(REPLACE, b"k", b"new", flags=2)
        assert status is OK and cas
        item = get_item(store, b"k")
        assert (item.value, item.flags) == (b"new", 2)

    def test_replace_treats_an_expired_item_as_missing(self, store, clock):
        store.store(SET, b"k", b"old", ttl=5)
        clock.advance(5)
        assert store.store(REPLACE, b"k", b"new") == (NOT_STORED, 0)

    @pytest.mark.parametrize("mode, expected", [(APPEND, b"headtail"), (PREPEND, b"tailhead")])
    def test_append_and_prepend_join_values(self, store, mode, expected):
        store.store(SET, b"k", b"head")
        status, cas = store.store(mode, b"k", b"tail")
        assert status is OK and cas
        assert value_of(store, b"k") == expected

    @pytest.mark.parametrize("mode", [APPEND, PREPEND])
    def test_append_and_prepend_keep_flags_and_expiry(self, store, clock, mode, t0):
        store.store(SET, b"k", b"v", flags=0xDEAD, ttl=100)
        clock.advance(10)
        # The flags and ttl a client sends with append/prepend are ignored.
        assert store.store(mode, b"k", b"w", flags=7, ttl=0)[0] is OK
        item = get_item(store, b"k")
        assert item.flags == 0xDEAD
        assert item.exptime == t0 + 100
        clock.advance(89.9)
        assert b"k" in store
        clock.advance(0.1)
        assert b"k" not in store

    @pytest.mark.parametrize("mode", [APPEND, PREPEND])
    def test_append_and_prepend_on_a_missing_key_are_not_stored(self, store, mode):
        assert store.store(mode, b"k", b"v") == (NOT_STORED, 0)
        assert b"k" not in store

    @pytest.mark.parametrize("mode", [APPEND, PREPEND])
    def test_append_and_prepend_on_an_expired_key_are_not_stored(self, store, clock, mode):
        store.store(SET, b"k", b"v", ttl=1)
        clock.advance(1)
        assert store.store(mode, b"k", b"w") == (NOT_STORED, 0)


class TestCompareAndSwap:
    @pytest.mark.parametrize("mode", WHOLE_VALUE_MODES)
    def test_cas_on_a_missing_key_is_not_found(self, store, mode):
        # memcached turns set/add/replace with a CAS into NREAD_CAS.
        assert store.store(mode, b"k", b"v", cas=12345) == (NOT_FOUND, 0)
        assert b"k" not in store

    @pytest.mark.parametrize("mode", WHOLE_VALUE_MODES)
    def test_cas_on_an_expired_key_is_not_found(self, store, clock, mode):
        _, cas = store.store(SET, b"k", b"v", ttl=1)
        clock.advance(1)
        assert store.store(mode, b"k", b"w", cas=cas) == (NOT_FOUND, 0)

    @pytest.mark.parametrize("mode", WHOLE_VALUE_MODES)
    def test_cas_mismatch_is_exists_and_keeps_the_item(self, store, mode):
        _, cas = store.store(SET, b"k", b"v", flags=1)
        assert store.store(mode, b"k", b"w", flags=2, cas=cas + 1) == (EXISTS, 0)
        item = get_item(store, b"k")
        assert (item.value, item.flags, item.cas) == (b"v", 1, cas)

    @pytest.mark.parametrize("mode", WHOLE_VALUE_MODES)
    def test_cas_match_swaps_whatever_the_mode(self, store, clock, mode, t0):
        # Even ADD on a live key succeeds when it carries the right CAS.
        _, cas = store.store(SET, b"k", b"v", flags=1)
        status, new_cas = store.store(mode, b"k", b"w", flags=2, ttl=50, cas=cas)
        assert status is OK and new_cas > cas
        item = get_item(store, b"k")
        assert (item.value, item.flags, item.cas, item.exptime) == (b"w", 2, new_cas, t0 + 50)

    def test_a_swapped_cas_is_stale(self, store):
        _, cas = store.store(SET, b"k", b"v")
        assert store.store(SET, b"k", b"w", cas=cas)[0] is OK
        assert store.store(SET, b"k", b"x", cas=cas) == (EXISTS, 0)
        assert value_of(store, b"k") == b"w"

    @pytest.mark.parametrize("mode, joined", [(APPEND, b"vx"), (PREPEND, b"xv")])
    def test_append_and_prepend_with_cas(self, store, mode, joined):
        _, cas = store.store(SET, b"k", b"v")
        assert store.store(mode, b"k", b"x", cas=cas + 1) == (EXISTS, 0)
        assert value_of(store, b"k") == b"v"
        status, new_cas = store.store(mode, b"k", b"x", cas=cas)
        assert status is OK and new_cas > cas
        assert value_of(store, b"k") == joined

    @pytest.mark.parametrize("mode", [APPEND, PREPEND])
    def test_append_and_prepend_with_cas_on_a_missing_key_are_not_stored(self, store, mode):
        # memcached 1.6.18 answers 0x05 Not stored here, not 0x01.
        assert store.store(mode, b"k", b"x", cas=99) == (NOT_STORED, 0)


class TestCasUniqueness:
    def test_every_mutation_gets_a_new_increasing_cas(self, store):
        seen = []
        seen.append(store.store(SET, b"a", b"1")[1])
        seen.append(store.store(ADD, b"b", b"2")[1])
        seen.append(store.store(REPLACE, b"a", b"3")[1])
        seen.append(store.store(APPEND, b"a", b"4")[1])
        seen.append(store.store(PREPEND, b"b", b"5")[1])
        seen.append(store.arith(b"a", True, 1)[2])
        seen.append(store.arith(b"a", False, 1)[2])
        seen.append(store.arith(b"c", True, 1, initial=0)[2])
        seen.append(store.store(SET, b"a", b"6", cas=seen[-2])[1])
        assert all(seen), seen
        assert seen == sorted(seen) and len(set(seen)) == len(seen)

    def test_the_returned_cas_is_the_item_cas(self, store):
        _, cas = store.store(SET, b"k", b"v")
        assert get_item(store, b"k").cas == cas
        _, _, cas = store.arith(b"n", True, 1, initial=5)
        assert get_item(store, b"n").cas == cas

    def test_failed_mutations_return_zero_and_keep_the_cas(self, store):
        _, cas = store.store(SET, b"k", b"abc")
        assert store.store(ADD, b"k", b"x")[1] == 0
        assert store.store(SET, b"k", b"x", cas=cas + 5)[1] == 0
        assert store.arith(b"k", True, 1) == (NON_NUMERIC, 0, 0)
        assert get_item(store, b"k").cas == cas

    def test_touch_keeps_the_cas(self, store):
        # memcached's touch reply carries the item's unchanged CAS.
        _, cas = store.store(SET, b"k", b"v")
        assert store.touch(b"k", 100).cas == cas
        assert get_item(store, b"k").cas == cas

    def test_cas_is_unique_across_keys(self, store):
        cases = {store.store(SET, b"k%d" % i, b"v")[1] for i in range(100)}
        assert len(cases) == 100
        assert {item.cas for _, item in store.items()} == cases


# -- expiry -----------------------------------------------------------------


class TestExpiry:
    def test_zero_never_expires(self, store, clock):
        store.store(SET, b"k", b"v", ttl=0)
        clock.advance(10 * 365 * 86400)
        assert value_of(store, b"k") == b"v"

    def test_relative_seconds(self, store, clock):
        store.store(SET, b"k", b"v", ttl=100)
        clock.advance(99.999)
        assert b"k" in store
        clock.advance(0.001)
        assert b"k" not in store

    def test_thirty_days_is_still_relative(self, store, clock, t0):
        store.store(SET, b"k", b"v", ttl=RELATIVE_EXPIRY_LIMIT)
        assert get_item(store, b"k").exptime == t0 + RELATIVE_EXPIRY_LIMIT
        clock.advance(RELATIVE_EXPIRY_LIMIT - 1)
        assert b"k" in store
        clock.advance(1)
        assert b"k" not in store

    def test_over_thirty_days_is_an_absolute_time(self, store, clock, t0):
        # 30 days + 1 second is a Unix time in January 1970: long past.
        store.store(SET, b"past", b"v", ttl=RELATIVE_EXPIRY_LIMIT + 1)
        assert b"past" not in store
        store.store(SET, b"future", b"v", ttl=int(t0) + 500)
        assert get_item(store, b"future").exptime == t0 + 500
        clock.advance(499)
        assert b"future" in store
        clock.advance(1)
        assert b"future" not in store

    def test_absolute_time_in_the_past_is_expired_at_once(self, store, t0):
        store.store(SET, b"k", b"v", ttl=int(t0) - 1)
        assert get_item(store, b"k") is None

    def test_absolute_time_equal_to_now_is_expired(self, store, t0):
        store.store(SET, b"k", b"v", ttl=int(t0))
        assert get_item(store, b"k") is None

    @pytest.mark.parametrize("ttl", [-1, -1000, -(2**31)])
    def test_negative_is_expired_at_once(self, store, ttl):
        status, _ = store.store(SET, b"k", b"v", ttl=ttl)
        assert status is OK
        assert get_item(store, b"k") is None

    def test_expired_items_are_reclaimed_lazily(self, store, clock):
        for key in (b"a", b"b", b"c"):
            store.store(SET, key, b"v", ttl=10)
        store.store(SET, b"d", b"v")
        full = store.bytes
        clock.advance(10)
        # Nothing has looked at them yet: still linked and accounted.
        assert len(store) == 4 and store.bytes == full and store.reclaimed == 0
        assert lru_keys(store) == [b"d"]  # the snapshot skips the dead
        assert get_item(store, b"a") is None
        assert (len(store), store.reclaimed) == (3, 1)
        assert b"b" not in store
        assert (len(store), store.reclaimed) == (2, 2)
        assert store.delete(b"c") is NOT_FOUND
        assert (len(store), store.reclaimed) == (1, 3)
        assert store.bytes == item_size(b"d", b"v")

    def test_expired_items_are_missing_for_every_command(self, store, clock):
        for key in (b"get", b"touch", b"del", b"incr", b"decr", b"set"):
            store.store(SET, key, b"5", ttl=1)
        clock.advance(1)
        assert get_item(store, b"get") is None
        assert store.touch(b"touch", 100) is None
        assert store.delete(b"del") is NOT_FOUND
        assert store.arith(b"incr", True, 1)[0] is NOT_FOUND
        assert store.arith(b"decr", False, 1, initial=42)[:2] == (OK, 42)
        assert store.store(SET, b"set", b"new")[0] is OK
        assert value_of(store, b"set") == b"new"


class TestTouch:
    def test_touch_sets_a_new_expiry(self, store, clock, t0):
        store.store(SET, b"k", b"v", flags=9, ttl=10)
        clock.advance(5)
        item = store.touch(b"k", 100)
        assert (item.value, item.flags, item.exptime) == (b"v", 9, t0 + 105)
        clock.advance(99)
        assert b"k" in store
        clock.advance(1)
        assert b"k" not in store

    def test_touch_zero_makes_an_item_permanent(self, store, clock):
        store.store(SET, b"k", b"v", ttl=10)
        store.touch(b"k", 0)
        clock.advance(10**6)
        assert b"k" in store

    def test_touch_in_the_past_expires(self, store):
        store.store(SET, b"k", b"v")
        assert store.touch(b"k", -1) is not None
        assert b"k" not in store

    def test_touch_miss(self, store):
        assert store.touch(b"nope", 10) is None
        assert len(store) == 0


class TestDelete:
    def test_delete(self, store):
        store.store(SET, b"k", b"v")
        assert store.delete(b"k") is OK
        assert b"k" not in store
        assert store.delete(b"k") is NOT_FOUND

    def test_delete_with_matching_cas(self, store):
        _, cas = store.store(SET, b"k", b"v")
        assert store.delete(b"k", cas=cas) is OK
        assert b"k" not in store

    def test_delete_with_wrong_cas_keeps_the_item(self, store):
        _, cas = store.store(SET, b"k", b"v")
        assert store.delete(b"k", cas=cas + 1) is EXISTS
        assert value_of(store, b"k") == b"v"

    def test_delete_with_cas_on_a_missing_key(self, store):
        assert store.delete(b"k", cas=1) is NOT_FOUND


# -- incr / decr ------------------------------------------------------------


class TestArith:
    @pytest.mark.parametrize("incr", [True, False])
    def test_a_missing_key_is_created_with_initial(self, store, clock, incr, t0):
        status, number, cas = store.arith(b"n", incr, 5, initial=10, ttl=100)
        # The initial value is stored as is: the delta is not applied.
        assert (status, number) == (OK, 10) and cas
        item = get_item(store, b"n")
        assert (item.value, item.flags, item.cas, item.exptime) == (b"10", 0, cas, t0 + 100)
        assert store.total_items == 1

    @pytest.mark.parametrize("incr", [True, False])
    def test_initial_none_means_do_not_create(self, store, incr):
        assert store.arith(b"n", incr, 5, initial=None) == (NOT_FOUND, 0, 0)
        assert b"n" not in store and store.bytes == 0

    def test_initial_may_be_the_largest_counter(self, store):
        assert store.arith(b"n", True, 1, initial=UINT64_MAX)[:2] == (OK, UINT64_MAX)
        assert store.arith(b"n", True, 1)[:2] == (OK, 0)

    def test_incr_and_decr(self, store):
        store.store(SET, b"n", b"10", flags=5)
        assert store.arith(b"n", True, 32)[:2] == (OK, 42)
        assert get_item(store, b"n").value == b"42"
        assert store.arith(b"n", False, 2)[:2] == (OK, 40)
        item = get_item(store, b"n")
        assert (item.value, item.flags) == (b"40", 5)

    def test_arith_keeps_the_expiry(self, store, clock):
        store.store(SET, b"n", b"1", ttl=100)
        store.arith(b"n", True, 1)
        clock.advance(100)
        assert b"n" not in store

    @pytest.mark.parametrize(
        "start, delta, expected",
        [
            (UINT64_MAX, 1, 0),
            (UINT64_MAX - 1, 5, 3),
            (1, UINT64_MAX, 0),
            (0, UINT64_MAX, UINT64_MAX),
        ],
    )
    def test_incr_wraps_at_2_to_the_64(self, store, start, delta, expected):
        store.store(SET, b"n", str(start).encode())
        assert store.arith(b"n", True, delta)[:2] == (OK, expected)
        assert parse_counter(get_item(store, b"n").value) == expected

    def test_wrapped_result_is_padded_to_the_old_length(self, store):
        store.store(SET, b"n", str(UINT64_MAX).encode())
        store.arith(b"n", True, 1)
        assert get_item(store, b"n").value == b"0" + b" " * 19

    @pytest.mark.parametrize("start, delta", [(5, 10), (5, 5), (0, 1), (7, UINT64_MAX)])
    def test_decr_stops_at_zero(self, store, start, delta):
        store.store(SET, b"n", str(start).encode())
        assert store.arith(b"n", False, delta)[:2] == (OK, 0)
        assert parse_counter(get_item(store, b"n").value) == 0

    def test_a_shorter_result_is_padded_with_spaces(self, store):
        # memcached rewrites the number in place: decr of "100" by 1 stores "99 ".
        store.store(SET, b"n", b"100")
        assert store.arith(b"n", False, 1)[:2] == (OK, 99)
        assert get_item(store, b"n").value == b"99 "
        assert store.arith(b"n", False, 90)[:2] == (OK, 9)
        assert get_item(store, b"n").value == b"9  "
        # ...and a padded value is still a number.
        assert store.arith(b"n", True, 991)[:2] == (OK, 1000)
        assert get_item(store, b"n").value == b"1000"

    def test_a_longer_result_grows_the_value_and_the_accounting(self, store):
        store.store(SET, b"n", b"99")
        before = store.bytes
        store.arith(b"n", True, 1)
        assert get_item(store, b"n").value == b"100"
        assert store.bytes == before + 1 == item_size(b"n", b"100")

    @pytest.mark.parametrize(
        "value",
        [
            b"",
            b" ",
            b"-5",
            b"-1",
            b"abc",
            b"5x",
            b"1.5",
            b"0x10",
            b"18446744073709551616",  # 2**64
            b"99999999999999999999999",
        ],
    )
    @pytest.mark.parametrize("incr", [True, False])
    def test_non_numeric_values(self, store, value, incr):
        _, cas = store.store(SET, b"n", value)
        assert store.arith(b"n", incr, 1) == (NON_NUMERIC, 0, 0)
        item = get_item(store, b"n")
        assert (item.value, item.cas) == (value, cas)

    @pytest.mark.parametrize(
        "value, padded",
        [
            (b"  7", b"8  "),
            (b"\t7\n", b"8  "),
            (b"7  ", b"8  "),
            (b"7\r\n", b"8  "),
            (b"+7", b"8 "),
            (b"0007", b"8   "),
            # strtoull stops at the space; memcached accepts what follows it.
            (b"7 x", b"8  "),
        ],
    )
    def test_white_space_is_accepted_as_strtoull_does(self, store, value, padded):
        store.store(SET, b"n", value)
        assert store.arith(b"n", True, 1)[:2] == (OK, 8)
        assert get_item(store, b"n").value == padded

    def test_the_largest_counter_is_numeric(self, store):
        store.store(SET, b"n", str(UINT64_MAX).encode())
        assert store.arith(b"n", False, 1)[:2] == (OK, UINT64_MAX - 1)

    def test_arith_with_cas(self, store):
        _, cas = store.store(SET, b"n", b"1")
        assert store.arith(b"n", True, 1, cas=cas + 1) == (EXISTS, 0, 0)
        assert get_item(store, b"n").value == b"1"
        status, number, new_cas = store.arith(b"n", True, 1, cas=cas)
        assert (status, number) == (OK, 2) and new_cas > cas

    def test_parse_counter(self):
        assert parse_counter(b"0") == 0
        assert parse_counter(b"18446744073709551615") == UINT64_MAX
        assert parse_counter(b"18446744073709551616") is None
        assert parse_counter(b"") is None
        assert parse_counter(b"12a") is None


# -- flush ------------------------------------------------------------------


class TestFlush:
    def test_flush_now(self, store):
        for i in range(10):
            store.store(SET, b"k%d" % i, b"v" * i)
        store.flush()
        assert len(store) == 0 and store.bytes == 0
        assert all(b"k%d" % i not in store for i in range(10))
        store.store(SET, b"after", b"v")
        assert b"after" in store

    @pytest.mark.parametrize("absolute", [False, True])
    def test_flush_with_a_delay(self, store, clock, absolute):
        delay = int(clock()) + 100 if absolute else 100
        store.store(SET, b"early", b"v")
        store.flush(delay)
        assert b"early" in store  # nothing happens before the deadline
        clock.advance(50)
        store.store(SET, b"before", b"v")  # stored before the deadline
        assert b"early" in store and b"before" in store
        clock.advance(50)  # the deadline
        assert b"early" not in store
        assert b"before" not in store
        clock.advance(1)
        store.store(SET, b"after", b"v")
        clock.advance(10**6)
        assert b"after" in store

    def test_a_delayed_flush_kills_items_refreshed_before_the_deadline(self, store, clock, t0):
        store.store(SET, b"k", b"v")
        store.flush(300)
        clock.advance(LRU_BUMP_INTERVAL)
        assert get_item(store, b"k") is not None  # bumped: last used at t0 + 60
        store.touch(b"k", 0)
        clock.advance(300 - LRU_BUMP_INTERVAL)
        assert get_item(store, b"k") is None

    def test_flush_at_an_absolute_time_in_the_past_is_immediate(self, store, t0):
        store.store(SET, b"k", b"v")
        store.flush(int(t0) - 10)
        assert len(store) == 0 and store.bytes == 0

    def test_an_immediate_flush_replaces_a_pending_one(self, store, clock):
        store.flush(100)
        store.flush(0)
        clock.advance(10)
        store.store(SET, b"k", b"v")
        clock.advance(1000)
        assert b"k" in store


# -- memory: limits, LRU, accounting ----------------------------------------

KEY_LEN = 4
VALUE_LEN = 100
ITEM = item_size(b"k000", b"v" * VALUE_LEN)


def key(i: int) -> bytes:
    return b"k%03d" % i


def fill(store: Store, count: int, start: int = 0) -> list[bytes]:
    keys = [key(i) for i in range(start, start + count)]
    for k in keys:
        assert store.store(SET, k, b"v" * VALUE_LEN)[0] is OK
    return keys


def assert_evicted_oldest_first(store: Store, order: list[bytes]) -> None:
    """The live keys are the most recent ones of order, in order; the rest were evicted."""
    alive = lru_keys(store)
    assert alive == order[len(order) - len(alive) :]
    assert store.evictions == len(order) - len(alive)
    assert store.bytes <= store.limit_bytes


class TestEviction:
    CAPACITY = 10

    @pytest.fixture
    def store(self, clock):
        return Store(limit_bytes=self.CAPACITY * ITEM, clock=clock)

    def test_fills_to_the_limit_without_evicting(self, store):
        fill(store, self.CAPACITY)
        assert len(store) == self.CAPACITY
        assert store.bytes == store.limit_bytes
        assert store.evictions == 0

    def test_evicts_least_recently_used_first(self, store):
        order = fill(store, self.CAPACITY)
        order += fill(store, 1, start=self.CAPACITY)
        assert key(0) not in store and key(self.CAPACITY) in store
        assert_evicted_oldest_first(store, order)
        order += fill(store, 5, start=self.CAPACITY + 1)
        assert_evicted_oldest_first(store, order)
        assert len(store) >= self.CAPACITY - 1

    def test_a_read_within_the_bump_interval_does_not_protect(self, store, clock):
        order = fill(store, self.CAPACITY)
        clock.advance(LRU_BUMP_INTERVAL - 1)
        assert get_item(store, key(0)) is not None
        order += fill(store, 1, start=self.CAPACITY)
        assert key(0) not in store
        assert_evicted_oldest_first(store, order)

    def test_a_read_after_the_bump_interval_protects(self, store, clock):
        order = fill(store, self.CAPACITY)
        clock.advance(LRU_BUMP_INTERVAL)
        assert get_item(store, key(0)) is not None
        order.append(order.pop(0))  # k000 is now the most recently used
        order += fill(store, 3, start=self.CAPACITY)
        assert key(0) in store and key(1) not in store
        assert_evicted_oldest_first(store, order)

    def test_touch_after_the_bump_interval_protects(self, store, clock):
        order = fill(store, self.CAPACITY)
        clock.advance(LRU_BUMP_INTERVAL)
        store.touch(key(0), 0)
        order.append(order.pop(0))
        order += fill(store, 3, start=self.CAPACITY)
        assert key(0) in store
        assert_evicted_oldest_first(store, order)

    def test_an_overwrite_is_most_recently_used(self, store):
        order = fill(store, self.CAPACITY)
        store.store(SET, key(0), b"w" * VALUE_LEN)
        order.append(order.pop(0))
        order += fill(store, 3, start=self.CAPACITY)
        assert key(0) in store and key(1) not in store
        assert_evicted_oldest_first(store, order)

    def test_expired_items_are_reclaimed_not_evicted(self, store, clock):
        store.store(SET, key(0), b"v" * VALUE_LEN, ttl=5)
        order = fill(store, self.CAPACITY - 1, start=1)
        clock.advance(5)
        order += fill(store, 1, start=self.CAPACITY)
        # The dead item went first and counts as reclaimed; only live items
        # the batch took with it (if any) count as evictions.
        assert store.reclaimed == 1
        assert len(store) == len(lru_keys(store))
        assert_evicted_oldest_first(store, order)

    def test_evictions_are_counted(self, store):
        fill(store, 100)
        assert store.evictions == 100 - len(store)
        assert store.total_items == 100


class TestShrink:
    """cache_memlimit: a new limit, evicted down to a slice at a time."""

    def test_evicts_oldest_first_down_to_the_new_limit(self, clock):
        store = Store(limit_bytes=100 * ITEM, clock=clock)
        order = fill(store, 100)
        assert store.shrink(30 * ITEM, 1000)
        assert store.limit_bytes == 30 * ITEM
        assert len(store) == 30
        assert_evicted_oldest_first(store, order)

    def test_at_most_a_slice_per_call(self, clock):
        store = Store(limit_bytes=100 * ITEM, clock=clock)
        order = fill(store, 100)
        calls = 0
        while not store.shrink(30 * ITEM, 25):
            calls += 1
            assert len(store) == 100 - 25 * calls
            # Meanwhile the store holds to what it has, not the new limit...
            assert store.limit_bytes == store.bytes
        assert calls == 2 and len(store) == 30
        assert store.limit_bytes == 30 * ITEM
        assert_evicted_oldest_first(store, order)

    def test_a_store_between_slices_evicts_only_room_for_itself(self, clock):
        store = Store(limit_bytes=1000 * ITEM, clock=clock)
        fill(store, 1000)
        assert not store.shrink(100 * ITEM, 10)
        evictions = store.evictions
        fill(store, 1, start=1000)
        # ...so one client's set costs it a batch (1/256 of the limit, as at
        # any full store), never the rest of the shrink.
        assert store.evictions - evictions <= 1 + store.limit_bytes // 256 // ITEM + 1
        while not store.shrink(100 * ITEM, 10):
            pass
        assert store.bytes <= 100 * ITEM

    def test_raising_the_limit_evicts_nothing(self, clock):
        store = Store(limit_bytes=10 * ITEM, clock=clock)
        fill(store, 10)
        assert store.shrink(20 * ITEM, 1)
        assert store.limit_bytes == 20 * ITEM and store.evictions == 0
        fill(store, 10, start=10)
        assert len(store) == 20 and store.evictions == 0

    def test_expired_items_are_reclaimed(self, clock):
        store = Store(limit_bytes=10 * ITEM, clock=clock)
        store.store(SET, key(0), b"v" * VALUE_LEN, ttl=5)
        fill(store, 9, start=1)
        clock.advance(5)
        assert store.shrink(8 * ITEM, 100)
        assert (store.reclaimed, store.evictions) == (1, 1)


class TestSizeLimits:
    def test_item_size_limit_boundary(self, clock):
        store = Store(max_item_size=1024, clock=clock)
        largest = 1024 - MEMCACHED_ITEM_HEADER - 1
        assert store.store(SET, b"k", b"x" * largest)[0] is OK
        assert store.store(SET, b"j", b"x" * (largest + 1)) == (TOO_LARGE, 0)
        assert b"j" not in store

    def test_too_large_set_removes_the_old_item(self, clock):
        store = Store(max_item_size=1024, clock=clock)
        store.store(SET, b"k", b"old")
        assert store.store(SET, b"k", b"x" * 2000) == (TOO_LARGE, 0)
        assert b"k" not in store
        assert store.bytes == 0

    @pytest.mark.parametrize("mode", [ADD, REPLACE])
    def test_too_large_add_or_replace_on_a_missing_key_stores_nothing(self, clock, mode):
        store = Store(max_item_size=1024, clock=clock)
        status, _ = store.store(mode, b"k", b"x" * 2000)
        assert status is not OK
        assert b"k" not in store and store.bytes == 0

    @pytest.mark.parametrize("mode", [APPEND, PREPEND])
    def test_append_past_the_item_size_limit_keeps_the_item(self, clock, mode):
        store = Store(max_item_size=1024, clock=clock)
        _, cas = store.store(SET, b"k", b"x" * 900)
        status, new_cas = store.store(mode, b"k", b"y" * 200)
        item = get_item(store, b"k")
        assert (item.value, item.cas) == (b"x" * 900, cas)
        # memcached 1.6.18 answers an append that outgrows the item size
        # limit with 0x05 "Not stored." (the allocation of the joined item
        # fails inside do_store_item), not 0x03 "Too large.".
        assert (status, new_cas) == (NOT_STORED, 0)

    def test_an_item_bigger_than_the_memory_limit_is_no_memory(self, clock):
        store = Store(limit_bytes=4096, max_item_size=1 << 20, clock=clock)
        store.store(SET, b"small", b"v")
        store.store(SET, b"k", b"old")
        assert store.store(SET, b"big", b"x" * 4096) == (NO_MEMORY, 0)
        # Nothing was evicted to make room for an item that could never fit...
        assert b"small" in store and store.evictions == 0
        # ...but a failed set still drops the value it was replacing.
        assert store.store(SET, b"k", b"x" * 4096) == (NO_MEMORY, 0)
        assert b"k" not in store
        assert store.bytes == item_size(b"small", b"v")

    def test_refuse_drops_the_old_value_of_a_set_only(self, store):
        store.store(SET, b"s", b"v")
        store.store(SET, b"a", b"v")
        assert store.refuse(SET, b"s") is TOO_LARGE
        assert b"s" not in store
        for mode in (ADD, REPLACE, APPEND, PREPEND):
            assert store.refuse(mode, b"a") is TOO_LARGE
        assert b"a" in store
        assert store.refuse(SET, b"missing") is TOO_LARGE
        assert store.bytes == item_size(b"a", b"v")


class TestAccounting:
    def test_bytes_follow_every_change_and_return_to_zero(self, store):
        store.store(SET, b"a", b"12345")
        assert store.bytes == item_size(b"a", b"12345")
        store.store(SET, b"a", b"1")
        assert store.bytes == item_size(b"a", b"1")
        store.store(APPEND, b"a", b"23")
        store.store(PREPEND, b"a", b"0")
        assert store.bytes == item_size(b"a", b"0123")
        store.store(SET, b"b", b"x" * 1000)
        assert store.bytes == item_size(b"a", b"0123") + item_size(b"b", b"x" * 1000)
        store.arith(b"a", True, 99877)  # 123 -> 100000: two bytes longer
        assert store.bytes == item_size(b"a", b"100000") + item_size(b"b", b"x" * 1000)
        store.delete(b"a")
        store.delete(b"b")
        assert store.bytes == 0 and len(store) == 0

    def test_bytes_return_to_zero_after_flush_and_expiry(self, store, clock):
        for i in range(100):
            store.store(SET, b"k%d" % i, b"v" * i, ttl=10 if i % 2 else 0)
        assert store.bytes == sum(item_size(b"k%d" % i, b"v" * i) for i in range(100))
        clock.advance(10)
        for i in range(1, 100, 2):
            assert get_item(store, b"k%d" % i) is None
        assert store.bytes == sum(item_size(b"k%d" % i, b"v" * i) for i in range(0, 100, 2))
        store.flush()
        assert store.bytes == 0

    def test_bytes_after_eviction_match_the_survivors(self, clock):
        store = Store(limit_bytes=50 * ITEM, clock=clock)
        fill(store, 500)
        assert store.bytes == sum(item_size(k, i.value) for k, i in store.items())
        assert store.bytes <= store.limit_bytes

    def test_accounting_is_honest_about_real_memory(self):
        """store.bytes should be within 35% of what the items really cost.

        -m is meant to bound this process's memory, so ITEM_OVERHEAD must
        stand for the real per-item cost (table slot, Item, bytes headers).
        """
        count, value_len = 20_000, 100
        gc.collect()
        tracemalloc.start()
        try:
            store = Store(limit_bytes=1 << 40, clock=lambda: 1_700_000_000.0)
            before = tracemalloc.get_traced_memory()[0]
            for i in range(count):
                # Built here so the store holds the only reference.
                store.store(SET, b"key:%06d" % i, bytes([i & 0xFF]) * value_len)
            real = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert len(store) == count
        ratio = store.bytes / real
        assert 0.65 <= ratio <= 1.35, (
            f"accounted {store.bytes} bytes, tracemalloc measured {real} "
            f"({real / count:.0f} per item, accounted {store.bytes / count:.0f})"
        )


def test_eviction_stays_linear_under_heavy_churn(clock):
    """200,000 sets through a store that holds ~10,000 items.

    A quadratic eviction (rescanning the table, or a dict's deleted slots,
    per store) would not finish; pytest-timeout bounds the run. No
    wall-clock assertion: the counters say how much work was done.
    """
    value = b"v" * 32
    capacity = 10_000
    store = Store(limit_bytes=capacity * item_size(b"key:0000000", value), clock=clock)
    total = 200_000
    for i in range(total):
        assert store.store(SET, b"key:%07d" % i, value)[0] is OK
    alive = len(store)
    # Evicting in small batches may leave up to 1/256 of the limit free.
    assert capacity - capacity // 256 - 1 <= alive <= capacity
    assert store.evictions == total - alive
    assert store.reclaimed == 0
    assert store.total_items == total
    assert store.bytes <= store.limit_bytes
    assert lru_keys(store) == [b"key:%07d" % i for i in range(total - alive, total)]


class TestGetRecord:
    """get_record is get_many for one key: same record, same side effects."""

    @staticmethod
    def twins(clock):
        return Store(clock=clock), Store(clock=clock)

    @staticmethod
    def observe(store: Store, key: bytes):
        return (store.reclaimed, len(store), lru_keys(store), store.fetched(key))

    @pytest.mark.parametrize(
        "case", ["miss", "hit", "expired", "bump due", "bump not due", "unfetched"]
    )
    def test_agrees_with_get_many(self, clock, case):
        single, many = self.twins(clock)
        for store in (single, many):
            if case == "unfetched":
                store.track_fetches()
            if case != "miss":
                store.store(SET, b"k", b"v", flags=7, ttl=10 if case == "expired" else 0)
                store.store(SET, b"other", b"w")
        clock.advance({"expired": 10, "bump due": LRU_BUMP_INTERVAL, "bump not due": 1}.get(case, 0))
        assert single.get_record(b"k") == many.get_many([b"k"])[0]
        assert self.observe(single, b"k") == self.observe(many, b"k")
        if case in ("miss", "expired"):
            assert single.get_record(b"k") is None
        else:
            assert single.get_record(b"k").endswith(b"v")

    def test_a_bump_moves_the_key_to_the_young_end(self, store, clock):
        store.store(SET, b"old", b"v")
        store.store(SET, b"young", b"v")
        clock.advance(LRU_BUMP_INTERVAL)
        assert store.get_record(b"old") is not None
        assert lru_keys(store) == [b"young", b"old"]

    def test_a_pending_flush_applies_first(self, store, clock):
        store.store(SET, b"k", b"v")
        store.flush(5)
        clock.advance(5)
        assert store.get_record(b"k") is None


# -- a background load (Store.begin_load / load / end_load) -------------------


def snapshot_items(pairs: list[tuple[bytes, bytes]]) -> list[bytes]:
    """A slice of a snapshot as the loader hands it over: key, record, key, record..."""
    return [x for pair in pairs for x in pair]


def file_record(value: bytes, cas: int, exptime: int = 0) -> bytes:
    return pack(value, 0, exptime, cas, 0)


class TestBackgroundLoad:
    def test_slices_go_to_the_young_end_in_their_order(self, store):
        store.begin_load(0)
        store.store(SET, b"client", b"v")
        first = [(b"a", file_record(b"1", 5)), (b"b", file_record(b"2", 6))]
        assert store.load(snapshot_items(first)) == 2
        assert store.load(snapshot_items([(b"c", file_record(b"3", 7))])) == 1
        store.end_load()
        assert lru_keys(store) == [b"client", b"a", b"b", b"c"]
        assert store.bytes == sum(
            item_size(k, v) for k, v in ((b"client", b"v"), (b"a", b"1"), (b"b", b"2"), (b"c", b"3"))
        )

    def test_a_key_written_during_the_load_keeps_the_clients_value(self, store):
        store.begin_load(0)
        store.store(SET, b"k", b"client")
        assert store.load(snapshot_items([(b"k", file_record(b"file", 3))])) == 0
        assert value_of(store, b"k") == b"client"

    def test_a_key_written_then_evicted_during_the_load_does_not_come_back_older(self, clock):
        store = Store(limit_bytes=10 * item_size(b"k0", b"x" * 100), clock=clock)
        store.begin_load(0)
        store.store(SET, b"k0", b"x" * 100)
        for i in range(1, 30):  # k0 is evicted
            store.store(SET, b"k%d" % i, b"x" * 100)
        assert value_of(store, b"k0") is None
        store.load(snapshot_items([(b"k0", file_record(b"old", 3))]))
        assert value_of(store, b"k0") is None

    @pytest.mark.parametrize(
        "action",
        [
            lambda s: s.delete(b"k"),  # a miss: the key has not loaded yet
            lambda s: s.store(SET, b"k", b"x" * (2 << 20)),  # a failed set drops the old value
            lambda s: s.refuse(SET, b"k"),  # a value too large to read: the same
            lambda s: s.invalidate(b"k"),  # md I on a key not loaded yet: a miss
        ],
        ids=["delete", "failed set", "refused set", "invalidate"],
    )
    def test_a_key_a_client_removed_during_the_load_stays_removed(self, store, action):
        store.begin_load(0)
        action(store)
        assert store.load(snapshot_items([(b"k", file_record(b"file", 3))])) == 0
        assert value_of(store, b"k") is None

    def test_a_delete_of_a_loaded_key_sticks(self, store):
        store.begin_load(0)
        store.load(snapshot_items([(b"k", file_record(b"file", 3))]))
        assert store.delete(b"k") is OK
        store.end_load()
        assert value_of(store, b"k") is None

    def test_reads_and_failed_writes_claim_nothing(self, store):
        store.begin_load(0)
        assert value_of(store, b"k") is None  # a miss: not loaded yet
        assert store.store(REPLACE, b"k", b"v") == (NOT_STORED, 0)
        assert store.store(SET, b"k", b"v", cas=99)[0] is NOT_FOUND
        assert store.touch(b"k", 10) is None
        assert store.load(snapshot_items([(b"k", file_record(b"file", 3))])) == 1
        assert value_of(store, b"k") == b"file"  # found once its slice arrived

    def test_cas_values_continue_above_the_snapshots(self, store):
        store.begin_load(1000)
        assert store.store(SET, b"new", b"v")[1] == 1001
        assert store.last_cas == 1001

    def test_a_flush_ends_the_load(self, store):
        store.begin_load(0)
        store.load(snapshot_items([(b"a", file_record(b"1", 1))]))
        store.flush()
        assert store.load(snapshot_items([(b"b", file_record(b"2", 2))])) == -1
        assert len(store) == 0 and store.bytes == 0

    def test_a_delayed_flush_ends_the_load_when_it_falls_due(self, store, clock):
        store.begin_load(0)
        store.load(snapshot_items([(b"a", file_record(b"1", 1))]))
        store.flush(10)
        assert store.load(snapshot_items([(b"b", file_record(b"2", 2))])) == 1
        clock.advance(10)
        assert store.load(snapshot_items([(b"c", file_record(b"3", 3))])) == -1
        assert len(store) == 0

    def test_past_the_memory_limit_the_oldest_are_evicted(self, clock):
        one = item_size(b"k00", b"x" * 100)
        store = Store(limit_bytes=10 * one, clock=clock)
        store.begin_load(0)
        pairs = [(b"k%02d" % i, file_record(b"x" * 100, i + 1)) for i in range(20)]
        store.load(snapshot_items(pairs))
        assert store.bytes <= 10 * one
        assert lru_keys(store)[-1] == b"k19" and b"k00" not in lru_keys(store)
        assert store.evictions > 0

    def test_nothing_is_remembered_once_the_load_is_over(self, store):
        store.begin_load(0)
        store.store(SET, b"a", b"v")
        store.end_load()
        assert store._claims is None  # the write paths' one check is off again
        store.store(SET, b"b", b"v")
        store.delete(b"c")
        assert store._claims is None

    def test_a_key_twice_in_a_snapshot_keeps_the_later_copy(self, store):
        store.begin_load(0)
        store.load(snapshot_items([(b"k", file_record(b"first", 1))]))
        assert store.load(snapshot_items([(b"k", file_record(b"second", 2))])) == 0
        assert value_of(store, b"k") == b"second"
        assert len(store) == 1

    def test_fits_is_the_size_rule_of_a_store(self, clock):
        store = Store(limit_bytes=1 << 20, max_item_size=1024, clock=clock)
        assert store.fits(1024 - MEMCACHED_ITEM_HEADER)
        assert not store.fits(1024 - MEMCACHED_ITEM_HEADER + 1)
        fits = 1024 - MEMCACHED_ITEM_HEADER - 1  # with a 1-byte key
        assert store.store(SET, b"k", b"x" * fits)[0] is OK
        assert store.store(SET, b"k", b"x" * (fits + 1))[0] is TOO_LARGE
