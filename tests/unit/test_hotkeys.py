"""Unit tests for mbserver.hotkeys: the Space-Saving sketch, its sampling, its renderings.

Workloads are drawn from seeded generators and the sketch's sampling from a
seeded Random, so every run sees the same requests and the same samples.
"""

from __future__ import annotations

import itertools
import random
import tracemalloc
from collections import Counter

import pytest

from mbserver.hotkeys import MAX_LABEL, HotKeys, escape, label, stat_pairs


def zipf_keys(count: int, distinct: int, exponent: float, seed: int) -> list[bytes]:
    """``count`` requests over ``distinct`` keys, key i drawn with weight 1/(i+1)**exponent."""
    keys = [b"key:%d" % i for i in range(distinct)]
    weights = [1 / (i + 1) ** exponent for i in range(distinct)]
    return random.Random(seed).choices(keys, weights, k=count)


class TestSpaceSaving:
    """Every request counted (rate 1): the sketch's own guarantees."""

    def test_counts_are_exact_while_every_key_fits(self):
        hot = HotKeys(3, rate=1, counters=10)
        for key in [b"a"] * 5 + [b"b"] * 3 + [b"c"] * 7 + [b"d"]:
            hot.saw_get(key)
        assert [(k, n, e) for k, n, e, _, _ in hot.top()] == [
            (b"c", 7, 0),
            (b"a", 5, 0),
            (b"b", 3, 0),
        ]
        assert hot.requests == 16

    def test_a_new_key_takes_the_lowest_count_and_inherits_it(self):
        hot = HotKeys(2, rate=1, counters=2)
        for key in [b"a", b"a", b"a", b"b", b"c"]:
            hot.saw_get(key)
        # c replaced b (count 1) and inherited it: estimate 2, of which 1 may be b's.
        assert [(k, n, e) for k, n, e, _, _ in hot.top()] == [(b"a", 3, 0), (b"c", 2, 1)]

    def test_estimates_bound_the_true_counts(self):
        requests = zipf_keys(20_000, 2_000, 1.1, seed=1)
        truth = Counter(requests)
        hot = HotKeys(10, rate=1, counters=50)
        for key in requests:
            hot.saw_get(key)
        for key, count, error, _, _ in hot.top():
            assert count - error <= truth[key] <= count
        # Every key above 1/counters of the requests is tracked (and so reported in order).
        heavy = [k for k, n in truth.most_common() if n > len(requests) / 50]
        assert [k for k, *_ in hot.top(len(heavy))] == heavy

    def test_a_stale_minimum_is_refreshed_before_it_is_replaced(self):
        hot = HotKeys(2, rate=1, counters=2)
        hot.saw_get(b"a")
        hot.saw_get(b"b")
        for _ in range(5):
            hot.saw_get(b"a")  # a's heap entry still says 1
        hot.saw_get(b"c")  # must replace b (1), not a (6)
        assert {k for k, *_ in hot.top()} == {b"a", b"c"}


class TestSampled:
    def test_a_skewed_workloads_hottest_keys_in_order(self):
        requests = zipf_keys(1_000_000, 10_000, 1.5, seed=2)
        truth = Counter(requests)
        hot = HotKeys(10, rng=random.Random(3))  # one request in 16
        for key in requests:
            hot.saw_get(key)
        assert hot.sampled < len(requests) / 10
        assert [k for k, *_ in hot.top()] == [k for k, _ in truth.most_common(10)]
        for key, count, _, gets, sets in hot.top(5):
            assert abs(count - truth[key]) < 0.1 * truth[key]
            assert (gets, sets) == (count, 0)
        assert abs(hot.requests - len(requests)) < 0.02 * len(requests)

    def test_gets_and_sets_are_told_apart(self):
        hot = HotKeys(2, rng=random.Random(4))
        for _ in range(4000):
            hot.saw_get(b"read")
            hot.saw_set(b"written")
        hot.saw_set(b"read")
        by_key = {key: (gets, sets) for key, _, _, gets, sets in hot.top()}
        assert by_key[b"read"][1] <= 16 and by_key[b"written"][0] == 0
        assert 3000 < by_key[b"read"][0] < 5000 and 3000 < by_key[b"written"][1] < 5000

    def test_a_client_cycling_through_rate_keys_is_not_aliased(self):
        keys = [b"k%d" % i for i in range(16)]
        hot = HotKeys(16, rng=random.Random(5))
        for key in itertools.islice(itertools.cycle(keys), 160_000):
            hot.saw_get(key)
        counts = [count for _, count, *_ in hot.top()]
        assert len(counts) == 16 and min(counts) > 0.8 * max(counts)

    def test_a_multi_get_samples_as_its_gets_one_by_one(self):
        requests = zipf_keys(50_000, 500, 1.2, seed=6)
        one_by_one = HotKeys(5, rng=random.Random(7))
        for key in requests:
            one_by_one.saw_get(key)
        batched = HotKeys(5, rng=random.Random(7))
        rng = random.Random(8)
        start = 0
        while start < len(requests):
            size = rng.choice((1, 2, 10, 15, 16, 17, 100))
            batched.saw_gets(requests[start : start + size])
            start += size
        assert batched.top() == one_by_one.top()
        assert batched.sampled == one_by_one.sampled

    def test_memory_stays_bounded_with_a_million_distinct_keys(self):
        hot = HotKeys(10, rng=random.Random(9))
        for i in range(10_000):  # warmed up: every counter in use
            hot.saw_get(b"warm:%d" % i)
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for i in range(1_000_000):
                hot.saw_get(b"distinct:%d" % i)
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert len(hot) == hot.counters == 80
        assert len(hot._heap) == hot.counters
        assert grown < 64 << 10  # the same 80 counters, whatever the keys

    def test_a_never_sampled_request_costs_no_allocation(self):
        hot = HotKeys(10, rate=1 << 30, rng=random.Random(10))
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(10_000):
                hot.saw_get(b"k")
            assert tracemalloc.get_traced_memory()[0] - before < 1024
        finally:
            tracemalloc.stop()


class TestRendering:
    def test_stats_hotkeys_lines(self):
        hot = HotKeys(2, rate=1)
        for key, times in ((b"user:1", 6), (b"odd key\r\n", 3), (b"100%", 1)):
            for _ in range(times):
                hot.saw_get(key)
        hot.saw_set(b"user:1")
        hot.saw_set(b"user:1")
        assert stat_pairs(hot) == [
            ("hotkey:1:key", "user:1"),
            ("hotkey:1:estimate", "8"),
            ("hotkey:1:gets", "6"),
            ("hotkey:1:sets", "2"),
            ("hotkey:1:percent", "66.67"),
            ("hotkey:2:key", "odd%20key%0D%0A"),
            ("hotkey:2:estimate", "3"),
            ("hotkey:2:gets", "3"),
            ("hotkey:2:sets", "0"),
            ("hotkey:2:percent", "25.00"),
            ("hotkeys:capacity", "2"),
            ("hotkeys:sample_rate", "1"),
            ("hotkeys:requests", "12"),
        ]

    def test_off(self):
        assert stat_pairs(None) == [("hotkeys:capacity", "0")]

    def test_nothing_seen_yet(self):
        assert stat_pairs(HotKeys(3)) == [
            ("hotkeys:capacity", "3"),
            ("hotkeys:sample_rate", "16"),
            ("hotkeys:requests", "0"),
        ]

    @pytest.mark.parametrize(
        "key, shown",
        [
            (b"plain:key-1_2.3", "plain:key-1_2.3"),
            (b"!#$&'()*+,/;<=>?@[\\]^`{|}~\"", "!#$&'()*+,/;<=>?@[\\]^`{|}~\""),
            (b"50%", "50%25"),
            (b"a b\tc", "a%20b%09c"),
            (b"\x00\xff", "%00%FF"),
            ("café".encode(), "caf%C3%A9"),
        ],
    )
    def test_escape_leaves_no_space_or_control_character(self, key, shown):
        assert escape(key) == shown
        assert all(0x21 <= ord(c) <= 0x7E for c in shown)

    def test_labels_are_cut_past_their_limit(self):
        assert label(b"k" * 250) == "k" * 250  # a key of printable bytes always fits
        assert label(b"\x01" * 250) == "%01" * ((MAX_LABEL - 3) // 3) + "..."
        assert label(b"k" + b"\x01" * 249) == "k" + "%01" * ((MAX_LABEL - 4) // 3) + "..."
        assert label(b"short") == "short"


@pytest.mark.parametrize("rate", [0, 3, 12])
def test_the_sample_rate_is_a_power_of_two(rate):
    with pytest.raises(ValueError, match="power of 2"):
        HotKeys(10, rate=rate)
